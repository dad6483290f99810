"""The cuda engine on a GPU (make test-gpu; skipped where none is found).

Tokens must match the cpu engine's; device memory must come back after every
unload and after a worker is killed; a multi-GB file must reach the device
byte for byte; a model the device cannot hold fails with insufficient_memory.

make test also runs these against tests/fakecuda, the stand-in driver (its
devices are named "modeld fake GPU N"), where the big file is smaller and a
few tests of the driver's own failures are added.
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
    """{device: (total, free, label)} from a fresh process, as a separate observer."""
    out = subprocess.run([WORKER, "--probe"], capture_output=True, text=True, timeout=30).stdout
    gpus = {}
    for line in out.splitlines():
        if line.startswith("cuda:"):
            name, total, free, label = line.split("\t", 3)
            gpus[name] = (int(total), int(free), label)
    return gpus


def llama_runs_on_gpus():
    """What the probe says of the llama engine beside the worker: True, False, or None where it is not built."""
    out = subprocess.run([WORKER, "--probe", BUILD], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        if line.startswith("engine\tllama\t"):
            return line.endswith("\tgpu")
    return None


GPUS = probe() if os.path.exists(WORKER) else {}
if os.environ.get("MODELD_TEST_EXPECT_GPU") and not GPUS:
    # Run against the stand-in driver: a probe that finds nothing is a failure, not a skip.
    raise AssertionError("%s --probe found no GPU" % WORKER)
SIMULATED = GPUS.get("cuda:0", (0, 0, ""))[2].startswith("modeld fake GPU")
needs_gpu = unittest.skipUnless(GPUS, "skipped: no GPU")
needs_fake = unittest.skipUnless(SIMULATED, "skipped: not on the stand-in driver")

A = ("--n", 64, "--a", 5, "--c", 1)
H = ("--n", 96, "--a", 7, "--c", 3, "--dtype", "f16")
BF = ("--n", 40, "--a", 3, "--c", 2, "--dtype", "bf16", "--eos", 7)
BIG = ("--n", 1024, "--a", 3, "--c", 1)       # 12 MiB of weights


MKGGUF = os.path.join(BUILD, "mkgguf")
VOCAB = os.path.join(BUILD, "vocab", "ggml-vocab-llama-spm.gguf")


def free_now():
    return probe()["cuda:0"][1]


class EnvTest(DaemonTest):
    """A DaemonTest whose modeld (and so its workers) runs with env added."""
    env = {}

    def setUp(self):
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            super().setUp()
        finally:
            for k, v in saved.items():
                if v is None:
                    del os.environ[k]
                else:
                    os.environ[k] = v


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


# Multi-GB on a GPU; on the stand-in, whose device memory is host memory,
# 512 MiB: still many chunks for every loader thread's ring.
BIG_PAD = (512 << 20) if SIMULATED else (3 << 30)


@needs_gpu
class BigFile(EnvTest):
    """With MODELD_VERIFY_LOAD, the cuda engine sums the bytes on the device
    and fails the load unless they add up to what it read."""
    models = {"big": ("--n", 16, "--a", 3, "--c", 1, "--pad", BIG_PAD, "--random-pad", 7)}
    config = "[slot gpu]\ndevice = cuda:0\n"
    env = {"MODELD_VERIFY_LOAD": "1"}

    def test_a_multi_gb_file_arrives_byte_for_byte(self):
        c = self.d.client()
        r = c.call("load", model="big")
        self.assertTrue(r["ok"], r)
        self.assertEqual(c.ok("infer", model="big", input=[5], max_tokens=8)["tokens"],
                         perm_tokens(16, 3, 1, 5, 8))


@needs_gpu
class Inventory(DaemonTest):
    models = {"big": BIG}
    config = "[slot gpu]\ndevice = cuda:0\n"

    def test_devices_and_status_show_device_memory(self):
        c = self.d.client()
        total, _, label = GPUS["cuda:0"]
        before = free_now()

        def dev():
            return {d["name"]: d for d in c.ok("devices")["devices"]}["cuda:0"]
        self.assertEqual((dev()["kind"], dev()["label"], dev()["total_bytes"]), ("cuda", label, total))
        self.assertGreater(dev()["free_bytes"], 0)
        c.ok("load", model="big")
        held = c.ok("status", slot="gpu")["slots"][0]["mem_bytes"]
        self.assertGreaterEqual(held, os.path.getsize(os.path.join(self.d.models_dir, "big.safetensors")))
        self.assertLess(free_now(), total - held + SLACK)
        # The worker's heartbeats bring the device's free memory up to date.
        wait_until(lambda: dev()["free_bytes"] <= before - held, what="free memory from a heartbeat")


@needs_gpu
class TooBig(DaemonTest):
    """The worker's own check: the supervisor's is off, and the file (a hole)
    is larger than the whole device."""
    config = "[slot gpu]\ndevice = cuda:0\nmemory_check = off\n"

    def setUp(self):
        self.models = {"huge": ("--n", 16, "--a", 3, "--c", 1, "--pad", GPUS["cuda:0"][0] + (1 << 30))}
        super().setUp()

    def test_a_model_larger_than_the_device_fails_after_waiting(self):
        c = self.d.client()
        r = c.call("load", model="huge")
        self.assertEqual(r["error"]["code"], "insufficient_memory", r)
        self.assertIn("waited 5000 ms", r["error"]["message"])
        c.ok("status")


@needs_fake
class DriverRefuses(EnvTest):
    models = {"a": A}
    config = "[slot gpu]\ndevice = cuda:0\nrestart_backoff_min = 0.05\n"
    env = {"FAKECUDA_INIT_ERROR": "CUDA_ERROR_NO_DEVICE"}

    def test_a_cuinit_error_is_named_and_retried(self):
        self.assert_unavailable_and_retried("a", "cuInit: CUDA_ERROR_NO_DEVICE")


@needs_gpu
@unittest.skipUnless(os.path.exists(os.path.join(BUILD, "modeld-engine-llama.so")), "skipped: no llama engine")
class GgufWithoutCuda(DaemonTest):
    """A GGUF model on a GPU slot, where the llama engine has no CUDA: refused before anything is unloaded."""
    models = {"a": A}
    config = "[slot gpu]\ndevice = cuda:0\n"

    def test_a_gguf_model_is_refused_and_the_slot_keeps_its_model(self):
        if llama_runs_on_gpus():
            self.skipTest("the llama engine here is built with CUDA")
        subprocess.run([MKGGUF, VOCAB, os.path.join(self.d.models_dir, "g.gguf"), "--seed", "1"], check=True,
                       timeout=120)
        c = self.d.client()
        c.ok("reload")
        c.ok("load", model="a")
        pid = c.ok("status")["slots"][0]["pid"]
        e = c.call("load", model="g")["error"]
        st = c.ok("status")["slots"][0]
        self.assertEqual((st["state"], st["model"], st["pid"]), ("ready", "a", pid))     # nothing unloaded
        self.assertEqual(e["code"], "load_failed")
        self.assertIn("built here without CUDA", e["message"])


@needs_gpu
class GgufWithNoLlamaEngine(DaemonTest):
    """A GGUF model on a GPU slot where there is no llama engine at all: the load says that, not "without CUDA"."""
    models = {"a": A}
    config = "[modeld]\nengine_dir = @DIR@/engines\n[slot gpu]\ndevice = cuda:0\n"
    files = {"models/text.gguf": b"GGUF" + bytes(60),
             "engines/modeld-engine-llama.missing": b"it was not built: llama.sh: npm not found\n"}

    def test_the_load_names_the_missing_engine(self):
        c = self.d.client()
        c.ok("load", model="a")
        e = c.call("load", model="text")["error"]
        self.assertEqual(e["code"], "load_failed")
        self.assertIn("no engine called llama: it was not built", e["message"])


if __name__ == "__main__":
    unittest.main()
