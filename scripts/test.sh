#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine: formatting, lints, unit and
# end-to-end tests. Installs whatever the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests drive: Prometheus scrapes the proxies and the control plane.
if ! command -v prometheus >/dev/null; then
  sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
