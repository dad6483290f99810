"""modeld under a service manager: the daemon mode and pidfile an init
script relies on, and the sd_notify messages systemd's Type=notify reads."""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import unittest

from harness import (DEADLINE, GATED_WORKER, MKMODEL, MODELCTL, MODELD, Client, Daemon, DaemonTest, gated_worker,
                     perm_tokens, pid_alive, wait_until)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MAN = os.path.join(ROOT, "docs", "man")


class DaemonMode(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modeld-service-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        os.mkdir(os.path.join(self.dir, "models"))
        subprocess.run([MKMODEL, os.path.join(self.dir, "models", "a.safetensors"), "--n", "16", "--a", "3",
                        "--c", "1"], check=True)
        self.sock = os.path.join(self.dir, "modeld.sock")
        self.pidfile = os.path.join(self.dir, "modeld.pid")

    def start(self, *extra):
        return subprocess.run([MODELD, "-d", "-p", self.pidfile, "--models", os.path.join(self.dir, "models")] +
                              list(extra), capture_output=True, text=True, timeout=DEADLINE)

    def test_returns_once_serving_and_cleans_up_on_stop(self):
        r = self.start("-s", self.sock)
        self.assertEqual(r.returncode, 0, r.stderr)
        # serving already: no waiting for the socket or the pidfile
        with open(self.pidfile) as f:
            pid = int(f.read())
        self.addCleanup(lambda: pid_alive(pid) and os.kill(pid, signal.SIGKILL))
        self.assertTrue(pid_alive(pid))
        c = Client(self.sock)
        c.ok("load", model="a")
        self.assertEqual(c.ok("status")["slots"][0]["state"], "ready")
        c.close()
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        self.assertEqual(int(fields[3]), pid, "the daemon leads a session of its own")
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), what="modeld to exit")
        self.assertFalse(os.path.exists(self.pidfile), "the pidfile outlived modeld")

    def test_fails_when_it_cannot_serve(self):
        r = self.start("-s", os.path.join(self.dir, "no", "such", "dir", "modeld.sock"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("did not start", r.stderr)
        self.assertFalse(os.path.exists(self.pidfile))

    def test_a_bad_config_is_said_before_detaching(self):
        conf = os.path.join(self.dir, "bad.ini")
        with open(conf, "w") as f:
            f.write("[modeld]\nmax_clients = many\n")
        r = self.start("-s", self.sock, "-c", conf)
        self.assertEqual(r.returncode, 1)
        self.assertIn("bad.ini:2", r.stderr)


class SystemdNotify(unittest.TestCase):
    """READY=1 once the socket listens, STATUS= with each slot's state, STOPPING=1 at a stop."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modeld-notify-")
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(os.path.join(self.dir, "notify"))
        self.notify.settimeout(DEADLINE)
        self.addCleanup(self.notify.close)

    def next_message(self):
        return dict(line.split("=", 1) for line in self.notify.recv(4096).decode().splitlines())

    def message_with(self, key, pred=lambda v: True):
        while True:
            m = self.next_message()
            if key in m and pred(m[key]):
                return m

    def test_ready_status_stopping(self):
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(self.dir, "notify"))
        d = Daemon("[slot main]\ndefault_model = a\n", {"a": ("--n", 16, "--a", 3, "--c", 1)}, env=env)
        try:
            self.message_with("READY")
            Client(d.sock).close()      # listening when it says so
            m = self.message_with("STATUS", lambda v: v == "main ready (a)")
            self.assertEqual(m["STATUS"], "main ready (a)")
            d.ctl("unload", "main")
            self.message_with("STATUS", lambda v: v.startswith("main empty"))
        finally:
            self.assertEqual(d.stop(), 0)
        self.message_with("STOPPING")


class DesiredState(unittest.TestCase):
    """state_dir keeps the model each slot should hold across restarts."""
    MODELS = {"a": ("--n", 16, "--a", 3, "--c", 1), "b": ("--n", 16, "--a", 5, "--c", 1)}

    def setUp(self):
        self.state_dir = tempfile.mkdtemp(prefix="modeld-state-")
        self.addCleanup(shutil.rmtree, self.state_dir, ignore_errors=True)
        self.config = "[modeld]\nstate_dir = %s\n[slot main]\ndefault_model = a\n" % self.state_dir

    def daemon(self):
        d = Daemon(self.config, self.MODELS)
        self.addCleanup(shutil.rmtree, d.dir, ignore_errors=True)
        return d

    def wait_ready(self, d, model):
        c = d.client()
        wait_until(lambda: (lambda s: s["state"] == "ready" and s["model"] == model)(c.ok("status")["slots"][0]),
                   what="slot main ready with " + model)

    def stopped(self, d):
        self.assertEqual(d.stop(), 0, d.read_log())

    def saved(self):
        with open(os.path.join(self.state_dir, "modeld.state")) as f:
            return json.load(f)["slots"]

    def test_a_restart_loads_what_was_loaded(self):
        d = self.daemon()
        self.wait_ready(d, "a")
        d.client().ok("load", model="b")
        self.assertEqual(self.saved(), {"main": "b"})
        self.stopped(d)
        self.assertEqual(self.saved(), {"main": "b"}, "a shutdown is not a change of mind")

        d = self.daemon()       # a new modeld: b, not the default a
        self.wait_ready(d, "b")
        self.assertIn("slot main: b, as before the restart", d.read_log())
        d.ctl("unload", "main")
        wait_until(lambda: self.saved() == {"main": None}, what="the unload to be written")
        self.stopped(d)

        d = self.daemon()       # unloaded stays unloaded
        self.assertEqual(d.client().ok("status")["slots"][0]["state"], "empty")
        self.stopped(d)

    def ready(self, d):
        """/readyz's status code, with what it waits for."""
        from test_http import get, port_of
        port = wait_until(lambda: port_of(d), what="the HTTP port in the log")
        status, _, body = get(port, "/readyz")
        return status, body

    def test_ready_means_holding_what_it_should_now(self):
        self.config = self.config.replace("[modeld]\n", "[modeld]\nhttp = 127.0.0.1:0\n")
        with open(os.path.join(self.state_dir, "modeld.state"), "w") as f:
            json.dump({"version": 1, "slots": {"main": "b"}, "defaults": {"main": "a"}}, f)
        d = self.daemon()           # restored: b, not the default a
        self.wait_ready(d, "b")
        self.assertEqual(self.ready(d)[0], 200)
        d.client().ok("unload", slot="main")
        self.assertEqual(self.ready(d)[0], 200)     # emptied by an administrator: nothing is awaited
        c = d.client()
        c.ok("subscribe", events=["state"])
        d.client().ok("load", model="a", wait=False)
        c.wait_state("loading_model")
        self.assertEqual(self.ready(d)[0], 200)     # until it becomes ready with a, empty is what it holds
        c.wait_state("ready")
        os.kill(c.ok("status")["slots"][0]["pid"], signal.SIGKILL)
        c.wait_state("reconnecting")
        status, body = self.ready(d)                # a crash is not a change of mind: a is awaited again
        self.assertEqual((status, body["waiting"][0]["model"]), (503, "a"))
        c.wait_state("ready")
        self.assertEqual(self.ready(d)[0], 200)
        self.stopped(d)

    def test_a_changed_default_model_wins_over_the_kept_state(self):
        d = self.daemon()
        self.wait_ready(d, "a")
        d.client().ok("unload", slot="main")
        self.stopped(d)
        d = self.daemon()           # the same default: empty, as before the restart
        self.assertEqual(d.client().ok("status")["slots"][0]["state"], "empty")
        self.stopped(d)
        self.config = self.config.replace("default_model = a", "default_model = b")
        d = self.daemon()           # a new default is a later decision than the kept state
        self.wait_ready(d, "b")
        self.assertIn("slot main's default_model has changed since", d.read_log())
        self.stopped(d)

    def test_a_crash_keeps_the_state(self):
        d = self.daemon()
        self.wait_ready(d, "a")
        d.proc.kill()
        d.stop()
        self.assertEqual(self.saved(), {"main": "a"})

    def test_a_corrupt_file_is_reported_and_ignored(self):
        for text, says in (('{"version": 1, "slots": {"main": "b"', "modeld.state:1"),
                           ('{"version": 7}', "not a version 1 state file"),
                           ('{"version": 1, "slots": {"main": "gone"}}', "model gone is no longer configured"),
                           ('{"version": 1, "slots": {"gone": "b"}}', "slot gone is no longer configured")):
            with open(os.path.join(self.state_dir, "modeld.state"), "w") as f:
                f.write(text)
            d = self.daemon()
            self.wait_ready(d, "a")      # as configured
            self.assertIn(says, d.read_log())
            self.stopped(d)


A = ("--n", 16, "--a", 3, "--c", 1)
B = ("--n", 16, "--a", 5, "--c", 1)


class Reload(DaemonTest):
    """reload (and SIGHUP): models appear and go, slots keep their workers, a bad file changes nothing."""
    models = {"a": A, "b": B}
    config = "[modeld]\nhttp = 127.0.0.1:0\n[slot main]\nautoload = no\n"

    def metrics(self):
        port = wait_until(lambda: re.search(r"http: listening on \S+ port (\d+)", self.d.read_log()), what="the port")
        conn = http.client.HTTPConnection("127.0.0.1", int(port.group(1)), timeout=DEADLINE)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        return dict(re.findall(r'^modeld_generated_tokens_total\{model="(\w+)"\} (\S+)$', text, re.M))

    def write_config(self, text):
        with open(self.d.config, "w") as f:
            f.write(text)

    def slot(self, c):
        return c.ok("status")["slots"][0]

    def names(self, c):
        return sorted(m["name"] for m in c.ok("models")["models"])

    def test_a_file_moved_over_a_loaded_model_is_a_change(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = self.slot(c)["pid"]
        path = os.path.join(self.d.models_dir, "a.safetensors")
        subprocess.run([MKMODEL, path + ".new"] + [str(v) for v in B], check=True)
        os.rename(path + ".new", path)      # what a careful operator does: the old file stays whole
        self.assertEqual(c.ok("reload")["changed"], 1)
        c.ok("subscribe", events=["state"])
        c.wait_state("ready", model="a")
        self.assertNotEqual(self.slot(c)["pid"], pid)
        self.assertEqual(c.ok("infer", model="a", input=[1], max_tokens=3)["tokens"], perm_tokens(16, 5, 1, 1, 3))
        self.assertEqual(c.ok("reload")["changed"], 0)

    def test_a_file_written_over_in_place_kills_nothing(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = self.slot(c)["pid"]
        path = os.path.join(self.d.models_dir, "a.safetensors")
        subprocess.run([MKMODEL, path + ".new"] + [str(v) for v in B], check=True)
        with open(path + ".new", "rb") as f:
            other = f.read()
        os.unlink(path + ".new")
        with open(path, "r+b") as f:        # cut short first, as cp does, then part of the other model
            f.truncate(0)
            f.write(other[: len(other) // 2])
        self.assertEqual(c.ok("infer", model="a", input=[1], max_tokens=3)["tokens"], perm_tokens(16, 3, 1, 1, 3))
        self.assertEqual(self.slot(c)["pid"], pid)
        self.assertEqual(c.ok("reload")["changed"], 1)      # and it is seen to have changed

    def test_models_appear_and_go_and_workers_stay(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = self.slot(c)["pid"]
        c.ok("infer", model="a", input=[1], max_tokens=3)
        self.assertEqual(self.metrics(), {"a": "3", "b": "0"})
        self.d.make_model("c", *A)
        os.unlink(os.path.join(self.d.models_dir, "b.safetensors"))
        r = c.ok("reload")
        self.assertEqual((r["models"], r["added"], r["removed"], r["changed"]), (2, 1, 1, 0))
        self.assertEqual(self.metrics(), {"a": "3", "c": "0"}, "a's numbers go on, b's go")
        self.assertEqual(self.names(c), ["a", "c"])
        self.assertEqual((self.slot(c)["state"], self.slot(c)["model"], self.slot(c)["pid"]), ("ready", "a", pid))
        self.assertEqual(c.call("load", model="b")["error"]["code"], "unknown_model")
        c.ok("load", model="c")

    def test_a_loaded_model_that_goes_is_unloaded(self):
        c = self.d.client()
        c.ok("load", model="a")
        c.ok("subscribe", events=["state", "advisory"])
        os.unlink(os.path.join(self.d.models_dir, "a.safetensors"))
        r = c.ok("reload")
        self.assertEqual((r["removed"], r["added"], r["changed"]), (1, 0, 0))
        e = c.wait_event(lambda e: e["event"] == "advisory", what="the reload's advisory")
        self.assertEqual((e["slot"], e["message"]), (None, "reloaded: 1 models; 0 added, 1 removed, 0 changed"))
        c.wait_state("empty", slot="main")
        r = c.call("infer", model="a", input=[1], max_tokens=1)
        self.assertEqual(r["error"]["code"], "unknown_model")

    def test_a_changed_model_is_loaded_again_from_its_new_definition(self):
        self.write_config("[slot main]\n[model x]\npath = models/a.safetensors\nwarmup = 1\n")
        c = self.d.client()
        c.ok("reload")
        c.ok("load", model="x")
        pid = self.slot(c)["pid"]
        c.ok("subscribe", events=["state"])
        self.write_config("[slot main]\n[model x]\npath = models/a.safetensors\nwarmup = 2\n")
        r = c.ok("reload")
        self.assertEqual((r["changed"], r["added"], r["removed"]), (1, 0, 0))
        c.wait_state("unloading_model", slot="main")
        c.wait_state("ready", slot="main", model="x")
        self.assertNotEqual(self.slot(c)["pid"], pid)

    def test_slot_settings_change_in_place(self):
        c = self.d.client()
        c.ok("load", model="a")
        pid = self.slot(c)["pid"]
        self.assertEqual(c.call("infer", model="b", input=[1], max_tokens=1)["error"]["code"], "not_loaded")
        self.write_config("[slot main]\nautoload = yes\n")
        c.ok("reload")
        self.assertEqual(self.slot(c)["pid"], pid, "the slot's worker was not kept")
        self.assertEqual(c.ok("infer", model="b", input=[1], max_tokens=1)["tokens"], [6])

    def test_a_bad_config_changes_nothing(self):
        c = self.d.client()
        c.ok("load", model="a")
        c.ok("subscribe", events=["advisory"])
        self.write_config("[slot main]\nautoload = yes\nmax_queue = lots\n")
        self.d.make_model("c", *A)
        r = c.call("reload")
        self.assertEqual(r["error"]["code"], "bad_config")
        self.assertIn("modeld.ini:3", r["error"]["message"])
        self.assertIn("the running configuration stays", r["error"]["message"])
        e = c.wait_event(lambda e: e["event"] == "advisory", what="the advisory")
        self.assertEqual(e["message"], r["error"]["message"])
        self.assertIn("modeld.ini:3", self.d.read_log())
        self.assertEqual(self.names(c), ["a", "b"])
        self.assertEqual(c.call("infer", model="b", input=[1], max_tokens=1)["error"]["code"], "not_loaded")

    def test_what_was_set_up_at_start_waits_for_a_restart(self):
        c = self.d.client()
        self.write_config("[modeld]\nhttp = 127.0.0.1:0\nmax_frame = 2097152\nlog_level = debug\n"
                          "[slot main]\nautoload = no\n")
        c.ok("reload")
        self.assertIn("reload: max_frame changed; it takes effect at the next start", self.d.read_log())
        self.assertNotIn("reload: http changed", self.d.read_log())

    def test_slots_cannot_come_or_go(self):
        c = self.d.client()
        self.write_config("[slot main]\n[slot extra]\n")
        r = c.call("reload")
        self.assertEqual(r["error"]["code"], "bad_config")
        self.assertIn("needs a restart", r["error"]["message"])
        self.assertEqual([s["name"] for s in c.ok("status")["slots"]], ["main"])

    def test_modelctl_reload(self):
        self.d.make_model("c", *A)
        r = self.d.ctl("reload")
        self.assertEqual((r.returncode, r.stdout), (0, "reloaded: 3 models; 1 added, 0 removed, 0 changed\n"))

    def test_sighup_reloads(self):
        c = self.d.client()
        self.d.make_model("c", *A)
        self.d.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "c" in self.names(c), what="the new model after SIGHUP")


class ReloadDuringLoad(DaemonTest):
    models = {"a": A, "b": B}
    files = {GATED_WORKER: gated_worker()}      # never opened: the load lasts until it is given up
    config = "[modeld]\nworker = @DIR@/%s\n[slot main]\n" % GATED_WORKER

    def test_the_waiters_of_a_model_that_goes_are_told(self):
        c, admin = self.d.client(), self.d.client()
        c.ok("subscribe", events=["state"])
        rid = c.request("load", model="b")
        c.wait_state("loading_model", slot="main")
        os.unlink(os.path.join(self.d.models_dir, "b.safetensors"))
        self.assertEqual(admin.ok("reload")["removed"], 1)
        r = c.reply(rid)
        self.assertEqual(r["error"]["code"], "unknown_model")
        self.assertIn("model b was removed from the configuration", r["error"]["message"])
        c.wait_state("empty", slot="main")


class ManPages(unittest.TestCase):
    PAGES = {"modeld.8": MODELD, "modelctl.1": MODELCTL, "modeld.conf.5": None}

    def test_lint_clean(self):
        """mandoc -Tlint says nothing, but that the pages' references to each
        other are not installed, or not in its index (the package's test
        lints them installed)."""
        for page in self.PAGES:
            r = subprocess.run(["mandoc", "-Tlint", os.path.join(MAN, page)], capture_output=True, text=True)
            said = [line for line in (r.stdout + r.stderr).splitlines()
                    if not re.search(r"(manual not found: Xr |mandoc\.db lacks )(modeld|modelctl|modeld\.conf)[ (][158]",
                                     line)]
            self.assertEqual(said, [], page)

    def test_every_option_is_documented(self):
        for page, prog in self.PAGES.items():
            if not prog:
                continue
            usage = subprocess.run([prog, "--help"], capture_output=True, text=True).stdout
            with open(os.path.join(MAN, page)) as f:
                text = f.read()
            for opt in sorted(set(re.findall(r"(?<![\w-])--([a-z][a-z-]+)", usage))):
                self.assertRegex(text, r"(Fl |, |\| )-%s\b" % opt, "%s: --%s is not in the manual" % (page, opt))


class BashCompletion(unittest.TestCase):
    def test_commands_and_names(self):
        """Completes the commands modelctl knows, and the model names the running modeld reports."""
        d = Daemon(None, {"alpha": ("--n", 16, "--a", 3, "--c", 1)})
        try:
            script = (
                "source /usr/share/bash-completion/bash_completion\n"
                "source %s\n"
                "t() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); COMP_LINE=\"$*\"; COMP_POINT=${#COMP_LINE};"
                " _modelctl; echo \"${COMPREPLY[*]}\"; }\n"
                "t modelctl lo\nt modelctl -s %s load ''\nt modelctl watch --events state,pr\n"
            ) % (os.path.join(ROOT, "packaging", "modelctl.bash-completion"), d.sock)
            env = dict(os.environ, PATH=os.path.dirname(MODELCTL) + ":" + os.environ["PATH"])
            out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                                 timeout=DEADLINE).stdout.splitlines()
        finally:
            self.assertEqual(d.stop(), 0)
        self.assertEqual(out, ["load", "--slot --no-wait alpha", "state,progress"])
        usage = subprocess.run([MODELCTL, "--help"], capture_output=True, text=True).stdout
        with open(os.path.join(ROOT, "packaging", "modelctl.bash-completion")) as f:
            completion = f.read()
        for cmd in re.findall(r"^  ([a-z]+) ", usage, re.M):
            self.assertIn(" " + cmd, completion, "modelctl %s is not completed" % cmd)


if __name__ == "__main__":
    unittest.main()
