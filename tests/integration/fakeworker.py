"""A stand-in for modeld-worker that misbehaves in one chosen way.

A test writes a copy of this file as the daemon's worker, with MODE set on
the line before it (see harness.fake_worker):
- silent: never answers its load;
- closes: loads, then closes its channel and goes on running;
- stalls: loads and answers heartbeats, but never answers an inference;
- stranger: answers an inference with tokens for a request it was not given;
- excess: answers an inference with more tokens than it asked for;
- outsider: answers an inference with a token outside its vocabulary of 16;
- bogus: fails an inference with an error code the protocol does not have;
- old: speaks another version of the worker protocol;
- chatty: says it loaded, with a key that message does not have;
- loads_twice: says it loaded, twice;
- warms_first: says it warmed up before it says it loaded;
- forger: writes lines that look like modeld's own, with control bytes, in one write, then loads;
- spawner: starts a process in a session of its own (its pid in the file
  "orphan" beside the worker) and then serves as a silent but loaded worker.
"""
import socket
import struct
import sys
import time

import msgpack

WM_PING, WM_INFER = 101, 102
WM_LOADED, WM_WARMED, WM_PONG, WM_TOKENS, WM_DONE, WM_INFER_FAILED = 201, 202, 204, 205, 206, 207
MODE = globals().get("MODE", "silent")

if sys.argv[1:2] == ["--probe"]:
    sys.exit(0)                 # finds no GPU
chan = socket.socket(fileno=3)
pending = b""


def recv():
    global pending
    while True:
        if len(pending) >= 4:
            n = struct.unpack(">I", pending[:4])[0]
            if len(pending) >= 4 + n:
                m, pending = msgpack.unpackb(pending[4:4 + n], raw=False), pending[4 + n:]
                return m
        data = chan.recv(65536)     # the load's weights fd is dropped with its ancillary data
        if not data:
            sys.exit(0)
        pending += data


def send(t, **fields):
    fields["t"] = t
    b = msgpack.packb(fields)
    chan.sendall(struct.pack(">I", len(b)) + b)


def answer(m):
    if MODE == "stranger":
        send(WM_TOKENS, req=m["req"] + 1000, tokens=[1])
    elif MODE == "excess":
        send(WM_DONE, req=m["req"], tokens=[1] * (m["max_tokens"] + 1), finish="length",
             prompt_tokens=1, first_ms=0)
    elif MODE == "outsider":
        send(WM_TOKENS, req=m["req"], tokens=[999])
    elif MODE == "bogus":
        send(WM_INFER_FAILED, req=m["req"], code="bogus", message="no such code")


load = recv()
if MODE == "forger":
    sys.stderr.write("12:00:00.000 modeld[1] error: slot cpu: forged\x1b[2J\rmore\n"
                     "12:00:00.000 modeld[1] info: forged too\x7f\n")
    sys.stderr.flush()
if MODE == "spawner":
    import os
    import subprocess
    orphan = subprocess.Popen(["sleep", "600"], start_new_session=True)
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "orphan"), "w") as f:
        f.write(str(orphan.pid))
if MODE == "silent":
    time.sleep(600)
if MODE == "warms_first":
    send(WM_WARMED, warmup_ms=0)
if MODE == "old":
    send(WM_LOADED, proto=load["proto"] - 1, mem_bytes=0, vocab=16, parallel=1)
elif MODE == "chatty":
    send(WM_LOADED, proto=load["proto"], mem_bytes=0, vocab=16, parallel=1, colour="blue")
else:
    send(WM_LOADED, proto=load["proto"], mem_bytes=0, vocab=16, parallel=1)
if MODE == "loads_twice":
    send(WM_LOADED, proto=load["proto"], mem_bytes=0, vocab=16, parallel=1)
if load.get("warmup"):
    send(WM_WARMED, warmup_ms=0)
if MODE == "closes":
    chan.close()
    time.sleep(600)
while True:
    m = recv()
    if m["t"] == WM_PING:
        send(WM_PONG, seq=m["seq"], mem_bytes=0, dev_free=0, dev_total=0)
    elif m["t"] == WM_INFER:
        answer(m)
