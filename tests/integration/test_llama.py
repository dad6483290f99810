"""The llama engine end to end: GGUF models with random weights and a real
tokenizer (made by build/mkgguf), checked against libllama called directly
(build/llama-direct) on the same file."""
import base64
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import unittest

from harness import BUILD, DEADLINE, DaemonTest, pid_alive, wait_until

ENGINE = os.path.join(BUILD, "modeld-engine-llama.so")
MKGGUF = os.path.join(BUILD, "mkgguf")
DIRECT = os.path.join(BUILD, "llama-direct")
VOCAB = os.path.join(BUILD, "vocab", "ggml-vocab-llama-spm.gguf")
HAVE = all(os.path.exists(p) for p in (ENGINE, MKGGUF, DIRECT, VOCAB))
PROMPT = "The quick brown fox"
# Loading under the sanitizers, and a first decode, take longer than a reference model.
SLOW = DEADLINE * 6

FIX = tempfile.mkdtemp(prefix="modeld-gguf-")


def fixture(name, *args):
    path = os.path.join(FIX, name)
    if not os.path.exists(path):
        subprocess.run([MKGGUF, VOCAB, path] + [str(a) for a in args], check=True, timeout=SLOW)
    return path


def setUpModule():
    if not HAVE:
        return
    fixture("chat.gguf", "--seed", 1)
    fixture("plain.gguf", "--seed", 2, "--chat-template", "none")
    fixture("slow.gguf", "--shape", "small", "--ctx", 8192)
    with open(fixture("chat.gguf"), "rb") as f:
        whole = f.read()
    with open(os.path.join(FIX, "truncated.gguf"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    with open(os.path.join(FIX, "garbage.gguf"), "wb") as f:
        f.write(b"GGUF" + bytes(range(256)) * 64)


def tearDownModule():
    shutil.rmtree(FIX, ignore_errors=True)


def direct(*args):
    out = subprocess.run([DIRECT, fixture("chat.gguf")] + [str(a) for a in args], check=True,
                         capture_output=True, text=True, timeout=SLOW).stdout
    return out.split()


# Pings every 2 ms, far more often than a tokenize, an embedding or a decode takes, so that
# messages reach the worker in the middle of each operation.
CONFIG = """
[slot cpu]
device = cpu
heartbeat_interval = 0.002
heartbeat_timeout = 30
[model chat]
path = {fix}/chat.gguf
threads = 2
[model plain]
path = {fix}/plain.gguf
threads = 2
[model small]
path = {fix}/chat.gguf
ctx = 256
batch = 32
threads = 2
[model embed]
path = {fix}/chat.gguf
embedding = yes
threads = 2
[model truncated]
path = {fix}/truncated.gguf
[model garbage]
path = {fix}/garbage.gguf
[model ref]
path = @DIR@/models/ref.safetensors
""".format(fix=FIX)


@unittest.skipUnless(HAVE, "skipped: the llama engine is not built")
class Llama(DaemonTest):
    config = CONFIG
    models = {"ref": ("--n", 16, "--a", 3, "--c", 1)}

    def greedy(self, c, model="chat", **args):
        args.setdefault("prompt", PROMPT)
        args.setdefault("max_tokens", 16)
        return c.ok("infer", model=model, temperature=0, **args)

    def loaded(self, model="chat"):
        c = self.d.client()
        c.sock.settimeout(SLOW)
        c.ok("load", model=model)
        return c

    def test_greedy_tokens_match_libllama_called_directly(self):
        c = self.loaded()
        r = self.greedy(c, max_tokens=24)
        self.assertEqual(r["tokens"], [int(t) for t in direct("--prompt", PROMPT, "--n", 24, "--threads", 2)])
        self.assertEqual(r["finish_reason"], "length")
        self.assertEqual(r["usage"]["completion_tokens"], 24)
        prompt = c.ok("tokenize", model="chat", text=PROMPT, add_special=True)["tokens"]
        self.assertEqual(r["usage"]["prompt_tokens"], len(prompt))
        self.assertEqual(r["text"], c.ok("detokenize", model="chat", tokens=r["tokens"])["text"])
        # token ids in give the same as the text they are
        self.assertEqual(self.greedy(c, prompt=None, input=prompt, max_tokens=24)["tokens"], r["tokens"])

    def test_without_max_tokens_it_generates_to_the_end_of_the_context(self):
        c = self.loaded("small")            # ctx = 256
        r = c.ok("infer", model="small", prompt=PROMPT, temperature=0)
        self.assertEqual(r["finish_reason"], "length")
        self.assertEqual(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"], 256)

    def test_streamed_chunks_add_up_to_the_final_text(self):
        c = self.loaded()
        chunks = []
        r = c.reply(c.request("infer", model="chat", prompt=PROMPT, max_tokens=40, temperature=0,
                              stream=True), chunks)
        self.assertTrue(r["ok"], r)
        self.assertEqual(len(chunks), 40)       # a chunk per token; msgpack decoded each text as UTF-8
        self.assertEqual("".join(ch["text"] for ch in chunks), r["text"])
        self.assertEqual([t for ch in chunks for t in ch["tokens"]], r["tokens"])
        self.assertIsInstance(r["ttft_ms"], int)

    def test_the_tokenizer_test_vectors(self):
        c = self.loaded()
        with open(VOCAB + ".inp", encoding="utf-8") as f:
            texts = f.read().split("\n__ggml_vocab_test__\n")[:-1]
        with open(VOCAB + ".out") as f:
            want = [[int(t) for t in line.split()] for line in f.read().split("\n")[: len(texts)]]
        self.assertGreater(len(texts), 40)
        for text, ids in zip(texts, want):
            got = c.ok("tokenize", model="chat", text=text, add_special=False, parse_special=False)
            self.assertEqual(got["tokens"], ids, "tokenizing %r" % text)

    def test_embeddings_match_libllama(self):
        c = self.loaded("embed")
        texts = ["Hello world", "a second, longer text to embed"]
        r = c.ok("embed", model="embed", texts=texts)
        self.assertEqual(len(r["embeddings"]), 2)
        for text, vec in zip(texts, r["embeddings"]):
            want = [float(x) for x in direct("--embed", text, "--threads", 2)]
            self.assertEqual(len(vec), len(want))
            for got, exp in zip(vec, want):
                self.assertAlmostEqual(got, exp, places=5)
            self.assertAlmostEqual(sum(x * x for x in vec), 1.0, places=4)
        # a generation model is not an embedding model, nor the other way round
        self.assertEqual(c.call("infer", model="embed", prompt="x")["error"]["code"], "bad_request")

    def test_stop_strings_end_the_text_before_them(self):
        c = self.loaded()
        full = self.greedy(c, max_tokens=32)["text"]
        stop = full[10:13]
        r = self.greedy(c, max_tokens=32, stop=[stop, "\u2603never"])
        self.assertEqual(r["text"], full[: full.index(stop)])
        self.assertEqual(r["finish_reason"], "stop")
        self.assertLess(r["usage"]["completion_tokens"], 32)
        chunks = []
        c.reply(c.request("infer", model="chat", prompt=PROMPT, max_tokens=32, temperature=0, stop=stop,
                          stream=True), chunks)
        self.assertEqual("".join(ch["text"] for ch in chunks), r["text"])  # nothing of the stop leaked

    def test_max_tokens_and_sampling(self):
        c = self.loaded()
        r = c.ok("infer", model="chat", prompt=PROMPT, max_tokens=5, temperature=0.9, top_k=40, top_p=0.9,
                 min_p=0.05, repeat_penalty=1.1, seed=7)
        self.assertEqual(len(r["tokens"]), 5)
        again = c.ok("infer", model="chat", prompt=PROMPT, max_tokens=5, temperature=0.9, top_k=40,
                     top_p=0.9, min_p=0.05, repeat_penalty=1.1, seed=7)
        self.assertEqual(again["tokens"], r["tokens"])      # a seed makes sampling repeatable
        for bad in ({"temperature": -1}, {"top_p": 2}, {"stop": [1]}, {"seed": -3}):
            e = c.call("infer", model="chat", prompt=PROMPT, **bad)["error"]
            self.assertEqual(e["code"], "bad_request")
            self.assertIn(list(bad)[0], e["message"])

    def test_cancel_mid_stream(self):
        c = self.loaded()
        rid = c.request("infer", model="chat", prompt=PROMPT, max_tokens=4000, temperature=0, stream=True)
        wait_until(lambda: c._pump() or any(m.get("id") == rid and "chunk" in m for m in c.frames),
                   timeout=SLOW, what="a first chunk")
        pid = self.d.workers()[0]      # waits while the cancel reaches it, so that it cannot finish first
        os.kill(pid, signal.SIGSTOP)
        c.ok("cancel", target=rid)
        os.kill(pid, signal.SIGCONT)
        chunks = []
        r = c.reply(rid, chunks)
        self.assertEqual(r["finish_reason"], "cancelled")
        self.assertLess(len(r["tokens"]), 4000)
        self.assertEqual([t for ch in chunks for t in ch["tokens"]], r["tokens"])
        self.assertEqual("".join(ch["text"] for ch in chunks), r["text"])
        self.assertEqual(r["usage"]["prompt_tokens"], self.greedy(c, max_tokens=1)["usage"]["prompt_tokens"])
        self.assertEqual(len(self.greedy(c, max_tokens=3)["tokens"]), 3)

    def test_chat_messages(self):
        c = self.loaded()
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        r = self.greedy(c, prompt=None, messages=msgs, max_tokens=4)
        self.assertEqual(len(r["tokens"]), 4)
        rendered = "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        same = self.greedy(c, prompt=rendered, max_tokens=4)
        self.assertEqual(r["tokens"], same["tokens"])       # chatml, as the model's template says
        e = c.call("infer", model="chat", messages=[{"role": "wizard", "content": "x"}])["error"]
        self.assertEqual(e["code"], "bad_request")
        self.assertIn("wizard", e["message"])
        c.ok("load", model="plain")
        e = c.call("infer", model="plain", messages=msgs)["error"]
        self.assertEqual(e["code"], "bad_request")
        self.assertIn("no chat template", e["message"])

    def test_a_prompt_longer_than_the_context(self):
        c = self.loaded("small")
        e = c.call("infer", model="small", prompt=PROMPT * 80)["error"]
        self.assertEqual(e["code"], "bad_request")
        self.assertIn("takes 1 to 255", e["message"])
        # a prompt of several batches; generation stops at the context's end
        r = self.greedy(c, model="small", prompt=PROMPT * 10, max_tokens=1000)
        self.assertGreater(r["usage"]["prompt_tokens"], 32)
        self.assertEqual(r["usage"]["prompt_tokens"] + r["usage"]["completion_tokens"], 256)
        self.assertEqual(r["finish_reason"], "length")

    def test_switches_between_llama_and_reference_models(self):
        c = self.loaded()
        first = self.greedy(c)["tokens"]
        c.ok("load", model="plain")
        self.assertNotEqual(self.greedy(c, model="plain")["tokens"], first)
        c.ok("load", model="ref")
        self.assertEqual(c.ok("infer", model="ref", input=[2], max_tokens=3)["tokens"], [7, 6, 3])
        e = c.call("infer", model="ref", prompt="text")["error"]
        self.assertEqual(e["code"], "bad_request")
        self.assertIn("token ids", e["message"])
        self.assertEqual(c.call("tokenize", model="ref", text="x")["error"]["code"], "bad_request")
        c.ok("load", model="chat")
        self.assertEqual(self.greedy(c)["tokens"], first)

    def test_kill_9_mid_stream_then_the_same_output(self):
        c = self.loaded()
        c.ok("subscribe", events=["state"])
        want = self.greedy(c, max_tokens=8)["tokens"]
        rid = c.request("infer", model="chat", prompt=PROMPT, max_tokens=4000, temperature=0, stream=True)
        wait_until(lambda: c._pump() or any(m.get("id") == rid and "chunk" in m for m in c.frames),
                   timeout=SLOW, what="a first chunk")
        pid = self.d.workers()[0]
        os.kill(pid, signal.SIGKILL)
        self.assertEqual(c.reply(rid)["error"]["code"], "worker_crashed")
        c.wait_state("ready", timeout=SLOW)
        self.assertFalse(pid_alive(pid))
        self.assertEqual(self.greedy(c, max_tokens=8)["tokens"], want)

    def test_broken_gguf_files_fail_their_load_only(self):
        c = self.d.client()
        c.sock.settimeout(SLOW)
        for name, why in (("truncated", "not within the file bounds"), ("garbage", "gguf")):
            e = c.call("load", model=name)["error"]
            self.assertEqual(e["code"], "load_failed", e)
            self.assertIn("llama.cpp could not load the model: ", e["message"])
            self.assertIn(why, e["message"])        # llama.cpp's reason, not only that it failed
        c.ok("load", model="chat")
        self.assertEqual(len(self.greedy(c, max_tokens=2)["tokens"]), 2)

    def test_the_worker_is_sandboxed_after_load(self):
        self.loaded()
        status = {}
        with open("/proc/%d/status" % self.d.workers()[0]) as f:
            for line in f:
                k, _, v = line.partition(":")
                status[k] = v.strip()
        self.assertEqual(status["Seccomp"], "2")
        self.assertEqual(status["NoNewPrivs"], "1")


@unittest.skipUnless(HAVE, "skipped: the llama engine is not built")
class FileWrittenOver(DaemonTest):
    """A loaded model's file written over in place, as cp does: the worker holds its own copy of the weights."""
    config = CONFIG
    models = {"ref": ("--n", 16, "--a", 3, "--c", 1)}

    def setUp(self):
        super().setUp()
        self.victim = os.path.join(self.d.models_dir, "victim.gguf")
        shutil.copy(fixture("chat.gguf"), self.victim)
        self.d.client().ok("reload")

    def test_requests_go_on_and_a_reload_loads_the_new_file(self):
        c = self.d.client()
        c.sock.settimeout(SLOW)
        c.ok("load", model="victim")
        pid = c.ok("status")["slots"][0]["pid"]
        want = c.ok("infer", model="victim", prompt=PROMPT, max_tokens=8, temperature=0)["tokens"]
        with open(fixture("plain.gguf"), "rb") as f:
            other = f.read()
        with open(self.victim, "r+b") as f:       # cut short first, as cp does, then the other model
            f.truncate(0)
            f.write(other[: len(other) // 2])
            f.flush()
            os.fsync(f.fileno())
        r = c.ok("infer", model="victim", prompt=PROMPT, max_tokens=8, temperature=0)
        self.assertEqual(r["tokens"], want)
        self.assertEqual(c.ok("status")["slots"][0]["pid"], pid)
        self.assertEqual(c.ok("reload")["changed"], 1)      # and it is seen to have changed


@unittest.skipUnless(HAVE, "skipped: the llama engine is not built")
class LongPrompt(DaemonTest):
    """A prompt whose decode (batches of the default 512 tokens) outlasts the
    heartbeat timeout several times over: the worker answers pings from
    inside the decode, and is not taken for hung."""
    config = """
[slot cpu]
heartbeat_interval = 0.002
heartbeat_timeout = 0.75
[model slow]
path = {fix}/slow.gguf
ctx = 8192
threads = 2
""".format(fix=FIX)
    models = {}

    def test_a_long_decode_keeps_the_heartbeat(self):
        c = self.d.client()
        c.sock.settimeout(SLOW)
        c.ok("load", model="slow")
        r = c.ok("infer", model="slow", prompt="word " * 7500, max_tokens=1, temperature=0)
        self.assertGreater(r["usage"]["prompt_tokens"], 7500)
        self.assertGreater(r["ttft_ms"], 1500)     # two heartbeat timeouts and more, in one request
        self.assertNotIn("no heartbeat", self.d.read_log())


    def test_a_text_of_special_tokens_keeps_the_heartbeat_and_texts_are_bounded(self):
        """llama.cpp splits out special tokens in time that grows with the square of their number: 100 KB of
        them take longer than the heartbeat timeout, and the worker answers pings meanwhile."""
        c = self.d.client()
        c.sock.settimeout(SLOW)
        c.ok("load", model="slow")
        r = c.ok("tokenize", model="slow", text="<s></s>" * 15000, add_special=False)
        self.assertEqual(len(r["tokens"]), 30000)
        self.assertNotIn("no heartbeat", self.d.read_log())
        big = "a" * (256 * 1024 + 1)
        for op, args in (("tokenize", {"text": big}), ("infer", {"prompt": big}),
                         ("infer", {"messages": [{"role": "user", "content": big}]})):
            r = c.call(op, model="slow", **args)
            self.assertEqual(r["error"]["code"], "bad_request", op)
            self.assertIn("262145 bytes; at most 262144", r["error"]["message"])


@unittest.skipUnless(HAVE, "skipped: the llama engine is not built")
class OverHTTP(DaemonTest):
    """The OpenAI-shaped endpoints on a llama model: a chat, whole and streamed, gives the same text."""
    config = "[modeld]\nhttp = 127.0.0.1:0\n" + CONFIG.replace("[slot cpu]\n", "[slot cpu]\nautoload = yes\n", 1)
    models = {"ref": ("--n", 16, "--a", 3, "--c", 1)}

    def test_a_chat_whole_and_streamed(self):
        from test_http import port_of, post
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        ask = {"model": "chat", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 12,
               "temperature": 0}
        status, whole = post(port, "/v1/chat/completions", ask)
        self.assertEqual(status, 200, whole)
        self.assertEqual(whole["object"], "chat.completion")
        message = whole["choices"][0]["message"]
        self.assertEqual(message["role"], "assistant")
        self.assertEqual(whole["usage"]["completion_tokens"], 12)
        status, events = post(port, "/v1/chat/completions", dict(ask, stream=True))
        self.assertEqual((status, events[-1]), (200, "[DONE]"))
        chunks = [json.loads(e) for e in events[:-1]]
        self.assertTrue(all(c["object"] == "chat.completion.chunk" for c in chunks))
        self.assertEqual(chunks[0]["choices"][0]["delta"]["role"], "assistant")
        self.assertEqual("".join(c["choices"][0]["delta"].get("content", "") for c in chunks), message["content"])
        self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")
        status, r = post(port, "/v1/completions", {"model": "chat", "prompt": PROMPT, "max_tokens": 5,
                                                    "temperature": 0})
        self.assertEqual(r["choices"][0]["text"], self.expected_text(5))

    def test_embeddings(self):
        from test_http import port_of, post
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        status, r = post(port, "/v1/embeddings", {"model": "embed", "input": ["a cat", "a dog"]})
        self.assertEqual(status, 200, r)
        self.assertEqual([(d["object"], d["index"]) for d in r["data"]], [("embedding", 0), ("embedding", 1)])
        want = self.d.client().ok("embed", model="embed", texts=["a cat", "a dog"])["embeddings"]
        for got, ref in zip(r["data"], want):
            self.assertEqual(len(got["embedding"]), len(ref))
            self.assertTrue(all(abs(x - y) < 1e-6 for x, y in zip(got["embedding"], ref)))
        tokens = sum(len(self.d.client().ok("tokenize", model="embed", text=t, add_special=True)["tokens"])
                     for t in ("a cat", "a dog"))
        self.assertEqual(r["usage"], {"prompt_tokens": tokens, "total_tokens": tokens})
        status, r = post(port, "/v1/embeddings", {"model": "embed"})
        self.assertEqual((status, r["error"]["code"]), (400, "bad_request"))
        self.assertIn("input must be a string", r["error"]["message"])

    def test_embeddings_as_base64_and_the_dimensions_asked(self):
        """openai for Node up to v6 and LangChain ask for base64 unless told otherwise."""
        from test_http import port_of, post
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        want = self.d.client().ok("embed", model="embed", texts=["a cat", "a dog"])["embeddings"]
        status, r = post(port, "/v1/embeddings", {"model": "embed", "input": ["a cat", "a dog"],
                                                   "encoding_format": "base64", "dimensions": len(want[0])})
        self.assertEqual(status, 200, r)
        for got, ref in zip(r["data"], want):
            raw = base64.b64decode(got["embedding"])
            self.assertEqual(list(struct.unpack("<%df" % len(ref), raw)), [struct.unpack("<f", struct.pack("<f", x))[0]
                                                                         for x in ref])
        for body, says in (({"encoding_format": "hex"}, "encoding_format"), ({"dimensions": 0}, "dimensions"),
                           ({"dimensions": len(want[0]) - 1}, "gives embeddings of %d dimensions" % len(want[0]))):
            status, r = post(port, "/v1/embeddings", dict(body, model="embed", input="a cat"))
            self.assertEqual((status, r["error"]["code"]), (400, "bad_request"), body)
            self.assertIn(says, r["error"]["message"])

    def test_a_stream_cut_short_ends_with_an_error_not_a_finish(self):
        """A truncated answer never looks whole: a crash or a forced unload mid-stream is an error event."""
        from test_http import port_of
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        c = self.d.client()
        c.sock.settimeout(SLOW)
        for cut, code in (("kill", "worker_crashed"), ("unload", "cancelled")):
            c.ok("load", model="chat")
            pid = c.ok("status")["slots"][0]["pid"]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=SLOW)
            conn.request("POST", "/v1/chat/completions", body=json.dumps(
                {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                 "max_tokens": 4000}), headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            self.assertTrue(r.readline().startswith(b"data: {"))     # it streams
            if cut == "kill":
                os.kill(pid, signal.SIGKILL)
            else:
                c.ok("unload", slot="cpu", force=True)
            events = [line[6:] for line in r.read().decode().split("\n") if line.startswith("data: ")]
            conn.close()
            self.assertEqual(events[-1], "[DONE]")
            self.assertEqual(json.loads(events[-2])["error"]["code"], code, cut)
            self.assertFalse(any(json.loads(e)["choices"][0]["finish_reason"] for e in events[:-2]), cut)

    def openai_client(self, model, prompt):
        """What the official OpenAI client for Node.js got from modeld for model (tests/openai/client.cjs)."""
        from test_http import TOOLS, port_of
        modules = os.path.join(TOOLS, "openai", "node_modules")
        if not shutil.which("node") or not os.path.isdir(os.path.join(modules, "openai")):
            self.skipTest("no node, or no openai package in %s (make test fetches it)" % modules)
        port = wait_until(lambda: port_of(self.d), what="the HTTP port in the log")
        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openai", "client.cjs")
        run = subprocess.run(["node", script, "http://127.0.0.1:%d" % port, model, json.dumps(prompt)],
                             capture_output=True, text=True, timeout=SLOW, env=dict(os.environ, NODE_PATH=modules))
        self.assertEqual(run.returncode, 0, run.stderr)
        return json.loads(run.stdout)

    def test_the_openai_client_for_node_on_a_llama_model(self):
        got = self.openai_client("chat", PROMPT)
        self.assertIn("chat", got["models"])
        whole, streamed = got["completion"], got["completion_stream"]
        self.assertEqual(whole["text"], self.expected_text(8))
        self.assertEqual((whole["object"], whole["finish"], whole["usage"]["completion_tokens"]),
                         ("text_completion", "length", 8))
        self.assertEqual((streamed["text"], streamed["finish"], streamed["usage"]), (whole["text"], "length", whole["usage"]))
        self.assertGreater(streamed["chunks"], 2)
        chat, chat_streamed = got["chat"], got["chat_stream"]
        self.assertEqual((chat["role"], chat["finish"], chat["usage"]["completion_tokens"]), ("assistant", "length", 8))
        self.assertEqual((chat_streamed["text"], chat_streamed["finish"]), (chat["text"], "length"))
        self.assertEqual((got["unknown_model"]["error"]["status"], got["unknown_model"]["error"]["code"]),
                         (404, "model_not_found"))

    def test_the_openai_client_for_node_on_a_reference_model(self):
        got = self.openai_client("ref", [1, 2])
        self.assertEqual(got["completion"]["usage"], {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10})
        self.assertEqual(got["completion_stream"]["usage"], got["completion"]["usage"])
        ids = self.d.client().ok("infer", model="ref", input=[1, 2], max_tokens=8)["tokens"]
        self.assertEqual(got["completion"]["text"], " ".join(map(str, ids)))     # no tokenizer: the ids as text
        self.assertEqual(got["completion_stream"]["text"], got["completion"]["text"])
        error = got["chat"]["error"]                        # no chat template: the client raises OpenAI's error
        self.assertEqual((error["status"], error["code"]), (400, "bad_request"))
        self.assertEqual(got["chat_stream"]["error"]["status"], 400)

    def expected_text(self, n):
        """The same greedy completion through the socket."""
        return self.d.client().ok("infer", model="chat", prompt=PROMPT, max_tokens=n, temperature=0)["text"]
