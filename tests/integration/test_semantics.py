"""The request semantics operators rely on: what waits, what fails, and why."""
import os
import signal
import struct
import subprocess
import time
import unittest

from harness import (BUILD, GATED_WORKER, DaemonTest, gated_worker, open_gate, perm_tokens, pid_alive,
                     wait_until)

A = ("--n", 16, "--a", 3, "--c", 1)
B = ("--n", 32, "--a", 5, "--c", 2)
BIG = ("--n", 8, "--a", 3, "--c", 1)          # loaded by a gated worker: as slowly as a test needs
GATED = "[modeld]\nworker = @DIR@/%s\n" % GATED_WORKER
HUGE = ("--n", 8, "--a", 3, "--c", 1, "--pad", 8 * 10**12)    # sparse: more than this host has


def status(c):
    return c.ok("status", slot="cpu")["slots"][0]


def hold_loading(test, c):
    """Starts loading `big` with the gate closed: the slot stays in loading_model until
    open_gate(test.d)."""
    c.ok("load", model="big", wait=False)
    wait_until(lambda: status(c)["state"] == "loading_model", what="big loading")


class Waiting(DaemonTest):
    models = {"a": A, "big": BIG}
    files = {GATED_WORKER: gated_worker()}
    config = GATED + "[slot cpu]\nmax_queue = 3\nheartbeat_timeout = 30\n"

    def test_a_request_waits_for_ready(self):
        c = self.d.client()
        hold_loading(self, c)
        rid = c.request("infer", model="big", input=[1], max_tokens=3, wait_ms=60000)
        wait_until(lambda: status(self.d.client())["queue"] == 1, what="the request to queue")
        open_gate(self.d)
        r = c.reply(rid)
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["tokens"], perm_tokens(8, 3, 1, 1, 3))

    def test_wait_ms_bounds_the_wait(self):
        c = self.d.client()
        hold_loading(self, c)
        start = time.monotonic()
        r = c.call("infer", model="big", input=[1], max_tokens=3, wait_ms=200)
        self.assertEqual(r["error"]["code"], "timeout")
        self.assertIn("loading_model", r["error"]["message"])
        self.assertGreaterEqual(time.monotonic() - start, 0.19)

    def test_wait_ms_zero_fails_at_once_naming_the_state(self):
        c = self.d.client()
        hold_loading(self, c)
        r = c.call("infer", model="big", input=[1], max_tokens=3, wait_ms=0)
        self.assertEqual(r["error"]["code"], "not_ready")
        self.assertIn("loading_model", r["error"]["message"])

    def test_the_queue_is_bounded(self):
        c = self.d.client()
        hold_loading(self, c)
        ids = [c.request("infer", model="big", input=[i], max_tokens=1, wait_ms=60000) for i in range(4)]
        self.assertEqual(c.reply(ids[3])["error"]["code"], "busy")
        open_gate(self.d)
        for i in range(3):       # the others are served, in order
            self.assertEqual(c.reply(ids[i])["tokens"], perm_tokens(8, 3, 1, i, 1))

    def test_a_queued_request_can_be_cancelled(self):
        c = self.d.client()
        hold_loading(self, c)
        rid = c.request("infer", model="big", input=[1], max_tokens=1, wait_ms=60000)
        cancel = c.call("cancel", target=rid)
        self.assertTrue(cancel["cancelled"])
        self.assertEqual(c.reply(rid)["error"]["code"], "cancelled")

    def test_bad_arguments_are_named(self):
        c = self.d.client()
        for args, says in (({"wait_ms": "soon"}, "wait_ms"), ({"gpu": "maybe"}, "gpu"),
                           ({"keep_alive_ms": -1}, "keep_alive_ms"),
                           ({"wait_ms": 10**12}, "wait_ms")):
            r = c.call("infer", model="a", input=[1], max_tokens=1, **args)
            self.assertEqual(r["error"]["code"], "bad_request", args)
            self.assertIn(says, r["error"]["message"])


class Autoload(DaemonTest):
    models = {"a": A, "b": B}
    config = "[slot cpu]\nautoload = yes\n"

    def test_infer_loads_the_model_it_names(self):
        c = self.d.client()
        self.assertEqual(c.ok("infer", model="a", input=[2], max_tokens=2)["tokens"],
                         perm_tokens(16, 3, 1, 2, 2))
        self.assertEqual(c.ok("infer", model="b", input=[2], max_tokens=2)["tokens"],
                         perm_tokens(32, 5, 2, 2, 2))
        self.assertEqual(status(c)["model"], "b")


class NoAutoload(DaemonTest):
    models = {"a": A}

    def test_infer_on_an_empty_slot_is_not_loaded(self):
        r = self.d.client().call("infer", model="a", input=[2], max_tokens=2)
        self.assertEqual(r["error"]["code"], "not_loaded")


class Coalescing(DaemonTest):
    models = {"a": A, "b": B, "big": BIG}
    files = {GATED_WORKER: gated_worker()}
    config = GATED + "[slot cpu]\nswitch_debounce = 0.3\nheartbeat_timeout = 30\n"

    def test_a_burst_of_loads_costs_one_load(self):
        c = self.d.client()
        open_gate(self.d)
        c.ok("load", model="a")
        c.ok("subscribe", events=["job", "state"])
        ids = [c.request("load", model=m) for m in ("b", "a", "b", "a", "b")]
        replies = [c.reply(i) for i in ids]
        self.assertEqual([r.get("error", {}).get("code") for r in replies[:4]], ["superseded"] * 4)
        self.assertTrue(replies[4]["ok"])
        evs = c.events_until(lambda e: e["event"] == "state" and e["state"] == "ready")
        running = [e for e in evs if e["event"] == "job" and e["status"] == "running"]
        self.assertEqual([e["model"] for e in running], ["b"])
        self.assertEqual(status(c)["model"], "b")

    def test_a_load_of_the_loading_model_joins_it(self):
        c = self.d.client()
        first = c.request("load", model="big")
        second = c.request("load", model="big")
        wait_until(lambda: status(self.d.client())["state"] == "loading_model", what="big loading")
        open_gate(self.d)
        r1, r2 = c.reply(first), c.reply(second)
        self.assertTrue(r1["ok"] and r2["ok"], (r1, r2))
        self.assertEqual(r1["job"], r2["job"])


class Superseding(DaemonTest):
    models = {"a": A, "big": BIG}
    files = {GATED_WORKER: gated_worker()}
    config = GATED

    def test_a_superseded_load_is_aborted(self):
        c = self.d.client()
        slow = c.request("load", model="big")
        wait_until(lambda: status(self.d.client())["state"] == "loading_model", what="big loading")
        pid = status(c)["pid"]
        fast = c.request("load", model="a")
        self.assertEqual(c.reply(slow)["error"]["code"], "superseded")
        wait_until(lambda: not pid_alive(pid), what="the superseded worker to be gone")
        open_gate(self.d)
        self.assertEqual(c.reply(fast)["model"], "a")


class Draining(DaemonTest):
    models = {"a": A, "b": B}
    config = "[slot cpu]\ndrain_timeout = 1\nstop_timeout = 0.5\nheartbeat_timeout = 30\n"

    def running_stream(self, c):
        """A stream held running by a stopped worker. Returns (request id, pid)."""
        c.ok("load", model="a")
        pid = status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)
        rid = c.request("infer", model="a", input=[1], max_tokens=4)
        wait_until(lambda: status(self.d.client())["active"] == 1, what="the stream to start")
        return rid, pid

    def test_a_switch_waits_for_running_streams(self):
        c = self.d.client()
        rid, pid = self.running_stream(c)
        c.ok("subscribe", events=["state"])
        load = c.request("load", model="b")
        c.wait_state("switching_model")
        queued = c.request("infer", input=[3], max_tokens=2, slot="cpu")   # behind the switch
        self.assertEqual(status(self.d.client())["state"], "switching_model")
        os.kill(pid, signal.SIGCONT)
        self.assertEqual(c.reply(rid)["tokens"], perm_tokens(16, 3, 1, 1, 4))
        self.assertTrue(c.reply(load)["ok"])
        self.assertEqual(c.reply(queued)["tokens"], perm_tokens(32, 5, 2, 3, 2))

    def test_drain_timeout_cancels_streams(self):
        c = self.d.client()
        rid, pid = self.running_stream(c)
        start = time.monotonic()
        load = c.request("load", model="b")
        self.assertEqual(c.reply(rid)["error"]["code"], "cancelled")
        self.assertGreaterEqual(time.monotonic() - start, 0.9)
        self.assertTrue(c.reply(load)["ok"])
        self.assertFalse(pid_alive(pid))

    def test_force_cancels_at_once(self):
        c = self.d.client()
        rid, pid = self.running_stream(c)
        r = c.ok("unload", slot="cpu", force=True)
        self.assertEqual(r["state"], "empty")
        self.assertEqual(c.reply(rid)["error"]["code"], "cancelled")


class IdleEviction(DaemonTest):
    models = {"a": A, "b": B}
    config = "[slot cpu]\nidle_timeout = 0.3\n[model b]\npath = models/b.safetensors\nidle_timeout = 60\n"

    def test_an_idle_model_is_unloaded(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        c.ok("load", model="a")
        c.ok("infer", model="a", input=[1], max_tokens=1)
        t0 = time.monotonic()
        c.wait_state("empty")
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(self.d.workers(), [])

    def test_keep_alive_extends_it(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        c.ok("load", model="a")
        c.ok("infer", model="a", input=[1], max_tokens=1, keep_alive_ms=1500)
        t0 = time.monotonic()
        c.wait_state("empty")
        self.assertGreaterEqual(time.monotonic() - t0, 1.4)

    def test_the_models_timeout_wins(self):
        c = self.d.client()
        c.ok("load", model="b")
        c.ok("subscribe", events=["state"])
        c.ok("infer", model="b", input=[1], max_tokens=1)
        with self.assertRaises(AssertionError):
            c.wait_state("empty", timeout=1.0)


class Fallback(DaemonTest):
    models = {"a": A}
    files = {"models/broken.safetensors": b"\xff" * 64}
    config = "[slot cpu]\nfallback_model = a\n"

    def test_a_failed_load_falls_back(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        r = c.call("load", model="broken")
        self.assertEqual(r["error"]["code"], "load_failed")
        evs = c.events_until(lambda e: e["state"] == "ready")
        states = [e["state"] for e in evs]
        self.assertEqual(states[:3], ["switching_model", "loading_model", "error"])
        self.assertEqual(states[-3:], ["loading_model", "warming_up", "ready"])
        self.assertEqual(evs[-1]["model"], "a")


def gguf_header(arch, **numbers):
    """A GGUF file of no tensors: its architecture and u64 numbers under "<arch>.<key>"."""
    def string(s):
        return struct.pack("<Q", len(s)) + s.encode()
    kvs = string("general.architecture") + struct.pack("<I", 8) + string(arch)
    for key, value in numbers.items():
        kvs += string(arch + "." + key) + struct.pack("<IQ", 10, value)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, 1 + len(numbers)) + kvs


class MemoryCheck(DaemonTest):
    models = {"a": A, "huge": HUGE}
    # its KV cache, 4096 tokens x 4 generations x 2^49 layers x (1 + 1) x 2 bytes, is 2^66 bytes: 0 if it wrapped
    files = {"models/wraps.gguf": gguf_header("llama", block_count=1 << 49, embedding_length=1,
                                              **{"attention.head_count": 1})}
    config = "[slot cpu]\nmemory_check = refuse\n"

    def test_refuse(self):
        r = self.d.client().call("load", model="huge")
        self.assertEqual(r["error"]["code"], "insufficient_memory")
        self.assertIn("needs about", r["error"]["message"])
        self.assertEqual(self.d.workers(), [])

    def test_an_estimate_too_large_to_count_is_refused(self):
        r = self.d.client().call("load", model="wraps")
        self.assertEqual(r["error"]["code"], "insufficient_memory", r)
        self.assertIn("wraps needs more than 16 EiB", r["error"]["message"])
        self.assertEqual(self.d.workers(), [])


class MemoryWarn(DaemonTest):
    models = {"a": A, "huge": HUGE}

    def test_warn_goes_on_with_an_advisory(self):
        c = self.d.client()
        c.ok("subscribe", events=["advisory", "state"])
        c.ok("load", model="huge", wait=False)
        e = c.wait_event(lambda e: e["event"] == "advisory")
        self.assertEqual(e["model"], "huge")
        self.assertIn("needs about", e["message"])
        c.wait_state("loading_model")
        c.ok("unload", slot="cpu")


class DeviceLock(DaemonTest):
    """Slots g1 and g2 share the lock `grp`, as two slots on one GPU would."""
    models = {"a": A, "b": B}
    config = ("[device grp]\nexclusive = yes\n"
              "[slot g1]\nlock = grp\ncpu_fallback = c\nheartbeat_timeout = 30\n"
              "[slot g2]\nlock = grp\nheartbeat_timeout = 30\n"
              "[slot c]\n")

    def hold(self, c, slot, model):
        """A request on slot that holds the lock: its worker is stopped mid-request."""
        c.ok("load", model=model, slot=slot)
        pid = c.ok("status", slot=slot)["slots"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)
        self.addCleanup(lambda: pid_alive(pid) and os.kill(pid, signal.SIGCONT))
        rid = c.request("infer", slot=slot, input=[1], max_tokens=2)
        c.wait_event(lambda e: e["event"] == "gpu" and e["slot"] == slot and e["op"] == "infer"
                     and e["status"] == "started")
        return rid, pid

    def test_one_operation_at_a_time_in_order(self):
        c = self.d.client()
        c.ok("load", model="b", slot="g2")
        c.ok("subscribe", events=["gpu"])
        first, pid = self.hold(c, "g1", "a")
        second = c.request("infer", slot="g2", input=[2], max_tokens=2, gpu="wait")
        os.kill(pid, signal.SIGCONT)
        self.assertEqual(c.reply(first)["tokens"], perm_tokens(16, 3, 1, 1, 2))
        self.assertEqual(c.reply(second)["tokens"], perm_tokens(32, 5, 2, 2, 2))
        evs = [(e["slot"], e["op"], e["status"]) for e in c.events_until(
            lambda e: e["slot"] == "g2" and e["op"] == "infer" and e["status"] == "completed")]
        self.assertEqual(evs, [("g2", "infer", "waiting"), ("g1", "infer", "completed"),
                               ("g2", "infer", "started"), ("g2", "infer", "completed")])

    def test_gpu_events_name_their_device_after_a_reload(self):
        c = self.d.client()
        c.ok("load", model="a", slot="g1")
        c.ok("reload")          # the running configuration's strings are replaced
        c.ok("subscribe", events=["gpu"])
        c.ok("infer", slot="g1", input=[1], max_tokens=2)
        evs = c.events_until(lambda e: e["op"] == "infer" and e["status"] == "completed")
        self.assertEqual({e["device"] for e in evs}, {"grp"})

    def test_a_load_waits_for_the_lock(self):
        c = self.d.client()
        c.ok("subscribe", events=["gpu"])
        first, pid = self.hold(c, "g1", "a")
        load = c.request("load", model="b", slot="g2")
        e = c.wait_event(lambda e: e["slot"] == "g2")
        self.assertEqual((e["op"], e["status"]), ("load", "waiting"))
        self.assertEqual(c.ok("status", slot="g2")["slots"][0]["pid"], None)   # no worker yet
        os.kill(pid, signal.SIGCONT)
        self.assertTrue(c.reply(load)["ok"])
        c.reply(first)

    def fallback_holds(self, c, model):
        """c's fallback slot holds model, g1 holds a, and g2 holds the lock. Returns hold's (id, pid)."""
        c.ok("load", model=model, slot="c")
        c.ok("load", model="a", slot="g1")
        c.ok("subscribe", events=["gpu"])
        return self.hold(c, "g2", "b")

    def test_try_goes_to_the_cpu_fallback_or_fails_busy(self):
        c = self.d.client()
        first, pid = self.fallback_holds(c, "a")
        r = c.ok("infer", slot="g1", input=[3], max_tokens=2, gpu="try")
        self.assertEqual(r["slot"], "c")
        self.assertEqual(r["tokens"], perm_tokens(16, 3, 1, 3, 2))
        r = c.call("infer", slot="g2", input=[3], max_tokens=2, gpu="try")
        self.assertEqual(r["error"]["code"], "busy")
        os.kill(pid, signal.SIGCONT)
        c.reply(first)

    def test_try_is_never_served_by_a_fallback_with_another_model(self):
        c = self.d.client()
        first, pid = self.fallback_holds(c, "b")
        for args in ({"slot": "g1"}, {"model": "a", "slot": "g1"}):
            r = c.call("infer", input=[3], max_tokens=2, gpu="try", **args)
            self.assertEqual(r["error"]["code"], "busy", args)
        os.kill(pid, signal.SIGCONT)
        c.reply(first)


class UnusableDevice(DaemonTest):
    models = {"a": A}
    config = "[slot g]\ndevice = cuda:0\nrestart_backoff_min = 0.05\n"

    def test_a_device_without_its_engine_is_unavailable_and_retried(self):
        c = self.assert_unavailable_and_retried("a", "cuda")
        r = c.call("infer", model="a", input=[1], max_tokens=1, wait_ms=0)
        self.assertEqual(r["error"]["code"], "not_ready")
        self.assertIn("service_unavailable", r["error"]["message"])
        c.ok("unload", slot="g")
        wait_until(lambda: self.d.workers() == [], what="no worker left")

    def test_devices_lists_the_configured_gpu_as_not_found(self):
        devs = {d["name"]: d for d in self.d.client().ok("devices")["devices"]}
        self.assertEqual(devs["cpu"]["kind"], "cpu")
        self.assertEqual(devs["cuda:0"]["kind"], "cuda")
        probed = subprocess.run([os.path.join(BUILD, "modeld-worker"), "--probe"],
                                capture_output=True, text=True, timeout=30).stdout
        if "cuda:0" not in probed:       # no GPU here: nothing is known of it
            self.assertEqual((devs["cuda:0"]["total_bytes"], devs["cuda:0"]["free_bytes"]), (0, 0))
            self.assertIsNone(devs["cuda:0"]["label"])


if __name__ == "__main__":
    unittest.main()


class MaxTokensDefault(DaemonTest):
    """A request without max_tokens generates to the end of its text or of the context, as OpenAI's API
    and llama.cpp's server do, unless the model's config sets a default."""
    models = {"a": A}
    config = ("[modeld]\nhttp = 127.0.0.1:0\n[slot cpu]\nautoload = yes\n"
              "[model capped]\npath = @DIR@/models/a.safetensors\nmax_tokens = 7\n")

    def test_no_max_tokens_runs_to_the_context_or_the_configured_default(self):
        from test_http import port_of, post
        c = self.d.client()
        r = c.ok("infer", model="a", input=[1, 2])
        self.assertEqual((r["finish_reason"], r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"]),
                         ("length", 4096))          # a reference model's context
        self.assertEqual(r["tokens"], perm_tokens(16, 3, 1, 2, 4094))
        self.assertEqual(len(c.ok("infer", model="capped", input=[1])["tokens"]), 7)
        self.assertEqual(len(c.ok("infer", model="capped", input=[1], max_tokens=9)["tokens"]), 9)
        self.assertEqual(c.call("infer", model="a", input=[1] * 4096)["error"]["code"], "bad_request")
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        status, r = post(port, "/v1/completions", {"model": "capped", "prompt": [1]})
        self.assertEqual((status, r["usage"]["completion_tokens"]), (200, 7))
        status, r = post(port, "/v1/completions", {"model": "a", "prompt": [1]})
        self.assertEqual((status, r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"]),
                         (200, 4095, "length"))
