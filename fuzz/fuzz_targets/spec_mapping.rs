//! The OCI runtime spec containerd hands the shim, reduced to what a guest
//! may do: arguments, environment, preopened directories, limits, sockets.
//!
//! Input: a bundle's `config.json`. Mount sources are only looked at
//! (`is_dir`); socket grants may look host names up, so test/fuzz.sh runs
//! the target in a network namespace of its own.

#![no_main]

use std::path::Path;

use containerd_shim_wasmpod::capabilities::Grants;
use containerd_shim_wasmpod::spec::ContainerSpec;
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::Spec;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<Spec>(data) else {
        return;
    };
    let bundle = Path::new("/nonexistent/wasmpod-fuzz/bundle");
    let Ok(container) = ContainerSpec::from_spec(bundle, &spec) else {
        return;
    };
    let program = spec
        .process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .and_then(|a| a.first());
    // `/app.wasm#name`: the export is taken off the program, never invented.
    match &container.export {
        Some(export) => {
            assert!(!export.is_empty() && !export.contains('/'));
            let written = program.expect("an export comes from args[0]");
            assert_eq!(*written, format!("{}#{export}", container.args[0]));
        }
        None => assert_eq!(container.args.first(), program),
    }
    for (name, _) in &container.env {
        assert!(!name.contains('='), "{name}");
    }
    // Zero and -1 mean no limit, never a limit of nothing.
    assert_ne!(container.limits.memory, Some(0));
    // The kernel's own file systems are never a guest's directories.
    for mount in &container.mounts {
        let guest = Path::new(&mount.guest);
        assert!(
            !["/dev", "/proc", "/sys"]
                .iter()
                .any(|k| guest.starts_with(k)),
            "{}",
            mount.guest
        );
    }
    // A relative root is the bundle's.
    assert!(container.rootfs.is_absolute());
    if let Ok(grants) = Grants::for_container(&container) {
        assert_eq!(grants.preopens[0].guest, "/");
        assert_eq!(grants.preopens.len(), container.mounts.len() + 1);
        assert_ne!(grants.http_port, 0);
        assert_eq!(grants.memory_limit, container.limits.memory);
    }
});
