"""bench-rpc: modeld's request path against its floor, in one run.

The floor (bench/rpc_floor.c) is a relay and a backend process on the cpu
engine, speaking modeld's shapes with modeld's codec and nothing else. The
load (bench/rpc_load.c) is C: N connections, closed loop, or one connection
pipelined. Targets take turns round by round (the order flips each round);
figures are medians of the rounds, goals are ratios:

  infer, 1 client:   modeld p50 <= 1.05x the floor's
  infer, 64 clients: modeld throughput >= 0.9x the floor's
  status, 16 clients: modeld ops/s >= 0.9x the echo floor's
  a switch with 1,000 subscribers <= 1.5x one with none
  modeld RSS <= 16 MiB with 1,000 clients, flat over BENCH_RPC_REQUESTS infers

BENCH_ROUNDS (10) and BENCH_RPC_REQUESTS (1,000,000) scale it; BENCH_PARALLEL
(4) is the reference model's parallel.
"""
import os
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time

import msgpack

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import BUILD, DEADLINE, Daemon, wait_until  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "10"))
LONG_RUN = int(os.environ.get("BENCH_RPC_REQUESTS", "1000000"))
LOAD = os.path.join(BUILD, "rpc_load")
FLOOR = os.path.join(BUILD, "rpc_floor")
MODEL = ("--n", 64, "--a", 5, "--c", 1)
PARALLEL = int(os.environ.get("BENCH_PARALLEL", "16"))
# The reference model runs up to PARALLEL inferences at once, so that the
# next request waits at the worker, not a round trip away (the floor's backend
# queues every request it is sent).
CONFIG = ("[modeld]\nmax_clients = 4096\nmax_clients_per_uid = 4096\nclient_idle_timeout = 0\n[slot main]\n"
          "[model a]\npath = @DIR@/models/a.safetensors\nparallel = %d\n" % PARALLEL)

# name: rpc_load's arguments after the socket
SCENARIOS = {
    "infer, 1 client": ("infer", 1, 2000),
    "infer, 64 clients": ("infer", 64, 100),
    "status, 1 client, 32 pipelined": ("status", 1, 20000, 32),
    "status, 16 clients": ("status", 16, 1000),
}


def load(sock, args):
    out = subprocess.run([LOAD, sock] + [str(a) for a in args], capture_output=True, text=True, check=True)
    p50, p99, ops = (float(x) for x in out.stdout.split())
    return {"p50": p50, "p99": p99, "ops": ops}


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def median_of(rows, key):
    return statistics.median(r[key] for r in rows)


def compare(d, floor_sock):
    results = {name: {"modeld": [], "floor": []} for name in SCENARIOS}
    for rnd in range(ROUNDS):
        for name, args in SCENARIOS.items():
            targets = [("modeld", d.sock), ("floor", floor_sock)]
            for target, sock in (targets if rnd % 2 == 0 else targets[::-1]):
                results[name][target].append(load(sock, args))
    print("request path, %d rounds (medians; us, ops/s)" % ROUNDS)
    for name, rows in results.items():
        m, f = rows["modeld"], rows["floor"]
        print("  %-32s modeld p50 %8.1f p99 %8.1f %9.0f/s | floor p50 %8.1f p99 %8.1f %9.0f/s | "
              "p50 %.2fx, ops %.2fx" % (name, median_of(m, "p50"), median_of(m, "p99"), median_of(m, "ops"),
                                        median_of(f, "p50"), median_of(f, "p99"), median_of(f, "ops"),
                                        median_of(m, "p50") / median_of(f, "p50"),
                                        median_of(m, "ops") / median_of(f, "ops")))


def switch_ms(c):
    """One switch and back: the time each load's reply took, in ms."""
    times = []
    for model in ("b", "a"):
        start = time.perf_counter()
        c.ok("load", model=model)
        times.append((time.perf_counter() - start) * 1000)
    return times


def subscribers(d):
    c = d.client()
    c.ok("load", model="a")
    quiet = []
    for _ in range(ROUNDS):
        quiet += switch_ms(c)
    subs = []
    body = msgpack.packb({"id": 1, "op": "subscribe"})
    for _ in range(1000):
        s = socket.socket(socket.AF_UNIX)
        s.connect(d.sock)
        s.sendall(struct.pack(">I", len(body)) + body)
        subs.append(s)
    for s in subs:      # each subscribed: its reply came
        s.settimeout(DEADLINE)
        n = struct.unpack(">I", s.recv(4, socket.MSG_WAITALL))[0]
        s.recv(n, socket.MSG_WAITALL)
    watched = []
    for _ in range(ROUNDS):
        watched += switch_ms(c)
    q, w = statistics.median(quiet), statistics.median(watched)
    print("switch a -> b (load's reply): %.1f ms with no subscriber, %.1f ms with 1,000: %.2fx" % (q, w, w / q))
    return subs


def memory(d, subs):
    print("modeld RSS with %d clients connected: %.1f MiB" % (len(subs), rss_kib(d.proc.pid) / 1024))
    for s in subs:
        s.close()
    before = rss_kib(d.proc.pid)
    per_client = max(1, LONG_RUN // 64)
    load(d.sock, ("infer", 64, per_client))
    after = rss_kib(d.proc.pid)
    print("modeld RSS over %d infers: %.1f MiB before, %.1f MiB after" % (per_client * 64, before / 1024,
                                                                         after / 1024))


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    d = Daemon(CONFIG, {"a": MODEL, "b": ("--n", 64, "--a", 7, "--c", 3)}, extra_args=("-l", "warn"))
    floor_sock = os.path.join(d.dir, "floor.sock")
    floor = subprocess.Popen([FLOOR, floor_sock, os.path.join(d.models_dir, "a.safetensors")])
    try:
        d.client().ok("load", model="a")
        wait_until(lambda: os.path.exists(floor_sock), what="the floor's socket")
        compare(d, floor_sock)
        subs = subscribers(d)
        memory(d, subs)
    finally:
        floor.kill()
        floor.wait()
        d.stop()


if __name__ == "__main__":
    main()
