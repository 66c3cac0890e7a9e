//! Where the Wasm a container runs comes from.
//!
//! Today that is a `.wasm` file inside the container's root filesystem (an
//! ordinary OCI image built `FROM scratch`). Wasm OCI artifacts read from
//! containerd's content store will be a second [`WasmSource`] origin.

mod image;
mod kind;
mod rootfs;

pub use image::{ImageFile, ImageSpec, write_image_archive};
pub use kind::WasmKind;
pub use rootfs::{MAX_WASM_SIZE, SourceError, read_from_rootfs};

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
