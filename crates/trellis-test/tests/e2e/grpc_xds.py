"""A proxyless gRPC client of the Trellis control plane, and the servers it calls.

Serves `trellis.test.Who/Name` on each port of --ports (each answers with its port), prints
`serving`, then for every `calls N` line on stdin makes N unary calls to the xds:/// --target
(GRPC_XDS_BOOTSTRAP names the bootstrap) and prints one JSON line: how many calls each port
answered, and the first errors.
"""

import argparse
import json
import sys
from concurrent import futures

import grpc


def serve(port):
    def name(_request, _context):
        return port.encode()

    handler = grpc.method_handlers_generic_handler(
        "trellis.test.Who", {"Name": grpc.unary_unary_rpc_method_handler(name)}
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
    call = channel.unary_unary("/trellis.test.Who/Name")
    for line in sys.stdin:
        counts, errors = {}, []
        for _ in range(int(line.split()[1])):
            try:
                port = call(b"", timeout=5).decode()
                counts[port] = counts.get(port, 0) + 1
            except grpc.RpcError as e:
                errors.append(f"{e.code()}: {e.details()}")
        print(json.dumps({"counts": counts, "errors": errors[:3]}), flush=True)
    for server in servers:
        server.stop(None)


if __name__ == "__main__":
    main()
