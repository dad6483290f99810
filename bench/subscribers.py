"""bench-subscribers: modeld's memory with many subscribers that never read.

1,000 clients subscribe to every event and never read; another client
switches one slot between two reference models 300 times. Prints modeld's
resident memory before and after: what the subscribers owe is bounded
(docs/protocol.md, Backpressure), so it must stay far below 1,000 times
what 300 switches' events would come to.
"""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import Daemon  # noqa: E402

SUBSCRIBERS = int(os.environ.get("BENCH_SUBSCRIBERS", "1000"))
SWITCHES = int(os.environ.get("BENCH_SWITCHES", "300"))


def rss_mb(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, SUBSCRIBERS * 2 + 256), hard))
    cfg = "[modeld]\nmax_clients = %d\nmax_clients_per_uid = %d\nclient_idle_timeout = 0\n" % (
        SUBSCRIBERS + 64, SUBSCRIBERS + 64)
    d = Daemon(cfg, {"a": ("--n", 16, "--a", 3, "--c", 1), "b": ("--n", 32, "--a", 5, "--c", 2)})
    try:
        c = d.client()
        for _ in range(SUBSCRIBERS):
            d.client().ok("subscribe")
        before = rss_mb(d.proc.pid)
        start = time.monotonic()
        for i in range(SWITCHES):
            c.ok("load", model="ab"[i % 2])
        took = time.monotonic() - start
        print("%d subscribers that never read, %d switches in %.1f s" % (SUBSCRIBERS, SWITCHES, took))
        print("modeld RSS: %.1f MB before, %.1f MB after" % (before, rss_mb(d.proc.pid)))
    finally:
        d.stop()


if __name__ == "__main__":
    main()
