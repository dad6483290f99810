"""The Debian package, as an administrator meets it: built with make deb
(lintian clean), installed with dpkg, run by its init script, purged.

Runs only in a throwaway root (tests/package/throwaway-root.sh, which
tests/run puts it in): an overlay of this machine's root that goes when the
tests end, so that the host's own installation (a modeld package, its
configuration and its state) is never touched. Needs root and dpkg there.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import BUILD, MKMODEL, Client, wait_until  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SOCKET = "/run/modeld/modeld.sock"
INIT = "/etc/init.d/modeld"
MODELS = "/var/lib/modeld/models"
PROGRAMS = ("/usr/sbin/modeld", "/usr/lib/modeld/modeld-worker")


def run(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def installed_processes():
    """pids running the installed modeld or its worker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            exe = os.readlink("/proc/%s/exe" % pid)
        except OSError:
            continue
        if exe.replace(" (deleted)", "") in PROGRAMS:
            found.append(int(pid))
    return found


def purge():
    if run("dpkg-query", "-W", "-f=${Status}", "modeld", check=False).stdout.endswith("installed"):
        run(INIT, "stop", check=False)
        run("dpkg", "--purge", "modeld")


@unittest.skipUnless(os.environ.get("MODELD_THROWAWAY_ROOT") == "1",
                     "skipped: the package test runs only in a throwaway root (tests/package/throwaway-root.sh "
                     "needs root, unshare and overlayfs), never on the host's own installation")
@unittest.skipUnless(os.geteuid() == 0 and shutil.which("dpkg"), "skipped: the package test needs root and dpkg")
class Package(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        purge()
        run("make", "-C", ROOT, "--no-print-directory", "deb", "BUILD=" + BUILD)
        cls.deb = glob.glob(os.path.join(BUILD, "modeld_*.deb"))[0]

    def tearDown(self):
        purge()
        for f in glob.glob(os.path.join(MODELS, "pkgtest-*")):
            os.unlink(f)
        for d in (MODELS, "/var/lib/modeld"):
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)

    def ctl(self, *args):
        return run("/usr/bin/modelctl", "-s", SOCKET, *args)

    def slot(self):
        c = Client(SOCKET)
        try:
            return c.ok("status")["slots"][0]
        finally:
            c.close()

    def test_install_run_restart_stop_purge(self):
        run("dpkg", "-i", self.deb)
        self.assertEqual(run("id", "-un", "modeld").stdout.strip(), "modeld")
        st = os.stat("/var/lib/modeld")
        self.assertEqual((st.st_uid, st.st_gid), (int(run("id", "-u", "modeld").stdout),
                                                  int(run("id", "-g", "modeld").stdout)))
        run("/usr/sbin/modeld", "-t", "-c", "/etc/modeld/modeld.conf")
        run(MKMODEL, os.path.join(MODELS, "pkgtest-a.safetensors"), "--n", "16", "--a", "3", "--c", "1")

        run(INIT, "start")
        self.assertEqual(run(INIT, "status").returncode, 0)
        self.assertIn("SLOT", self.ctl("status").stdout)
        self.ctl("load", "pkgtest-a")
        self.assertEqual((self.slot()["state"], self.slot()["model"]), ("ready", "pkgtest-a"))
        before = set(installed_processes())

        run(INIT, "restart")
        self.assertTrue(before.isdisjoint(installed_processes()), "a process outlived the restart")
        # the desired state (/var/lib/modeld/modeld.state) brings the model back
        wait_until(lambda: (self.slot()["state"], self.slot()["model"]) == ("ready", "pkgtest-a"),
                   what="the model loaded again after the restart")

        # reload: a new model appears, the changed slot setting applies, the worker stays
        pid = self.slot()["pid"]
        run(MKMODEL, os.path.join(MODELS, "pkgtest-b.safetensors"), "--n", "16", "--a", "5", "--c", "1")
        with open("/etc/modeld/modeld.conf", "a") as f:
            f.write("\n[slot cpu]\nautoload = yes\n")
        run(INIT, "reload")
        wait_until(lambda: "pkgtest-b" in self.ctl("models").stdout, what="the new model after reload")
        self.assertEqual(self.slot()["pid"], pid)
        c = Client(SOCKET)
        self.assertEqual(c.ok("infer", model="pkgtest-b", input=[1], max_tokens=1)["tokens"], [6])
        c.close()

        # a broken configuration: reload and restart refuse it, say why, and leave modeld serving
        pid = self.slot()["pid"]        # pkgtest-b's worker
        with open("/etc/modeld/modeld.conf") as f:
            good = f.read()
        with open("/etc/modeld/modeld.conf", "a") as f:
            f.write("\nmax_queue = many\n")          # in the [slot cpu] just added
        for action in ("reload", "restart"):
            r = run(INIT, action, check=False)
            self.assertNotEqual(r.returncode, 0, action)
            self.assertIn("max_queue", r.stdout + r.stderr, action)
            self.assertEqual(self.slot()["pid"], pid, "%s touched the running modeld" % action)
        with open("/etc/modeld/modeld.conf", "w") as f:
            f.write(good)

        run(INIT, "stop")
        self.assertEqual(installed_processes(), [], "modeld or a worker is left after stop")
        self.assertEqual(run(INIT, "status", check=False).returncode, 3)

        run("dpkg", "--purge", "modeld")
        self.assertFalse(os.path.exists("/etc/modeld"), "the configuration outlived the purge")
        self.assertFalse(os.path.exists("/usr/sbin/modeld"))
        # an administrator's model is not the package's to delete
        self.assertTrue(os.path.exists(os.path.join(MODELS, "pkgtest-a.safetensors")))

    def test_a_failed_start_says_so(self):
        run("dpkg", "-i", self.deb)
        run(INIT, "stop", check=False)
        with open("/etc/modeld/modeld.conf", "a") as f:
            f.write("\n[slot broken]\ndevice = tpu:0\n")
        r = run(INIT, "start", check=False)
        self.assertNotEqual(r.returncode, 0)
        said = r.stdout + r.stderr
        if os.path.isdir("/run/systemd/system"):    # the init script hands over to systemd, which logs it
            said = run("journalctl", "-u", "modeld", "--no-pager", check=False).stdout
        self.assertIn("/etc/modeld/modeld.conf:", said)
        self.assertEqual(installed_processes(), [])

    def test_unit_and_manuals_check_clean(self):
        run("dpkg", "-i", self.deb)
        r = run("systemd-analyze", "verify", "/lib/systemd/system/modeld.service", check=False)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("modeld.service", r.stdout + r.stderr)
        if shutil.which("makewhatis"):
            run("makewhatis", "/usr/share/man", check=False)     # so that mandoc finds the pages' references
        for page in ("man8/modeld.8.gz", "man1/modelctl.1.gz", "man5/modeld.conf.5.gz"):
            r = run("mandoc", "-Tlint", "/usr/share/man/" + page, check=False)
            said = [line for line in (r.stdout + r.stderr).splitlines() if not re.search(r"^mandoc: outdated", line)]
            self.assertEqual(said, [], page)


if __name__ == "__main__":
    unittest.main()
