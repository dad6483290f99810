"""What hostile or careless input, peers and hosts must not do to modeld."""
import unittest

from harness import DaemonTest


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


if __name__ == "__main__":
    unittest.main()
