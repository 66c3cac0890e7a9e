/// The two kinds of Wasm binary the shim runs, told apart by their header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module (WASI preview 1 command, entry point `_start`).
    Module,
    /// A component (WASI preview 2 command, export `wasi:cli/run`).
    Component,
}

const MAGIC: [u8; 4] = *b"\0asm";
const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Component binaries use version 0x0d with layer 1 in the upper half.
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

impl WasmKind {
    /// Reads the 8-byte preamble; `None` means the bytes are not Wasm at all
    /// (or a Wasm encoding this shim does not know).
    pub fn detect(bytes: &[u8]) -> Option<Self> {
        let (magic, version) = (bytes.get(0..4)?, bytes.get(4..8)?);
        if magic != MAGIC {
            return None;
        }
        match <[u8; 4]>::try_from(version).ok()? {
            MODULE_VERSION => Some(Self::Module),
            COMPONENT_VERSION => Some(Self::Component),
            _ => None,
        }
    }

    /// Like [`Self::detect`], but says what the bytes start with instead.
    pub fn identify(bytes: &[u8]) -> Result<Self, Preamble> {
        Self::detect(bytes)
            .ok_or_else(|| Preamble(bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()))
    }
}

/// The first bytes of something that is not Wasm, shown in hex in errors
/// so that an admin can tell an ELF binary or a script from a truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble(String);

impl std::fmt::Display for Preamble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for WasmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Module => "core module",
            Self::Component => "component",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_modules_from_components() {
        assert_eq!(
            WasmKind::detect(b"\0asm\x01\0\0\0rest"),
            Some(WasmKind::Module)
        );
        assert_eq!(
            WasmKind::detect(b"\0asm\x0d\0\x01\0"),
            Some(WasmKind::Component)
        );
    }

    #[test]
    fn rejects_what_is_not_wasm() {
        assert_eq!(WasmKind::detect(b""), None);
        assert_eq!(WasmKind::detect(b"\0asm"), None);
        assert_eq!(WasmKind::detect(b"\x7fELF\x02\x01\x01\0"), None);
        assert_eq!(WasmKind::detect(b"#!/bin/sh\necho hi\n"), None);
        // A future binary version is refused rather than guessed at.
        assert_eq!(WasmKind::detect(b"\0asm\x02\0\0\0"), None);
        assert_eq!(
            WasmKind::identify(b"\x7fELF\x02\x01\x01\0rest")
                .expect_err("an ELF header")
                .to_string(),
            "7f454c4602010100"
        );
    }
}
