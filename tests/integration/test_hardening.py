"""What hostile or careless input, peers and hosts must not do to modeld."""
import glob
import http.client
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

import msgpack

from harness import BUILD, DEADLINE, MODELCTL, MODELD, Daemon, DaemonTest, fake_worker, perm_tokens, pid_alive, wait_until

A = ("--n", 16, "--a", 3, "--c", 1)


def fake_config(slot=""):
    return "[modeld]\nworker = @DIR@/fake-worker\n[slot cpu]\nrestart_backoff_min = 0.01\n" + slot


class NoModels(DaemonTest):
    models = {}

    def test_modeld_starts_with_an_empty_models_directory(self):
        self.assertEqual(self.d.client().ok("models")["models"], [])


class NotRegularFiles(DaemonTest):
    """A FIFO opened for reading blocks until a writer comes: modeld must never wait on one."""
    config = "[model pipe]\npath = @DIR@/pipe.safetensors\n"
    fifos = ("pipe.safetensors", "models/stray.safetensors")

    def test_a_fifo_in_the_models_directory_is_not_served(self):
        names = [m["name"] for m in self.d.client().ok("models")["models"]]
        self.assertEqual(sorted(names), ["a", "pipe"])
        self.assertIn("stray.safetensors: not a regular file", self.d.read_log())

    def test_a_fifo_as_a_model_path_fails_its_load_only(self):
        c = self.d.client()
        r = c.call("load", model="pipe")
        self.assertEqual(r["error"]["code"], "load_failed")
        self.assertIn("pipe.safetensors is not a regular file", r["error"]["message"])
        self.assertEqual(c.ok("load", model="a")["model"], "a")


def fd_limit(n):
    """A preexec_fn: the child gets at most n descriptors, soft and hard."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


class Descriptors(unittest.TestCase):
    def start(self, limit, held=()):
        d = Daemon(None, {"a": A}, preexec_fn=fd_limit(limit), pass_fds=held)
        self.addCleanup(shutil.rmtree, d.dir, True)
        self.addCleanup(d.stop)
        return d

    def test_max_clients_is_clamped_to_the_descriptor_limit(self):
        d = self.start(64)
        self.assertIn("max_clients 1024 is more than 64 descriptors allow; using 31", d.read_log())

    def test_out_of_descriptors_modeld_pauses_accepting_and_recovers(self):
        # Descriptors modeld inherits and keeps: fewer left than max_clients assumes.
        held = [os.open("/dev/null", os.O_RDONLY) for _ in range(40)]
        for fd in held:
            self.addCleanup(os.close, fd)
        d = self.start(64, held)
        waiting = []
        for _ in range(40):
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.sock)           # queued in the backlog, accepted or not
            waiting.append(s)
        wait_until(lambda: "not accepting for" in d.read_log(), what="accepting to pause")
        for s in waiting:
            s.close()
        self.assertEqual(d.client().ok("status")["ok"], True)     # accepting again
        log = d.read_log()
        self.assertEqual(log.count("Too many open files"), 1, log[-2000:])

    def test_http_connections_leave_descriptors_for_the_socket_and_the_workers(self):
        d = Daemon("[modeld]\nhttp = 127.0.0.1:0\n", {"a": A}, preexec_fn=fd_limit(128))
        self.addCleanup(shutil.rmtree, d.dir, True)
        self.addCleanup(d.stop)
        port = int(wait_until(lambda: re.search(r"http: listening on \S+ port (\d+)", d.read_log()),
                              what="the HTTP port").group(1))
        held = []
        self.addCleanup(lambda: [s.close() for s in held])
        for _ in range(120):        # more than modeld's descriptors: the rest wait in the backlog
            held.append(socket.create_connection(("127.0.0.1", port), timeout=DEADLINE))
        wait_until(lambda: "not accepting for" in d.read_log(), what="HTTP to stop accepting")
        c = d.client()
        self.assertTrue(c.ok("status")["ok"])                       # the socket still answers
        self.assertEqual(c.ok("load", model="a")["model"], "a")     # and a worker still starts
        self.assertEqual(c.ok("infer", model="a", input=[1], max_tokens=2)["tokens"], perm_tokens(16, 3, 1, 1, 2))
        self.assertNotIn("Too many open files", d.read_log())
        for s in held:
            s.close()
        held.clear()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        conn.request("GET", "/healthz")
        self.assertEqual(conn.getresponse().status, 200)            # accepting again
        conn.close()


def default_worker_uid():
    """Whom the workers of a root modeld without worker_user run as: modeld where it exists, else nobody."""
    import pwd
    for name in ("modeld", "nobody"):
        try:
            return pwd.getpwnam(name).pw_uid
        except KeyError:
            pass
    return 0


class Sandbox(DaemonTest):
    """A worker reads its model file under its seccomp filter, with no_new_privs and, under a root
    modeld, as another user with no capability: a crafted file meets a worker that can do little."""
    config = "[modeld]\nengine_dir = %s\n[model held]\npath = @DIR@/models/a.safetensors\nengine = held\n" % (
        os.path.join(BUILD, "test-engines"))

    def status_of(self, pid):
        with open("/proc/%d/status" % pid) as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)

    def assert_unprivileged(self, st):
        self.assertEqual((st["Seccomp"], st["NoNewPrivs"]), ("2", "1"))
        for caps in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            self.assertEqual(int(st[caps], 16), 0, caps)
        if os.geteuid() == 0:       # modeld as root: its workers are not
            self.assertEqual(st["Uid"].split(), [str(default_worker_uid())] * 4)
            self.assertEqual(int(st["CapBnd"], 16), 0)

    def test_a_worker_reading_its_model_file_is_sandboxed_and_unprivileged(self):
        c = self.d.client()
        c.ok("subscribe", events=["progress"])
        rid = c.request("load", model="held")       # its engine reads the file, then holds until stopped
        c.wait_event(lambda e: e["event"] == "progress" and e["model"] == "held", what="the held load to read")
        st = self.status_of(c.ok("status", slot="cpu")["slots"][0]["pid"])
        self.assertEqual(st["Seccomp_filters"], "1")    # the loading one: the load is under way
        self.assert_unprivileged(st)
        c.ok("unload", slot="cpu")
        self.assertEqual(c.reply(rid)["error"]["code"], "cancelled")

    def test_a_loaded_worker_has_both_filters(self):
        c = self.d.client()
        c.ok("load", model="a")
        st = self.status_of(c.ok("status")["slots"][0]["pid"])
        self.assertEqual(st["Seccomp_filters"], "2")    # the one the file was read under, and the loaded one
        self.assert_unprivileged(st)


class Ids(DaemonTest):
    def test_an_id_still_in_flight_is_refused(self):
        c = self.d.client()
        c.send({"id": 7, "op": "load", "model": "nosuch-yet", "slot": "cpu"})  # answered at once
        self.assertEqual(c.reply(7)["error"]["code"], "unknown_model")
        c.ok("load", model="a")
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)        # request 50 stays in flight
        self.addCleanup(os.kill, pid, signal.SIGCONT)
        c.send({"id": 50, "op": "infer", "model": "a", "input": [1], "max_tokens": 3})
        c.send({"id": 50, "op": "status"})
        first = c.recv()
        self.assertEqual(first["id"], 50)
        self.assertEqual(first["error"]["code"], "bad_request")
        self.assertIn("id 50 is still in use", first["error"]["message"])


class EventOrder(DaemonTest):
    def test_a_job_ends_after_the_state_it_reached(self):
        c = self.d.client()
        c.ok("subscribe", events=["state", "job"])
        for op, args, state in (("load", {"model": "a"}, "ready"), ("unload", {"slot": "cpu"}, "empty")):
            c.ok(op, **args)
            evs = c.events_until(lambda e: e["event"] == "job" and e["op"] == op and e["status"] == "done")
            states = [e for e in evs if e["event"] == "state"]
            self.assertEqual(states[-1]["state"], state, evs)


class Jobs(DaemonTest):
    def test_only_work_makes_a_job(self):
        c = self.d.client()
        self.assertGreater(c.ok("load", model="a")["job"], 0)
        self.assertNotIn("job", c.ok("load", model="a"))        # ready already
        self.assertGreater(c.ok("unload", slot="cpu")["job"], 0)
        self.assertNotIn("job", c.ok("unload", slot="cpu"))     # empty already


class ClientFrameLimit(DaemonTest):
    def test_no_frame_over_what_the_client_accepts(self):
        c = self.d.client()
        hello = c.ok("hello", proto=1, max_frame=1024)
        self.assertEqual(hello["max_frame"], 1024 * 1024)         # what the server accepts
        c.ok("load", model="a")
        self.assertEqual(len(c.ok("infer", model="a", input=[1], max_tokens=50)["tokens"]), 50)
        chunks = []
        r = c.reply(c.request("infer", model="a", input=[1], max_tokens=1000, stream=True), chunks)
        self.assertEqual(r["error"]["code"], "too_large")
        self.assertIn("over the 1024 this client accepts", r["error"]["message"])
        self.assertEqual(len(chunks), 1000)     # each chunk fitted
        self.assertEqual(c.call("hello", proto=1, max_frame=10)["error"]["code"], "bad_request")


class Places(DaemonTest):
    config = "[modeld]\nmax_clients_per_uid = 2\n"

    def test_one_user_cannot_take_every_place(self):
        # the start-up probe's connection may count for a moment: take places as they free
        wait_until(self.d.client_if_placed, what="a first place")
        wait_until(self.d.client_if_placed, what="a second place")
        e = self.d.client().recv()["error"]
        self.assertEqual(e["code"], "busy")
        self.assertIn("max_clients_per_uid", e["message"])



class IdleClients(DaemonTest):
    config = "[modeld]\nclient_idle_timeout = 0.2\n"

    def test_an_idle_client_is_closed_and_a_subscriber_is_not(self):
        idle = self.d.client()
        listening = self.d.client()
        listening.ok("subscribe", events=["state"])
        e = idle.recv()["error"]                       # comes once it has idled long enough
        self.assertEqual(e["code"], "timeout")
        self.assertIn("without a request", e["message"])
        with self.assertRaises((EOFError, OSError)):
            idle.recv()
        self.assertTrue(listening.ok("status")["ok"])


@unittest.skipUnless(os.geteuid() == 0 and shutil.which("setpriv"), "needs root and setpriv")
class AdminReserve(DaemonTest):
    config = "[modeld]\nsocket_mode = 0666\nmax_clients = 8\nadmin_reserve = 2\nclient_idle_timeout = 0\n"

    def test_the_last_places_are_kept_for_administrators(self):
        os.chmod(self.d.dir, 0o755)
        held = [self.d.client() for _ in range(6)]
        for c in held:
            c.ok("hello", proto=1)          # all six have their places
        p = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                            MODELCTL, "-s", self.d.sock, "status"],
                           capture_output=True, text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 1)
        self.assertIn("kept for administrators", p.stderr)
        self.assertTrue(self.d.client().ok("status")["ok"])     # an administrator still gets in


class LeftBehind(DaemonTest):
    files = {"fake-worker": fake_worker("spawner")}
    config = fake_config("heartbeat_timeout = 30\n")

    def test_what_a_worker_started_dies_with_it(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        c.ok("load", model="a")
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        with open(os.path.join(self.d.dir, "orphan")) as f:     # written before it said it loaded
            orphan = int(f.read())
        self.assertTrue(pid_alive(orphan))
        os.kill(pid, signal.SIGKILL)        # its own session: a kill of the worker's group misses it
        c.wait_state("reconnecting")
        wait_until(lambda: not pid_alive(orphan), what="the orphan to be killed")


@unittest.skipUnless(os.geteuid() == 0, "needs root")
class WorkersNeverKeepRoot(DaemonTest):
    def test_without_worker_user_a_worker_runs_as_modeld_or_nobody_with_no_capabilities(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        with open("/proc/%d/status" % pid) as f:
            st = {l.split(":")[0]: l.split()[1:] for l in f}
        self.assertEqual(st["Uid"], [str(default_worker_uid())] * 4)
        self.assertEqual(st["CapEff"], ["0000000000000000"])
        self.assertEqual(st["CapPrm"], ["0000000000000000"])


class WorkerDescriptors(unittest.TestCase):
    """A worker holds its channel, /dev/null and its log pipe: nothing of modeld's, no terminal."""

    def test_a_worker_has_only_its_own_descriptors(self):
        held = os.open("/dev/zero", os.O_RDONLY)       # modeld inherits it; its workers must not
        self.addCleanup(os.close, held)
        d = Daemon(None, {"a": A}, {"models/broken.safetensors": b"\xff" * 64}, pass_fds=(held,))
        self.addCleanup(shutil.rmtree, d.dir, True)
        self.addCleanup(d.stop)
        c = d.client()
        c.ok("load", model="a")
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        fds = {int(f): os.readlink("/proc/%d/fd/%s" % (pid, f)) for f in os.listdir("/proc/%d/fd" % pid)}
        self.assertEqual(sorted(fds), [0, 1, 2, 3], fds)
        self.assertEqual((fds[0], fds[1]), ("/dev/null", "/dev/null"))
        self.assertTrue(fds[2].startswith("pipe:"), fds)
        self.assertTrue(fds[3].startswith("socket:"), fds)
        # what a worker logs reaches modeld's log, through the pipe
        self.assertEqual(c.call("load", model="broken")["error"]["code"], "load_failed")
        wait_until(lambda: re.search(r"modeld-worker\[\d+\] error: broken: ", d.read_log()),
                   what="the worker's error line in modeld's log")


class SlowSubscribers(DaemonTest):
    """What a subscriber that does not read may owe is bounded. Inferences on a slot with a device lock
    make two gpu events each: a flood of events that costs the test little."""
    models = {"a": A, "b": ("--n", 32, "--a", 5, "--c", 2)}
    config = "[device grp]\nexclusive = yes\n[slot cpu]\nlock = grp\nmax_queue = 100000\n"

    def flood(self, c, n):
        ids = [c.request("infer", model="a", input=[1], max_tokens=1) for _ in range(n)]
        for i in ids:
            c.reply(i)

    def test_one_behind_gets_each_slots_state_once_when_it_catches_up(self):
        c = self.d.client()
        c.ok("load", model="a")
        slow = self.d.client()
        slow.ok("subscribe", events=["state", "job"])
        c.ok("subscribe", events=["state"])     # one that reads: every state event published
        for i in range(400):        # some 400 KB of state and job events the slow one does not read yet
            c.ok("load", model="ab"[i % 2])
        c.ok("load", model="b")
        published = [e for e in c.events if e["event"] == "state"]     # its ready came before the reply
        states = []
        while not (states and states[-1].get("coalesced")):      # it reads at last
            m = slow.recv()
            self.assertNotIn("error", m)        # behind, but never dropped: what it owes stays small
            if m.get("event") == "state":
                states.append(m)
        self.assertLess(len(states), len(published))      # the history was not all kept for it
        self.assertEqual((states[-1]["state"], states[-1]["model"]), ("ready", "b"))   # the latest
        self.assertEqual(states[-1]["seq"], published[-1]["seq"])

    def test_one_too_far_behind_is_dropped_and_told_why(self):
        c = self.d.client()
        c.ok("load", model="a")
        slow = self.d.client()
        slow.ok("subscribe", events=["gpu"])
        self.flood(c, 20000)
        unread = 0      # the events it receives before the error: what the socket held when it was dropped
        while True:
            m = slow.recv()
            if "error" in m:
                break
            unread += len(msgpack.packb(m)) + 4
        self.assertLess(unread, 256 << 10)      # what modeld held for it gave way to the error, which came however late
        self.assertEqual(m["error"]["code"], "busy")
        self.assertIn("events were left unread", m["error"]["message"])
        with self.assertRaises((EOFError, OSError)):
            slow.recv()


class ModelctlWithoutDaemon(unittest.TestCase):
    def test_arguments_are_checked_before_it_connects(self):
        p = subprocess.run([MODELCTL, "-s", "/nonexistent/modeld.sock", "load"], capture_output=True,
                           text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 2)
        self.assertIn("which MODEL", p.stderr)
        p = subprocess.run([MODELCTL, "-s", "/nonexistent/modeld.sock", "status"], capture_output=True,
                           text=True, timeout=DEADLINE)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot connect to /nonexistent/modeld.sock", p.stderr)


class Replies(DaemonTest):
    def test_an_echoed_op_name_cut_short_is_still_utf8(self):
        c = self.d.client()
        r = c.call("x" + "\u00e9" * 40)     # the echo keeps 64 bytes: the last is half an e-acute
        self.assertEqual(r["error"]["code"], "unknown_op")
        self.assertEqual(r["error"]["message"], "no op called x" + "\u00e9" * 31 + "\ufffd")


class DocExamples(unittest.TestCase):
    """Every configuration example in the documentation is one modeld accepts as written."""

    def test_every_ini_example_is_a_good_configuration(self):
        top = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        pages = glob.glob(os.path.join(top, "docs", "*.md")) + [os.path.join(top, "README.md")]
        examples = []
        for page in pages:
            with open(page) as f:
                examples += [(page, text) for text in re.findall(r"```ini\n(.*?)```", f.read(), re.S)]
        self.assertGreaterEqual(len(examples), 2)
        for page, text in examples:
            with tempfile.NamedTemporaryFile("w", suffix=".ini") as f:
                f.write(text)
                f.flush()
                p = subprocess.run([MODELD, "-t", "-c", f.name], capture_output=True, text=True,
                                   timeout=DEADLINE)
            self.assertEqual(p.returncode, 0, "%s: %s" % (page, p.stderr))
            self.assertIn("the configuration is good", p.stdout)


class WorkerDeaths(DaemonTest):
    """A dead worker's slot says how it died."""

    def test_a_worker_killed_from_outside_is_said_to_be(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        c.ok("subscribe", events=["state"])
        os.kill(pid, signal.SIGKILL)
        e = c.wait_state("reconnecting")
        self.assertIn("signal 9", e["message"])
        self.assertNotIn("protocol", e["message"])


class ClosedChannel(DaemonTest):
    files = {"fake-worker": fake_worker("closes")}
    config = fake_config()

    def test_a_worker_that_closes_its_channel_is_killed(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        c.ok("load", model="a")
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        e = c.wait_state("reconnecting")
        self.assertIn("closed its channel", e["message"])
        wait_until(lambda: not pid_alive(pid), what="the worker to be gone")


class SilentLoad(DaemonTest):
    """Each death comes later than the last one's restart_window: only counting failed loads stops it."""
    files = {"fake-worker": fake_worker("silent")}
    config = fake_config("restart_limit = 3\nrestart_window = 0.05\nheartbeat_interval = 0.02\n"
                         "heartbeat_timeout = 0.03\n")

    def test_a_load_that_never_answers_is_retried_up_to_the_limit(self):
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        c.request("load", model="a")
        e = c.wait_state("error")
        self.assertIn("3 loads in a row failed", e["message"])
        self.assertIn("no heartbeat", e["message"])


class Stall(DaemonTest):
    files = {"fake-worker": fake_worker("stalls")}
    config = fake_config("stall_timeout = 0.2\n")

    def test_a_request_the_worker_never_answers_gets_worker_crashed(self):
        c = self.d.client()
        c.ok("load", model="a")
        e = c.call("infer", model="a", input=[1], max_tokens=3)["error"]
        self.assertEqual(e["code"], "worker_crashed")
        self.assertIn("no token for 0.2 s", e["message"])


class OutOfOrder(unittest.TestCase):
    """A worker that says it loaded twice, or warmed up before it loaded, breaks the protocol: it is killed."""

    def test_each_is_killed_and_says_why(self):
        for mode, says in (("loads_twice", "it said it had loaded a second time"),
                           ("warms_first", "it said it had warmed up before it had loaded")):
            d = Daemon(fake_config("restart_limit = 1\n"), {"a": A}, {"fake-worker": fake_worker(mode)})
            try:
                c = d.client()
                c.request("load", model="a")
                wait_until(lambda: says in d.read_log(), what=mode + " to be killed")
                self.assertIn("was killed for breaking the worker protocol", d.read_log())
                self.assertTrue(c.ok("status")["ok"])     # modeld goes on
            finally:
                self.assertEqual(d.stop(), 0)
                shutil.rmtree(d.dir, ignore_errors=True)


class WorkerLines(DaemonTest):
    files = {"fake-worker": fake_worker("forger")}
    config = fake_config()

    def test_a_workers_lines_are_marked_as_its_own_and_escaped(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = c.ok("status")["slots"][0]["pid"]
        wait_until(lambda: "forged too" in self.d.read_log(), what="the worker's lines")
        lines = [line for line in self.d.read_log().split("\n") if "forged" in line]
        self.assertEqual(lines, ["worker %d: 12:00:00.000 modeld[1] error: slot cpu: forged\\x1b[2J\\x0dmore" % pid,
                                 "worker %d: 12:00:00.000 modeld[1] info: forged too\\x7f" % pid])


class Breach(unittest.TestCase):
    """A worker that says what it must not is killed, and its request gets worker_crashed."""

    def check(self, mode, says):
        d = Daemon(fake_config(), {"a": A}, {"fake-worker": fake_worker(mode)})
        try:
            c = d.client()
            c.ok("load", model="a")
            e = c.call("infer", model="a", input=[1], max_tokens=3)["error"]
            self.assertEqual(e["code"], "worker_crashed", mode)
            self.assertIn(says, e["message"], mode)
        finally:
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(d.dir, ignore_errors=True)

    def test_tokens_for_a_request_it_was_not_given(self):
        self.check("stranger", "which it was not given")

    def test_more_tokens_than_asked(self):
        self.check("excess", "4 tokens for a request of 3")

    def test_a_token_outside_the_vocabulary(self):
        self.check("outsider", "token 999 is outside the model's vocabulary of 16")

    def test_an_error_code_the_protocol_does_not_have(self):
        self.check("bogus", "malformed or unexpected")

    def loads(self, mode):
        d = Daemon(fake_config("restart_limit = 1\n"), {"a": A}, {"fake-worker": fake_worker(mode)})
        try:
            return d.client().call("load", model="a")
        finally:
            self.assertEqual(d.stop(), 0)
            shutil.rmtree(d.dir, ignore_errors=True)

    def test_another_version_of_the_worker_protocol(self):
        said = re.search(r"it speaks worker protocol (\d+), modeld (\d+)", self.loads("old")["error"]["message"])
        self.assertEqual(int(said.group(1)), int(said.group(2)) - 1)

    def test_a_key_a_message_may_not_have(self):
        self.assertIn('WM_LOADED with a key it may not have: "colour"', self.loads("chatty")["error"]["message"])


if __name__ == "__main__":
    unittest.main()
