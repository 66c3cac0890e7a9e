//! What a Wasm binary is: its kind, world, imports and exports.

use serde::Serialize;
use wasmpod_oci::{Preamble, WasmKind};

/// The facts `wasmpod inspect` shows, and `wasmpod push` records.
#[derive(Debug, Serialize)]
pub struct Description {
    /// `component` or `module`.
    pub kind: &'static str,
    /// The component's world (`root` for adapted preview 1 programs), or
    /// `wasi-preview1` for a core module that imports it.
    pub world: String,
    /// Imported interfaces (component) or `module::name` functions (module).
    pub imports: Vec<String>,
    /// Exported interfaces or functions.
    pub exports: Vec<String>,
    /// Size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the bytes (the layer digest once pushed).
    pub digest: String,
}

/// Why a binary could not be described.
#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    /// Not Wasm at all.
    #[error("{what} is not a WebAssembly module or component (it starts with {preamble})")]
    NotWasm {
        /// What was read.
        what: String,
        /// What the bytes start with.
        preamble: Preamble,
    },
    /// Wasm, but not decodable.
    #[error("{what} is not a valid WebAssembly {kind}: {reason}")]
    Invalid {
        /// What was read.
        what: String,
        /// Module or component.
        kind: WasmKind,
        /// The decoder's explanation.
        reason: String,
    },
}

/// Describes `bytes`; `what` names them in errors.
pub fn describe(what: &str, bytes: &[u8]) -> Result<Description, DescribeError> {
    let kind = WasmKind::identify(bytes).map_err(|preamble| DescribeError::NotWasm {
        what: what.to_owned(),
        preamble,
    })?;
    let invalid = |reason: String| DescribeError::Invalid {
        what: what.to_owned(),
        kind,
        reason,
    };
    let (kind_name, world, imports, exports) = match kind {
        WasmKind::Component => {
            let decoded = wit_component::decode(bytes).map_err(|e| invalid(format!("{e:#}")))?;
            let wit_component::DecodedWasm::Component(resolve, world) = decoded else {
                return Err(invalid(
                    "it is a WIT package, not a runnable component".into(),
                ));
            };
            let info = oci_wasm::Component::from_world(&resolve, world)
                .map_err(|e| invalid(format!("{e:#}")))?;
            let name = resolve.worlds[world].name.clone();
            ("component", name, info.imports, info.exports)
        }
        WasmKind::Module => {
            let (imports, exports) = module_interface(bytes).map_err(|e| invalid(e.to_string()))?;
            let world = if imports
                .iter()
                .any(|i| i.starts_with("wasi_snapshot_preview1::"))
            {
                "wasi-preview1"
            } else {
                "none"
            };
            ("module", world.to_owned(), imports, exports)
        }
    };
    Ok(Description {
        kind: kind_name,
        world,
        imports,
        exports,
        size: bytes.len() as u64,
        digest: wasmpod_oci::verify::sha256_digest(bytes),
    })
}

fn module_interface(
    bytes: &[u8],
) -> Result<(Vec<String>, Vec<String>), wasmparser::BinaryReaderError> {
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload? {
            wasmparser::Payload::ImportSection(section) => {
                for import in section.into_imports() {
                    let import = import?;
                    imports.push(format!("{}::{}", import.module, import.name));
                }
            }
            wasmparser::Payload::ExportSection(section) => {
                for export in section {
                    exports.push(export?.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_wasm() {
        let err = describe("app.sh", b"#!/bin/sh\necho hi\n").expect_err("script");
        assert!(err.to_string().contains("2321"), "{err}");
    }

    #[test]
    fn lists_a_modules_imports_and_exports() {
        // (module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32)))
        //         (func (export "_start")))
        let wasm: &[u8] = &[
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // header
            0x01, 0x08, 0x02, 0x60, 0x01, 0x7f, 0x00, 0x60, 0x00, 0x00, // types
            0x02, 0x24, 0x01, 0x16, b'w', b'a', b's', b'i', b'_', b's', b'n', b'a', b'p', b's',
            b'h', b'o', b't', b'_', b'p', b'r', b'e', b'v', b'i', b'e', b'w', b'1', 0x09, b'p',
            b'r', b'o', b'c', b'_', b'e', b'x', b'i', b't', 0x00, 0x00, // import
            0x03, 0x02, 0x01, 0x01, // functions
            0x07, 0x0a, 0x01, 0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x01, // export
            0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code
        ];
        let d = describe("m.wasm", wasm).expect("module");
        assert_eq!(d.kind, "module");
        assert_eq!(d.world, "wasi-preview1");
        assert_eq!(d.imports, ["wasi_snapshot_preview1::proc_exit"]);
        assert_eq!(d.exports, ["_start"]);
        assert_eq!(d.size, wasm.len() as u64);
    }
}
