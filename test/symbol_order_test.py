#!/usr/bin/env python3
"""shim/symbol_order.py places listed functions first after their hashes change.

A small Rust program is built twice with different `-C metadata`, which
renames every symbol as a dependency bump does. The ordering list is taken
from the first build; the second is linked through symbol_order.py with it,
and once straight through cc as the control. Needs rustc, cc, nm and c++filt
(make deps); no root.

    python3 -m unittest test/symbol_order_test.py
"""

import os
import subprocess
import sys
import tempfile
import unittest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(TOP, "shim"))
import symbol_order  # noqa: E402

# The hot functions come last in the source, so a link that ignores the list
# does not put them first by chance; `run` has two instances of one path,
# told apart by their sizes.
PROGRAM = """
use std::hint::black_box;
trait Work { fn work(&self, n: u64) -> u64; }
struct Small;
struct Big;
impl Work for Small {
    #[inline(always)]
    fn work(&self, n: u64) -> u64 { n + 1 }
}
impl Work for Big {
    #[inline(always)]
    fn work(&self, n: u64) -> u64 {
        let mut x = n;
        for i in 0..black_box(64) { x = x.rotate_left(7) ^ (i * 0x9e37_79b9) ^ (x >> 3); }
        x
    }
}
#[inline(never)] fn cold_a(n: u64) -> u64 { black_box(n) * 3 }
#[inline(never)] fn cold_b(n: u64) -> u64 { black_box(n) * 5 }
#[inline(never)] fn cold_c(n: u64) -> u64 { black_box(n) * 7 }
#[inline(never)] fn run<W: Work>(w: &W, n: u64) -> u64 { w.work(black_box(n)) }
#[inline(never)] fn hot_one(n: u64) -> u64 { black_box(n) + 11 }
#[inline(never)] fn hot_two(n: u64) -> u64 { black_box(n) + 13 }
fn main() {
    let n = black_box(1);
    println!("{}", cold_a(n) + cold_b(n) + cold_c(n) + run(&Small, n) + run(&Big, n)
        + hot_one(n) + hot_two(n));
}
"""
HOT = ["t::hot_two", "t::run", "t::hot_one"]


def build(workdir, metadata, order=None, through_script=False):
    src = os.path.join(workdir, "t.rs")
    with open(src, "w") as f:
        f.write(PROGRAM)
    out = os.path.join(workdir, f"t-{metadata}-{'ordered' if through_script else 'cc'}")
    cmd = ["rustc", "--edition", "2021", "-C", "opt-level=2", "-C", f"metadata={metadata}",
           "--crate-name", "t", "-o", out, src]
    if order:
        cmd += ["-C", f"link-arg=-Wl,--symbol-ordering-file={order}",
                "-C", "link-arg=-Wl,--no-warn-symbol-ordering"]
    if through_script:
        cmd += ["-C", f"linker={os.path.join(TOP, 'shim', 'symbol_order.py')}"]
    subprocess.run(cmd, check=True, capture_output=True, cwd=workdir)
    return out


def layout(binary):
    """[(path, size, symbol)] of the binary's functions, by address."""
    return [(path, size, symbol)
            for _, size, symbol, path in sorted(symbol_order.functions(binary))]


class SymbolOrder(unittest.TestCase):
    def test_listed_functions_come_first_under_new_hashes(self):
        with tempfile.TemporaryDirectory() as workdir:
            first = [f for f in layout(build(workdir, "one")) if f[0].startswith("t::")]
            runs = sorted((size, symbol) for path, size, symbol in first if path == "t::run")
            self.assertEqual(len(runs), 2, f"two instances of t::run in {first}")
            self.assertNotEqual(runs[0][0], runs[1][0], "the instances differ in size")
            # The list as test/hot-symbols.py writes it: the hot functions,
            # and of t::run only its larger instance.
            big_run = runs[1][1]
            listed = [next(f for f in first if f[0] == path and (path != "t::run" or f[2] == big_run))
                      for path in HOT]
            order = os.path.join(workdir, "order.txt")
            with open(order, "w") as f:
                f.writelines(symbol_order.list_line(*entry) for entry in listed)

            second = layout(build(workdir, "two", order, through_script=True))
            self.assertFalse({s for *_, s in first} & {s for *_, s in second},
                             "the second build renamed every symbol")
            self.assertEqual([(path, size) for path, size, _ in second[:3]],
                             [(path, size) for path, size, _ in listed],
                             f"the binary's first functions: {second[:5]}")

            # Entries without sizes (lists made before sizes were listed):
            # every instance of a generic path is taken.
            with open(order, "w") as f:
                f.writelines(symbol_order.list_line(path) for path in ["t::run", "t::hot_one"])
            unsized = layout(build(workdir, "three", order, through_script=True))
            self.assertEqual([path for path, *_ in unsized[:3]], ["t::run", "t::run", "t::hot_one"],
                             f"the binary's first functions: {unsized[:4]}")

            control = layout(build(workdir, "two", order))
            self.assertNotEqual([path for path, *_ in control[:3]], HOT,
                                "without the script, lld finds none of the names")


if __name__ == "__main__":
    unittest.main()
