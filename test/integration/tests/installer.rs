//! The node installer's output read by a real containerd: the suite's
//! `containerd config dump` of each config the installer wrote must show
//! the wasmpod runtime, and none after the uninstall. Also keeps the
//! installer's committed fixtures honest: they must be what this
//! containerd's `config default` prints and what its package ships.

use std::path::{Path, PathBuf};
use std::process::Command;

use wasmpod_integration::{ok, text, var};

fn containerd() -> PathBuf {
    Path::new(&var("WASMPOD_CTR")).with_file_name("containerd")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../installer/tests/configs")
}

/// `containerd --version`'s version, e.g. `1.7.24`.
fn version() -> String {
    let out = ok(
        &Command::new(containerd())
            .arg("--version")
            .output()
            .expect("runs"),
        "containerd --version",
    );
    let field = out.split_whitespace().nth(2).unwrap_or_default();
    field
        .trim_start_matches('v')
        .split(['~', '+', '-'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What `containerd config dump` says of the wasmpod runtime in `config`:
/// its table's lines, or `None` without one.
fn dumped_runtime(config: &Path) -> Option<String> {
    let out = Command::new(containerd())
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .expect("runs");
    let dump = ok(&out, "containerd config dump");
    let mut lines = dump
        .lines()
        .skip_while(|l| !l.trim_end().ends_with("containerd.runtimes.wasmpod]"));
    let header = lines.next()?;
    let keys: Vec<&str> = lines
        .take_while(|l| !l.trim_start().starts_with('['))
        .collect();
    Some(format!("{header}\n{}", keys.join("\n")))
}

fn installer(host: &Path, args: &[&str]) {
    let out = Command::new(var("WASMPOD_INSTALLER"))
        .arg("--host-root")
        .arg(host)
        .args(["--restart", "none"])
        .args(args)
        .output()
        .expect("runs");
    ok(&out, &format!("wasmpod-node-installer {args:?}"));
    eprintln!("{}", text(&out.stderr));
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn committed_configs_are_this_containerds_own() {
    let version = version();
    let path = fixtures().join(format!("containerd-{version}-default.toml"));
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; add this containerd's `config default` there",
            path.display()
        )
    });
    let out = Command::new(containerd())
        .args(["config", "default"])
        .output()
        .expect("runs");
    assert_eq!(
        ok(&out, "containerd config default"),
        committed,
        "{} is stale",
        path.display()
    );
    let packaged = containerd().with_file_name("../../etc/containerd/config.toml");
    let packaged = std::fs::read_to_string(&packaged).expect("the package's config");
    let committed = std::fs::read_to_string(fixtures().join("debian-package.toml")).expect("read");
    assert_eq!(packaged, committed, "Debian's packaged config changed");
}

#[test]
#[ignore = "needs the suite's containerd: run `make test`"]
fn containerd_reads_what_the_installer_wrote() {
    let version = version();
    let image = tempfile::tempdir().expect("tempdir");
    let shim = image.path().join("containerd-shim-wasmpod-v1");
    std::fs::copy(
        Path::new(&var("WASMPOD_INSTALLER")).with_file_name("containerd-shim-wasmpod-v1"),
        &shim,
    )
    .expect("copy the shim");
    let inputs = [
        format!("containerd-{version}-default.toml"),
        "debian-package.toml".to_owned(),
        // No config at all: the installer writes a version 2 one.
        String::new(),
    ];
    for input in inputs {
        let host = tempfile::tempdir().expect("tempdir");
        let config = host.path().join("etc/containerd/config.toml");
        std::fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
        if !input.is_empty() {
            std::fs::copy(fixtures().join(&input), &config).expect("copy");
        }
        if config.exists() {
            assert_eq!(dumped_runtime(&config), None, "{input}: no runtime before");
        }
        installer(
            host.path(),
            &["install", "--shim", shim.to_str().expect("utf-8")],
        );
        let runtime = dumped_runtime(&config)
            .unwrap_or_else(|| panic!("containerd {version} does not see the wasmpod runtime in what the installer made of {input:?}"));
        for wanted in [
            "runtime_type = 'io.containerd.wasmpod.v1'",
            "runtime_path = '/opt/wasmpod/bin/containerd-shim-wasmpod-v1'",
            "pod_annotations = ['wasmpod.dev/*']",
            "container_annotations = ['wasmpod.dev/*']",
        ] {
            let double = wanted.replace('\'', "\"");
            assert!(
                runtime.contains(wanted) || runtime.contains(&double),
                "containerd {version}, {input:?}: no `{wanted}` in\n{runtime}"
            );
        }
        installer(host.path(), &["uninstall"]);
        if config.exists() {
            assert_eq!(
                dumped_runtime(&config),
                None,
                "{input}: the runtime is gone after uninstall"
            );
        }
    }
}
