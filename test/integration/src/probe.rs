//! The kubelet's probes of a running container: `httpGet` (200-399 is a
//! success), `tcpSocket` (a connection is a success) and `exec` (through
//! the CRI's ExecSync). Network probes go either to the pod IP from the node,
//! as the kubelet sends them, or to 127.0.0.1 from inside the pod's network
//! namespace, where a sidecar or the workload itself would check.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

use crate::http::Connection;
use crate::pod::{Container, Probe};

/// Where a network probe connects from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vantage {
    /// The node, to the pod's IP: what the kubelet does.
    Node,
    /// Inside the pod's network namespace, to 127.0.0.1.
    Pod,
}

/// A probe's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The container passed.
    Success,
    /// The container failed, for this reason (as `kubectl describe` shows).
    Failure(String),
}

/// What a probe needs to know about its pod.
pub struct Target {
    /// The container probed, for named ports.
    pub container: Container,
    /// The pod's IP.
    pub ip: String,
    /// The pod's network namespace (`/var/run/netns/cni-...`).
    pub netns: Option<PathBuf>,
}

/// Runs the network part of `probe` (`httpGet` or `tcpSocket`) from `from`.
/// `None` when the probe is of another kind.
pub fn network(probe: &Probe, target: &Target, from: Vantage) -> Option<Outcome> {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1));
    let (port, path) = if let Some(h) = &probe.http_get {
        (&h.port, Some(h.path.clone().unwrap_or_else(|| "/".into())))
    } else {
        (&probe.tcp_socket.as_ref()?.port, None)
    };
    let Some(port) = target.container.resolve(port) else {
        return Some(Outcome::Failure(format!(
            "port {port:?} names no port of container {}",
            target.container.name
        )));
    };
    let addr = match from {
        Vantage::Node => match target.ip.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => return Some(Outcome::Failure(format!("no pod IP ({:?})", target.ip))),
        },
        Vantage::Pod => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    };
    let stream = match (from, &target.netns) {
        (Vantage::Node, _) => TcpStream::connect_timeout(&addr, timeout),
        (Vantage::Pod, Some(netns)) => connect_in(netns.clone(), addr, timeout),
        (Vantage::Pod, None) => return Some(Outcome::Failure("no network namespace".into())),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => return Some(Outcome::Failure(format!("dial tcp {addr}: {e}"))),
    };
    let Some(path) = path else {
        return Some(Outcome::Success);
    };
    let answer = Connection::over(stream, addr, timeout).and_then(|mut c| c.get(&path, true));
    Some(match answer {
        Ok(r) if (200..400).contains(&r.status) => Outcome::Success,
        Ok(r) => Outcome::Failure(format!("HTTP probe failed with statuscode: {}", r.status)),
        Err(e) => Outcome::Failure(format!("Get \"http://{addr}{path}\": {e}")),
    })
}

/// Connects to `addr` from inside the network namespace at `netns`. The
/// socket keeps its namespace after the thread that made it is gone.
fn connect_in(netns: PathBuf, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    std::thread::spawn(move || {
        let ns = File::open(&netns)?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
        TcpStream::connect_timeout(&addr, timeout)
    })
    .join()
    .map_err(|_| std::io::Error::other("the probe thread panicked"))?
}
