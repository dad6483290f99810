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
"""
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


def main():
    if not os.path.exists(os.path.join(BUILD, "modeld-engine-llama.so")):
        print("bench-llama: the llama engine is not built")
        return 0
    files = {shape: model_file(shape) for shape in SHAPES}
    config = "[slot cpu]\nheartbeat_timeout = 60\n" + "".join(
        "[model %s]\npath = %s\nwarmup = 0\n" % (shape, path) for shape, path in files.items())
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
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
