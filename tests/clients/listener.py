"""Capture listener: saves every raw payload a tracing client sends.

Binds UDP (agent compact and binary), HTTP (any POST path) and, when grpcio is
importable, a gRPC server that accepts any method, and writes each payload to
OUT_DIR as <prefix>-<n>.bin with a sidecar .meta line (transport, path, content
type). It answers HTTP with 202 and gRPC with an empty message. It never parses
payloads: the point is to keep the exact bytes real clients put on the wire.

Usage: listener.py OUT_DIR UDP_COMPACT_PORT UDP_BINARY_PORT HTTP_PORT [GRPC_PORT]
Stops on SIGTERM or after 600 seconds.
"""

import http.server
import itertools
import os
import signal
import socket
import sys
import threading
import time

OUT_DIR = sys.argv[1]
COUNTER = itertools.count(1)
LOCK = threading.Lock()


def save(prefix, payload, meta):
    with LOCK:
        n = next(COUNTER)
        path = os.path.join(OUT_DIR, f"{n:03d}-{prefix}.bin")
        with open(path, "wb") as f:
            f.write(payload)
        with open(path + ".meta", "w") as f:
            f.write(meta + "\n")
    print(f"captured {path} ({len(payload)} bytes) {meta}", flush=True)


def udp_loop(port, prefix):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        data, _ = sock.recvfrom(65535)
        save(prefix, data, f"udp {prefix} port={port}")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = self.headers.get("Content-Type", "")
        encoding = self.headers.get("Content-Encoding", "")
        save("http", body, f"http path={self.path} content-type={ctype} content-encoding={encoding}")
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def grpc_server(port):
    try:
        import grpc
    except ImportError:
        return None

    class AnyMethod(grpc.GenericRpcHandler):
        def service(self, details):
            method = details.method

            def unary(request, context):
                save("grpc", request, f"grpc method={method}")
                return b""

            return grpc.unary_unary_rpc_method_handler(unary)

    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((AnyMethod(),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    compact, binary, http_port = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    threading.Thread(target=udp_loop, args=(compact, "udp-compact"), daemon=True).start()
    threading.Thread(target=udp_loop, args=(binary, "udp-binary"), daemon=True).start()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", http_port), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    # Keep the server referenced: a collected grpc.Server stops serving.
    server = grpc_server(int(sys.argv[5])) if len(sys.argv) > 5 else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("listening", flush=True)
    time.sleep(600)
    del server


if __name__ == "__main__":
    main()
