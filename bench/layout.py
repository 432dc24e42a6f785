"""Prints the functions of one binary that callgrind saw run, hottest (own instructions) first.

Usage: layout.py BINARY CALLGRIND_OUT...

The outputs are of `valgrind --tool=callgrind --demangle=no --dump-instr=no`: mangled names,
positions by line, instructions (Ir) the first event of each cost line.
"""

import re
import sys
from collections import defaultdict

NAMED = re.compile(r"^(c?(?:ob|fn))=\((\d+)\)(?: (.*))?$")
# Callgrind names a recursive function's inner calls `name'2`, `name'3`...
RECURSION = re.compile(r"'\d+$")


def read(path, binary, cost):
    """Adds the own cost of each function of `binary` in one callgrind output to `cost`."""
    names = {"ob": {}, "fn": {}}
    ob, fn, skip_next = None, None, False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            m = NAMED.match(line)
            if m:
                kind, ident, name = m.groups()
                table = names[kind.lstrip("c")]
                if name is not None:
                    table[ident] = name
                if kind == "ob":
                    ob = table.get(ident)
                elif kind == "fn":
                    fn = table.get(ident) if ob == binary else None
                    # Code without a symbol is named by its address: nothing to order.
                    if fn is not None and fn.startswith("0x"):
                        fn = None
                    if fn is not None:
                        fn = RECURSION.sub("", fn)
                        cost[fn] += 0
                continue
            if line.startswith("calls="):
                # The next line is the call's inclusive cost, not the caller's own.
                skip_next = True
                continue
            if line and (line[0].isdigit() or line[0] in "+-*"):
                if skip_next:
                    skip_next = False
                elif fn is not None:
                    fields = line.split()
                    if len(fields) > 1:
                        cost[fn] += int(fields[1])


def main():
    binary, outputs = sys.argv[1], sys.argv[2:]
    cost = defaultdict(int)
    for path in outputs:
        read(path, binary, cost)
    if not cost:
        sys.exit(f"no function of {binary} in {len(outputs)} callgrind outputs")
    for name, _ in sorted(cost.items(), key=lambda kv: (-kv[1], kv[0])):
        print(name)


main()
