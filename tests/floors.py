"""The supervisor's floors, checked over its object files and its includes.

Every file of supervisor/ stands on a floor (docs/architecture.md). A file
may include and call only what stands on its own floor or below, no files
may call each other in a loop, and none is longer than MAX_LINES. The calls are read from the object
files' symbols (nm: what each defines, what each needs), so a call through
a function pointer that a file was given (a watch, a sink, a sink of
replies) is not a call by name, and is allowed upwards: that is how the
core tells its watchers without naming them.

usage: floors.py OBJDIR SRCDIR. Prints what breaks the rule and ends with
"floors: N passed, N failed".
"""
import os
import re
import subprocess
import sys

MAX_LINES = 900		# no file of supervisor/ is longer: a longer one holds two roles

FLOORS = [
    ("leaves", ["config", "devices", "ggufmeta", "probe", "req", "watch", "wmsg"]),
    ("machine", ["step", "slot"]),
    ("core", ["devlock", "child", "core"]),
    ("watchers", ["view", "events", "state", "service"]),
    ("faces", ["httpreq", "httpio", "server", "ops", "metrics", "ask", "sse", "http"]),
    ("top", ["reload", "main"]),
]
LEVEL = {f: i for i, (_, files) in enumerate(FLOORS) for f in files}
FLOOR = {f: name for name, files in FLOORS for f in files}


def symbols(obj):
    out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
    defined, needed = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            needed.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBR":
            defined.add(parts[2])
    return defined, needed


def includes(path):
    with open(path) as f:
        return set(re.findall(r'^#include "([a-z_]+)\.h"', f.read(), re.M))


def loops(graph):
    """The strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def main(objdir, srcdir):
    failures = []
    names = sorted(f[:-2] for f in os.listdir(srcdir) if f.endswith(".c"))
    for n in names:
        if n not in LEVEL:
            failures.append(f"{n}.c stands on no floor: add it to tests/floors.py and docs/architecture.md")
    owner, needs = {}, {}
    for n in names:
        obj = os.path.join(objdir, n + ".o")
        if not os.path.exists(obj):
            failures.append(f"{obj} is missing: build first")
            continue
        defined, needed = symbols(obj)
        for s in defined:
            owner[s] = n
        needs[n] = needed
    calls = {n: sorted({owner[s] for s in needed if s in owner and owner[s] != n}) for n, needed in needs.items()}
    for n, callees in calls.items():
        for c in callees:
            if n in LEVEL and c in LEVEL and LEVEL[c] > LEVEL[n]:
                failures.append(f"{n}.c ({FLOOR[n]}) calls {c}.c ({FLOOR[c]}), a floor above it")
    for n in names:
        for ext in (".c", ".h"):
            path = os.path.join(srcdir, n + ext)
            if not os.path.exists(path):
                continue
            for h in includes(path):
                if n in LEVEL and h in LEVEL and LEVEL[h] > LEVEL[n]:
                    failures.append(f"{n}{ext} ({FLOOR[n]}) includes {h}.h ({FLOOR[h]}), a floor above it")
    for f in sorted(os.listdir(srcdir)):
        with open(os.path.join(srcdir, f)) as fh:
            n = sum(1 for _ in fh)
        if n > MAX_LINES:
            failures.append(f"{f} is {n} lines, over {MAX_LINES}: split it by role")
    for comp in loops(calls):
        failures.append("these files call each other in a loop: " + ", ".join(c + ".c" for c in comp))
    for f in failures:
        print("floors: " + f)
    print(f"floors: {0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
