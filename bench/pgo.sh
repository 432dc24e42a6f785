#!/usr/bin/env bash
# Regenerates crates/trellis/proxy.llvmN.profdata (N: rustc's LLVM major), the profile release
# builds are optimised with (scripts/rustc-pgo): an instrumented build of the binaries runs the
# data-plane benchmark's sidecar pairs (HTTP/1.1 and HTTP/2, plaintext and mTLS, at a fixed rate
# and at saturation), and the counts its sidecars wrote are merged. Sparse: code the run never
# reached has no counts rather than zero ones, so LLVM optimises it as it would without a
# profile instead of as cold. Functions are matched by name and a hash of their control flow:
# code changed since is optimised without the profile. Rerun after larger changes to the
# request path and after every toolchain update; then bench/layout.sh (run at the end) orders
# the new code.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
root=$(pwd -P)

# llvm-profdata of the LLVM rustc is built on (Debian's llvm-N).
llvm=$(scripts/rustc-pgo --llvm-major)
if ! command -v "llvm-profdata-$llvm" >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -q && apt-get install -y -q "llvm-$llvm" nginx-light
fi

# The instrumented build has a target directory of its own, so release builds stay as they are.
target="$root/target/pgo"
RUSTFLAGS="-Cprofile-generate=$target/raw" CARGO_TARGET_DIR="$target" \
    cargo build --release --locked --bin trellis --bin trellis-proxy --bin trellis-bench

work=$(mktemp -d)
trap 'rm -rf "$work" "$target/raw"' EXIT
# The bench starts this in place of the sidecar. It stops its hops with SIGTERM, on which they
# exit and write their counts.
cat > "$work/trellis-proxy" <<WRAPPER
#!/bin/sh
LLVM_PROFILE_FILE="$work/proxy-%p.profraw" exec "$target/release/trellis-proxy" "\$@"
WRAPPER
chmod +x "$work/trellis-proxy"
taskset -c 1 "$target/release/trellis-bench" dataplane --kinds trellis,trellis-mtls --protos h1,h2 \
    --rates 1000 --seconds 3 --idle 100 --trellis "$target/release/trellis" \
    --trellis-proxy "$work/trellis-proxy" --out-dir "$work/out"

counts=("$work"/proxy-*.profraw)
if [ "${#counts[@]}" -eq 0 ]; then
    echo "no profile in $work: did the sidecars exit on SIGTERM?" >&2
    exit 1
fi
profile=$(scripts/rustc-pgo --profile-path)
"llvm-profdata-$llvm" merge --sparse -o "$profile" "${counts[@]}"
echo "$profile: ${#counts[@]} sidecars' counts"
# Release artifacts built with the old profile (cargo does not see the file change for
# dependencies) are removed; layout.sh rebuilds them with the new one.
cargo clean --release
bash bench/layout.sh
