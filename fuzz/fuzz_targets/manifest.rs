//! Reading a registry's manifests and indexes: which manifest of an index
//! runs, and which layer of a manifest holds the Wasm.
//!
//! Input: a manifest or index as JSON, then a line `--`, then the config
//! blob the manifest names (`{}` when there is no such line).

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpod_oci::artifact::{
    Descriptor, Index, Manifest, Platform, WASM_CONFIG, is_wasm_layer, pick_from_index, wasm_layer,
};

fn check_descriptor(d: &Descriptor) {
    // What wasmpod writes (push, image) it reads back unchanged.
    let written = serde_json::to_vec(d).expect("a descriptor serialises");
    let read: Descriptor = serde_json::from_slice(&written).expect("and reads back");
    assert_eq!(&read, d);
}

fn check_manifest(manifest: &Manifest, config: &[u8]) {
    for d in manifest.layers.iter().chain([&manifest.config]) {
        check_descriptor(d);
    }
    let wasm: Vec<&Descriptor> = manifest
        .layers
        .iter()
        .filter(|l| is_wasm_layer(&l.media_type))
        .collect();
    match wasm_layer("fuzz.example/app:1", manifest, config) {
        Ok(Some(found)) => {
            // Exactly one Wasm layer, and it is that one.
            assert_eq!(wasm, [&found.descriptor]);
        }
        Ok(None) => {
            // An ordinary image: nothing in it says Wasm.
            assert!(wasm.is_empty());
            assert_ne!(manifest.config.media_type, WASM_CONFIG);
        }
        Err(e) => assert!(e.to_string().starts_with("image fuzz.example/app:1 ")),
    }
}

fn check_index(index: &Index) {
    let Some(picked) = pick_from_index(index) else {
        // Nothing is picked only when no entry is for Wasm or this node.
        let runnable = |p: &Platform| p.is_wasm() || (p.os == "linux" && p.architecture == "amd64");
        assert!(
            !index
                .manifests
                .iter()
                .any(|m| m.platform.as_ref().is_some_and(runnable))
        );
        return;
    };
    let platform = picked
        .platform
        .as_ref()
        .expect("only entries with a platform are picked");
    // A Wasm entry wins over the node's own platform.
    let has_wasm = index
        .manifests
        .iter()
        .any(|m| m.platform.as_ref().is_some_and(|p| p.is_wasm()));
    assert_eq!(platform.is_wasm(), has_wasm);
    check_descriptor(picked);
}

fuzz_target!(|data: &[u8]| {
    const SEPARATOR: &[u8] = b"\n--\n";
    let (json, config) = match data.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        Some(at) => (&data[..at], &data[at + SEPARATOR.len()..]),
        None => (data, &b"{}"[..]),
    };
    if let Ok(manifest) = serde_json::from_slice::<Manifest>(json) {
        check_manifest(&manifest, config);
    }
    if let Ok(index) = serde_json::from_slice::<Index>(json) {
        check_index(&index);
    }
});
