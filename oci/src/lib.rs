//! Where the Wasm a container runs comes from.
//!
//! Either a `.wasm` file inside the container's root filesystem (an ordinary
//! OCI image built `FROM scratch`), or the Wasm layer of an image in
//! containerd's content store (the CNCF Wasm artifact and its relatives, see
//! [`artifact`]).

pub mod artifact;
mod content;
mod image;
mod kind;
mod rootfs;
pub mod verify;

pub use content::{ContentError, ContentStore};
pub use image::{ImageFile, ImageSpec, host_architecture, write_image_archive};
pub use kind::{Preamble, WasmKind};
pub use rootfs::{
    DEFAULT_PATH, DigestMemo, MAX_WASM_SIZE, RootfsWasm, SourceError, identify_in_rootfs,
    native_program, read_from_rootfs,
};

/// The bytes of one Wasm program and what identifies them.
#[derive(Debug, Clone)]
pub struct WasmSource {
    /// The raw Wasm binary.
    pub bytes: Vec<u8>,
    /// `sha256:<hex>` of [`Self::bytes`]; the compiled-code cache is keyed by it.
    pub digest: String,
    /// Whether the bytes are a core module or a component.
    pub kind: WasmKind,
    /// Where the bytes were found, for messages (e.g. `rootfs:/hello.wasm`).
    pub origin: String,
}

/// `error` and its sources as one line, each cause once: library errors
/// often repeat their source's text, and the admin reading the line needs
/// every fact but no echo.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
