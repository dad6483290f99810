"""bench-http: what the HTTP path adds to a 1-token completion.

One modeld, one reference model loaded; one client on the control socket
(msgpack infer, max_tokens 1) and one on the HTTP listener (POST
/v1/completions with the same token ids, keep-alive), taking turns request
by request so that both see the same machine. Each client writes bytes
made once and reads just the reply's frame or HTTP message, so the figures
are modeld's, not the client library's. Prints per-round p50 and p99
medians, and what HTTP adds at p50.
"""
import json
import os
import re
import socket
import statistics
import struct
import sys
import time

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import Daemon, wait_until  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
PER_ROUND = int(os.environ.get("BENCH_REQUESTS", "1000"))
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class Msgpack:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        body = msgpack.packb({"id": 1, "op": "infer", "model": "a", "input": [1, 2], "max_tokens": 1})
        self.frame = struct.pack(">I", len(body)) + body

    def once(self):
        self.sock.sendall(self.frame)
        n = struct.unpack(">I", read_exact(self.sock, 4))[0]
        reply = msgpack.unpackb(read_exact(self.sock, n))
        assert reply.get("ok"), reply


class Http:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        body = json.dumps({"model": "a", "prompt": [1, 2], "max_tokens": 1}).encode()
        self.request = (b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body)) + body
        self.buf = b""

    def once(self):
        self.sock.sendall(self.request)
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self.buf += self.sock.recv(65536)
        assert self.buf.startswith(b"HTTP/1.1 200"), self.buf[:end]
        length = int(CONTENT_LENGTH.search(self.buf, 0, end).group(1))
        end += 4 + length
        while len(self.buf) < end:
            self.buf += self.sock.recv(65536)
        self.buf = self.buf[end:]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    d = Daemon("[modeld]\nhttp = 127.0.0.1:0\n", {"a": ("--n", 16, "--a", 3, "--c", 1)}, extra_args=("-l", "info"))
    try:
        d.client().ok("load", model="a")
        port = wait_until(lambda: re.search(r"http: listening on \S+ port (\d+)", d.read_log()), what="the HTTP port")
        targets = {"msgpack": Msgpack(d.sock), "http": Http(int(port.group(1)))}
        for t in targets.values():      # warm up
            for _ in range(200):
                t.once()
        rows = {name: {"p50": [], "p99": []} for name in targets}
        for _ in range(ROUNDS):
            lat = {name: [] for name in targets}
            for _ in range(PER_ROUND):
                for name, t in targets.items():
                    start = time.perf_counter_ns()
                    t.once()
                    lat[name].append((time.perf_counter_ns() - start) / 1000)
            for name in targets:
                rows[name]["p50"].append(pct(lat[name], 0.5))
                rows[name]["p99"].append(pct(lat[name], 0.99))
        print("1-token completion, %d rounds x %d requests each, taking turns (us, medians of rounds)" %
              (ROUNDS, PER_ROUND))
        for name in targets:
            print("  %-8s p50 %7.1f   p99 %7.1f" % (name, statistics.median(rows[name]["p50"]),
                                                    statistics.median(rows[name]["p99"])))
        diffs = [h - m for h, m in zip(rows["http"]["p50"], rows["msgpack"]["p50"])]
        print("  HTTP adds %.1f us at p50 (rounds: %.1f to %.1f); ratio %.2fx" % (
            statistics.median(diffs), min(diffs), max(diffs),
            statistics.median(rows["http"]["p50"]) / statistics.median(rows["msgpack"]["p50"])))
    finally:
        d.stop()


if __name__ == "__main__":
    main()
