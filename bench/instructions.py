"""Prints instructions and simulated cache misses per request for each sidecar hop.

Usage: instructions.py [--busiest] CALLGRIND_OUT...

The outputs are of `valgrind --tool=callgrind --cache-sim=yes --dump-instr=no`, dumped every
few seconds while the hops carry fixed-rate traffic (bench/instructions.sh). A hop is named by
its command line; its requests in one dump are the calls of a function that runs once per
request on either hop: Trellis's `to_upstream`, HAProxy's `stream_new` (a stream per HTTP
transaction). Only dumps of steady traffic count: those within a quarter of the hop's median
requests per dump. That leaves out most of start-up, another path's turn and the edges of a
slice (fewer requests, more work that is not theirs), and the bursts in which the load generator
catches up after valgrind fell behind (requests that share wake-ups). Each figure is the median
over those dumps of the dump's count divided by its requests, so a dump that still holds
start-up work does not move it. With `--busiest` the dumps kept are those within a quarter of
the hop's largest requests per dump instead: the saturated part of a run that also had a
slower one.
"""

import re
import statistics
import sys
from collections import defaultdict

NAMED = re.compile(r"^(c?(?:ob|fn))=\((\d+)\)(?: (.*))?$")
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw")
# The function each hop calls once per request, by its name, mangled or not.
MARKERS = {
    "trellis": re.compile(r"(11to_upstream17h[0-9a-f]{16}E|::to_upstream)$"),
    "haproxy": re.compile(r"^stream_new$"),
}


def hop(cmd):
    """The hop a command line runs: (proxy, side), or None."""
    if "trellis-proxy" in cmd:
        side = "outbound" if "--service bench-client" in cmd else "inbound"
        return ("trellis", side)
    if "haproxy" in cmd:
        side = "inbound" if "/inbound/" in cmd else "outbound"
        return ("haproxy", side)
    return None


def read(path):
    """(hop, requests, {event: count}) of one callgrind output."""
    cmd, events, summary = "", [], []
    names = {}
    marked, requests = False, 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("cmd:"):
                cmd = line
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("summary:"):
                summary = [int(v) for v in line.split()[1:]]
            m = NAMED.match(line)
            if m:
                kind, ident, name = m.groups()
                if kind.endswith("fn"):
                    if name is not None:
                        names[ident] = name
                    if kind == "cfn":
                        proxy = hop(cmd)
                        marker = MARKERS.get(proxy[0]) if proxy else None
                        marked = marker is not None and bool(
                            marker.search(names.get(ident, ""))
                        )
            elif line.startswith("calls=") and marked:
                requests += int(line.split()[0].split("=")[1])
                marked = False
    totals = dict(zip(events, summary))
    return hop(cmd), requests, {e: totals.get(e, 0) for e in EVENTS}


def main(paths, busiest):
    dumps = defaultdict(list)
    for path in paths:
        proxy, requests, totals = read(path)
        if proxy is not None and requests > 0:
            dumps[proxy].append((requests, totals))
    if not dumps:
        sys.exit("no dump saw a request: were the hops under callgrind?")
    print("| hop | requests counted | instructions | I1 misses | D1 read misses | D1 write misses |")
    print("|---|---:|---:|---:|---:|---:|")
    pairs = defaultdict(lambda: defaultdict(float))
    for (proxy, side), found in sorted(dumps.items()):
        counts = sorted(requests for requests, _ in found)
        if busiest:
            kept = [(r, t) for r, t in found if r >= 0.75 * counts[-1]]
        else:
            median = counts[len(found) // 2]
            kept = [(r, t) for r, t in found if 0.75 * median <= r <= 1.25 * median]
        requests = sum(r for r, _ in kept)
        per = {e: statistics.median(t[e] / r for r, t in kept) for e in EVENTS}
        for e in EVENTS:
            pairs[proxy][e] += per[e]
        cells = " | ".join(f"{per[e]:,.0f}" for e in EVENTS)
        print(f"| {proxy} {side} | {requests} | {cells} |")
    for proxy, per in sorted(pairs.items()):
        cells = " | ".join(f"{per[e]:,.0f}" for e in EVENTS)
        print(f"| {proxy} pair | | {cells} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    main([a for a in args if a != "--busiest"], "--busiest" in args)
