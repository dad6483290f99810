"""Nothing lost: clients send thousands of mixed requests while workers are
killed at random, models switched and the configuration reloaded; every
request gets exactly one final reply of an allowed kind, every result is
right for the model that made it, every event names what it should, and
modeld's fds and memory come back to where they were. The strikes come as
the clients make progress, not by the clock: a slow machine makes the test
slow, never different."""
import os
import random
import signal
import socket
import threading
import unittest

from harness import DEADLINE, DaemonTest, perm_tokens, pid_alive, wait_until

MODELS = {"a": (16, 3, 1), "b": (32, 5, 2)}
ALLOWED_ERRORS = {"worker_crashed", "cancelled", "superseded", "timeout", "busy", "not_ready",
                  "not_loaded"}
CLIENTS = 4
REQUESTS = 700          # per client
WINDOW = 24             # requests in flight per client
STRIKE_EVERY = (20, 120)    # final replies the clients get between two strikes
HANG = 900              # seconds after which a client that has not finished is taken to hang


def proc_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Chaos(DaemonTest):
    models = {name: ("--n", n, "--a", a, "--c", c) for name, (n, a, c) in MODELS.items()}
    # the exclusive device makes gpu events, which name it: a reload replaces the strings they come from
    config = ("[device grp]\nexclusive = yes\n"
              "[slot cpu]\nautoload = yes\nrestart_backoff_min = 0.01\nrestart_backoff_max = 0.05\n"
              "restart_limit = 1000\nrestart_window = 1\ndrain_timeout = 0.5\nmax_queue = 1000\nlock = grp\n")

    def setUp(self):
        super().setUp()
        self.finals = 0
        self.finals_lock = threading.Lock()

    def run_client(self, seed, results):
        rnd = random.Random(seed)
        c = self.d.client()
        sent, finals, outstanding, bad = {}, {}, [], []
        next_i = 0
        while next_i < REQUESTS or outstanding:
            while next_i < REQUESTS and len(outstanding) < WINDOW:
                next_i += 1
                kind = rnd.random()
                infers = [i for i in outstanding if sent[i]["op"] == "infer"]
                if kind < 0.05 and infers:
                    msg = {"op": "cancel", "target": rnd.choice(infers)}
                elif kind < 0.10:
                    msg = {"op": "status"}
                elif kind < 0.13:
                    msg = {"op": "load", "model": rnd.choice(list(MODELS)), "wait": rnd.random() < 0.5}
                else:
                    msg = {"op": "infer", "input": [rnd.randrange(8)], "max_tokens": rnd.randrange(1, 20),
                           "stream": rnd.random() < 0.3, "wait_ms": 20000}
                    if rnd.random() < 0.8:
                        msg["model"] = rnd.choice(list(MODELS))
                    else:
                        msg["slot"] = "cpu"
                rid = c.request(**msg)
                sent[rid] = msg
                outstanding.append(rid)
            m = c.recv()
            if "event" in m:
                continue
            rid = m["id"]
            if "chunk" in m:
                continue
            if rid in finals:
                bad.append("second final reply to %d: %r" % (rid, m))
            finals[rid] = m
            with self.finals_lock:
                self.finals += 1
            outstanding.remove(rid)
        # nothing further may come: exactly one final reply each
        c.sock.settimeout(0.3)
        try:
            extra = c.recv()
            bad.append("unexpected frame after the last reply: %r" % extra)
        except (socket.timeout, OSError):
            pass
        c.close()
        results.append((sent, finals, bad))

    def progress_by(self, n, stop):
        """Waits until the clients have had n more final replies (or the run is over)."""
        with self.finals_lock:
            goal = self.finals + n
        while not stop.is_set():
            with self.finals_lock:
                if self.finals >= goal:
                    return
            stop.wait(0.01)

    def chaos(self, stop, pids, bad):
        rnd = random.Random(7)
        c = self.d.client()
        c.ok("subscribe")
        while not stop.is_set():
            st = c.ok("status", slot="cpu")["slots"][0]
            if st["pid"]:
                pids.add(st["pid"])
            # Strike only a ready slot, so that every strike costs one recovery and the
            # clients make progress however slow a worker is to start (sanitizer builds).
            if st["state"] != "ready":
                stop.wait(0.01)
                continue
            strike = rnd.random()
            if strike < 0.4:
                try:
                    os.kill(st["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
            elif strike < 0.8:
                c.ok("load", model=rnd.choice(list(MODELS)), wait=False)
            else:
                c.ok("reload")
            bad += ["an event names the wrong device: %r" % e for e in c.events
                    if e["event"] == "gpu" and e.get("device") != "grp"]
            c.events.clear()
            self.progress_by(rnd.randint(*STRIKE_EVERY), stop)
        c.close()

    def check(self, sent, finals):
        for rid, msg in sent.items():
            self.assertIn(rid, finals, "no final reply to %r" % msg)
            r = finals[rid]
            if not r["ok"]:
                self.assertIn(r["error"]["code"], ALLOWED_ERRORS, (msg, r))
                continue
            if msg["op"] == "infer":
                model = r["model"]
                if "model" in msg:
                    self.assertEqual(model, msg["model"])
                n, a, c = MODELS[model]
                want = perm_tokens(n, a, c, msg["input"][-1], msg["max_tokens"])
                if r["finish_reason"] == "cancelled":     # stopped while it ran: what it made
                    want = want[:len(r["tokens"])]
                self.assertEqual(r["tokens"], want, (msg, r))

    def test_nothing_is_lost(self):
        pid = self.d.proc.pid
        c = self.d.client()
        c.ok("load", model="a")
        c.ok("infer", model="a", input=[1], max_tokens=1)
        fds0, rss0 = proc_fds(pid), proc_rss_kib(pid)

        results, pids, stop, strange = [], set(), threading.Event(), []
        chaos = threading.Thread(target=self.chaos, args=(stop, pids, strange))
        clients = [threading.Thread(target=self.run_client, args=(seed, results)) for seed in range(CLIENTS)]
        # One more client goes away mid-flight: its requests are cancelled, not answered.
        quitter = self.d.client()
        for i in range(50):
            quitter.request("infer", model="b", input=[i % 8], max_tokens=5, stream=True)
        chaos.start()
        for t in clients:
            t.start()
        quitter.close()
        for t in clients:
            t.join(timeout=HANG)
            self.assertFalse(t.is_alive(), "a client hangs")
        stop.set()
        chaos.join()
        self.assertEqual(strange, [])

        total = served = 0
        for sent, finals, bad in results:
            self.assertEqual(bad, [])
            self.check(sent, finals)
            total += len(sent)
            served += sum(1 for i, m in sent.items() if m["op"] == "infer" and finals[i]["ok"])
        self.assertEqual(total, CLIENTS * REQUESTS)
        # The chaos was real, and most work still got done.
        self.assertGreater(len(pids), 5, "too few workers were replaced")
        self.assertGreater(served, total // 2, "fewer than half the requests were served")

        # Settled: one worker, ready; fds and memory back near where they were.
        c.ok("load", model="a")
        wait_until(lambda: proc_fds(pid) <= fds0, what="fds back to %d (now %d)" % (fds0, proc_fds(pid)))
        if not os.environ.get("MODELD_TEST_SANITIZED"):     # ASan's quarantine holds freed memory
            self.assertLess(proc_rss_kib(pid) - rss0, 16 * 1024, "RSS grew by more than 16 MiB")
        pids.update(self.d.workers())
        self.assertEqual(self.d.stop(), 0)
        self.assertEqual([p for p in pids if pid_alive(p)], [])


if __name__ == "__main__":
    unittest.main()
