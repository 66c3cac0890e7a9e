//! Whether containerd came back well from a restart: it answers on its
//! socket, its CRI plugin serves, and the CRI's runtimes have (or, after an
//! uninstall, no longer have) the `wasmpod` handler.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use containerd_client::services::v1::version_client::VersionClient;
use k8s_cri::v1::StatusRequest;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

/// Why containerd is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// Nothing answered on the socket in time.
    #[error("containerd did not answer on {socket} within {secs} s{last}")]
    NoAnswer {
        /// The socket.
        socket: PathBuf,
        /// How long it was given.
        secs: u64,
        /// The last error seen, as `: ...`.
        last: String,
    },
    /// One attempt found nothing answering (containerd may be starting).
    #[error("{0}")]
    Unreachable(String),
    /// containerd answers, but its CRI plugin does not (a config it refused).
    #[error("containerd {version} answers on {socket}, but its CRI plugin does not: {detail}")]
    NoCri {
        /// containerd's version.
        version: String,
        /// The socket.
        socket: PathBuf,
        /// What the CRI call said.
        detail: String,
    },
    /// The CRI lists the handler, but a Wasm container does not run through it.
    #[error(
        "containerd {version} lists the `wasmpod` runtime ({runtime}), but a test Wasm container did not run through it: {cause}"
    )]
    Canary {
        /// containerd's version.
        version: String,
        /// The shim the CRI runs for the handler.
        runtime: String,
        /// What went wrong.
        cause: crate::canary::CanaryError,
    },
    /// The CRI's runtimes are not what the change should have made them.
    #[error("containerd {version}'s CRI {what} the `{handler}` runtime handler")]
    Handler {
        /// containerd's version.
        version: String,
        /// `does not list` or `still lists`.
        what: &'static str,
        /// The handler.
        handler: String,
    },
}

/// What a healthy containerd said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthy {
    /// containerd's version.
    pub version: String,
    /// The shim the CRI runs for the handler (its `runtime_path`, else its
    /// `runtime_type`), when listed.
    pub runtime: Option<String>,
}

/// Waits up to `limit` for containerd on `socket` to answer with its CRI
/// plugin serving and `handler` listed (`want` true) or not listed.
pub async fn wait(
    socket: &Path,
    handler: &str,
    want: bool,
    limit: Duration,
) -> Result<Healthy, HealthError> {
    let start = Instant::now();
    let mut last;
    loop {
        match check(socket, handler, want).await {
            Ok(healthy) => return Ok(healthy),
            // A CRI that answers with the wrong runtimes will not change.
            Err(error @ (HealthError::Handler { .. } | HealthError::NoCri { .. }))
                if start.elapsed() > Duration::from_secs(5) =>
            {
                return Err(error);
            }
            Err(error) => last = format!(": {error}"),
        }
        if start.elapsed() > limit {
            return Err(HealthError::NoAnswer {
                socket: socket.to_owned(),
                secs: limit.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn check(socket: &Path, handler: &str, want: bool) -> Result<Healthy, HealthError> {
    let channel = containerd_client::connect(socket)
        .await
        .map_err(|error| HealthError::Unreachable(wasmpod_oci::error_chain(&error)))?;
    let version = VersionClient::new(channel.clone())
        .version(())
        .await
        .map_err(|status| HealthError::Unreachable(status.message().to_owned()))?
        .into_inner()
        .version;
    let status = RuntimeServiceClient::new(channel)
        .status(StatusRequest { verbose: true })
        .await
        .map_err(|status| HealthError::NoCri {
            version: version.clone(),
            socket: socket.to_owned(),
            detail: status.message().to_owned(),
        })?
        .into_inner();
    let runtime = status
        .info
        .get("config")
        .and_then(|config| serde_json::from_str::<serde_json::Value>(config).ok())
        .and_then(|config| find_handler(&config, handler).map(shim_of));
    if runtime.is_some() != want {
        return Err(HealthError::Handler {
            version,
            what: if want { "does not list" } else { "still lists" },
            handler: handler.to_owned(),
        });
    }
    Ok(Healthy { version, runtime })
}

/// The `handler` entry of a CRI config dump's `runtimes` object, wherever
/// it is (the JSON differs between containerd 1.x and 2.x).
fn find_handler<'a>(config: &'a serde_json::Value, handler: &str) -> Option<&'a serde_json::Value> {
    match config {
        serde_json::Value::Object(map) => map.iter().find_map(|(key, value)| {
            (key == "runtimes")
                .then(|| value.get(handler))
                .flatten()
                .or_else(|| find_handler(value, handler))
        }),
        serde_json::Value::Array(items) => {
            items.iter().find_map(|item| find_handler(item, handler))
        }
        _ => None,
    }
}

/// What containerd starts for a runtime entry: its path when set, else the
/// shim its type names.
fn shim_of(runtime: &serde_json::Value) -> String {
    ["runtimePath", "runtimeType"]
        .iter()
        .filter_map(|key| runtime.get(key)?.as_str())
        .find(|value| !value.is_empty())
        .unwrap_or_default()
        .to_owned()
}

/// The socket containerd serves on, from the config it reads (`[grpc]
/// address`), else the flavour's default.
pub fn socket_of(config_text: Option<&str>, default: &str) -> PathBuf {
    config_text
        .and_then(|text| text.parse::<toml_edit::DocumentMut>().ok())
        .and_then(|doc| doc.get("grpc")?.get("address")?.as_str().map(PathBuf::from))
        .filter(|path| !path.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from(default))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_and_its_shim_are_found_in_either_dump_shape() {
        let v1 = serde_json::json!({"containerd": {"runtimes": {"runc": {},
            "wasmpod": {"runtimeType": "io.containerd.wasmpod.v1", "runtimePath": ""}}}});
        let wasmpod = find_handler(&v1, "wasmpod").map(shim_of);
        assert_eq!(wasmpod.as_deref(), Some("io.containerd.wasmpod.v1"));
        let v2 = serde_json::json!({"runtimeConfig": {"containerd": {"runtimes": {
            "runc": {"runtimeType": "io.containerd.runc.v2"},
            "wasmpod": {"runtimeType": "io.containerd.wasmpod.v1", "runtimePath": "/opt/wasmpod/bin/shim"}}}}});
        assert_eq!(
            find_handler(&v2, "wasmpod").map(shim_of).as_deref(),
            Some("/opt/wasmpod/bin/shim")
        );
        let without = serde_json::json!({"containerd": {"runtimes": {"runc": {}}}});
        assert!(find_handler(&without, "wasmpod").is_none());
        assert!(find_handler(&without, "runc").is_some());
    }

    #[test]
    fn the_socket_comes_from_the_config_or_the_default() {
        let text = "version = 2\n[grpc]\n  address = \"/run/k3s/containerd/containerd.sock\"\n";
        assert_eq!(
            socket_of(Some(text), "/run/containerd/containerd.sock"),
            Path::new("/run/k3s/containerd/containerd.sock")
        );
        assert_eq!(
            socket_of(Some("version = 3\n[grpc]\naddress = ''\n"), "/d.sock"),
            Path::new("/d.sock")
        );
        assert_eq!(socket_of(None, "/d.sock"), Path::new("/d.sock"));
    }
}
