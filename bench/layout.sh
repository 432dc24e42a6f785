#!/usr/bin/env bash
# Regenerates crates/trellis/proxy.order: the functions a sidecar runs (start-up, xDS, idle, and
# requests over HTTP/1.1 and HTTP/2, plaintext and mTLS), hottest first. Release builds of the
# binaries link these functions next to each other, so an idle sidecar maps a few hundred KiB of
# code instead of most of its 7 MiB: the kernel maps code in 64 KiB windows around each page
# touched. Run on demand after larger changes; names no longer in the binary are skipped when
# linking, so a stale list costs memory, not correctness.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || apt-get install -y -q valgrind
cargo build --release --locked --bin trellis --bin trellis-proxy --bin trellis-bench

work=$(mktemp -d)
trap 'kill "${dumper:-}" 2>/dev/null || true' EXIT
# The bench starts this in place of the sidecar: the same binary, under callgrind.
cat > "$work/trellis-proxy" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --dump-instr=no \
    --callgrind-out-file=$work/callgrind.%p $PWD/target/release/trellis-proxy "\$@"
EOF
chmod +x "$work/trellis-proxy"
# The bench kills its hops with SIGKILL, which callgrind cannot dump on: take dumps as it goes.
(while sleep 1; do callgrind_control --dump >/dev/null 2>&1 || true; done) &
dumper=$!

taskset -c 1 target/release/trellis-bench dataplane --kinds trellis,trellis-mtls --protos h1,h2 \
    --rates 200 --seconds 2 --max-connections 8 --idle 10 \
    --trellis-proxy "$work/trellis-proxy" --out-dir "$work/out"
kill "$dumper"

python3 bench/layout.py "$PWD/target/release/trellis-proxy" "$work"/callgrind.* \
    > crates/trellis/proxy.order
echo "crates/trellis/proxy.order: $(wc -l < crates/trellis/proxy.order) functions"
rm -rf "$work"
