#!/usr/bin/env bash
# Regenerates crates/trellis/proxy.order: the functions a sidecar runs (start-up, xDS, idle, and
# requests over HTTP/1.1 and HTTP/2, plaintext and mTLS), hottest first. Release builds of the
# binaries link these functions next to each other, so an idle sidecar maps the ~3 MiB they
# take rather than pages all over its 7 MiB of code: the kernel maps code in 64 KiB windows
# around each page touched. Names are mangled with hashes that change with the code, the
# dependencies and the compiler: rerun after larger changes and after every toolchain update
# (bench/run.sh says how many listed names the binary still has). Unknown names are skipped
# when linking, so a stale list costs memory, not correctness.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
root=$(pwd -P)
binary="$root/target/release/trellis-proxy"

if ! command -v valgrind >/dev/null || ! command -v nginx >/dev/null; then
    apt-get update -q && apt-get install -y -q valgrind nginx-light
fi
cargo build --release --locked --bin trellis --bin trellis-proxy --bin trellis-bench

work=$(mktemp -d)
trap 'kill "${dumper:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
# The bench starts this in place of the sidecar: the same binary, under callgrind.
cat > "$work/trellis-proxy" <<WRAPPER
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file="$work/callgrind.%p" "$binary" "\$@"
WRAPPER
chmod +x "$work/trellis-proxy"
# The bench kills its hops with SIGKILL, which callgrind cannot dump on: take dumps as it goes.
(while sleep 1; do callgrind_control --dump >/dev/null 2>&1 || true; done) &
dumper=$!

taskset -c 1 target/release/trellis-bench dataplane --kinds trellis,trellis-mtls --protos h1,h2 \
    --rates 200 --seconds 2 --max-connections 8 --idle 10 \
    --trellis-proxy "$work/trellis-proxy" --out-dir "$work/out"
kill "$dumper"

dumps=("$work"/callgrind.*)
if [ "${#dumps[@]}" -eq 0 ]; then
    echo "no callgrind dumps in $work: callgrind_control could not reach the sidecars" >&2
    exit 1
fi
{
    echo "# Written by bench/layout.sh with $(rustc -V); lld skips lines starting with #."
    python3 bench/layout.py "$(realpath "$binary")" "${dumps[@]}"
} > "$work/proxy.order"
mv "$work/proxy.order" crates/trellis/proxy.order
echo "crates/trellis/proxy.order: $(grep -vc '^#' crates/trellis/proxy.order) functions"
