"""docs/protocol.md against the server: its tables of ops, capabilities,
states, events, job statuses and error codes are the server's, no more and
no less, so that the page clients are written from cannot drift."""
import os
import re
import unittest

from harness import DaemonTest

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def spec_table(heading):
    """The first column's names (in backticks) of the table under a heading of docs/protocol.md."""
    with open(os.path.join(TOP, "docs", "protocol.md")) as f:
        text = f.read()
    section = text.split("\n## " + heading + "\n", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([a-z_]+)` \|", section, re.M)]


def source_names(path, table):
    """The strings of a C name table: `static const char *const TABLE[...] = { [X] = "name", ... };`."""
    with open(os.path.join(TOP, path)) as f:
        text = f.read()
    body = re.search(r"\b" + table + r"\[[^\]]*\] = \{(.*?)\n\};", text, re.S).group(1)
    return re.findall(r'"([a-z_]+)"', body)


class Conformance(DaemonTest):
    def call_alone(self, msg):
        """msg's reply on a connection of its own (a subscription does not outlive it)."""
        c = self.d.client()
        r = c.call(**msg)
        c.close()
        return r

    def assert_known_code(self, r, what):
        if not r["ok"]:
            self.assertIn(r["error"]["code"], spec_table("Error codes"), what)

    def test_ops(self):
        ops = spec_table("Ops")
        self.assertEqual(sorted(ops), sorted(source_names("proto/proto.c", "op_names")))
        for op in ops:          # each is known to the server, and fails only as the spec says
            r = self.call_alone({"op": op})
            self.assertFalse(not r["ok"] and r["error"]["code"] == "unknown_op", op)
            self.assert_known_code(r, op)
        self.assertEqual(self.call_alone({"op": "frobnicate"})["error"]["code"], "unknown_op")

    def test_capabilities(self):
        hello = self.call_alone({"op": "hello", "proto": 1})
        self.assertEqual(sorted(hello["capabilities"]), sorted(spec_table("Version negotiation")))

    def test_events(self):
        events = spec_table("Events")
        self.assertEqual(sorted(events), sorted(source_names("proto/proto.c", "event_names")))
        for e in events:
            self.assertTrue(self.call_alone({"op": "subscribe", "events": [e]})["ok"], e)
        r = self.call_alone({"op": "subscribe", "events": ["nope"]})
        self.assertEqual(r["error"]["code"], "bad_request")

    def test_states_and_job_statuses(self):
        states = spec_table("States")
        self.assertEqual(sorted(states), sorted(source_names("supervisor/step.c", "state_names")))
        c = self.d.client()
        c.ok("subscribe", events=["state", "job"])
        c.ok("load", model="a")
        c.ok("unload", slot="cpu")
        seen = c.events_until(lambda e: e["event"] == "job" and e["op"] == "unload" and e["status"] == "done")
        for e in seen:
            if e["event"] == "state":
                self.assertIn(e["state"], states)
            else:
                self.assertIn(e["status"], spec_table("Job statuses"))
        self.assertIn(c.ok("status")["slots"][0]["state"], states)

    def test_error_codes(self):
        codes = spec_table("Error codes")
        self.assertEqual(sorted(codes), sorted(n for n in source_names("proto/proto.c", "err_names") if n != "ok"))


if __name__ == "__main__":
    unittest.main()
