//! The installer binary on host-root fixtures, one per layout it knows: the
//! result against a golden file, a second run that changes nothing, and an
//! uninstall that gives back the original plus what an admin edited since.
//! `UPDATE_GOLDENS=1 cargo test -p wasmpod-installer` rewrites the goldens.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_wasmpod-node-installer");

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/configs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A host root with `files`, and an ELF shim for this machine to install.
struct Host {
    dir: tempfile::TempDir,
    shim: PathBuf,
}

impl Host {
    fn new(files: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (path, text) in files {
            write(&dir.path().join(path.trim_start_matches('/')), text);
        }
        // The installer checks the shim's ELF header for this machine: the
        // head of its own binary has one.
        let shim = dir.path().join("image/containerd-shim-wasmpod-v1");
        let head = std::fs::read(BIN).expect("read");
        write_bytes(&shim, &head[..4096]);
        Self { dir, shim }
    }

    fn path(&self, host_path: &str) -> PathBuf {
        self.dir.path().join(host_path.trim_start_matches('/'))
    }

    fn read(&self, host_path: &str) -> Option<String> {
        std::fs::read_to_string(self.path(host_path)).ok()
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(BIN);
        command
            .arg("--host-root")
            .arg(self.dir.path())
            .args(["--restart", "none"])
            .args(args);
        if args.first() == Some(&"install") {
            command.arg("--shim").arg(&self.shim);
        }
        let output = command.output().expect("runs");
        eprintln!(
            "installer {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "installer {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

fn write(path: &Path, text: &str) {
    write_bytes(path, text.as_bytes());
}

fn write_bytes(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/goldens")
        .join(name);
    if std::env::var_os("UPDATE_GOLDENS").is_some() {
        write(&path, actual);
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDENS=1 writes it)", path.display()));
    assert_eq!(actual, expected, "{name} differs from its golden");
}

/// What an uninstall leaves of the target after an admin's edit.
enum Edited {
    /// The original with the admin's note.
    Kept,
    /// Only what the admin wrote, in a file the installer created.
    Only(&'static str),
    /// Nothing: the file is wasmpod's own drop-in.
    Gone,
}

/// Install, install again, dry-run, an admin's edit, uninstall.
fn round_trip(name: &str, files: &[(&str, String)], target: &str, extra: &[&str], edited: Edited) {
    let host = Host::new(files);
    let original = host.read(target);
    let install: Vec<&str> = ["install"].iter().chain(extra).copied().collect();
    let uninstall: Vec<&str> = ["uninstall"].iter().chain(extra).copied().collect();

    let diff = host.ok(&[install.as_slice(), &["--dry-run"]].concat());
    assert!(
        diff.lines().any(
            |l| l.starts_with('+') && l.contains("runtime_type = \"io.containerd.wasmpod.v1\"")
        ),
        "the dry run shows the runtime it would add:\n{diff}"
    );
    assert_eq!(host.read(target), original, "a dry run writes nothing");

    host.ok(&install);
    let installed = host.read(target).expect("target written");
    check_golden(name, &installed);
    let link = host.path("/opt/wasmpod/bin/containerd-shim-wasmpod-v1");
    let installed_shim = std::fs::read(&link).expect("the link resolves");
    assert_eq!(
        installed_shim,
        std::fs::read(&host.shim).expect("read"),
        "the link names the shim"
    );
    let mode = std::fs::metadata(&link).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o755, "the shim is executable");
    let on_path = host.path("/usr/local/bin/containerd-shim-wasmpod-v1");
    assert_eq!(
        std::fs::read_link(&on_path).expect("linked on containerd's PATH"),
        Path::new("/opt/wasmpod/bin/containerd-shim-wasmpod-v1")
    );
    assert!(installed.contains("runtime_path = \"/opt/wasmpod/bin/containerd-shim-wasmpod-v1\""));

    host.ok(&install);
    assert_eq!(
        host.read(target).as_deref(),
        Some(installed.as_str()),
        "a second run changes nothing"
    );
    let again = host.ok(&[install.as_slice(), &["--dry-run"]].concat());
    assert_eq!(again.trim(), "nothing to change");

    // An admin's edit after the install stays through the uninstall.
    let note = "# an admin's note, written after wasmpod was installed\n";
    write(&host.path(target), &format!("{note}{installed}"));
    host.ok(&uninstall);
    let expected = match edited {
        Edited::Kept => Some(format!("{note}{}", original.clone().unwrap_or_default())),
        Edited::Only(rest) => Some(format!("{note}{rest}")),
        Edited::Gone => None,
    };
    assert_eq!(
        host.read(target),
        expected,
        "uninstall keeps the admin's edit"
    );
    assert!(
        !host.path("/opt/wasmpod").exists(),
        "uninstall leaves no shim or record"
    );
    assert!(
        on_path.symlink_metadata().is_err(),
        "uninstall takes the PATH link too"
    );

    // Without the admin's edit, the node is exactly as before.
    let host = Host::new(files);
    host.ok(&install);
    host.ok(&uninstall);
    assert_eq!(
        host.read(target),
        original,
        "uninstall gives back the original"
    );
}

#[test]
fn containerd_defaults_of_each_release() {
    for version in ["1.6.20", "1.7.24", "2.1.9"] {
        let config = fixture(&format!("containerd-{version}-default.toml"));
        let files = [("/etc/containerd/config.toml", config)];
        round_trip(
            &format!("containerd-{version}-default.toml"),
            &files,
            "/etc/containerd/config.toml",
            &[],
            Edited::Kept,
        );
    }
}

#[test]
fn debians_packaged_config() {
    let files = [(
        "/etc/containerd/config.toml",
        fixture("debian-package.toml"),
    )];
    round_trip(
        "debian-package.toml",
        &files,
        "/etc/containerd/config.toml",
        &[],
        Edited::Kept,
    );
}

#[test]
fn a_node_without_a_config_gets_one_and_loses_it_again() {
    let files = [("/etc/containerd/.keep", String::new())];
    round_trip(
        "no-config.toml",
        &files,
        "/etc/containerd/config.toml",
        &[],
        Edited::Only("version = 2\n"),
    );
}

#[test]
fn a_config_at_another_path() {
    let files = [("/srv/containerd.toml", fixture("debian-package.toml"))];
    round_trip(
        "debian-package.toml",
        &files,
        "/srv/containerd.toml",
        &["--config", "/srv/containerd.toml"],
        Edited::Kept,
    );
}

#[test]
fn k3s_with_containerd_2_gets_a_v3_template_from_base() {
    let generated = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";
    let files = [(generated, fixture("k3s-v3-generated.toml"))];
    let target = "/var/lib/rancher/k3s/agent/etc/containerd/config-v3.toml.tmpl";
    round_trip(
        "k3s-v3.toml.tmpl",
        &files,
        target,
        &[],
        Edited::Only("{{ template \"base\" . }}\n"),
    );
}

#[test]
fn k3s_keeps_a_users_own_template() {
    let dir = "/var/lib/rancher/k3s/agent/etc/containerd";
    let files = [
        (
            &*format!("{dir}/config.toml"),
            fixture("k3s-v2-generated.toml"),
        ),
        (
            &*format!("{dir}/config.toml.tmpl"),
            fixture("k3s-user-template.toml.tmpl"),
        ),
    ];
    let files: Vec<(&str, String)> = files.iter().map(|(p, t)| (*p, t.clone())).collect();
    round_trip(
        "k3s-user.toml.tmpl",
        &files,
        &format!("{dir}/config.toml.tmpl"),
        &[],
        Edited::Kept,
    );
}

#[test]
fn rke2_gets_its_template() {
    let generated = "/var/lib/rancher/rke2/agent/etc/containerd/config.toml";
    let files = [(generated, fixture("k3s-v3-generated.toml"))];
    let target = "/var/lib/rancher/rke2/agent/etc/containerd/config-v3.toml.tmpl";
    round_trip(
        "rke2-v3.toml.tmpl",
        &files,
        target,
        &[],
        Edited::Only("{{ template \"base\" . }}\n"),
    );
}

#[test]
fn k0s_gets_a_drop_in() {
    let files = [("/etc/k0s/k0s.yaml", String::new())];
    round_trip(
        "k0s-drop-in.toml",
        &files,
        "/etc/k0s/containerd.d/wasmpod.toml",
        &[],
        Edited::Gone,
    );
}

#[test]
fn microk8s_template_keeps_its_placeholders() {
    let target = "/var/snap/microk8s/current/args/containerd-template.toml";
    let files = [(target, fixture("microk8s-template.toml"))];
    round_trip("microk8s-template.toml", &files, target, &[], Edited::Kept);
}

#[test]
fn a_malformed_config_is_refused_and_left_untouched() {
    let broken = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"\n";
    let host = Host::new(&[("/etc/containerd/config.toml", broken.to_owned())]);
    let output = host.run(&["install"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/etc/containerd/config.toml is not valid TOML and was left untouched"),
        "{stderr}"
    );
    assert_eq!(
        host.read("/etc/containerd/config.toml").as_deref(),
        Some(broken)
    );
    assert!(!host.path("/opt/wasmpod").exists(), "nothing installed");
}

#[test]
fn unsupported_hosts_are_refused_clearly() {
    let host = Host::new(&[
        (
            "/etc/os-release",
            "NAME=Bottlerocket\nID=bottlerocket\nPRETTY_NAME=\"Bottlerocket OS 1.30\"\n".to_owned(),
        ),
        ("/etc/containerd/config.toml", "version = 2\n".to_owned()),
    ]);
    let output = host.run(&["install"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Bottlerocket OS 1.30") && stderr.contains("nothing was changed"),
        "{stderr}"
    );
    assert_eq!(
        host.read("/etc/containerd/config.toml").as_deref(),
        Some("version = 2\n")
    );

    let host = Host::new(&[]);
    let output = host.run(&["install"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no containerd found"));
}
