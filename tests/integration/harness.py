"""A real modeld on a private socket in a temp dir, and a small client for it.

Everything waits on conditions with deadlines; nothing sleeps and hopes.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest

import msgpack

BUILD = os.path.abspath(os.environ.get("BUILD", "build"))
MODELD = os.path.join(BUILD, "modeld")
MODELCTL = os.path.join(BUILD, "modelctl")
MKMODEL = os.path.join(BUILD, "mkmodel")
DEADLINE = 10.0


def perm_tokens(n, a, c, start, count, eos=None):
    """The expected output of a permutation fixture: the end-of-generation token ends it, unsent."""
    out, t = [], start
    for _ in range(count):
        t = (t * a + c) % n
        if t == eos:
            break
        out.append(t)
    return out


def wait_until(pred, timeout=DEADLINE, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); read its state.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):     # gone between the two looks
        return False


class Client:
    def __init__(self, path, timeout=DEADLINE):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise
        self.next_id = 0
        self.events = []
        self.frames = []      # frames read but not yet consumed (replies, chunks)

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, msg):
        body = msgpack.packb(msg)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("connection closed")
            buf += chunk
        return buf

    def recv(self):
        n = struct.unpack(">I", self._read_exact(4))[0]
        return msgpack.unpackb(self._read_exact(n), raw=False)

    def _pump(self):
        m = self.recv()
        if "event" in m and "id" not in m:
            self.events.append(m)
        else:
            self.frames.append(m)

    def request(self, op, **args):
        self.next_id += 1
        msg = {"id": self.next_id, "op": op}
        msg.update(args)
        self.send(msg)
        return self.next_id

    def reply(self, rid, chunks=None):
        """The final reply to rid; chunks of rid are appended to chunks."""
        while True:
            for i, m in enumerate(self.frames):
                if m.get("id") == rid:
                    if "chunk" in m:
                        del self.frames[i]
                        if chunks is not None:
                            chunks.append(m["chunk"])
                        break
                    del self.frames[i]
                    return m
            else:
                self._pump()

    def call(self, op, **args):
        return self.reply(self.request(op, **args))

    def ok(self, op, **args):
        r = self.call(op, **args)
        assert r.get("ok") is True, "%s failed: %r" % (op, r)
        return r

    def events_until(self, pred, timeout=DEADLINE, what="event"):
        """Events up to and including the first that matches pred (consumed)."""
        end = time.monotonic() + timeout
        seen = 0
        while True:
            for i in range(seen, len(self.events)):
                if pred(self.events[i]):
                    got = self.events[: i + 1]
                    del self.events[: i + 1]
                    return got
            seen = len(self.events)
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for " + what)
            self.sock.settimeout(left)
            try:
                self._pump()
            except socket.timeout:
                raise AssertionError("timed out waiting for " + what)
            finally:
                self.sock.settimeout(DEADLINE)

    def wait_event(self, pred, timeout=DEADLINE, what="event"):
        return self.events_until(pred, timeout, what)[-1]

    def wait_state(self, state, slot=None, model=None, timeout=DEADLINE):
        return self.wait_event(
            lambda e: e["event"] == "state" and e["state"] == state
            and (slot is None or e["slot"] == slot)
            and (model is None or e.get("model") == model),
            timeout, "state " + state)


GATED_WORKER = "modeld-worker-gated"


def gated_worker():
    """The bytes of a worker that loads only once the test has called open_gate: a load that lasts
    as long as the test needs, whatever the machine's speed."""
    return ('#!/bin/sh\n[ "$1" = --probe ] || while [ ! -e "$(dirname "$0")/go" ]; do sleep 0.01; done\n'
            'exec %s "$@"\n' % os.path.join(BUILD, "modeld-worker")).encode()


def open_gate(d):
    """Lets the gated workers of d load."""
    open(os.path.join(d.dir, "go"), "w").close()


def fake_worker(mode):
    """The bytes of a worker that misbehaves as fakeworker.py's mode says."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakeworker.py")) as f:
        body = f.read()
    return ("#!/usr/bin/python3\nMODE = %r\n" % mode + body).encode()


class Daemon:
    """modeld in a temp dir. models: {name: mkmodel args}."""

    def __init__(self, config=None, models=None, files=None, extra_args=(), fifos=(), **popen):
        self.dir = tempfile.mkdtemp(prefix="modeld-test-")
        os.chmod(self.dir, 0o755)     # as root, workers run as modeld or nobody: engines in here must be theirs to read
        self.models_dir = os.path.join(self.dir, "models")
        os.mkdir(self.models_dir)
        for name in fifos:
            os.mkfifo(os.path.join(self.dir, name))
        for name, args in (models or {}).items():
            self.make_model(name, *args)
        for name, data in (files or {}).items():
            os.makedirs(os.path.dirname(os.path.join(self.dir, name)), exist_ok=True)
            with open(os.path.join(self.dir, name), "wb") as f:
                f.write(data)
            if data.startswith(b"#!"):
                os.chmod(os.path.join(self.dir, name), 0o755)
        self.sock = os.path.join(self.dir, "modeld.sock")
        self.clients = []
        self.log_path = os.path.join(self.dir, "modeld.log")
        cmd = [MODELD, "-s", self.sock, "--models", self.models_dir, "-l", "debug"]
        if config is not None:
            self.config = os.path.join(self.dir, "modeld.ini")
            with open(self.config, "w") as f:
                f.write(config.replace("@DIR@", self.dir))
            cmd += ["-c", self.config]
        cmd += list(extra_args)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, **popen)
        wait_until(self._ready, what="modeld to listen")

    def client_if_placed(self):
        """A client that was given a place (its hello answered), or None if it was refused."""
        c = self.client()
        try:
            return c if c.call("hello", proto=1)["ok"] else None
        except (EOFError, OSError):
            return None

    def make_model(self, name, *args):
        path = os.path.join(self.models_dir, name + ".safetensors")
        subprocess.run([MKMODEL, path] + [str(a) for a in args], check=True)
        return path

    def _ready(self):
        if self.proc.poll() is not None:
            raise AssertionError("modeld exited: " + self.read_log())
        try:
            probe = Client(self.sock)
            probe.close()
            return True
        except (FileNotFoundError, ConnectionRefusedError):
            return False

    def client(self):
        c = Client(self.sock)
        self.clients.append(c)
        return c

    def ctl(self, *args):
        return subprocess.run([MODELCTL, "-s", self.sock] + [str(a) for a in args],
                              capture_output=True, text=True, timeout=DEADLINE)

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def workers(self):
        """pids of modeld-worker processes whose parent is this modeld."""
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % p) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open("/proc/%s/comm" % p) as f:
                    comm = f.read().strip()
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            if int(fields[1]) == self.proc.pid and comm.startswith("modeld-worker"):
                out.append(int(p))
        return out

    def stop(self):
        for c in self.clients:
            c.close()
        self.clients = []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("modeld did not stop on SIGTERM")
        else:
            rc = self.proc.returncode
        self.log.close()
        return rc


class DaemonTest(unittest.TestCase):
    """A test with self.d, stopped (and checked to stop cleanly) at the end."""
    config = None
    models = {"a": ("--n", 16, "--a", 3, "--c", 1)}
    files = None
    fifos = ()

    def setUp(self):
        self.d = Daemon(self.config, self.models, self.files, fifos=self.fifos)
        self.addCleanup(self._cleanup)

    def assert_unavailable_and_retried(self, model, says):
        """A load of model fails with service_unavailable, the slot goes to
        service_unavailable with a message holding says, and is retried
        through reconnecting; no job is announced again once it ended.
        Returns the client, subscribed to state and job events."""
        c = self.d.client()
        c.ok("subscribe", events=["state", "job"])
        r = c.call("load", model=model)
        self.assertEqual(r["error"]["code"], "service_unavailable")
        self.assertIn(says, r["error"]["message"])

        def state(name):
            return lambda e: e["event"] == "state" and e["state"] == name
        evs = c.events_until(state("service_unavailable"), what="service_unavailable")
        self.assertIn(says, evs[-1]["message"])
        self.assertGreater(evs[-1]["retry_in_ms"], 0)       # when the next try comes
        for name in ("reconnecting", "loading_model", "service_unavailable"):
            evs += c.events_until(state(name), what=name)
        ended = set()
        for e in (e for e in evs if e["event"] == "job"):
            self.assertNotIn(e["job"], ended, "job %d announced again after it ended" % e["job"])
            if e["status"] in ("done", "failed"):
                ended.add(e["job"])
        return c

    def _cleanup(self):
        rc = self.d.stop()
        expected = getattr(self, "expected_exit", 0)
        if rc != expected or os.environ.get("KEEP_LOGS"):
            print(self.d.read_log())
        self.assertEqual(rc, expected, "modeld exited with %s" % rc)
        shutil.rmtree(self.d.dir, ignore_errors=True)
