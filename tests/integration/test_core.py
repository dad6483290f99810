"""modeld end to end on the cpu engine: loads, inference, switches, crashes, bad input."""
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import unittest

import msgpack

from harness import (DEADLINE, GATED_WORKER, MODELCTL, MODELD, Client, Daemon, DaemonTest, gated_worker,
                     open_gate, perm_tokens, pid_alive, wait_until)

A = ("--n", 16, "--a", 3, "--c", 1)
B = ("--n", 32, "--a", 5, "--c", 2)
BIG = ("--n", 8, "--a", 3, "--c", 1)    # loaded by a gated worker: as slowly as a test needs


def slot_status(c, slot="cpu"):
    return c.ok("status", slot=slot)["slots"][0]


class Inference(DaemonTest):
    models = {
        "a": A,
        "b": B,
        "h": ("--n", 24, "--a", 5, "--c", 7, "--dtype", "f16"),
        "bf": ("--n", 10, "--a", 3, "--c", 4, "--dtype", "bf16", "--eos", 9),
    }

    def test_load_then_infer_gives_the_permutation(self):
        c = self.d.client()
        for name, (n, a, cc) in {"a": (16, 3, 1), "b": (32, 5, 2), "h": (24, 5, 7)}.items():
            r = c.ok("load", model=name)
            self.assertEqual(r["model"], name)
            self.assertIsInstance(r["load_ms"], int)
            r = c.ok("infer", model=name, input=[4, 2], max_tokens=12)
            self.assertEqual(r["tokens"], perm_tokens(n, a, cc, 2, 12))
            self.assertEqual(r["model"], name)

    def test_eos_stops_generation(self):
        c = self.d.client()
        c.ok("load", model="bf")
        r = c.ok("infer", model="bf", input=[1], max_tokens=50)
        self.assertEqual(r["tokens"], perm_tokens(10, 3, 4, 1, 50, eos=9))
        self.assertEqual(r["tokens"], [7, 5])     # 1 -> 7 -> 5 -> 9, which ends it and is not sent
        self.assertEqual((r["finish_reason"], r["usage"]["completion_tokens"]), ("stop", 2))

    def test_streaming_sends_chunks_then_all_tokens(self):
        c = self.d.client()
        c.ok("load", model="a")
        chunks = []
        r = c.reply(c.request("infer", model="a", input=[5], max_tokens=7, stream=True), chunks)
        want = perm_tokens(16, 3, 1, 5, 7)
        self.assertEqual([t for ch in chunks for t in ch["tokens"]], want)
        self.assertEqual(r["tokens"], want)

    def test_pipelined_requests_each_get_one_reply(self):
        c = self.d.client()
        c.ok("load", model="a")
        ids = [c.request("infer", model="a", input=[i], max_tokens=3) for i in range(16)]
        ids.append(c.request("status"))
        ids.append(c.request("bogus_op"))
        replies = {i: c.reply(i) for i in ids}
        for i in range(16):
            self.assertEqual(replies[ids[i]]["tokens"], perm_tokens(16, 3, 1, i, 3))
        self.assertEqual(replies[ids[-1]]["error"]["code"], "unknown_op")
        c.sock.settimeout(0.2)
        with self.assertRaises(OSError):   # nothing further: exactly one reply each
            c.recv()

    def test_infer_outside_ready_fails_at_once(self):
        c = self.d.client()
        r = c.call("infer", model="a", input=[1], max_tokens=1)
        self.assertEqual(r["error"]["code"], "not_loaded")
        c.ok("load", model="a")
        r = c.call("infer", model="b", input=[1], max_tokens=1)
        self.assertEqual(r["error"]["code"], "not_loaded")
        r = c.call("infer", model="a", input=[99], max_tokens=1)
        self.assertEqual(r["error"]["code"], "bad_request")
        self.assertIn("99", r["error"]["message"])

    def test_bad_requests_name_the_argument(self):
        c = self.d.client()
        cases = [
            ({"op": "load"}, "bad_request", "model"),
            ({"op": "load", "model": 7}, "bad_request", "model"),
            ({"op": "load", "model": "nope"}, "unknown_model", "nope"),
            ({"op": "load", "model": "a", "slot": "x"}, "unknown_slot", "x"),
            ({"op": "infer", "model": "a", "input": "x", "max_tokens": 1}, "bad_request", "input"),
            ({"op": "infer", "model": "a", "input": [1], "max_tokens": -1}, "bad_request", "max_tokens"),
            ({"op": "infer", "model": "a", "input": [1], "max_tokens": 1, "stream": 1}, "bad_request", "stream"),
            ({"op": "hello", "proto": 2}, "unsupported_proto", "2"),
            ({"op": "hello", "proto": [2, 3]}, "unsupported_proto", "none of those"),
            ({"op": "hello"}, "bad_request", "proto"),
            ({"op": "hello", "proto": [1, "x"]}, "bad_request", "proto"),
            ({"op": "hello", "proto": []}, "bad_request", "proto"),
            ({"op": "hello", "proto": 1, "client": 5}, "bad_request", "client must be a string"),
            ({"op": "load", "model": "a\0b"}, "bad_request", "without NUL bytes"),
            ({"op": "subscribe", "events": ["nope"]}, "bad_request", "events"),
            ({"op": 5}, "bad_request", "op"),
        ]
        for msg, code, says in cases:
            r = c.call(**msg) if isinstance(msg["op"], str) else c.reply(c.request_raw(msg))
            self.assertEqual(r["error"]["code"], code, msg)
            self.assertIn(says, r["error"]["message"], msg)
        c.send({"id": 0, "op": "status"})
        r = c.reply(0)
        self.assertEqual(r["error"]["code"], "bad_request")

    def test_inventory(self):
        c = self.d.client()
        self.assertEqual(c.ok("hello", proto=1)["server"], "modeld")
        hello = c.ok("hello", proto=[3, 1])      # the versions the client speaks
        self.assertEqual(hello["proto"], 1)
        # one version for the binaries and the package: the changelog's
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "debian", "changelog")) as f:
            version = re.match(r"modeld \(([^)]+)\)", f.readline()).group(1)
        self.assertEqual(hello["version"], version)
        for prog in (MODELD, MODELCTL):
            out = subprocess.run([prog, "--version"], capture_output=True, text=True, check=True).stdout
            self.assertEqual(out, "%s %s\n" % (os.path.basename(prog), version))
        self.assertIn("text", hello["capabilities"])
        c.ok("load", model="a")
        models = {m["name"]: m for m in c.ok("models")["models"]}
        self.assertEqual(set(models), {"a", "b", "h", "bf"})
        self.assertEqual(models["a"]["bytes"], os.path.getsize(models["a"]["path"]))
        self.assertEqual(models["a"]["loaded_in"][0]["slot"], "cpu")
        self.assertEqual(models["a"]["loaded_in"][0]["pid"], slot_status(c)["pid"])
        self.assertEqual(models["b"]["loaded_in"], [])
        devs = c.ok("devices")["devices"]
        self.assertEqual(devs[0]["kind"], "cpu")
        self.assertGreater(devs[0]["total_bytes"], 0)


def _request_raw(self, msg):
    self.next_id += 1
    msg = dict(msg, id=self.next_id)
    self.send(msg)
    return self.next_id


Client.request_raw = _request_raw


class Lifecycle(DaemonTest):
    models = {"a": A, "b": B}

    def test_switch_events_in_order_and_old_worker_reaped_first(self):
        c = self.d.client()
        c.ok("load", model="a")
        old = slot_status(c)["pid"]
        c.ok("subscribe", events=["state"])
        rid = c.request("load", model="b")
        evs = c.events_until(lambda e: e["state"] == "ready", what="ready")
        states = [e["state"] for e in evs]
        self.assertEqual(states, ["switching_model", "unloading_model", "loading_model",
                                  "warming_up", "ready"])
        self.assertEqual(evs[0]["from"], "a")
        self.assertEqual(evs[0]["to"], "b")
        self.assertEqual(evs[1]["next"], "b")
        seqs = [e["seq"] for e in evs]
        self.assertEqual(seqs, sorted(set(seqs)))
        r = c.reply(rid)
        self.assertTrue(r["ok"])
        self.assertFalse(pid_alive(old))
        new = slot_status(c)["pid"]
        self.assertNotEqual(new, old)
        self.assertEqual(self.d.workers(), [new])
        # The supervisor logs the reaping of the old worker before it spawns the next.
        log = self.d.read_log()
        self.assertLess(log.index("worker %d (slot cpu) exited" % old),
                        log.index("worker %d loading b" % new))

    def test_unload_leaves_no_worker(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        r = c.ok("unload", slot="cpu")
        self.assertEqual(r["state"], "empty")
        self.assertFalse(pid_alive(pid))
        self.assertEqual(self.d.workers(), [])
        st = slot_status(c)
        self.assertEqual((st["state"], st["model"], st["pid"]), ("empty", None, None))

    def test_kill_while_ready_reconnects(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        c.ok("subscribe", events=["state"])
        os.kill(pid, signal.SIGKILL)
        e = c.wait_state("reconnecting")
        self.assertEqual(e["attempt"], 1)
        self.assertEqual(e["model"], "a")
        c.wait_state("ready")
        st = slot_status(c)
        self.assertNotEqual(st["pid"], pid)
        self.assertEqual(c.ok("infer", model="a", input=[3], max_tokens=4)["tokens"],
                         perm_tokens(16, 3, 1, 3, 4))

    def test_running_request_gets_worker_crashed(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)
        rid = c.request("infer", model="a", input=[1], max_tokens=5)
        wait_until(lambda: slot_status(self.d.client())["active"] == 1, what="request at worker")
        os.kill(pid, signal.SIGKILL)
        r = c.reply(rid)
        self.assertEqual(r["error"]["code"], "worker_crashed")

    def test_load_without_wait_reports_job_events(self):
        c = self.d.client()
        c.ok("subscribe", events=["job"])
        r = c.ok("load", model="a", wait=False)
        job = r["job"]
        self.assertGreater(job, 0)
        e = c.wait_event(lambda e: e["job"] == job and e["status"] == "done")
        self.assertEqual((e["op"], e["slot"], e["model"]), ("load", "cpu", "a"))

    def test_a_load_reports_its_last_progress_once(self):
        c = self.d.client()
        c.ok("subscribe", events=["progress", "state"])
        c.ok("load", model="a")
        c.ok("subscribe", events=["job"])       # its reply follows every progress event of the load
        done = [e for e in c.events if e["event"] == "progress" and e["bytes"] == e["total"]]
        self.assertEqual(len(done), 1, done)

    def test_restart_goes_through_service_restarting(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        c.ok("subscribe", events=["state"])
        c.ok("restart", slot="cpu")
        evs = c.events_until(lambda e: e["state"] == "ready")
        self.assertEqual([e["state"] for e in evs][0], "service_restarting")
        self.assertFalse(pid_alive(pid))

    def test_shutdown_leaves_no_worker(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        self.assertEqual(self.d.stop(), 0)
        self.assertFalse(pid_alive(pid))


def _safetensors(header, data=b""):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


_META = {"__metadata__": {"modeld.arch": "mlp-lm"}}
_MALFORMED = {
    "garbage": (b"\xff" * 64, "header length"),
    "long_header": (struct.pack("<Q", 5000) + b"{}", "longer than the file"),
    "not_json": (struct.pack("<Q", 4) + b"{{{{", "not valid JSON"),
    "missing": (_safetensors(dict(_META, tok_embed={"dtype": "F32", "shape": [2, 2],
                                                     "data_offsets": [0, 16]}), bytes(16)),
                "tensor w1 is missing"),
    "outside": (_safetensors(dict(_META, tok_embed={"dtype": "F32", "shape": [2, 2],
                                                     "data_offsets": [0, 16]}), bytes(8)),
                "outside the data"),
    "no_arch": (_safetensors({"tok_embed": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                             bytes(4)), "modeld.arch"),
}


class HeldLoads(DaemonTest):
    """Loads that last until the test opens the gate, however fast the machine."""
    models = {"big": BIG}
    files = {GATED_WORKER: gated_worker()}
    config = "[modeld]\nworker = @DIR@/%s\n[slot cpu]\nrestart_backoff_min = 0.01\n" % GATED_WORKER

    def loading(self, c):
        c.ok("subscribe", events=["state"])
        rid = c.request("load", model="big")
        c.wait_state("loading_model")
        return rid

    def test_kill_while_loading_reconnects(self):
        c = self.d.client()
        rid = self.loading(c)
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGKILL)
        c.wait_state("reconnecting")
        c.wait_state("loading_model")
        open_gate(self.d)
        c.wait_state("ready")
        r = c.reply(rid)      # the load request waited through the restart
        self.assertTrue(r["ok"], r)
        self.assertNotEqual(slot_status(c)["pid"], pid)

    def test_a_load_whose_last_requester_cancels_is_given_up(self):
        c = self.d.client()
        rid = self.loading(c)
        other = self.d.client()
        other_rid = other.request("load", model="big")     # joins it
        other.ok("status")                                  # answered after the load was taken
        self.assertTrue(c.call("cancel", target=rid)["cancelled"])
        self.assertEqual(c.reply(rid)["error"]["code"], "cancelled")
        self.assertEqual(slot_status(c)["state"], "loading_model")     # another still wants it
        self.assertTrue(other.call("cancel", target=other_rid)["cancelled"])
        c.wait_state("empty")
        wait_until(lambda: self.d.workers() == [], what="the loading worker to be gone")

    def test_unload_during_load_cancels_it(self):
        c = self.d.client()
        rid = self.loading(c)
        r = c.ok("unload", slot="cpu")
        self.assertEqual(r["state"], "empty")
        self.assertEqual(c.reply(rid)["error"]["code"], "cancelled")
        wait_until(lambda: self.d.workers() == [], what="the loading worker to be gone")


class ShutdownWhileLoading(DaemonTest):
    """A shutdown held open by a load that does not end until its worker is killed."""
    models = HeldLoads.models
    files = HeldLoads.files
    config = HeldLoads.config + "stop_timeout = 600\n"
    loading = HeldLoads.loading

    def test_every_client_is_told_and_the_socket_refuses_until_modeld_is_gone(self):
        c = self.d.client()
        rid = self.loading(c)
        pid = slot_status(c)["pid"]
        idle = self.d.client()
        idle.ok("status")
        self.d.proc.send_signal(signal.SIGTERM)
        self.assertEqual(c.reply(rid)["error"]["code"], "shutting_down")
        late = self.d.client()          # the socket is still there: a newcomer hears why it is refused
        self.assertEqual(late.recv()["error"]["code"], "shutting_down")
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(self.d.proc.wait(timeout=DEADLINE), 0)
        m = idle.recv()
        self.assertEqual((m["id"], m["error"]["code"]), (0, "shutting_down"))
        with self.assertRaises(EOFError):
            idle.recv()
        self.assertFalse(os.path.exists(self.d.sock))


class BadModels(DaemonTest):
    models = {"a": A}
    files = {"models/%s.safetensors" % k: v[0] for k, v in _MALFORMED.items()}

    def test_each_malformed_file_fails_its_load_only(self):
        c = self.d.client()
        c.ok("load", model="a")
        for name, (_, says) in _MALFORMED.items():
            r = c.call("load", model=name)
            self.assertEqual(r["error"]["code"], "load_failed", name)
            self.assertIn(says, r["error"]["message"], name)
            st = slot_status(c)
            self.assertEqual(st["state"], "error")
            self.assertIn(says, st["message"])
            self.assertEqual(st["last_model"], name)
        r = c.ok("load", model="a")
        self.assertEqual(c.ok("infer", model="a", input=[0], max_tokens=2)["tokens"],
                         perm_tokens(16, 3, 1, 0, 2))
        wait_until(lambda: len(self.d.workers()) == 1, what="failed workers reaped")


class Stopping(DaemonTest):
    models = {"a": A}
    config = "[slot cpu]\nstop_timeout = 0.4\nheartbeat_timeout = 30\n"

    def test_a_worker_that_ignores_stop_is_killed_at_stop_timeout(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)      # it can read no stop message and take no SIGTERM
        start = time.monotonic()
        r = c.ok("unload", slot="cpu")
        self.assertEqual(r["state"], "empty")
        self.assertGreaterEqual(time.monotonic() - start, 0.35)
        self.assertFalse(pid_alive(pid))
        log = self.d.read_log()
        self.assertIn("worker %d did not stop; SIGTERM" % pid, log)
        self.assertIn("worker %d did not stop within 400 ms; SIGKILL" % pid, log)

    def test_queued_requests_are_served_after_a_crash(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)
        running = c.request("infer", model="a", input=[1], max_tokens=3)
        queued = c.request("infer", model="a", input=[2], max_tokens=3)
        wait_until(lambda: slot_status(self.d.client())["queue"] == 1, what="one queued")
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(c.reply(running)["error"]["code"], "worker_crashed")
        r = c.reply(queued)
        self.assertTrue(r["ok"], r)
        self.assertEqual(r["tokens"], perm_tokens(16, 3, 1, 2, 3))
        self.assertNotEqual(slot_status(c)["pid"], pid)


class RestartLimit(DaemonTest):
    models = {"a": A}
    config = ("[slot cpu]\nrestart_limit = 3\nrestart_backoff_min = 0.01\n"
              "restart_backoff_max = 0.02\nrestart_window = 60\n")

    def test_too_many_deaths_put_the_slot_in_error(self):
        c = self.d.client()
        c.ok("load", model="a")
        c.ok("subscribe", events=["state"])
        for _ in range(2):
            os.kill(slot_status(c)["pid"], signal.SIGKILL)
            self.assertEqual(c.wait_state("reconnecting")["attempt"], 1)
            c.wait_state("ready")
        os.kill(slot_status(c)["pid"], signal.SIGKILL)
        e = c.wait_state("error")
        self.assertIn("3 times", e["message"])
        self.assertEqual(e["last_model"], "a")
        self.assertEqual(self.d.workers(), [])
        c.ok("load", model="a")          # an admin load leaves error


class Heartbeat(DaemonTest):
    models = {"a": A}
    config = "[slot cpu]\nheartbeat_interval = 0.05\nheartbeat_timeout = 0.3\n"

    def test_a_hung_worker_is_killed_and_restarted(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        c.ok("subscribe", events=["state"])
        os.kill(pid, signal.SIGSTOP)
        c.wait_state("reconnecting")
        self.assertIn("worker %d (slot cpu) was killed: no heartbeat for" % pid, self.d.read_log())
        c.wait_state("ready")
        self.assertFalse(pid_alive(pid))


class LoadTimeout(DaemonTest):
    models = {"big": BIG}
    files = {GATED_WORKER: gated_worker()}     # never opened: every load times out
    config = ("[modeld]\nworker = @DIR@/%s\n" % GATED_WORKER +
              "[slot cpu]\nrestart_limit = 2\nrestart_backoff_min = 0.01\n"
              "[model big]\npath = models/big.safetensors\nload_timeout = 0.05\n")

    def test_a_slow_load_is_killed_and_retried_up_to_the_limit(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        r = c.call("load", model="big")
        self.assertEqual(r["error"]["code"], "timeout")
        self.assertIn("timed out", r["error"]["message"])
        e = c.wait_state("reconnecting")
        self.assertIn("load timed out", e["message"])
        e = c.wait_state("error")
        self.assertIn("2 loads in a row failed", e["message"])
        wait_until(lambda: self.d.workers() == [], what="the timed-out worker reaped")


class Protocol(DaemonTest):
    models = {"a": A}

    def test_a_bad_frame_closes_that_connection_only(self):
        good = self.d.client()
        good.ok("load", model="a")
        for junk in (b"\x00\x00\x00\x02\xc1\xc1", b"\x00\x00\x00\x01\x05",
                     b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"):
            bad = self.d.client()
            bad.send_raw(junk)
            r = bad.recv()
            self.assertEqual((r["id"], r["ok"], r["error"]["code"]), (0, False, "bad_frame"))
            with self.assertRaises(EOFError):
                bad.recv()
            self.assertEqual(good.ok("infer", model="a", input=[1], max_tokens=2)["tokens"],
                             perm_tokens(16, 3, 1, 1, 2))

    def test_a_client_that_leaves_mid_stream_costs_nothing(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)        # the stream cannot end before its client leaves
        gone = self.d.client()
        gone.request("infer", model="a", input=[1], max_tokens=60000, stream=True)
        wait_until(lambda: slot_status(c)["active"] == 1, what="the stream at the worker")
        gone.close()
        wait_until(lambda: "the worker is asked to stop request" in self.d.read_log(),
                   what="the stream to be cancelled")
        os.kill(pid, signal.SIGCONT)
        self.assertEqual(c.ok("infer", model="a", input=[2], max_tokens=3)["tokens"],
                         perm_tokens(16, 3, 1, 2, 3))

    def test_cancel_ends_the_target(self):
        c = self.d.client()
        c.ok("load", model="a")
        rid = c.request("infer", model="a", input=[1], max_tokens=60000, stream=True)
        chunks = []
        while not chunks:               # wait until it is running
            m = c.recv()
            if m.get("id") == rid and "chunk" in m:
                chunks.append(m)
            else:
                c.frames.append(m)
        # the worker waits while the cancel reaches it, so that it cannot finish first
        pid = slot_status(self.d.client())["pid"]
        os.kill(pid, signal.SIGSTOP)
        self.assertTrue(c.call("cancel", target=rid)["cancelled"])
        os.kill(pid, signal.SIGCONT)
        later = []
        r = c.reply(rid, later)
        self.assertEqual(r["finish_reason"], "cancelled")
        # the answer is what was streamed before the worker stopped
        streamed = [t for ch in [m["chunk"] for m in chunks] + later for t in ch["tokens"]]
        self.assertEqual(r["tokens"], streamed)
        self.assertLess(len(r["tokens"]), 60000)
        self.assertEqual(r["usage"]["completion_tokens"], len(r["tokens"]))
        self.assertEqual(c.ok("infer", model="a", input=[2], max_tokens=3)["tokens"],
                         perm_tokens(16, 3, 1, 2, 3))


class Limits(DaemonTest):
    models = {"a": A}
    config = "[modeld]\nmax_clients = 2\n"

    def test_clients_beyond_max_clients_are_refused(self):
        # The start-up probe's connection may still count for a moment: take places as they free.
        a = wait_until(self.d.client_if_placed, what="a first place")
        wait_until(self.d.client_if_placed, what="a second place")
        c = self.d.client()
        e = c.recv()["error"]          # it is told why, then closed
        self.assertEqual(e["code"], "busy")
        self.assertIn("max_clients", e["message"])
        with self.assertRaises((EOFError, OSError)):
            c.call("hello", proto=1)
        a.close()
        wait_until(lambda: self.d.client_if_placed() is not None, what="a free place")


    def test_a_client_that_does_not_read_is_dropped(self):
        c = self.d.client()
        c.ok("load", model="a")
        slow = self.d.client()
        # Replies to over 8 MiB, never read: modeld drops the client rather than grow.
        frames = b"".join(struct.pack(">I", len(b)) + b for b in
                          (msgpack.packb({"id": i + 1, "op": "status"}) for i in range(60000)))
        try:
            slow.send_raw(frames)
        except OSError:
            pass                          # dropped before it finished writing: as good
        pid = self.d.proc.pid
        wait_until(lambda: "output buffer over its limit" in self.d.read_log(), timeout=60,
                   what="the slow client to be dropped")
        with open("/proc/%d/status" % pid) as f:
            rss = int(next(l for l in f if l.startswith("VmRSS:")).split()[1])
        if not os.environ.get("MODELD_TEST_SANITIZED"):     # ASan's shadow and quarantine
            self.assertLess(rss, 96 * 1024, "modeld grew past 96 MiB")
        self.assertEqual(c.ok("infer", model="a", input=[2], max_tokens=2)["tokens"],
                         perm_tokens(16, 3, 1, 2, 2))


FAKE_WORKER = b"""#!/bin/sh
# Finds no GPU, and answers the load with a frame that is not msgpack.
[ "$1" = --probe ] && exit 0
printf '\\000\\000\\000\\003\\301\\301\\301' >&3
exec sleep 30
"""


class BadWorker(DaemonTest):
    models = {"a": A}
    files = {"fake-worker": FAKE_WORKER}
    config = "[modeld]\nworker = @DIR@/fake-worker\n[slot cpu]\nrestart_limit = 2\nrestart_backoff_min = 0.01\n"

    def test_a_malformed_frame_from_a_worker_kills_that_worker(self):
        c = self.d.client()
        r = c.call("load", model="a")
        self.assertEqual(r["error"]["code"], "worker_crashed")
        self.assertIn("worker protocol", r["error"]["message"])
        self.assertEqual(slot_status(c)["state"], "error")
        self.assertEqual(c.ok("hello", proto=1)["server"], "modeld")


class Startup(unittest.TestCase):
    def test_a_bad_config_stops_startup_with_file_and_line(self):
        import tempfile
        with tempfile.NamedTemporaryFile("w", suffix=".ini", delete=False) as f:
            f.write("[modeld]\nlog_level = info\n[slot x]\nrestart_limit = lots\n")
        try:
            p = subprocess.run([MODELD, "-c", f.name, "-s", f.name + ".sock"], capture_output=True,
                               text=True, timeout=DEADLINE)
        finally:
            os.unlink(f.name)
        self.assertEqual(p.returncode, 1)
        self.assertIn("%s:4: restart_limit" % f.name, p.stderr)


AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
class AsNobody(DaemonTest):
    models = {"a": A}
    config = "[modeld]\nsocket_mode = 0666\n"

    def ctl_as_nobody(self, *args):
        os.chmod(self.d.dir, 0o755)
        return subprocess.run(AS_NOBODY + [MODELCTL, "-s", self.d.sock] + list(args),
                              capture_output=True, text=True, timeout=DEADLINE)


class WhoMayCall(AsNobody):
    def test_others_may_look_but_not_administer(self):
        self.assertEqual(self.ctl_as_nobody("status").returncode, 0)
        p = self.ctl_as_nobody("load", "a")
        self.assertEqual(p.returncode, 1)
        self.assertIn("unauthorized", p.stderr)


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
class AdminGroup(AsNobody):
    config = "[modeld]\nsocket_mode = 0666\nadmin_group = nogroup\n"

    def test_members_of_the_admin_group_may_administer(self):
        p = self.ctl_as_nobody("load", "a")
        self.assertEqual(p.returncode, 0, p.stderr)


@unittest.skipUnless(os.geteuid() == 0, "needs root")
class WorkerUser(DaemonTest):
    models = {"a": A}
    config = "[modeld]\nworker_user = nobody\n"

    def test_a_loaded_worker_runs_as_the_worker_user(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        with open("/proc/%d/status" % pid) as f:
            ids = {l.split(":")[0]: l.split()[1:] for l in f if l.startswith(("Uid:", "Gid:", "Groups:"))}
        nobody = str(__import__("pwd").getpwnam("nobody").pw_uid)
        self.assertEqual(ids["Uid"], [nobody] * 4)
        self.assertEqual(ids["Groups"], [])
        self.assertEqual(c.ok("infer", model="a", input=[1], max_tokens=2)["tokens"],
                         perm_tokens(16, 3, 1, 1, 2))

    def test_a_worker_dies_with_modeld_after_dropping_its_ids(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)       # it cannot notice its channel closing
        self.expected_exit = -signal.SIGKILL
        self.d.proc.kill()                 # a supervisor crash, not a shutdown
        self.d.proc.wait()
        wait_until(lambda: not pid_alive(pid), what="the worker to die with modeld")


class SupervisorCrash(DaemonTest):
    models = {"a": A}

    def test_workers_die_with_modeld(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = slot_status(c)["pid"]
        os.kill(pid, signal.SIGSTOP)       # it cannot notice its channel closing
        self.expected_exit = -signal.SIGKILL
        self.d.proc.kill()
        self.d.proc.wait()
        wait_until(lambda: not pid_alive(pid), what="the worker to die with modeld")


class MissingWorker(unittest.TestCase):
    def test_a_missing_worker_binary_stops_startup(self):
        p = subprocess.run([MODELD, "-s", "/tmp/modeld-missing-worker.sock", "--worker", "/nonexistent/w"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 1)
        self.assertIn("worker /nonexistent/w: No such file or directory", p.stderr)


class Modelctl(DaemonTest):
    models = {"a": A, "b": B}

    def test_the_tour(self):
        p = self.d.ctl("status")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("empty", p.stdout)
        p = self.d.ctl("load", "a")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("loaded a in slot cpu", p.stdout)
        p = self.d.ctl("infer", "a", "--max-tokens", "5", "1")
        self.assertEqual(p.stdout.split(), [str(t) for t in perm_tokens(16, 3, 1, 1, 5)])
        p = self.d.ctl("infer", "a", "--stream", "--max-tokens", "5", "1")
        self.assertEqual(p.stdout.split(), [str(t) for t in perm_tokens(16, 3, 1, 1, 5)])
        p = self.d.ctl("--json", "status")
        st = json.loads(p.stdout)["slots"][0]
        self.assertEqual((st["state"], st["model"]), ("ready", "a"))
        p = self.d.ctl("models", "--json")
        self.assertEqual(sorted(m["name"] for m in json.loads(p.stdout)["models"]), ["a", "b"])
        p = self.d.ctl("load", "b", "--no-wait")
        self.assertRegex(p.stdout, r"^job \d+")
        wait_until(lambda: json.loads(self.d.ctl("--json", "status").stdout)["slots"][0]["state"]
                   == "ready" and "b" in self.d.ctl("status").stdout, what="b ready")
        p = self.d.ctl("unload", "b")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("empty", p.stdout)
        p = self.d.ctl("devices")
        self.assertEqual(p.stdout.split()[:5], ["DEVICE", "KIND", "LABEL", "TOTAL", "FREE"])
        self.assertRegex(p.stdout, r"\ncpu +cpu +host memory +[\d.]+ [KMGT]?i?B ")

    def test_exit_status(self):
        p = self.d.ctl("infer", "a", "1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("not_loaded", p.stderr)
        p = self.d.ctl("restart", "nosuch")
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown_slot", p.stderr)
        for args, says in ((["frobnicate"], 'no command called "frobnicate"'),
                           (["infer"], "which MODEL"),
                           (["load", "a", "extra"], 'load: unexpected argument "extra"'),
                           (["infer", "a", "--max-tokens", "many", "1"], '--max-tokens: "many" is not a number'),
                           (["--bogus", "status"], 'unknown option "--bogus"')):
            p = self.d.ctl(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(says, p.stderr, args)
        p = self.d.ctl("--help")
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        self.assertIn("usage: modelctl", p.stdout)
        self.assertRegex(self.d.ctl("--version").stdout, r"^modelctl \d+\.\d+\.\d+\n$")

    def test_watch_prints_one_json_object_per_line(self):
        import select
        w = subprocess.Popen([os.path.join(os.path.dirname(MODELD), "modelctl"), "-s", self.d.sock,
                              "watch", "--json", "--events", "state"],
                             stdout=subprocess.PIPE, text=True)
        try:
            c = self.d.client()
            end = time.monotonic() + DEADLINE
            # Until the watcher has subscribed, its first events may be lost: make state
            # changes until it prints one, then check the stream it prints.
            while not select.select([w.stdout], [], [], 0)[0]:
                self.assertLess(time.monotonic(), end, "watch printed nothing")
                c.ok("load", model="a")
                c.ok("unload", slot="cpu")
            # The cycles made meanwhile may still be on their way (events are
            # written in bursts): read up to b's ready, every line an event.
            c.ok("load", model="b")
            events = [json.loads(w.stdout.readline())]
            while not (events[-1]["model"] == "b" and events[-1]["state"] == "ready"):
                self.assertLess(time.monotonic(), end + DEADLINE, "no ready for b in %r" % events)
                events.append(json.loads(w.stdout.readline()))
            self.assertTrue(all(e["event"] == "state" for e in events))
            self.assertIn(("b", "loading_model"), [(e["model"], e["state"]) for e in events])
            seqs = [e["seq"] for e in events]
            self.assertEqual(seqs, sorted(seqs))
        finally:
            w.kill()
            w.wait()


if __name__ == "__main__":
    unittest.main()
