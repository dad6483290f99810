"""Several inferences of one model at once (parallel = N): the worker takes up
to N, the rest wait in the slot's queue; each request gets what it gets
alone; cancel, a crash and a drain act on each request as they would alone.

The worker is held with SIGSTOP while requests are sent, so that what it
holds when it goes on is known, not a matter of timing."""
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import DaemonTest, perm_tokens, pid_alive, wait_until
from test_http import port_of
from test_llama import HAVE, MKGGUF, PROMPT, SLOW, VOCAB

FIX = tempfile.mkdtemp(prefix="modeld-parallel-")


def setUpModule():
    if HAVE:
        subprocess.run([MKGGUF, VOCAB, os.path.join(FIX, "chat.gguf"), "--seed", "1"], check=True, timeout=SLOW)


def tearDownModule():
    shutil.rmtree(FIX, ignore_errors=True)

REF = ("--n", 64, "--a", 5, "--c", 3)


def running(c, slot):
    s = [x for x in c.ok("status")["slots"] if x["name"] == slot][0]
    return s["active"], s["queue"]


class Held:
    """The slot's worker stopped: requests pile up where the slot puts them."""

    def __init__(self, test):
        self.pid = test.d.workers()[0]

    def __enter__(self):
        os.kill(self.pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc):
        if pid_alive(self.pid):
            os.kill(self.pid, signal.SIGCONT)


class Reference(DaemonTest):
    config = """
[slot main]
device = cpu
[model ref]
path = @DIR@/models/ref.safetensors
parallel = 3
"""
    models = {"ref": REF}

    def loaded(self):
        c = self.d.client()
        c.ok("load", model="ref")
        return c

    def send(self, c, starts, count=40, stream=False):
        return [c.request("infer", model="ref", input=[s], max_tokens=count, stream=stream) for s in starts]

    def wait_running(self, c, want):
        wait_until(lambda: running(c, "main") == want, what="%d at the worker, %d queued" % want)
        # A status read in the same turn as the last request may be answered before that request is
        # written to the worker (it goes once the turn's reads are done): one more round trip, and it is.
        c.ok("status")

    def test_up_to_parallel_at_the_worker_each_with_its_own_tokens(self):
        c = self.loaded()
        starts = [1, 2, 3, 4, 5]
        with Held(self):
            rids = self.send(c, starts)
            self.wait_running(c, (3, 2))       # three at the worker, two wait
        for s, rid in zip(starts, rids):
            r = c.reply(rid)
            self.assertEqual(r["tokens"], perm_tokens(64, 5, 3, s, 40))
            self.assertEqual(r["finish_reason"], "length")
        self.assertEqual(running(c, "main"), (0, 0))

    def test_the_streams_run_together(self):
        c = self.loaded()
        with Held(self):
            rids = self.send(c, [7, 8, 9], count=50, stream=True)
            self.wait_running(c, (3, 0))
        firsts, ends = {}, []
        for _ in range(10000):
            m = c.recv()
            if "chunk" in m:
                firsts.setdefault(m["id"], len(ends))
            elif m.get("id") in rids:
                ends.append(m["id"])
                if len(ends) == 3:
                    break
        # every stream had begun before the first of them ended
        self.assertEqual(sorted(firsts), sorted(rids))
        self.assertTrue(all(v == 0 for v in firsts.values()), firsts)

    def test_cancel_ends_one_and_leaves_the_others(self):
        c = self.loaded()
        with Held(self):
            rids = self.send(c, [1, 2, 3], count=60)
            self.wait_running(c, (3, 0))
            c.ok("cancel", target=rids[1])
        r = [c.reply(rid) for rid in rids]
        self.assertEqual(r[1]["finish_reason"], "cancelled")
        self.assertEqual(r[1]["tokens"], perm_tokens(64, 5, 3, 2, 60)[:len(r[1]["tokens"])])
        for i in (0, 2):
            self.assertEqual(r[i]["tokens"], perm_tokens(64, 5, 3, i + 1, 60))

    def test_a_crash_ends_those_at_the_worker_and_the_queue_goes_on(self):
        c = self.loaded()
        c.ok("subscribe", events=["state"])
        with Held(self) as h:
            rids = self.send(c, [1, 2, 3, 4])
            self.wait_running(c, (3, 1))
            os.kill(h.pid, signal.SIGKILL)
        for rid in rids[:3]:
            self.assertEqual(c.reply(rid)["error"]["code"], "worker_crashed")
        r = c.reply(rids[3])                    # it waited, and ran on the restarted worker
        self.assertEqual(r["tokens"], perm_tokens(64, 5, 3, 4, 40))


@unittest.skipUnless(HAVE, "skipped: the llama engine is not built")
class Llama(DaemonTest):
    config = """
[modeld]
http = 127.0.0.1:0
[slot cpu]
device = cpu
heartbeat_timeout = 30
[model chat]
path = {fix}/chat.gguf
threads = 2
[model one]
path = {fix}/chat.gguf
threads = 2
parallel = 1
""".format(fix=FIX)
    models = {}

    def test_each_stream_gets_what_it_gets_alone(self):
        """Six requests on the default parallel of 4: four batched together, two joining as others end."""
        c = self.d.client()
        c.sock.settimeout(SLOW)
        c.ok("load", model="chat")
        prompts = [PROMPT, "Once upon a time", "In a hole in the ground there lived", "Hello",
                   "The capital of France is", "1, 2, 3,"]
        lengths = [24, 9, 17, 30, 5, 12]
        alone = [c.ok("infer", model="chat", prompt=p, max_tokens=n, temperature=0)["tokens"]
                 for p, n in zip(prompts, lengths)]
        with Held(self):
            rids = [c.request("infer", model="chat", prompt=p, max_tokens=n, temperature=0, stream=True)
                    for p, n in zip(prompts, lengths)]
            wait_until(lambda: running(c, "cpu") == (4, 2), timeout=SLOW, what="four at the worker")
        for rid, want in zip(rids, alone):
            chunks = []
            r = c.reply(rid, chunks)
            self.assertEqual(r["tokens"], want)
            self.assertEqual([t for ch in chunks for t in ch["tokens"]], want)
        # and one at a time where the model says so
        c.ok("load", model="one")
        with Held(self):
            rids = [c.request("infer", model="one", prompt=p, max_tokens=4, temperature=0) for p in prompts[:3]]
            wait_until(lambda: running(c, "cpu") == (1, 2), timeout=SLOW, what="one at the worker")
        for rid, p in zip(rids, prompts):
            self.assertEqual(c.reply(rid)["tokens"], alone[prompts.index(p)][:4])

    def test_streams_over_http_at_once(self):
        """OpenAI streams on several connections run together, each with the text it gets alone."""
        c = self.d.client()
        c.sock.settimeout(SLOW)
        c.ok("load", model="chat")
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        prompts = ["The quick brown fox", "Once upon a time", "Hello", "1, 2, 3,"]
        alone = [c.ok("infer", model="chat", prompt=p, max_tokens=10, temperature=0)["text"] for p in prompts]
        conns = []
        with Held(self):
            for p in prompts:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SLOW)
                conn.request("POST", "/v1/completions", body=json.dumps(
                    {"model": "chat", "prompt": p, "max_tokens": 10, "temperature": 0, "stream": True}),
                    headers={"Content-Type": "application/json"})
                conns.append(conn)
            wait_until(lambda: running(c, "cpu") == (4, 0), timeout=SLOW, what="four at the worker")
        for conn, want in zip(conns, alone):
            r = conn.getresponse()
            self.assertEqual(r.status, 200)
            events = [line[6:] for line in r.read().decode().split("\n") if line.startswith("data: ")]
            conn.close()
            self.assertEqual(events[-1], "[DONE]")
            self.assertEqual("".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]), want)


if __name__ == "__main__":
    unittest.main()
