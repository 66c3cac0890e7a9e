//! The installer's own image: this binary and the shim, `FROM scratch`,
//! written by wasmpod's OCI image writer. Nothing is downloaded when it
//! runs, so an air-gapped node installs from what its registry mirror holds.

use std::path::Path;

/// Where the shim sits in the image (the `install` default of `--shim`).
pub const SHIM_IN_IMAGE: &str = "/wasmpod/containerd-shim-wasmpod-v1";
/// Where the installer sits in the image (the DaemonSet's `command`).
pub const INSTALLER_IN_IMAGE: &str = "/wasmpod-node-installer";

/// What keeps the image from being written.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file to put in it could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The installer is dynamically linked: in an image with no libc it
    /// would not start.
    #[error(
        "{0} is dynamically linked, and the image has no C library: build it static (make installer-image does)"
    )]
    NotStatic(String),
    /// Writing the archive failed.
    #[error("cannot write {path}")]
    Write {
        /// The archive.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Writes the image archive to `output`: `installer` (this binary, static)
/// and `shim`, named `reference`, for `architecture` (`amd64`, `arm64`).
pub fn write(
    installer: &Path,
    shim: &Path,
    reference: &str,
    architecture: &str,
    output: &Path,
) -> Result<(), ImageError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ImageError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let installer_bytes = read(installer)?;
    if has_interpreter(&installer_bytes) {
        return Err(ImageError::NotStatic(installer.display().to_string()));
    }
    let spec = wasmpod_oci::ImageSpec {
        reference: reference.to_owned(),
        cmd: vec![INSTALLER_IN_IMAGE.to_owned(), "--help".to_owned()],
        env: Vec::new(),
        architecture: architecture.to_owned(),
        files: vec![
            wasmpod_oci::ImageFile {
                path: INSTALLER_IN_IMAGE.to_owned(),
                bytes: installer_bytes,
                mode: 0o755,
            },
            wasmpod_oci::ImageFile {
                path: SHIM_IN_IMAGE.to_owned(),
                bytes: read(shim)?,
                mode: 0o755,
            },
        ],
    };
    let write_error = |source| ImageError::Write {
        path: output.display().to_string(),
        source,
    };
    let tmp = output.with_extension("tar.tmp");
    let file = std::fs::File::create(&tmp).map_err(write_error)?;
    wasmpod_oci::write_image_archive(&spec, std::io::BufWriter::new(file)).map_err(write_error)?;
    std::fs::rename(&tmp, output).map_err(write_error)
}

/// Whether an ELF64 file asks for a dynamic loader (`PT_INTERP`).
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return false;
    };
    const PT_INTERP: u32 = 3;
    (0..usize::from(count)).any(|i| {
        usize::try_from(phoff)
            .ok()
            .and_then(|phoff| u32_at(phoff + i * usize::from(size)))
            == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_is_told_apart() {
        // The test binary itself is linked as the toolchain links by default.
        let me = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
        let dynamic = !cfg!(target_feature = "crt-static");
        assert_eq!(has_interpreter(&me), dynamic);
        assert!(!has_interpreter(b"not an elf"));
    }
}
