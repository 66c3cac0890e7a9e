//! Wasm shipped through a registry: pushed with `wasmpod` (or `oras`),
//! pulled by a real containerd, run by the shim from the content store.
//!
//! Run by `make test` (test/integration.sh), which starts a private
//! containerd and a private registry on 127.0.0.1 and sets `WASMPOD_*`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use wasmpod_integration::{RUNTIME, create_container, ok, text, unique, var};

const NAMESPACE: &str = "wasmpod-artifacts";

fn suite() -> String {
    var("WASMPOD_SUITE")
}

/// containerd before 1.6.25/1.7.7 cannot unpack images with non-tar layers.
fn unpacks_artifacts() -> bool {
    suite() != "bookworm"
}

fn registry() -> String {
    var("WASMPOD_REGISTRY")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(&var("WASMPOD_FIXTURES"))
        .join("rootfs")
        .join(name)
}

/// A repository reference of our own for this suite and test.
fn reference(name: &str) -> String {
    format!("{}/{}/{}:1", registry(), suite(), unique(name))
}

fn run_cmd(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("command runs")
}

fn ctr(args: &[&str]) -> Output {
    let address = var("WASMPOD_ADDRESS");
    let mut argv = vec!["-a", address.as_str(), "-n", NAMESPACE];
    argv.extend_from_slice(args);
    run_cmd(var("WASMPOD_CTR"), &argv)
}

fn wasmpod(args: &[&str]) -> Output {
    run_cmd(var("WASMPOD_CLI"), args)
}

fn push(file: &str, name: &str) -> String {
    let r = reference(name);
    let path = fixture(file);
    ok(
        &wasmpod(&["push", path.to_str().expect("utf-8"), &r, "--plain-http"]),
        "wasmpod push",
    );
    r
}

/// `oras` (PyPI) pushes `file` with the given config and layer media types.
fn oras_push(path: &Path, name: &str, config_type: &str, layer_type: &str, config: &str) -> String {
    let r = reference(name);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = path.file_name().expect("a file").to_str().expect("utf-8");
    std::fs::copy(path, dir.path().join(file)).expect("copy");
    std::fs::write(dir.path().join("config.json"), config).expect("config");
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={host:?}, insecure=True)\n\
         c.push(files=[{file:?} + ':' + {layer_type:?}], target={r:?},\n\
                manifest_config='config.json:' + {config_type:?}, disable_path_validation=True)\n",
        host = registry(),
    );
    let out = Command::new(var("WASMPOD_PYTHON"))
        .args(["-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("python runs");
    ok(&out, "oras push");
    r
}

fn pull(r: &str) -> Output {
    ctr(&["images", "pull", "--plain-http", r])
}

/// Creates the container the way the CRI does, through containerd's API
/// with the image's name (`ctr run` itself refuses an artifact's config
/// type), then runs it with `ctr task start`.
fn run_image_via_api(image: &str, args: &[&str]) -> Output {
    let id = unique("api");
    let mut spec: serde_json::Value =
        serde_json::from_str(&ok(&ctr(&["oci", "spec"]), "ctr oci spec")).expect("spec json");
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(["GREETING=from-the-api"]);
    create_container(&var("WASMPOD_ADDRESS"), NAMESPACE, &id, image, &spec)
        .expect("create the container through containerd's API");
    let out = ctr(&["task", "start", &id]);
    let _ = ctr(&["task", "rm", "-f", &id]);
    ok(&ctr(&["containers", "rm", &id]), "ctr containers rm");
    out
}

fn ctr_run(image: &str, args: &[&str]) -> Output {
    let id = unique("run");
    let mut argv = vec!["run", "--rm", "--runtime", RUNTIME, image, &id];
    argv.extend_from_slice(args);
    ctr(&argv)
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn pushed_artifact_pulls_back_byte_identical_with_our_cli_oras_and_skopeo() {
    let r = push("hello.component.wasm", "roundtrip");
    let original = std::fs::read(fixture("hello.component.wasm")).expect("fixture");
    let dir = tempfile::tempdir().expect("tempdir");

    let ours = dir.path().join("ours.wasm");
    ok(
        &wasmpod(&[
            "pull",
            &r,
            "-o",
            ours.to_str().expect("utf-8"),
            "--plain-http",
        ]),
        "wasmpod pull",
    );
    assert_eq!(std::fs::read(&ours).expect("pulled"), original);

    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(hostname={:?}, insecure=True)\n\
         print(c.pull(target={r:?}, outdir='oras'))\n",
        registry()
    );
    let out = Command::new(var("WASMPOD_PYTHON"))
        .args(["-c", &script])
        .current_dir(dir.path())
        .output()
        .expect("python");
    ok(&out, "oras pull");
    let by_oras = dir.path().join("oras/hello.component.wasm");
    assert_eq!(
        std::fs::read(&by_oras).expect("oras wrote the title"),
        original
    );

    let manifest = manifest_of(&r);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert!(manifest["annotations"]["org.opencontainers.image.created"].is_string());
    let config = ok(
        &run_cmd(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--config",
                "--raw",
                &format!("docker://{r}"),
            ],
        ),
        "skopeo inspect --config",
    );
    let config: serde_json::Value = serde_json::from_str(&config).expect("config json");
    assert_eq!(config["os"], "wasip2");
    let exports = config["component"]["exports"].to_string();
    assert!(exports.contains("wasi:cli/run"), "{config}");

    let inspect = ok(
        &wasmpod(&["inspect", &r, "--json", "--plain-http"]),
        "inspect",
    );
    let inspect: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
    assert_eq!(inspect["kind"], "component");
    assert_eq!(inspect["layout"], "wasm-artifact");
    assert_eq!(inspect["size"], original.len());
    assert_eq!(inspect["digest"], manifest["layers"][0]["digest"]);
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn artifact_runs_from_the_content_store_or_fails_with_the_documented_reason() {
    let r = push("hello.component.wasm", "artifact");
    let pulled = pull(&r);
    if !unpacks_artifacts() {
        assert!(
            !pulled.status.success(),
            "1.6.20 should not unpack an artifact"
        );
        let err = text(&pulled.stderr);
        assert!(
            err.contains("mismatched image rootfs and manifest layers"),
            "{err}"
        );
        return;
    }
    ok(&pulled, "ctr images pull");
    // ctr's own `run` refuses the artifact config type before our shim is
    // involved; this is what the README documents.
    let refused = ctr_run(&r, &["hello.component.wasm"]);
    assert!(text(&refused.stderr).contains("unknown image config media type"));

    let out = run_image_via_api(&r, &["hello.component.wasm", "from-an-artifact"]);
    let stdout = ok(&out, "ctr task start");
    assert!(stdout.contains("argv[1]=from-an-artifact"), "{stdout}");
    assert!(stdout.contains("GREETING=from-the-api"), "{stdout}");
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn oras_pushed_layouts_run_with_ctr() {
    let config = r#"{"architecture":"wasm","os":"wasip2","config":{"Cmd":["app.wasm","from-oras"],"Env":["GREETING=layout"]},"rootfs":{"type":"layers","diff_ids":[]}}"#;
    let image_config = "application/vnd.oci.image.config.v1+json";
    for layer_type in [
        "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
        "application/vnd.wasm.content.layer.v1+wasm",
    ] {
        let r = oras_push(
            &fixture("hello.component.wasm"),
            "layout",
            image_config,
            layer_type,
            config,
        );
        let pulled = pull(&r);
        if !unpacks_artifacts() {
            assert!(!pulled.status.success(), "{layer_type}");
            continue;
        }
        ok(&pulled, "ctr images pull");
        let stdout = ok(&ctr_run(&r, &[]), layer_type);
        assert!(
            stdout.contains("argv[1]=from-oras"),
            "{layer_type}: {stdout}"
        );
        assert!(stdout.contains("GREETING=layout"), "{layer_type}: {stdout}");
    }
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn oras_pushed_artifact_runs() {
    if !unpacks_artifacts() {
        return; // Covered by the documented failure above.
    }
    let digest = format!(
        "sha256:{}",
        sha256_hex(&std::fs::read(fixture("hello.component.wasm")).expect("fixture"))
    );
    let config = format!(
        r#"{{"created":"2026-01-01T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":["{digest}"]}}"#
    );
    let r = oras_push(
        &fixture("hello.component.wasm"),
        "oras-artifact",
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        &config,
    );
    ok(&pull(&r), "ctr images pull");
    let stdout = ok(
        &run_image_via_api(&r, &["app", "by-oras"]),
        "ctr task start",
    );
    assert!(stdout.contains("argv[1]=by-oras"), "{stdout}");
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn image_tar_runs_on_every_containerd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tar = dir.path().join("hello.tar");
    let name = format!("wasmpod.test/{}/hello:1", unique("tar"));
    ok(
        &wasmpod(&[
            "image",
            fixture("hello.component.wasm").to_str().expect("utf-8"),
            "-o",
            tar.to_str().expect("utf-8"),
            "--ref",
            &name,
        ]),
        "wasmpod image",
    );
    ok(
        &ctr(&["images", "import", tar.to_str().expect("utf-8")]),
        "ctr images import",
    );
    let stdout = ok(&ctr_run(&name, &[]), "ctr run");
    assert!(stdout.contains("argv[0]=/hello.component.wasm"), "{stdout}");
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn a_tampered_layer_in_the_content_store_is_refused_by_name() {
    if !unpacks_artifacts() {
        return;
    }
    // A program of its own, so that no cached code hides the layer.
    let r = push("count_args.component.wasm", "tampered");
    ok(&pull(&r), "ctr images pull");
    let bytes = std::fs::read(fixture("count_args.component.wasm")).expect("fixture");
    let digest = sha256_hex(&bytes);
    let cache = PathBuf::from(var("WASMPOD_WASM_CACHE"));
    for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&digest) {
            std::fs::remove_file(entry.path()).expect("drop cache entry");
        }
    }
    let blob = Path::new(&var("WASMPOD_ROOT"))
        .join("io.containerd.content.v1.content/blobs/sha256")
        .join(&digest);
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    std::fs::write(&blob, &flipped).expect("tamper");
    let out = run_image_via_api(&r, &["count_args"]);
    let _ = std::fs::write(&blob, &bytes);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&r) && err.contains(&digest), "{err}");
    assert!(err.contains("does not match its digest"), "{err}");
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn registry_problems_get_errors_that_say_what_to_do() {
    let file = fixture("hello.component.wasm");
    let file = file.to_str().expect("utf-8");
    let err = |out: Output| {
        assert!(!out.status.success());
        text(&out.stderr)
    };

    let down = err(wasmpod(&[
        "push",
        file,
        "127.0.0.1:9/x/y:1",
        "--plain-http",
    ]));
    assert!(down.contains("cannot reach registry 127.0.0.1:9"), "{down}");

    let auth = format!("{}/x/y:1", var("WASMPOD_REGISTRY_AUTH"));
    let denied = err(wasmpod(&["push", file, &auth, "--plain-http"]));
    assert!(denied.contains("docker login"), "{denied}");

    let missing = err(wasmpod(&["pull", &reference("missing"), "--plain-http"]));
    assert!(missing.contains("was not found"), "{missing}");

    let script = fixture("not-wasm.sh");
    let not_wasm = err(wasmpod(&[
        "push",
        script.to_str().expect("utf-8"),
        &reference("x"),
        "--plain-http",
    ]));
    assert!(
        not_wasm.contains("not a WebAssembly module or component"),
        "{not_wasm}"
    );

    // An ordinary image is not an artifact to pull.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("x.wasm");
    let r = oras_push(
        &fixture("data.txt"),
        "tarball",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar",
        "{}",
    );
    let ordinary = err(wasmpod(&[
        "pull",
        &r,
        "-o",
        out.to_str().expect("utf-8"),
        "--plain-http",
    ]));
    assert!(ordinary.contains("ordinary container image"), "{ordinary}");
    assert!(!out.exists());

    // A Wasm layer that is not Wasm: refused, nothing written.
    let r = oras_push(
        &fixture("data.txt"),
        "fake",
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        "{}",
    );
    let fake = err(wasmpod(&[
        "pull",
        &r,
        "-o",
        out.to_str().expect("utf-8"),
        "--plain-http",
    ]));
    assert!(
        fake.contains("is not a WebAssembly module or component"),
        "{fake}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "temp files left"
    );
    shim_refuses(&r, "is not a WebAssembly module or component");

    // Garbage config JSON.
    let r = oras_push(
        &fixture("hello.component.wasm"),
        "garbage",
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        "{garbage",
    );
    let garbage = err(wasmpod(&[
        "pull",
        &r,
        "-o",
        out.to_str().expect("utf-8"),
        "--plain-http",
    ]));
    assert!(garbage.contains("is not valid JSON"), "{garbage}");
    assert!(!out.exists());
    // containerd 1.7 parses the config while unpacking and refuses it
    // itself; 2.x stores the image and leaves the config to the shim.
    if suite() == "trixie" {
        let pulled = pull(&r);
        assert!(!pulled.status.success());
        assert!(
            text(&pulled.stderr).contains("invalid character"),
            "{}",
            text(&pulled.stderr)
        );
    } else {
        shim_refuses(&r, "is not valid JSON");
    }
}

/// On a containerd that unpacks artifacts: `r` pulls, and the shim refuses
/// to create its container with a message naming the image and `needle`.
fn shim_refuses(r: &str, needle: &str) {
    if !unpacks_artifacts() {
        return;
    }
    ok(&pull(r), "ctr images pull");
    let out = run_image_via_api(r, &["app.wasm"]);
    assert!(!out.status.success(), "{r} ran");
    let err = text(&out.stderr);
    assert!(err.contains(r) && err.contains(needle), "{err}");
}

/// The registry's own file holding blob `digest`, for the tests that make
/// the registry fail or lie.
fn registry_blob(digest: &str) -> PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    Path::new(&var("WASMPOD_REGISTRY_STORAGE"))
        .join("docker/registry/v2/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
        .join("data")
}

/// The bytes of the manifest (or index) `r` points to, as the registry
/// serves them (`skopeo inspect --raw`).
fn raw_manifest(r: &str) -> String {
    ok(
        &run_cmd(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{r}"),
            ],
        ),
        "skopeo inspect --raw",
    )
}

/// [`raw_manifest`], parsed.
fn manifest_of(r: &str) -> serde_json::Value {
    serde_json::from_str(&raw_manifest(r)).expect("manifest json")
}

/// Stores `body` in the registry under `tag` of `r`'s repository, as a
/// client that lies would; returns the new reference.
fn put_manifest(r: &str, tag: &str, body: &serde_json::Value) -> String {
    let (host, rest) = r.split_once('/').expect("host/repository:tag");
    let (repository, _) = rest.rsplit_once(':').expect("a tag");
    let media_type = body["mediaType"].as_str().expect("mediaType");
    ok(
        &run_cmd(
            "curl",
            &[
                "-fsS",
                "-X",
                "PUT",
                "-H",
                &format!("Content-Type: {media_type}"),
                "--data-binary",
                &body.to_string(),
                &format!("http://{host}/v2/{repository}/manifests/{tag}"),
            ],
        ),
        "curl PUT manifest",
    );
    format!("{host}/{repository}:{tag}")
}

/// Whether containerd's content store holds `digest` (the first column;
/// other blobs' labels name it too, e.g. a manifest its layers).
fn in_content_store(digest: &str) -> bool {
    ok(&ctr(&["content", "ls"]), "ctr content ls")
        .lines()
        .any(|line| line.split_whitespace().next() == Some(digest))
}

/// `wasmpod pull r -o FILE` into an empty directory that must stay empty.
fn pull_refused(r: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("app.wasm");
    let pulled = wasmpod(&[
        "pull",
        r,
        "-o",
        out.to_str().expect("utf-8"),
        "--plain-http",
    ]);
    assert!(!pulled.status.success(), "pull of {r} should fail");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "a failed pull left {left:?}");
    text(&pulled.stderr)
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn a_failing_registry_is_reported_and_nothing_is_kept() {
    // A program no other test pushes, so that its blob is this test's alone.
    let r = push("exit_code.component.wasm", "failing");
    let digest = manifest_of(&r)["layers"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_owned();
    // A symlink loop makes the registry's storage driver fail: HTTP 500.
    let data = registry_blob(&digest);
    let kept = data.with_extension("kept");
    std::fs::rename(&data, &kept).expect("move the blob aside");
    std::os::unix::fs::symlink("data", &data).expect("symlink loop");
    let err = pull_refused(&r);
    let pulled = pull(&r);
    std::fs::remove_file(&data).expect("remove the loop");
    std::fs::rename(&kept, &data).expect("put the blob back");

    assert!(err.contains("500"), "{err}");
    assert!(err.contains("look at the registry's log"), "{err}");
    assert!(
        !pulled.status.success(),
        "containerd pulled a blob the registry failed to serve"
    );
    assert!(!in_content_store(&digest));
    // The node is fine once the registry is.
    if unpacks_artifacts() {
        ok(&pull(&r), "ctr images pull once the registry is healthy");
        let out = run_image_via_api(&r, &["exit_code", "7"]);
        let err = text(&out.stderr);
        assert!(err.contains("exiting with 7"), "{err}");
    }
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn a_manifest_that_lies_is_refused_and_nothing_is_kept() {
    let r = push("read_file.component.wasm", "lying");
    let manifest = manifest_of(&r);
    let layer = &manifest["layers"][0];
    let digest = layer["digest"].as_str().expect("digest").to_owned();
    let size = layer["size"].as_u64().expect("size");

    for (tag, lie, said) in [
        ("smaller", size - 1000, "is longer than the"),
        ("larger", size + 1000, "but the manifest says"),
    ] {
        let mut lying = manifest.clone();
        lying["layers"][0]["size"] = lie.into();
        let r = put_manifest(&r, tag, &lying);
        let err = pull_refused(&r);
        assert!(err.contains(&digest) && err.contains(said), "{tag}: {err}");
        assert!(err.contains("nothing was written"), "{tag}: {err}");
        assert!(!pull(&r).status.success(), "{tag}: containerd took it");
        assert!(!in_content_store(&digest), "{tag}");
    }

    // The registry itself serves other bytes than the digest names.
    let data = registry_blob(&digest);
    let original = std::fs::read(&data).expect("blob");
    let mut flipped = original.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0xff;
    std::fs::write(&data, &flipped).expect("tamper");
    let err = pull_refused(&r);
    let pulled = pull(&r);
    std::fs::write(&data, &original).expect("restore");
    assert!(
        err.contains(&digest) && err.contains("does not match its digest"),
        "{err}"
    );
    assert!(
        !pulled.status.success(),
        "containerd took bytes that do not match"
    );
    assert!(!in_content_store(&digest));
    let cache = PathBuf::from(var("WASMPOD_WASM_CACHE"));
    let hex = digest.trim_start_matches("sha256:");
    for entry in std::fs::read_dir(&cache).into_iter().flatten().flatten() {
        assert!(
            !entry.file_name().to_string_lossy().starts_with(hex),
            "cache entry for a refused layer: {:?}",
            entry.path()
        );
    }
}

/// `wasm` with a custom section that makes it `total` bytes long: still
/// the same program, as a real component with a big data payload is.
fn padded(wasm: &[u8], total: usize) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"wasmpod-padding";
    // Section id, size (5 bytes at most), name length, name.
    let payload = total - wasm.len() - 1 - 5 - 1 - name.len();
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.resize(body.len() + payload, 0x5a);
    let mut out = wasm.to_vec();
    out.push(0);
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn a_200_mb_layer_streams_through_and_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let big = padded(
        &std::fs::read(fixture("count_args.component.wasm")).expect("fixture"),
        200 << 20,
    );
    let file = dir.path().join("big.component.wasm");
    std::fs::write(&file, &big).expect("write");
    let digest = format!("sha256:{}", sha256_hex(&big));
    drop(big);

    let r = reference("big");
    let pushed = wasmpod(&["push", file.to_str().expect("utf-8"), &r, "--plain-http"]);
    ok(&pushed, "wasmpod push");
    let progress = text(&pushed.stderr);
    assert!(
        progress.contains("100%") && progress.contains("200.0 MiB"),
        "{progress}"
    );

    let back = dir.path().join("back.wasm");
    let pulled = wasmpod(&[
        "pull",
        &r,
        "-o",
        back.to_str().expect("utf-8"),
        "--plain-http",
    ]);
    ok(&pulled, "wasmpod pull");
    assert!(text(&pulled.stderr).contains("100%"));
    let bytes = std::fs::read(&back).expect("pulled");
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), digest);
    drop(bytes);

    if !unpacks_artifacts() {
        return;
    }
    ok(&pull(&r), "ctr images pull");
    let out = run_image_via_api(&r, &["count_args", "a", "b"]);
    let stdout = ok(&out, "ctr task start");
    assert!(stdout.contains("args=2"), "{stdout}");
    let cache = PathBuf::from(var("WASMPOD_WASM_CACHE"));
    let names: Vec<String> = std::fs::read_dir(&cache)
        .expect("cache dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let hex = digest.trim_start_matches("sha256:");
    assert!(names.iter().any(|n| n.starts_with(hex)), "{names:?}");
    assert!(!names.iter().any(|n| n.contains(".tmp.")), "{names:?}");
}

#[test]
#[ignore = "needs a private containerd and registry: run `make test`"]
fn an_index_without_a_wasm_entry_is_refused_by_name() {
    // A well-formed linux/arm64 image (a real tar layer), so that only the
    // missing platform is wrong.
    let dir = tempfile::tempdir().expect("tempdir");
    let layer = dir.path().join("layer.tar");
    let rootfs = fixture("data.txt");
    let rootfs = rootfs.parent().expect("rootfs dir");
    ok(
        &run_cmd(
            "tar",
            &[
                "-cf",
                layer.to_str().expect("utf-8"),
                "-C",
                rootfs.to_str().expect("utf-8"),
                "data.txt",
            ],
        ),
        "tar",
    );
    let diff_id = sha256_hex(&std::fs::read(&layer).expect("layer"));
    let r = oras_push(
        &layer,
        "arm-only",
        "application/vnd.oci.image.config.v1+json",
        "application/vnd.oci.image.layer.v1.tar",
        &format!(
            r#"{{"architecture":"arm64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{diff_id}"]}}}}"#
        ),
    );
    let manifest = raw_manifest(&r);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256_hex(manifest.as_bytes())),
            "size": manifest.len(),
            "platform": {"architecture": "arm64", "os": "linux"},
        }],
    });
    let r = put_manifest(&r, "index", &index);

    let err = pull_refused(&r);
    assert!(err.contains("index without a Wasm entry"), "{err}");
    assert!(err.contains("linux/arm64"), "{err}");

    // containerd takes it only when told to fetch every platform; the shim
    // then names the image and what the index offers.
    let fetched = ctr(&["images", "pull", "--plain-http", "--all-platforms", &r]);
    if !fetched.status.success() {
        let why = text(&fetched.stderr);
        assert!(!unpacks_artifacts(), "{why}");
        return;
    }
    let out = run_image_via_api(&r, &["app.wasm"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&r) && err.contains("linux/arm64"), "{err}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}
