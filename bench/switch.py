"""bench-switch: the phases of a switch in modeld, beside the same costs raw.

modeld, on cuda:0, switches N times between two fixtures of BENCH_BYTES;
the state events' timestamps give, per switch: old worker out (switching ->
loading: stop, exit, reap, spawn), load (loading -> warming), warmup (warming
-> ready). Raw, outside modeld: a bare process holding the same memory, from
kill to reaped (bench_load --hold), and a bare worker's CUDA start
(modeld-worker --probe). Where no GPU is usable it says so and exits 0.
"""
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import BUILD, Daemon  # noqa: E402

N = int(os.environ.get("BENCH_SWITCHES", "5"))
BYTES = int(os.environ.get("BENCH_BYTES", str(2 << 30)))
BENCH_LOAD = os.path.join(BUILD, "bench_load")


def raw_exit_ms():
    p = subprocess.Popen([BENCH_LOAD, "--hold", str(BYTES)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    if p.stdout.readline().strip() != "ready":
        p.kill()
        p.wait()
        return None
    t0 = time.monotonic()
    p.send_signal(signal.SIGKILL)
    p.wait()
    return (time.monotonic() - t0) * 1000


def raw_start_ms():
    t0 = time.monotonic()
    subprocess.run([os.path.join(BUILD, "modeld-worker"), "--probe"], capture_output=True)
    return (time.monotonic() - t0) * 1000


def main():
    out = subprocess.run([BENCH_LOAD, "--hold", "0"], input="", capture_output=True, text=True).stdout
    if "no GPU" in out:
        print("bench-switch: " + out.strip().split(": ", 1)[1])
        return
    models = {m: ("--n", 64, "--a", 5, "--c", 1, "--pad", BYTES, "--random-pad", i + 1)
              for i, m in enumerate(("x", "y"))}
    d = Daemon("[slot gpu]\ndevice = cuda:0\n", models)
    try:
        c = d.client()
        c.ok("load", model="x")
        c.ok("subscribe", events=["state"])
        phases = {"old worker out + new spawned": [], "load": [], "warmup": [], "switch total": []}
        for i in range(N):
            c.ok("load", model="y" if i % 2 == 0 else "x")
            evs = c.events_until(lambda e: e["state"] == "ready")
            ts = {e["state"]: e["ts_ms"] for e in evs}
            phases["old worker out + new spawned"].append(ts["loading_model"] - ts["switching_model"])
            phases["load"].append(ts.get("warming_up", ts["ready"]) - ts["loading_model"])
            phases["warmup"].append(ts["ready"] - ts.get("warming_up", ts["ready"]))
            phases["switch total"].append(ts["ready"] - ts["switching_model"])
    finally:
        d.stop()
    print("switch phases in modeld (%d switches, %.1f GiB each, median ms):" % (N, BYTES / (1 << 30)))
    for name, v in phases.items():
        print("  %-30s %8.1f" % (name, statistics.median(v)))
    exits = [x for x in (raw_exit_ms() for _ in range(3)) if x is not None]
    starts = [raw_start_ms() for _ in range(3)]
    print("raw, outside modeld (median ms):")
    if exits:
        print("  %-30s %8.1f" % ("process holding it: kill->reap", statistics.median(exits)))
    print("  %-30s %8.1f" % ("worker CUDA start (probe)", statistics.median(starts)))


if __name__ == "__main__":
    main()
