//! Lays out the shim's hot functions together (see shim/symbol-order.txt).
//!
//! Only where the linker is lld, which Rust uses by default for
//! x86_64-unknown-linux-gnu: the GNU linkers do not take the option, and
//! without it the binary is the same program, only spread wider in memory.

fn main() {
    let order = "symbol-order.txt";
    println!("cargo::rerun-if-changed={order}");
    // The release link's mapping of the list to symbols (Makefile: RELEASE).
    println!("cargo::rerun-if-changed=symbol_order.py");
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(order);
    let bin = "containerd-shim-wasmpod-v1";
    println!(
        "cargo::rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}",
        path.display()
    );
    // The list names functions without their symbols' hashes, which the
    // release link maps to this build's names (shim/symbol_order.py as the
    // linker, `make dist`). lld skips what it does not find: a link without
    // that mapping, or a stale list, spreads the hot code out again, which
    // `make bench` reports (test/hot-symbols.py --report).
    println!("cargo::rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
}
