#!/usr/bin/env python3
"""Writes the C source of a large test program to stdout.

    test/wasm/big.py FUNCTIONS > big.c

`make bench` measures pulling and starting a component of a realistic size
(about 5 MB); this program is that component once built with clang -O0.
Its functions are generated (seeded, so every build is the same) and all
called, so none is dropped; given any argument it exits at once instead, so
that its start can be told from its run. It prints a line the benchmark checks.
"""

import random
import sys

OPS_PER_FUNCTION = 40


def statement(r):
    k = r.randrange(1 << 31)
    op = r.randrange(4)
    if op == 0:
        return f"  x ^= (x << {r.randrange(1, 31)}) + {k}u;"
    if op == 1:
        return f"  y += x * {k}u;"
    if op == 2:
        return f"  if (y & {1 << r.randrange(31)}u) x = y - {k}u; else y ^= x;"
    return f"  x = (x >> {r.randrange(1, 31)}) | (y << 3);"


def main():
    functions = int(sys.argv[1])
    r = random.Random(42)
    out = ["#include <stdio.h>", ""]
    for i in range(functions):
        out.append(f"static unsigned f{i}(unsigned x, unsigned y) {{")
        out.extend(statement(r) for _ in range(OPS_PER_FUNCTION))
        out.append("  return x ^ y;\n}")
    names = ", ".join(f"f{i}" for i in range(functions))
    out.append(f"static unsigned (*const table[])(unsigned, unsigned) = {{{names}}};")
    out.append(
        "int main(int argc, char **argv) {\n"
        "  unsigned n = sizeof table / sizeof *table, acc = 1;\n"
        "  (void)argv;\n"
        "  /* Any argument: start and exit, running none of the code. */\n"
        "  if (argc > 1) {\n"
        '    printf("hello from wasm, big: %u functions, none called\\n", n);\n'
        "    return 0;\n"
        "  }\n"
        "  for (unsigned i = 0; i < n; i++) acc = table[i](acc, i);\n"
        '  printf("hello from wasm, big: %u functions, checksum %u\\n", n, acc);\n'
        "  return 0;\n"
        "}"
    )
    print("\n".join(out))


if __name__ == "__main__":
    main()
