"""Engines as names: built in, or shared objects in engine_dir, chosen by config or by the file."""
import os
import re

from harness import BUILD, DaemonTest

OLD_ENGINE_DIR = os.path.join(BUILD, "test-engines")


class Engines(DaemonTest):
    config = """
[modeld]
engine_dir = {dir}
[model old]
path = @DIR@/models/a.safetensors
engine = old
[model nosuch]
path = @DIR@/models/a.safetensors
engine = nosuch
""".format(dir=OLD_ENGINE_DIR)
    files = {"models/text.gguf": b"GGUF" + bytes(60)}

    def test_an_engine_of_another_interface_is_refused(self):
        e = self.d.client().call("load", model="old")["error"]
        self.assertEqual(e["code"], "load_failed")
        said = re.search(r"built for engine ABI (\d+); this worker speaks (\d+)", e["message"])
        self.assertEqual(int(said.group(1)), int(said.group(2)) - 1)      # the test engine is one behind

    def test_a_missing_engine_is_named(self):
        e = self.d.client().call("load", model="nosuch")["error"]
        self.assertEqual(e["code"], "load_failed")
        self.assertIn("no engine called nosuch", e["message"])

    def test_gguf_files_are_served_and_go_to_the_llama_engine(self):
        c = self.d.client()
        models = {m["name"]: m for m in c.ok("models")["models"]}
        self.assertEqual(models["text"]["engine"], "auto")
        self.assertTrue(models["text"]["path"].endswith("text.gguf"))
        # engine_dir here has no llama engine: the load says so, the slot is unharmed
        e = c.call("load", model="text")["error"]
        self.assertEqual(e["code"], "load_failed")
        self.assertIn("no engine called llama", e["message"])
        c.ok("load", model="a")


class MissingEngine(DaemonTest):
    """A build that could not make the llama engine says why, and a GGUF load repeats it."""
    config = "[modeld]\nengine_dir = @DIR@/engines\n"
    files = {"models/text.gguf": b"GGUF" + bytes(60),
             "engines/modeld-engine-llama.missing": b"it was not built: llama.sh: npm not found\n"}

    def test_the_reason_reaches_the_client(self):
        e = self.d.client().call("load", model="text")["error"]
        self.assertEqual(e["code"], "load_failed")
        self.assertIn("no engine called llama: it was not built: llama.sh: npm not found", e["message"])
