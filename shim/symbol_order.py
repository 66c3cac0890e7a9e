#!/usr/bin/env python3
"""The shim's hot functions by name, whatever hashes the build gives them.

shim/symbol-order.txt lists the functions a node runs (test/hot-symbols.py
writes it), demangled and without the hashes that Rust puts in symbol names,
each with its size in bytes and the symbol it had when it was profiled
(tab-separated; either may be empty). Those hashes follow every dependency's version
and features, the profile and the toolchain, so a list of raw symbol names
goes stale with any `cargo update`; a list of paths does not.

lld orders by raw symbol names only, so this script is the release
profile's linker (the Makefile's `RELEASE`, through Cargo's
`target.<host>.linker`): when a link names an ordering file (shim/build.rs
adds `--symbol-ordering-file=shim/symbol-order.txt`), it reads the symbols
the link's own objects define, writes the list with this build's names
beside the output, and runs `cc` with that file instead. A listed symbol
the build still has is taken as it is. Otherwise the function is found by
its path; a generic function's instances share one, so the instance whose
size matches the list is taken, or all of them when none does (or when
the list gives no size). A link without the option, or without this script
as its linker, is left as it is (lld then finds none of the names, and the
shim's hot code stays spread out).

    shim/symbol_order.py CC-ARGS...     link through $WASMPOD_LINK_CC (cc)
"""

import os
import re
import subprocess
import sys

OPTION = "-Wl,--symbol-ordering-file="
# Legacy mangling ends a path with ::h<16 hex digits>; v0 puts a
# disambiguator after each crate name, which c++filt shows as [hex].
HASH = re.compile(r"::h[0-9a-f]{16}$|\[[0-9a-f]+\]")
FUNCTION_TYPES = set("tTwW")


def key(demangled):
    """A function's name with its build's hashes taken out."""
    return HASH.sub("", demangled)


def demangle(names):
    """c++filt of each name, in order (it knows both Rust manglings)."""
    if not names:
        return []
    out = subprocess.run(["c++filt"], input="\n".join(names) + "\n",
                         check=True, capture_output=True, text=True).stdout
    demangled = out.split("\n")[:len(names)]
    if len(demangled) != len(names):
        raise RuntimeError("c++filt gave fewer names than it was given")
    return demangled


def functions(path):
    """(address, size, symbol, key) of each function that `path` (a binary,
    an object or an archive) defines."""
    out = subprocess.run(["nm", "-S", "--defined-only", path],
                         capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in FUNCTION_TYPES and int(fields[1], 16):
            found.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
    keys = map(key, demangle([symbol for _, _, symbol in found]))
    return [(addr, size, symbol, k) for (addr, size, symbol), k in zip(found, keys)]


def read_list(path):
    """[(key, size or None, symbol or None)] of an ordering list."""
    listed = []
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            name, size, symbol = (line.rstrip("\n").split("\t") + ["", ""])[:3]
            listed.append((name, int(size) if size else None, symbol or None))
    return listed


def list_line(name, size=None, symbol=None):
    """One line of an ordering list, as read_list reads it."""
    if symbol == name:
        symbol = None  # a C name: nothing to map
    return "\t".join([name, "" if size is None else str(size), symbol or ""]).rstrip("\t") + "\n"


def resolve(listed, funcs):
    """This build's symbols for the listed functions, in the list's order.
    A name found nowhere is kept as it is: C symbols (`_start`) come from
    objects the compiler driver adds, and have no hash to lose."""
    by_key, defined = {}, set()
    for _, size, symbol, k in funcs:
        by_key.setdefault(k, []).append((size, symbol))
        defined.add(symbol)
    symbols, seen = [], set()
    for name, size, listed_symbol in listed:
        if listed_symbol in defined:
            candidates = [(size, listed_symbol)]
        else:
            candidates = by_key.get(name, [(size, listed_symbol or name)])
        same_size = [c for c in candidates if c[0] == size]
        # Without a size to tell a generic function's instances apart, all
        # of them are taken: some cold code among the hot code kept less of
        # the shim resident (5.1 MiB of text) than the hot instances left
        # out and spread over the binary (5.9 MiB).
        for _, symbol in same_size or candidates:
            if symbol not in seen:
                seen.add(symbol)
                symbols.append(symbol)
    return symbols


def link(args):
    cc = os.environ.get("WASMPOD_LINK_CC", "cc")
    at = next((i for i, a in enumerate(args) if a.startswith(OPTION)), None)
    if at is not None:
        output = args[args.index("-o") + 1]
        objects = [a for a in args if a.endswith((".o", ".rlib", ".a")) and os.path.isfile(a)]
        funcs = [f for path in objects for f in functions(path)]
        resolved = output + ".symbol-order"
        with open(resolved, "w") as f:
            f.writelines(s + "\n" for s in resolve(read_list(args[at][len(OPTION):]), funcs))
        args = args[:at] + [OPTION + resolved] + args[at + 1:]
    os.execvp(cc, [cc] + args)


if __name__ == "__main__":
    link(sys.argv[1:])
