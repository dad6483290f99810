"""modeld's HTTP listener: off unless configured, loopback or tokens, health and readiness."""
import http.client
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from harness import (BUILD, DEADLINE, GATED_WORKER, MODELD, DaemonTest, fake_worker, gated_worker, open_gate, perm_tokens,
                     pid_alive, wait_until)

A = ("--n", 16, "--a", 3, "--c", 1)


def port_of(d):
    m = re.search(r"http: listening on \S+ port (\d+)", d.read_log())
    return int(m.group(1)) if m else None


def get(port, path, method="GET", token=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    headers = dict(headers or {}, **({"Authorization": "Bearer " + token} if token else {}))
    conn.request(method, path, headers=headers)
    r = conn.getresponse()
    body = json.loads(r.read() or b"null")
    conn.close()
    return r.status, r.headers, body


class Health(DaemonTest):
    models = {"a": A}
    files = {GATED_WORKER: gated_worker()}
    config = ("[modeld]\nhttp = 127.0.0.1:0\nworker = @DIR@/%s\n[slot cpu]\ndefault_model = a\n"
              "heartbeat_timeout = 30\n" % GATED_WORKER)

    def test_healthz_readyz_and_errors(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        self.assertEqual(get(port, "/healthz")[::2], (200, {"status": "ok"}))
        status, headers, body = get(port, "/readyz")        # the default model still loads
        self.assertEqual(status, 503)
        self.assertEqual(headers["Retry-After"], "1")
        self.assertEqual(body["waiting"][0]["slot"], "cpu")
        self.assertEqual(body["waiting"][0]["model"], "a")
        open_gate(self.d)
        wait_until(lambda: get(port, "/readyz")[0] == 200, what="ready")
        models = get(port, "/v1/models")[2]
        self.assertEqual(models["object"], "list")
        self.assertEqual([(m["id"], m["object"], m["loaded"], m["loaded_in"]) for m in models["data"]],
                         [("a", "model", True, ["cpu"])])
        self.assertEqual(get(port, "/api/status")[2]["slots"][0]["state"], "ready")
        self.assertEqual([m["name"] for m in get(port, "/api/models")[2]["models"]], ["a"])
        self.assertEqual(get(port, "/api/devices")[2]["devices"][0]["name"], "cpu")
        self.assertEqual(get(port, "/api/nope")[0], 404)
        status, _, body = get(port, "/nope")
        self.assertEqual(status, 404)
        self.assertEqual(set(body["error"]), {"message", "type", "code"})
        self.assertEqual(get(port, "/healthz", method="POST")[0], 405)


def post(port, path, body):
    """The status and the JSON answer, or for a stream the list of its events' data."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    raw = r.read().decode()
    conn.close()
    if r.getheader("Content-Type") == "text/event-stream":
        return r.status, [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    return r.status, json.loads(raw)


class Completions(DaemonTest):
    models = {"a": A}
    config = "[modeld]\nhttp = 127.0.0.1:0\n[slot cpu]\nautoload = yes\n"

    def test_a_completion_from_token_ids_loads_its_model_and_answers(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        status, r = post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 4})
        self.assertEqual(status, 200, r)
        self.assertEqual(r["object"], "text_completion")
        self.assertEqual(r["choices"][0]["finish_reason"], "length")
        self.assertEqual(r["usage"], {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5})
        want = perm_tokens(16, 3, 1, 1, 4)      # a model without a tokenizer: its ids stand for its text
        self.assertEqual(r["choices"][0]["tokens"], want)
        self.assertEqual(r["choices"][0]["text"], " ".join(map(str, want)))

    def test_a_stream_ends_with_done(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        status, events = post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 3,
                                                         "stream": True, "stream_options": {"include_usage": True}})
        self.assertEqual(status, 200)
        self.assertEqual(events[-1], "[DONE]")
        last = [json.loads(e) for e in events[:-1]]
        self.assertEqual(last[-2]["choices"][0]["finish_reason"], "length")
        self.assertEqual(last[-1]["usage"]["completion_tokens"], 3)
        want = perm_tokens(16, 3, 1, 1, 3)
        pieces = [e["choices"][0] for e in last if e["choices"]]
        self.assertEqual(sum((p.get("tokens", []) for p in pieces), []), want)
        self.assertEqual("".join(p["text"] for p in pieces), " ".join(map(str, want)))

    def test_a_client_that_goes_away_mid_stream_cancels_its_inference(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        conn.request("POST", "/v1/completions", body=json.dumps(
            {"model": "a", "prompt": [1], "max_tokens": 65536, "stream": True}),
            headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        self.assertTrue(r.readline().startswith(b"data: "))    # streaming
        conn.sock.shutdown(socket.SHUT_RDWR)
        conn.close()
        wait_until(lambda: "the worker is asked to stop request" in self.d.read_log(), what="the cancel")
        status, r = post(port, "/v1/completions", {"model": "a", "prompt": [2], "max_tokens": 2})
        self.assertEqual((status, r["usage"]["completion_tokens"]), (200, 2))

    def test_a_client_that_goes_away_before_a_whole_answer_cancels_it(self):
        """Without a stream evhttp reads nothing while the answer is made: the hang-up is watched for."""
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 1})[0], 200)
        c = self.d.client()
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)            # the answer is not made until the worker goes on
        self.addCleanup(lambda: pid_alive(pid) and os.kill(pid, signal.SIGCONT))
        running, queued = (http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE) for _ in range(2))
        for conn, prompt in ((running, [1]), (queued, [2])):
            conn.request("POST", "/v1/completions", body=json.dumps({"model": "a", "prompt": prompt}),
                         headers={"Content-Type": "application/json"})
            wait_until(lambda: sum(s["queue"] + s["active"] for s in c.ok("status")["slots"]) == prompt[0],
                       what="the request at the slot")
        queued.sock.shutdown(socket.SHUT_RDWR)
        queued.close()
        wait_until(lambda: c.ok("status", slot="cpu")["slots"][0]["queue"] == 0, what="the queue left")
        running.sock.shutdown(socket.SHUT_RDWR)
        running.close()
        wait_until(lambda: "the worker is asked to stop request" in self.d.read_log(), what="the cancel")
        os.kill(pid, signal.SIGCONT)
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 2})[0], 200)

    def test_errors_have_openais_shape_and_status(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        for body, status, code in (({"model": "nope", "prompt": [1]}, 404, "model_not_found"),
                                   ({"model": "a", "prompt": [1], "max_tokens": -1}, 400, "bad_request"),
                                   ({"model": "a", "prompt": "text"}, 400, "bad_request")):
            got, r = post(port, "/v1/completions", body)
            self.assertEqual((got, r["error"]["code"]), (status, code), body)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        conn.request("POST", "/v1/chat/completions", body="{not json", headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        self.assertEqual(r.status, 400)
        self.assertIn("not a JSON object", json.loads(r.read())["error"]["message"])
        conn.close()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as big:    # over the 1 MiB bound
            big.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2097152\r\n\r\n{")
            self.assertTrue(big.recv(4096).startswith(b"HTTP/1.1 413"))
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 1})[0], 200)

    def test_fields_that_would_change_the_answer_are_refused_by_name(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        base = {"model": "a", "prompt": [1], "max_tokens": 2}
        for field, value in (("n", 2), ("best_of", 3), ("logprobs", True), ("logprobs", 2), ("top_logprobs", 3),
                             ("logit_bias", {"5": 100}), ("presence_penalty", 0.5), ("frequency_penalty", -1),
                             ("response_format", {"type": "json_object"}), ("echo", True), ("suffix", "end"),
                             ("tools", [{"type": "function", "function": {"name": "f"}}]),
                             ("tool_choice", "required")):
            for path in ("/v1/completions", "/v1/chat/completions"):
                status, r = post(port, path, dict(base, **{field: value}))
                self.assertEqual((status, r["error"]["code"]), (400, "bad_request"), (path, field))
                self.assertTrue(r["error"]["message"].startswith(field + " "), r)
        # values that change nothing stay accepted
        neutral = dict(base, n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, user="u",
                       logit_bias={}, tools=[], tool_choice="none", response_format={"type": "text"}, echo=False,
                       suffix=None, top_logprobs=None)
        status, r = post(port, "/v1/completions", neutral)
        self.assertEqual(status, 200, r)
        self.assertEqual(r["usage"]["completion_tokens"], 2)

    def test_a_body_nested_too_deep_is_refused_and_modeld_lives(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        for path in ("/v1/completions", "/v1/chat/completions", "/v1/embeddings"):
            status, r = post(port, path, {"model": "a", "x": json.loads("[" * 16 + "]" * 16)})
            self.assertEqual(status, 400, (path, r))
            self.assertIn("nested too deep", r["error"]["message"])
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 1})[0], 200)

    def test_a_body_takes_the_sockets_arguments_with_the_sockets_errors(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        base = {"model": "a", "prompt": [1], "max_tokens": 1}
        for field, value, says in (("gpu", "maybe", "gpu must be"), ("keep_alive_ms", -1, "keep_alive_ms must be"),
                                   ("wait_ms", "soon", "wait_ms must be")):
            status, r = post(port, "/v1/completions", dict(base, **{field: value}))
            self.assertEqual((status, r["error"]["code"]), (400, "bad_request"), field)
            self.assertTrue(r["error"]["message"].startswith(says), r)
        status, r = post(port, "/v1/completions", dict(base, slot="nowhere"))
        self.assertEqual((status, r["error"]["code"]), (404, "unknown_slot"), r)
        status, r = post(port, "/v1/completions", dict(base, gpu="try", keep_alive_ms=1000, wait_ms=5000))
        self.assertEqual(status, 200, r)
        self.assertEqual(r["usage"]["completion_tokens"], 1)

    def test_a_client_that_sends_half_a_request_holds_up_nobody(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"mo")
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 2})[0], 200)
        slow.close()

    def test_a_thousand_connections_at_once_are_all_answered(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < 1100:
            self.skipTest("this process may not open 1,000 sockets (hard limit %d)" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
        sel = selectors.DefaultSelector()
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(1000)]
        for s in socks:     # every one connected before any asks
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, b"")
        answers = []
        end = time.monotonic() + 6 * DEADLINE
        while sel.get_map() and time.monotonic() < end:
            for key, _ in sel.select(timeout=1):
                data = key.fileobj.recv(65536)
                if data:
                    sel.modify(key.fileobj, selectors.EVENT_READ, key.data + data)
                else:
                    answers.append(key.data)
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        self.assertEqual(len(answers), 1000)
        self.assertTrue(all(a.startswith(b"HTTP/1.1 200") and b'"id":"a"' in a for a in answers))
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Tokens(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="modeld-http-")
        self.addCleanup(shutil.rmtree, self.dir, True)

    def start(self, config):
        """modeld with config; it must stop at once, and modeld -t must refuse the same config with the
        same words. Returns its stderr."""
        path = os.path.join(self.dir, "modeld.ini")
        with open(path, "w") as f:
            f.write(config)
        said = []
        for check in ([], ["-t"]):
            p = subprocess.run([MODELD, "-c", path, "-s", os.path.join(self.dir, "s.sock"), "--models", self.dir]
                               + check, capture_output=True, text=True, timeout=DEADLINE)
            self.assertEqual(p.returncode, 1, (check, p.stdout, p.stderr))
            said.append(p.stderr.splitlines()[-1])      # the reason, after any warning
        self.assertEqual(said[0], said[1])
        return said[0]

    def test_a_non_loopback_address_needs_tokens(self):
        self.assertIn("0.0.0.0 is not a loopback address; serving it needs http_token_file",
                      self.start("[modeld]\nhttp = 0.0.0.0:0\n"))

    def test_a_bad_address_or_token_file_stops_startup(self):
        self.assertIn('"localhost" is not ADDRESS:PORT', self.start("[modeld]\nhttp = localhost\n"))
        tokens = os.path.join(self.dir, "tokens")
        with open(tokens, "w") as f:
            f.write("short\n")
        config = "[modeld]\nhttp = 127.0.0.1:0\nhttp_token_file = %s\n" % tokens
        self.assertIn(tokens + ":1: a line is TOKEN (16 to 255 characters)", self.start(config))
        for bad in ("t" * 255 + "admin\n",     # one token too long, not a token marked admin
                    "t" * 20 + " admin extra\n", "t" * 20 + " root\n", "t" * 600 + "\n"):
            with open(tokens, "w") as f:
                f.write("# tokens\n" + bad)
            self.assertIn(tokens + ":2: a line is TOKEN", self.start(config), bad[-20:])
        os.unlink(tokens)
        self.assertIn("http_token_file %s: No such file" % tokens, self.start(config))
        with open(tokens, "w") as f:
            f.write("# nothing\n")
        self.assertIn("no token in it", self.start(config))


class Bearer(DaemonTest):
    models = {"a": A}
    files = {"tokens": b"# who may call\n" + b"a" * 20 + b"\n" + b"b" * 20 + b" admin\n"}
    config = "[modeld]\nhttp = 127.0.0.1:0\nhttp_token_file = @DIR@/tokens\n[slot cpu]\nautoload = admin\n"

    def test_autoload_for_administrators_takes_an_admin_token(self):
        """As on the socket: with autoload = admin, only an administrator's request loads its model."""
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        body = json.dumps({"model": "a", "prompt": [1], "max_tokens": 1})
        for token, status in (("a" * 20, 404), ("b" * 20, 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
            conn.request("POST", "/v1/completions", body=body,
                         headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = conn.getresponse()
            said = json.loads(r.read())
            conn.close()
            self.assertEqual(r.status, status, said)
        self.assertEqual(said["usage"]["completion_tokens"], 1)

    def test_every_request_needs_a_token_from_the_file(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        self.assertIn("tokens is readable by every user", self.d.read_log())    # written 0644 here
        for path in ("/v1/models", "/api/status", "/api/jobs/1", "/nowhere"):
            status, headers, body = get(port, path)
            self.assertEqual(status, 401, path)
            self.assertEqual(headers["WWW-Authenticate"], "Bearer")
            self.assertEqual(body["error"]["code"], "unauthorized")
        self.assertEqual(get(port, "/v1/models", token="c" * 20)[0], 401)
        self.assertEqual(get(port, "/v1/models", token="a" * 20)[0], 200)
        self.assertEqual(get(port, "/v1/models", token="b" * 20)[0], 200)

    def test_probes_and_metrics_need_no_token(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        for path in ("/healthz", "/readyz", "/metrics"):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
            conn.request("GET", path)
            self.assertEqual(conn.getresponse().status, 200, path)
            conn.close()

    def test_load_and_unload_need_an_admin_token(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        for token, status in (("a" * 20, 403), ("b" * 20, 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
            conn.request("POST", "/api/load", body=json.dumps({"model": "a"}),
                         headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
            r = conn.getresponse()
            body = json.loads(r.read())
            conn.close()
            self.assertEqual(r.status, status, body)
        self.assertEqual(body["model"], "a")


class Waiting(DaemonTest):
    """A queued HTTP request waits as its wait_ms says, else http_wait_timeout, else as long as its client."""
    models = {"a": A}
    config = "[modeld]\nhttp = 127.0.0.1:0\nhttp_wait_timeout = 0.2\n[slot cpu]\nheartbeat_timeout = 30\n"

    def test_a_queued_request_waits_as_its_body_or_the_config_says(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        c = self.d.client()
        c.ok("load", model="a")
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "wait_ms": -1})[0], 400)
        pid = c.ok("status", slot="cpu")["slots"][0]["pid"]
        os.kill(pid, signal.SIGSTOP)            # nothing ends until the worker goes on
        self.addCleanup(lambda: pid_alive(pid) and os.kill(pid, signal.SIGCONT))
        conns = []
        for n, wait in enumerate((None, 600000, None)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
            body = {"model": "a", "prompt": [n + 1], "max_tokens": 2}
            if wait:
                body["wait_ms"] = wait
            conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
            conns.append(conn)
            wait_until(lambda: sum(s["queue"] + s["active"] for s in c.ok("status")["slots"]) == n + 1,
                       what="the request at the slot")
        r = conns[2].getresponse()         # the config's 0.2 s
        self.assertEqual(r.status, 503)
        self.assertIn("waited 200 ms", json.loads(r.read())["error"]["message"])
        self.assertEqual(c.ok("status", slot="cpu")["slots"][0]["queue"], 1)     # its own wait_ms holds
        os.kill(pid, signal.SIGCONT)
        for conn in conns[:2]:
            r = conn.getresponse()
            self.assertEqual((r.status, json.loads(r.read())["usage"]["completion_tokens"]), (200, 2))
            conn.close()
        conns[2].close()


class CrossSite(DaemonTest):
    """What a web page in any browser on the host could send: refused, on loopback without tokens too."""
    models = {"a": A}
    config = "[modeld]\nhttp = 127.0.0.1:0\n[slot cpu]\nautoload = admin\n"

    def send(self, port, method, path, body=None, **headers):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        said = json.loads(r.read() or b"null")
        conn.close()
        return r.status, said

    def test_administration_cross_site_and_rebinding_are_refused(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        self.d.client().ok("load", model="a")
        unload = json.dumps({"slot": "cpu", "force": True})
        status, r = self.send(port, "POST", "/api/unload", unload, **{"Content-Type": "application/json"})
        self.assertEqual(status, 403)
        self.assertIn("needs an admin token", r["error"]["message"])
        # a form or a fetch with no preflight: not JSON
        status, r = self.send(port, "POST", "/v1/completions", json.dumps({"model": "a", "prompt": [1]}),
                              **{"Content-Type": "text/plain"})
        self.assertEqual((status, r["error"]["message"]), (415, "Content-Type must be application/json"))
        status, r = self.send(port, "POST", "/api/unload", unload,
                              **{"Content-Type": "text/plain", "Origin": "http://evil.example"})
        self.assertEqual(status, 403)
        self.assertIn("Origin http://evil.example", r["error"]["message"])
        # DNS rebinding: another name for this address
        status, r = self.send(port, "GET", "/v1/models", Host="evil.example:%d" % port)
        self.assertEqual(status, 403)
        self.assertIn("Host evil.example", r["error"]["message"])
        self.assertEqual(self.d.client().ok("status")["slots"][0]["state"], "ready")
        # the same origin, and loopback names, are served
        for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "[::1]:%d" % port, "127.0.0.1"):
            status, r = self.send(port, "POST", "/v1/completions", json.dumps({"model": "a", "prompt": [1],
                                                                               "max_tokens": 1}),
                                  **{"Content-Type": "application/json; charset=utf-8", "Host": host,
                                     "Origin": "http://" + host})
            self.assertEqual(status, 200, (host, r))
        # autoload = admin: nobody over HTTP without an admin token, as a user that is not one on the socket
        self.d.client().ok("unload", slot="cpu")
        status, r = self.send(port, "POST", "/v1/completions", json.dumps({"model": "a", "prompt": [1]}),
                              **{"Content-Type": "application/json"})
        self.assertEqual((status, r["error"]["code"]), (404, "not_loaded"))

class Stream:
    """A server-sent event stream: its events as (id, data) in order; comments are skipped."""

    def __init__(self, port, path, last_id=None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        self.conn.request("GET", path, headers={"Last-Event-ID": str(last_id)} if last_id is not None else {})
        self.r = self.conn.getresponse()
        assert self.r.status == 200 and self.r.getheader("Content-Type") == "text/event-stream", self.r.status

    def next(self):
        """The next event, or None at the stream's end."""
        eid, data = None, None
        while True:
            line = self.r.readline().decode()
            if not line:
                return None
            line = line.rstrip("\n")
            if line.startswith("id: "):
                eid = int(line[4:])
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return eid, data

    def until(self, pred):
        got = []
        while True:
            e = self.next()
            if e is None:
                raise AssertionError("the stream ended; it had %r" % got)
            got.append(e)
            if pred(e[1]):
                return got

    def close(self):
        self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


def admin(d, op, **body):
    """op done by an administrator, on the socket (over HTTP it needs an admin token: Bearer tests it)."""
    return d.client().ok(op, **body)


class Events(DaemonTest):
    models = {"a": A, "b": A}
    config = "[modeld]\nhttp = 127.0.0.1:0\n"

    def is_state(self, state, model):
        return lambda e: e["event"] == "state" and e["state"] == state and e.get("model") == model

    def test_a_stream_that_reconnects_with_last_event_id_misses_nothing(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        s = Stream(port, "/v1/events")
        admin(self.d, "load", model="a")
        seen = s.until(self.is_state("ready", "a"))
        s.close()
        admin(self.d, "load", model="b")      # while it is away
        admin(self.d, "unload", slot="cpu")
        s = Stream(port, "/v1/events", last_id=seen[-1][0])
        seen += s.until(self.is_state("empty", None))
        s.close()
        ids = [e[0] for e in seen]
        self.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))), "a gap, or one twice")
        self.assertTrue(any(self.is_state("ready", "b")(e[1]) for e in seen))
        self.assertTrue(all(e[1]["seq"] == e[0] for e in seen))

    def test_a_last_event_id_that_is_not_a_number_is_refused(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        for value in ("-1", "abc", "12x", "+3", "18446744073709551616"):
            status, _, body = get(port, "/v1/events", headers={"Last-Event-ID": value})
            self.assertEqual(status, 400, value)
            self.assertIn("Last-Event-ID", body["error"]["message"])

    def test_an_id_the_buffer_cannot_serve_is_said_and_the_stream_goes_on(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        s = Stream(port, "/v1/events?events=state&slot=cpu", last_id=10 ** 9)   # from before a restart
        _, missed = s.next()
        self.assertEqual(missed["event"], "missed")
        self.assertEqual(missed["after"], 10 ** 9)
        admin(self.d, "load", model="a")
        got = s.until(self.is_state("ready", "a"))
        self.assertTrue(all(e[1]["event"] == "state" for e in got))     # only what it asked for
        s.close()
        self.assertEqual(get(port, "/v1/events?events=nope")[0], 400)
        self.assertEqual(get(port, "/v1/events?slot=nope")[0], 404)



class SlowReaders(DaemonTest):
    """What a client that does not read may cost modeld is bounded, and it is told, or given, what it missed.
    Inferences on a slot with a device lock make two gpu events each: a flood that costs the test little."""
    models = {"a": A}
    config = ("[modeld]\nhttp = 127.0.0.1:0\n[device grp]\nexclusive = yes\n"
              "[slot cpu]\nlock = grp\nmax_queue = 100000\n")

    def flood(self, n):
        c = self.d.client()
        for i in [c.request("infer", model="a", input=[1], max_tokens=1) for _ in range(n)]:
            c.reply(i)

    def test_an_event_stream_behind_is_caught_up_not_ended(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        admin(self.d, "load", model="a")
        s = Stream(port, "/v1/events?events=gpu")
        s.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.flood(3000)            # 6,000 events: far more than it may owe, or than are kept
        got = s.until(lambda e: e["event"] == "missed")
        self.assertGreater(got[-1][1]["first_kept"], 1)
        after = s.next()            # then every kept event, in order, without a gap
        self.assertEqual(after[0], got[-1][1]["first_kept"])
        live = self.d.client()
        live.ok("subscribe", events=["gpu"])
        live.ok("infer", model="a", input=[1], max_tokens=1)
        last = live.wait_event(lambda e: e["status"] == "completed")["seq"]
        rest = s.until(lambda e: e["seq"] == last)      # and on to the live ones
        ids = [after[0]] + [e[0] for e in rest]
        self.assertEqual(ids, list(range(ids[0], ids[0] + len(ids))), "a gap, or one twice")
        self.assertNotIn("ending it", self.d.read_log())
        s.close()

    def test_a_token_stream_not_read_is_cancelled_and_says_so(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        admin(self.d, "load", model="a")
        sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        body = json.dumps({"model": "a", "prompt": [1], "max_tokens": 65536, "stream": True})
        sock.sendall(("POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
        wait_until(lambda: "its request is cancelled" in self.d.read_log(), what="the stream to be cancelled")
        text = b""
        while b"data: [DONE]" not in text:
            chunk = sock.recv(65536)
            self.assertTrue(chunk, "the stream ended without [DONE]")
            text += chunk
        sock.close()
        events = [line[6:] for line in text.decode().split("\r\n") if line.startswith("data: ")]
        last = json.loads(events[-2])
        self.assertEqual(last["error"]["code"], "busy")
        self.assertIn("bytes of its stream unread", last["error"]["message"])
        self.assertFalse(any('"finish_reason":"' in e for e in events[:-2]))    # it never looks whole


class Stopping(DaemonTest):
    """SIGTERM: a request under way is answered, an event stream ends whole, as modeld stops."""
    models = {"a": A}
    files = {"fake-worker": fake_worker("stalls")}
    config = "[modeld]\nhttp = 127.0.0.1:0\nworker = @DIR@/fake-worker\n[slot cpu]\nstop_timeout = 0.2\n"

    def test_streams_end_with_an_error_and_event_streams_end_whole(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        c = self.d.client()
        c.ok("load", model="a")
        c.ok("subscribe", events=["state"])
        events = Stream(port, "/v1/events?events=state")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
        conn.request("POST", "/v1/completions", body=json.dumps({"model": "a", "prompt": [1], "stream": True}),
                     headers={"Content-Type": "application/json"})
        wait_until(lambda: c.ok("status")["slots"][0]["active"] == 1, what="the request to reach the worker")
        self.d.proc.send_signal(signal.SIGTERM)
        r = conn.getresponse()
        body = json.loads(r.read())
        self.assertEqual((r.status, body["error"]["code"]), (503, "shutting_down"))
        conn.close()
        while events.next() is not None:     # to its end: no IncompleteRead, the last chunk came
            pass
        events.conn.close()
        self.assertEqual(self.d.proc.wait(timeout=DEADLINE), 0)


class JobStreams(DaemonTest):
    files = {GATED_WORKER: gated_worker()}
    config = "[modeld]\nhttp = 127.0.0.1:0\nworker = @DIR@/%s\n" % GATED_WORKER

    def test_a_jobs_stream_follows_it_live_and_ends_with_it(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        job = admin(self.d, "load", model="a", wait=False)["job"]
        s = Stream(port, "/api/jobs/%d/events" % job)
        s.until(lambda e: e["event"] == "job" and e["status"] == "running")
        self.assertEqual([(j["job"], j["status"]) for j in get(port, "/api/jobs")[2]["jobs"]], [(job, "running")])
        open_gate(self.d)
        rest = []
        while (e := s.next()) is not None:
            rest.append(e[1])
        self.assertEqual((rest[-1]["event"], rest[-1]["status"]), ("job", "done"))
        self.assertTrue(all(e["job"] == job for e in rest))
        self.assertEqual(get(port, "/api/jobs/%d" % job)[2]["status"], "done")
        done = Stream(port, "/api/jobs/%d/events" % job)    # an ended job: its events, then the end
        events = []
        while (e := done.next()) is not None:
            events.append(e[1])
        self.assertEqual(events[-1]["status"], "done")
        s.close()
        done.close()
        self.assertEqual(get(port, "/api/jobs/999")[0], 404)
        self.assertEqual(self.d.client().ok("jobs")["jobs"][0]["status"], "done")


# Clients nobody here wrote, fetched by make test (tests/tools.sh) into build/tools.
TOOLS = os.environ.get("MODELD_TOOLS", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build",
                                                    "tools"))
PROMTOOL = os.path.join(TOOLS, "promtool")


def scrape(port):
    """/metrics: its text, and its samples as {'name{labels}': value}."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/plain; version=0.0.4"), r.status
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return text, samples


class Metrics(DaemonTest):
    models = {"a": A}
    config = "[modeld]\nhttp = 127.0.0.1:0\n[slot cpu]\nautoload = yes\nrestart_backoff_min = 0.01\n"

    def test_requests_loads_and_deaths_are_counted_in_prometheus_format(self):
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 4})[0], 200)
        self.assertEqual(post(port, "/v1/completions", {"model": "a", "prompt": [1], "max_tokens": 99999})[0], 400)
        text, m = scrape(port)
        for key, value in (('modeld_requests_total{op="infer",model="a",outcome="ok"}', 1),
                           ('modeld_generated_tokens_total{model="a"}', 4),
                           ('modeld_model_loaded{slot="cpu",model="a"}', 1),
                           ('modeld_slot_state{slot="cpu",state="ready"}', 1),
                           ('modeld_slot_state{slot="cpu",state="empty"}', 0),
                           ('modeld_load_duration_seconds_count{slot="cpu"}', 1),
                           ('modeld_load_duration_seconds_bucket{slot="cpu",le="+Inf"}', 1),
                           ('modeld_time_to_first_token_seconds_count{model="a"}', 1),
                           ('modeld_request_duration_seconds_count{model="a"}', 1),
                           ('modeld_queue_depth{slot="cpu"}', 0),
                           ('modeld_requests_running{slot="cpu"}', 0)):
            self.assertEqual(m[key], value, key)
        self.assertGreater(m['modeld_device_memory_total_bytes{device="cpu"}'], 0)
        self.assertEqual(m['modeld_worker_deaths_total{slot="cpu",cause="signal"}'], 0)
        c = self.d.client()
        c.ok("subscribe", events=["state"])
        self.assertEqual(scrape(port)[1]["modeld_clients"], 1)
        os.kill(self.d.workers()[0], signal.SIGKILL)
        c.wait_state("reconnecting")
        c.wait_state("ready")
        text, m = scrape(port)
        for key, value in (('modeld_worker_deaths_total{slot="cpu",cause="signal"}', 1),
                           ('modeld_worker_deaths_total{slot="cpu",cause="killed"}', 0),
                           ('modeld_worker_restarts_total{slot="cpu"}', 1),
                           ('modeld_load_duration_seconds_count{slot="cpu"}', 2)):
            self.assertEqual(m[key], value, key)
        if not os.path.exists(PROMTOOL):
            self.skipTest("no promtool in %s (make test fetches it)" % PROMTOOL)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)


if __name__ == "__main__":
    unittest.main()
