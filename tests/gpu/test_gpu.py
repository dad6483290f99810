"""The cuda engine on a real GPU (make test-gpu; skipped where none is found).

Tokens must match the cpu engine's; device memory must come back after every
unload and after a worker is killed; a multi-GB file must reach the device
byte for byte.
"""
import os
import signal
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import BUILD, DaemonTest, perm_tokens, pid_alive, wait_until  # noqa: E402

WORKER = os.path.join(BUILD, "modeld-worker")
SLACK = 64 << 20          # free memory within this of the baseline counts as back


def probe():
    """{device: (total, free)} from a fresh process, as a separate observer."""
    out = subprocess.run([WORKER, "--probe"], capture_output=True, text=True, timeout=30).stdout
    gpus = {}
    for line in out.splitlines():
        name, total, free = line.split("\t")[:3]
        gpus[name] = (int(total), int(free))
    return gpus


GPUS = probe() if os.path.exists(WORKER) else {}
needs_gpu = unittest.skipUnless(GPUS, "skipped: no GPU")

A = ("--n", 64, "--a", 5, "--c", 1)
H = ("--n", 96, "--a", 7, "--c", 3, "--dtype", "f16")
BF = ("--n", 40, "--a", 3, "--c", 2, "--dtype", "bf16", "--eos", 7)
BIG = ("--n", 1024, "--a", 3, "--c", 1)       # 12 MiB of weights


def free_now():
    return probe()["cuda:0"][1]


@needs_gpu
class SameTokens(DaemonTest):
    models = {"a": A, "h": H, "bf": BF}
    config = "[slot cpu]\n[slot gpu]\ndevice = cuda:0\n"

    def test_tokens_match_the_cpu_engine(self):
        c = self.d.client()
        for name, (n, a, cc) in {"a": (64, 5, 1), "h": (96, 7, 3), "bf": (40, 3, 2)}.items():
            c.ok("load", model=name, slot="cpu")
            c.ok("load", model=name, slot="gpu")
            for start in range(0, n, 7):
                want = perm_tokens(n, a, cc, start, 40, eos=7 if name == "bf" else None)
                cpu = c.ok("infer", slot="cpu", input=[start], max_tokens=40)["tokens"]
                gpu = c.ok("infer", slot="gpu", input=[start], max_tokens=40)["tokens"]
                self.assertEqual(cpu, want)
                self.assertEqual(gpu, want)


@needs_gpu
class MemoryComesBack(DaemonTest):
    models = {"a": A, "big": BIG}
    config = "[slot gpu]\ndevice = cuda:0\n"

    def test_switching_twenty_times_gives_memory_back(self):
        c = self.d.client()
        baseline = free_now()
        for i in range(20):
            c.ok("load", model="a" if i % 2 else "big")
            self.assertLess(free_now(), baseline)     # the worker holds memory
            c.ok("unload", slot="gpu")
            self.assertGreater(free_now(), baseline - SLACK, "memory not back after unload %d" % i)

    def test_killing_a_worker_gives_memory_back(self):
        c = self.d.client()
        baseline = free_now()
        c.ok("load", model="big")
        pid = c.ok("status", slot="gpu")["slots"][0]["pid"]
        c.ok("subscribe", events=["state"])
        os.kill(pid, signal.SIGKILL)
        c.wait_state("reconnecting")
        c.wait_state("ready", timeout=60)
        self.assertFalse(pid_alive(pid))
        held = c.ok("status", slot="gpu")["slots"][0]["mem_bytes"]
        self.assertGreater(held, 0)
        self.assertGreater(free_now(), baseline - held - 2 * SLACK)


@needs_gpu
class BigFile(DaemonTest):
    """With MODELD_VERIFY_LOAD, the cuda engine sums the bytes on the device
    and fails the load unless they add up to what it read."""
    models = {"big": ("--n", 16, "--a", 3, "--c", 1, "--pad", 3 << 30, "--random-pad", 7)}
    config = "[slot gpu]\ndevice = cuda:0\n"

    def setUp(self):
        os.environ["MODELD_VERIFY_LOAD"] = "1"
        try:
            super().setUp()
        finally:
            del os.environ["MODELD_VERIFY_LOAD"]

    def test_a_multi_gb_file_arrives_byte_for_byte(self):
        c = self.d.client()
        r = c.call("load", model="big")
        self.assertTrue(r["ok"], r)
        self.assertEqual(c.ok("infer", model="big", input=[5], max_tokens=8)["tokens"],
                         perm_tokens(16, 3, 1, 5, 8))


if __name__ == "__main__":
    unittest.main()
