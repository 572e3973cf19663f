#!/usr/bin/python3
"""Checks that the tree keeps the layering the README draws.

1. Includes run one way: codec/ <- meta/, analyzer/ <- engine/ <- fs/,
   admin/ (a file includes headers of its own module or of lower ones).
2. Only fs/ includes libfuse's headers.
3. The headers' include graph has no cycle.
4. No call cycle between source files: from the built objects' symbols
   (nm), file A -> file B when A calls a function B defines.
5. squeezefs-admin does not link libfuse (readelf's NEEDED entries).

Exits 1 and says what is wrong on any breach.
"""
import argparse
import os
import re
import subprocess
import sys

RANK = {"codec": 0, "meta": 1, "analyzer": 1, "engine": 2, "fs": 3,
        "admin": 3}
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def sources(root):
    for mod in RANK:
        d = os.path.join(root, mod)
        for name in sorted(os.listdir(d)):
            if name.endswith((".c", ".h")):
                yield mod, f"{mod}/{name}"


def find_cycle(graph):
    """One cycle of @graph (dict node -> set of nodes) as a list, or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = {n: WHITE for n in graph}
    stack = []

    def visit(n):
        colour[n] = GREY
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if colour.get(m, BLACK) == GREY:
                return stack[stack.index(m):] + [m]
            if colour.get(m) == WHITE:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        colour[n] = BLACK
        return None

    sys.setrecursionlimit(10000)
    for n in sorted(graph):
        if colour[n] == WHITE:
            c = visit(n)
            if c:
                return c
    return None


def check_includes(root, errors):
    headers = {}
    for mod, path in sources(root):
        with open(os.path.join(root, path)) as f:
            text = f.read()
        deps = set()
        for kind, inc in INCLUDE.findall(text):
            if kind == "<":
                if inc.startswith("fuse") and mod != "fs":
                    errors.append(f"{path}: includes <{inc}>: only fs/ "
                                  "may use libfuse")
                continue
            imod = inc.split("/")[0]
            if imod not in RANK:
                continue
            if imod != mod and RANK[imod] >= RANK[mod]:
                errors.append(f"{path}: includes {inc}: {mod}/ may only "
                              f"use lower layers than itself")
            deps.add(inc)
        if path.endswith(".h"):
            headers[path] = deps
    c = find_cycle(headers)
    if c:
        errors.append("include cycle: " + " -> ".join(c))
    return len(headers)


def symbols(obj):
    out = subprocess.run(["nm", "--defined-only", "-g", obj],
                         capture_output=True, text=True, check=True).stdout
    defined = {l.split()[-1] for l in out.splitlines()
               if len(l.split()) == 3 and l.split()[1] in "TDBRC"}
    out = subprocess.run(["nm", "-u", obj], capture_output=True, text=True,
                         check=True).stdout
    used = {l.split()[-1] for l in out.splitlines() if l.strip()}
    return defined, used


def check_calls(root, build, errors):
    objs = {}
    for mod, path in sources(root):
        if path.endswith(".c"):
            obj = os.path.join(build, path[:-2] + ".o")
            if not os.path.exists(obj):
                errors.append(f"{obj}: missing (build first)")
                continue
            objs[path] = symbols(obj)
    owner = {}
    for path, (defined, _) in objs.items():
        for s in defined:
            owner[s] = path
    graph = {p: set() for p in objs}
    for path, (_, used) in objs.items():
        for s in used:
            o = owner.get(s)
            if o and o != path:
                graph[path].add(o)
    c = find_cycle(graph)
    if c:
        errors.append("call cycle between files: " + " -> ".join(c))
    return len(objs), sum(len(v) for v in graph.values())


def check_admin(build, errors):
    exe = os.path.join(build, "squeezefs-admin")
    out = subprocess.run(["readelf", "-d", exe], capture_output=True,
                         text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)
    if any("fuse" in n for n in needed):
        errors.append(f"{exe} links {', '.join(needed)}: no libfuse wanted")
    return needed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--root", default=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    a = ap.parse_args()
    errors = []
    nh = check_includes(a.root, errors)
    nf, ne = check_calls(a.root, a.build, errors)
    needed = check_admin(a.build, errors)
    for e in errors:
        print("check-layers: " + e, file=sys.stderr)
    if errors:
        return 1
    print(f"check-layers: {nh} headers, {nf} source files, {ne} call edges "
          f"between files: no cycle, includes run one way; "
          f"squeezefs-admin needs {', '.join(needed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
