//! Telling a core module from a component (and from anything else) by the
//! first bytes of a file from an image.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmpod_oci::WasmKind;

fuzz_target!(|data: &[u8]| {
    let kind = WasmKind::detect(data);
    // The 8-byte preamble decides; what follows it never does.
    let preamble = &data[..data.len().min(8)];
    assert_eq!(kind, WasmKind::detect(preamble));
    match WasmKind::identify(data) {
        Ok(identified) => assert_eq!(Some(identified), kind),
        Err(shown) => {
            assert_eq!(kind, None);
            // The error shows the preamble in hex, so an admin can tell an
            // ELF binary or a script from a truncated file.
            let hex: String = preamble.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(shown.to_string(), hex);
        }
    }
});
