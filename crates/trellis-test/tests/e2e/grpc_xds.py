"""A proxyless gRPC client of the Trellis control plane, and the servers it calls.

Serves `trellis.test.Who/Name` (which answers with the server's port) and `trellis.test.Who/Slow`
(the same, after 2 s) on each port of --ports, prints `serving`, then for every
`calls N METHOD [KEY=VALUE ...]` line on stdin makes N unary calls of METHOD, with those metadata,
to the xds:/// --target (GRPC_XDS_BOOTSTRAP names the bootstrap) and prints one JSON line: how
many calls each port answered, how many failed, and the first errors.
"""

import argparse
import json
import sys
import time
from concurrent import futures

import grpc


def serve(port):
    def name(_request, _context):
        return port.encode()

    def slow(request, context):
        time.sleep(2)
        return name(request, context)

    handler = grpc.method_handlers_generic_handler(
        "trellis.test.Who",
        {
            "Name": grpc.unary_unary_rpc_method_handler(name),
            "Slow": grpc.unary_unary_rpc_method_handler(slow),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", required=True)
    parser.add_argument("--target", required=True)
    args = parser.parse_args()
    servers = [serve(port) for port in args.ports.split(",")]
    print("serving", flush=True)
    channel = grpc.insecure_channel(args.target)
    for line in sys.stdin:
        _, n, method, *pairs = line.split()
        call = channel.unary_unary(f"/trellis.test.Who/{method}")
        metadata = tuple(tuple(pair.split("=", 1)) for pair in pairs)
        counts, errors, slowest = {}, [], 0.0
        for _ in range(int(n)):
            start = time.monotonic()
            try:
                port = call(b"", timeout=5, metadata=metadata).decode()
                counts[port] = counts.get(port, 0) + 1
            except grpc.RpcError as e:
                errors.append(f"{e.code()}: {e.details()}")
            slowest = max(slowest, time.monotonic() - start)
        print(
            json.dumps(
                {
                    "counts": counts,
                    "failed": len(errors),
                    "errors": errors[:3],
                    "slowest_ms": round(slowest * 1000),
                }
            ),
            flush=True,
        )
    for server in servers:
        server.stop(None)


if __name__ == "__main__":
    main()
