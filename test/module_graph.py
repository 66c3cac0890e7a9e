#!/usr/bin/env python3
"""Fails when a module of a crate imports one that imports it back.

Data in the shim flows one way (containerd request -> spec -> engine ->
task -> events); a loop between modules is where that stops being true.
Reads every `crate::name` path outside comments and test modules, and
prints each loop found (a strongly connected set of modules) with the
lines that close it.

    test/module_graph.py shim/src [oci/src ...]
"""

import pathlib
import re
import sys

CRATE_PATH = re.compile(r"crate::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"use crate::\{([^;]*)\};", re.S)
GROUP_ITEM = re.compile(r"(?:^|[{,\s])([a-z_][a-z0-9_]*)(?=::|\s*[,}]|\s*$)")


def code_of(text):
    """The text without its test module and without comment lines."""
    text = text.split("#[cfg(test)]\nmod tests")[0]
    return "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("//")
    )


def imports(src):
    modules = {p.stem: p for p in sorted(src.glob("*.rs"))}
    graph = {}
    for name, path in modules.items():
        code = code_of(path.read_text())
        used = set(CRATE_PATH.findall(code))
        for group in USE_GROUP.findall(code):
            used |= set(GROUP_ITEM.findall(group))
        graph[name] = sorted(m for m in used if m in modules and m != name)
    return graph


def loops(graph):
    """Tarjan's strongly connected components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def main(dirs):
    failed = False
    for d in dirs:
        graph = imports(pathlib.Path(d))
        found = loops(graph)
        failed = failed or bool(found)
        for component in found:
            members = set(component)
            edges = [
                f"{a} -> {b}" for a in component for b in graph[a] if b in members
            ]
            print(f"{d}: modules import each other: {', '.join(edges)}")
        if not found:
            print(f"{d}: {len(graph)} modules, no import loop")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["shim/src"]))
