//! Writing an ordinary OCI image archive (an OCI layout in a tar) that holds
//! a Wasm file, for `ctr images import` and for containerd releases that
//! cannot unpack Wasm artifacts.

use std::io::{self, Write};

use serde_json::json;
use sha2::{Digest, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const LAYER_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";

/// A file to place in the image's single layer.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Absolute path inside the image, e.g. `/hello.wasm`.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
    /// Unix permission bits.
    pub mode: u32,
}

/// What the image is and how it runs.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference containerd names the image by, e.g.
    /// `docker.io/library/hello:latest`.
    pub reference: String,
    /// `CMD` of the image config.
    pub cmd: Vec<String>,
    /// `Env` entries (`NAME=value`).
    pub env: Vec<String>,
    /// Platform architecture (`amd64`): containerd unpacks images for its own.
    pub architecture: String,
    /// Files of the one layer.
    pub files: Vec<ImageFile>,
}

/// This build's architecture in OCI's words (`amd64`, `arm64`): an image
/// for the machine it runs on, as containerd unpacks images for its own.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn tar_entry<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
    mode: u32,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_size(bytes.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}

/// Builds the layer tar: reproducible (zero times, root owner).
fn layer(files: &[ImageFile]) -> io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for f in files {
        tar_entry(&mut tar, f.path.trim_start_matches('/'), &f.bytes, f.mode)?;
    }
    tar.into_inner()
}

/// Writes `image` as an OCI image layout tar to `out`.
pub fn write_image_archive(image: &ImageSpec, out: impl Write) -> io::Result<()> {
    let layer = layer(&image.files)?;
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": image.architecture,
        "os": "linux",
        "config": { "Cmd": image.cmd, "Env": image.env },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": { "mediaType": CONFIG_TYPE, "digest": digest(&config), "size": config.len() },
        "layers": [{ "mediaType": LAYER_TYPE, "digest": layer_digest, "size": layer.len() }],
    }))?;
    let tag = image
        .reference
        .rsplit_once(':')
        .filter(|(_, t)| !t.contains('/'))
        .map_or("latest", |(_, t)| t);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_TYPE,
            "digest": digest(&manifest),
            "size": manifest.len(),
            "platform": { "architecture": image.architecture, "os": "linux" },
            "annotations": {
                "io.containerd.image.name": image.reference,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    }))?;
    let mut tar = tar::Builder::new(out);
    tar_entry(
        &mut tar,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
        0o644,
    )?;
    tar_entry(&mut tar, "index.json", &index, 0o644)?;
    for blob in [&config, &manifest, &layer] {
        let name = format!("blobs/sha256/{}", &digest(blob)["sha256:".len()..]);
        tar_entry(&mut tar, &name, blob, 0o644)?;
    }
    tar.into_inner()?.flush()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut tar = tar::Archive::new(archive);
        tar.entries()
            .expect("entries")
            .map(|e| {
                let mut e = e.expect("entry");
                let path = e.path().expect("path").to_string_lossy().into_owned();
                let mut bytes = Vec::new();
                e.read_to_end(&mut bytes).expect("read");
                (path, bytes)
            })
            .collect()
    }

    #[test]
    fn writes_a_named_oci_layout_with_verifiable_blobs() {
        let image = ImageSpec {
            reference: "localhost:5000/wasmpod/hello:v1".into(),
            cmd: vec!["/hello.wasm".into()],
            env: vec![],
            architecture: "amd64".into(),
            files: vec![ImageFile {
                path: "/hello.wasm".into(),
                bytes: b"\0asm\x01\0\0\0".to_vec(),
                mode: 0o755,
            }],
        };
        let mut out = Vec::new();
        write_image_archive(&image, &mut out).expect("write");
        let files = entries(&out);
        let index: serde_json::Value = serde_json::from_slice(
            &files
                .iter()
                .find(|(p, _)| p == "index.json")
                .expect("index")
                .1,
        )
        .expect("json");
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            "localhost:5000/wasmpod/hello:v1"
        );
        assert_eq!(m["annotations"]["org.opencontainers.image.ref.name"], "v1");
        for (path, bytes) in files.iter().filter(|(p, _)| p.starts_with("blobs/")) {
            assert_eq!(format!("blobs/sha256/{}", &digest(bytes)[7..]), *path);
        }
        let blob = |digest: &serde_json::Value| {
            let path = format!("blobs/sha256/{}", &digest.as_str().expect("digest")[7..]);
            files
                .iter()
                .find(|(p, _)| *p == path)
                .expect("blob")
                .1
                .clone()
        };
        let manifest: serde_json::Value =
            serde_json::from_slice(&blob(&m["digest"])).expect("manifest");
        let layer = entries(&blob(&manifest["layers"][0]["digest"]));
        assert_eq!(
            layer,
            [("hello.wasm".to_owned(), b"\0asm\x01\0\0\0".to_vec())]
        );
        // Reproducible: the same input gives the same bytes.
        let mut again = Vec::new();
        write_image_archive(&image, &mut again).expect("write");
        assert_eq!(out, again);
    }
}
