"""bench-llama: a GGUF model through modeld beside the same work through libllama in one process.

For each model file (made by mkgguf: SmolLM2-135M- and TinyLlama-1.1B-shaped,
random weights, Q4_0), rounds interleave the two targets, and the medians
are printed side by side as ratios:
- generation tokens/s of a greedy completion (BENCH_TOKENS tokens after a
  fixed prompt): through modeld, from the client's first to its last
  streamed chunk; direct, between the same two tokens in llama-direct;
- time to first token: modeld from the request's send to its first chunk,
  as the client sees it; direct from the start of the prompt's decode;
- load: modeld from the load request to its reply (warmup 0: the load
  alone); direct, llama_model_load_from_file plus the context.
Both run with the same threads (the host's cores), context and batch.

Then, several streams at once: BENCH_STREAMS (8) greedy completions of
BENCH_TOKENS tokens after a prompt of BENCH_PROMPT (32) random token ids,
sent together to a model with parallel = BENCH_STREAMS, beside llama.cpp's
own llama-batched-bench (tools/batched-bench of the same pinned source,
built by packaging/llama.sh --batched-bench) with as many parallel
sequences, the same threads (BENCH_THREADS, default the host's cores),
context per sequence and batch. Generation
tokens/s is aggregate over the streams: modeld's from the moment every
stream has its first token to the last token, as batched-bench times its
generation after the prompts.
"""
import json
import random
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from harness import BUILD, Daemon  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
TOKENS = int(os.environ.get("BENCH_TOKENS", "64"))
PROMPT = "Once upon a time, in a small village by the sea, there lived an old fisherman who"
DIRECT = os.path.join(BUILD, "llama-direct")
SHAPES = os.environ.get("BENCH_SHAPES", "smollm tinyllama").split()
STREAMS = int(os.environ.get("BENCH_STREAMS", "8"))
PROMPT_TOKENS = int(os.environ.get("BENCH_PROMPT", "32"))
BATCHED = os.environ.get("BENCH_BATCHED", os.path.join(BUILD, "llama", "bin", "llama-batched-bench"))
CTX = 256                       # per sequence: the prompt and the generation fit
THREADS = int(os.environ.get("BENCH_THREADS", str(os.cpu_count())))     # of the parallel streams' runs
VOCAB = 32000                   # token ids of the llama-spm vocabulary mkgguf gives the models


def model_file(shape):
    path = os.path.join(BUILD, "bench", "%s-q4_0.gguf" % shape)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        subprocess.run([os.path.join(BUILD, "mkgguf"), os.path.join(BUILD, "vocab", "ggml-vocab-llama-spm.gguf"),
                        path, "--shape", shape, "--type", "q4_0"], check=True)
    return path


def direct(path):
    out = subprocess.run([DIRECT, path, "--prompt", PROMPT, "--n", str(TOKENS), "--bench"], check=True,
                         capture_output=True, text=True).stdout
    f = dict(line.split() for line in out.splitlines())
    assert int(f["tokens"]) == TOKENS, "the direct run ended early: %r" % f
    return float(f["load_ms"]), float(f["ttft_ms"]), float(f["tok_s"])


def through_modeld(d, name):
    c = d.client()
    c.sock.settimeout(600)
    t0 = time.monotonic()
    c.ok("load", model=name)
    load_ms = (time.monotonic() - t0) * 1000
    rid = c.request("infer", model=name, prompt=PROMPT, max_tokens=TOKENS, temperature=0, stream=True)
    t0 = time.monotonic()
    stamps = []
    while True:
        m = c.recv()
        if m.get("id") != rid:
            continue
        if "chunk" not in m:
            break
        stamps.append(time.monotonic())
    assert m["ok"] and len(stamps) == TOKENS, m
    c.ok("unload", slot="cpu")
    c.close()
    d.clients.remove(c)
    return load_ms, (stamps[0] - t0) * 1000, (TOKENS - 1) / (stamps[-1] - stamps[0])


def batched_bench(path):
    """llama-batched-bench's generation tokens/s with 1 and with STREAMS sequences."""
    threads = str(THREADS)
    out = subprocess.run([BATCHED, "-m", path, "-c", str(CTX * STREAMS), "-b", "512", "-ub", "512",
                          "-npp", str(PROMPT_TOKENS), "-ntg", str(TOKENS), "-npl", "1,%d" % STREAMS,
                          "-t", threads, "-tb", threads, "--output-format", "jsonl"],
                         check=True, capture_output=True, text=True).stdout
    rows = {r["pl"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith("{"))}
    return rows[1]["speed_tg"], rows[STREAMS]["speed_tg"]


def streams_through_modeld(d, name, rng):
    """STREAMS greedy completions sent at once; aggregate generation tokens/s."""
    c = d.client()
    c.sock.settimeout(600)
    c.ok("load", model=name)
    rids = [c.request("infer", model=name, input=[rng.randrange(3, VOCAB) for _ in range(PROMPT_TOKENS)],
                      max_tokens=TOKENS, temperature=0, stream=True) for _ in range(STREAMS)]
    stamps = {rid: [] for rid in rids}
    left = set(rids)
    while left:
        m = c.recv()
        if m.get("id") not in stamps:
            continue
        if "chunk" in m:
            stamps[m["id"]].append(time.monotonic())
        else:
            assert m["ok"] and len(stamps[m["id"]]) == TOKENS, m
            left.discard(m["id"])
    c.ok("unload", slot="cpu")
    c.close()
    d.clients.remove(c)
    start = max(s[0] for s in stamps.values())
    end = max(s[-1] for s in stamps.values())
    made = sum(1 for s in stamps.values() for t in s if t > start)
    return made / (end - start)


def concurrent(d, files):
    if not os.path.exists(BATCHED):
        print("bench-llama: %s is not built (packaging/llama.sh --batched-bench)" % BATCHED)
        return
    print("\n%d streams at once, %d prompt and %d generated tokens each; generation tok/s, medians" %
          (STREAMS, PROMPT_TOKENS, TOKENS))
    print("%-10s %12s %14s %14s %8s" % ("model", "modeld", "batched-bench", "(1 sequence)", "ratio"))
    rng = random.Random(1)
    for shape, path in files.items():
        runs = {"modeld": [], "bb": [], "bb1": []}
        for _ in range(ROUNDS):
            one, many = batched_bench(path)
            runs["bb1"].append(one)
            runs["bb"].append(many)
            runs["modeld"].append(streams_through_modeld(d, shape + "-par", rng))
        m, x, x1 = (statistics.median(runs[k]) for k in ("modeld", "bb", "bb1"))
        print("%-10s %12.1f %14.1f %14.1f %7.3fx" % (shape, m, x, x1, m / x))


def main():
    if not os.path.exists(os.path.join(BUILD, "modeld-engine-llama.so")):
        print("bench-llama: the llama engine is not built")
        return 0
    files = {shape: model_file(shape) for shape in SHAPES}
    config = "[slot cpu]\nheartbeat_timeout = 60\n" + "".join(
        "[model %s]\npath = %s\nwarmup = 0\n[model %s-par]\npath = %s\nwarmup = 0\nparallel = %d\nctx = %d\n"
        "threads = %d\n" % (shape, path, shape, path, STREAMS, CTX, THREADS) for shape, path in files.items())
    d = Daemon(config)
    try:
        print("%d rounds, %d tokens, %d cores; medians" % (ROUNDS, TOKENS, os.cpu_count()))
        print("%-10s %-10s %10s %10s %8s" % ("model", "measure", "modeld", "direct", "ratio"))
        for shape, path in files.items():
            runs = {"modeld": [], "direct": []}
            for _ in range(ROUNDS):
                runs["direct"].append(direct(path))
                runs["modeld"].append(through_modeld(d, shape))
            for i, (what, better) in enumerate((("load ms", "lower"), ("ttft ms", "lower"), ("tok/s", "higher"))):
                m = statistics.median(r[i] for r in runs["modeld"])
                x = statistics.median(r[i] for r in runs["direct"])
                extra = "  (%+.2f ms)" % (m - x) if what == "ttft ms" else ""
                print("%-10s %-10s %10.2f %10.2f %7.3fx%s" % (shape, what, m, x, m / x, extra))
        concurrent(d, files)
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
