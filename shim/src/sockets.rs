//! Socket grants: the addresses a guest may listen on, connect and send to,
//! read from its pod's `wasmpod.dev/` annotations. Nothing is granted unless
//! an annotation names it.
//!
//! | annotation | value | grants |
//! |---|---|---|
//! | `wasmpod.dev/tcp-listen` | `8080, 9000-9010` | TCP listen on these ports |
//! | `wasmpod.dev/tcp-connect` | `10.0.0.0/8:443, db.internal:5432, *:80` | TCP connect |
//! | `wasmpod.dev/udp-bind` | `5353` | UDP bind to these ports |
//! | `wasmpod.dev/udp-connect` | `10.96.0.10:53` | UDP send (and replies) |
//! | `wasmpod.dev/dns` | `true` | name lookups |
//!
//! A destination is `ADDRESS:PORTS`: an IP, a CIDR, `[IPv6]` or
//! `[IPv6/len]`, a host name (resolved once, when the container is
//! created), or `*` for any address. `PORTS` is a port, a range `a-b`, or
//! `*`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use ipnet::{IpNet, Ipv4Net};
use wasmtime_wasi::sockets::SocketAddrUse;

/// Grants TCP listen on the ports it lists.
pub const TCP_LISTEN: &str = "wasmpod.dev/tcp-listen";
/// Grants TCP connect to the destinations it lists.
pub const TCP_CONNECT: &str = "wasmpod.dev/tcp-connect";
/// Grants UDP bind to the ports it lists.
pub const UDP_BIND: &str = "wasmpod.dev/udp-bind";
/// Grants UDP send to the destinations it lists.
pub const UDP_CONNECT: &str = "wasmpod.dev/udp-connect";
/// `true` grants name lookups.
pub const DNS: &str = "wasmpod.dev/dns";

/// A socket annotation could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// An entry does not follow the grammar.
    #[error("annotation {annotation}: {entry:?} is not {expected}")]
    Syntax {
        /// The annotation.
        annotation: &'static str,
        /// The entry, as written.
        entry: String,
        /// What was expected there.
        expected: &'static str,
    },
    /// A host name in a destination does not resolve.
    #[error("annotation {annotation}: cannot resolve host {host:?}")]
    Resolve {
        /// The annotation.
        annotation: &'static str,
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    first: u16,
    last: u16,
}

impl Ports {
    const ANY: Ports = Ports {
        first: 0,
        last: u16::MAX,
    };

    fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    fn parse(text: &str) -> Option<Self> {
        if text == "*" {
            return Some(Self::ANY);
        }
        let (first, last) = text.split_once('-').unwrap_or((text, text));
        let (first, last) = (first.trim().parse().ok()?, last.trim().parse().ok()?);
        (first <= last).then_some(Self { first, last })
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first, self.last) {
            (0, u16::MAX) => write!(f, "*"),
            (a, b) if a == b => write!(f, "{a}"),
            (a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// Addresses and ports a guest may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    nets: Vec<IpNet>,
    ports: Ports,
    /// As written in the annotation, for the log.
    written: String,
}

impl Destination {
    fn contains(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.ports.contains(addr.port()) && self.nets.iter().any(|n| n.contains(&ip))
    }

    fn parse(annotation: &'static str, entry: &str) -> Result<Self, GrantError> {
        let syntax = || GrantError::Syntax {
            annotation,
            entry: entry.to_owned(),
            expected: "ADDRESS:PORTS (an IP, CIDR, [IPv6], host name or *, then a port, a-b or *)",
        };
        let (host, ports) = match entry.strip_prefix('[') {
            Some(rest) => rest.split_once("]:").ok_or_else(syntax)?,
            None => entry.rsplit_once(':').ok_or_else(syntax)?,
        };
        let ports = Ports::parse(ports).ok_or_else(syntax)?;
        let nets = if host == "*" {
            vec![IpNet::V4(Default::default()), IpNet::V6(Default::default())]
        } else if let Ok(net) = host.parse::<IpNet>() {
            vec![canonical(net.trunc())]
        } else if let Ok(ip) = host.parse::<IpAddr>() {
            vec![IpNet::from(ip.to_canonical())]
        } else if !host.is_empty() && !host.contains(['/', '[', ']', ' ']) {
            let resolved = (host, 0)
                .to_socket_addrs()
                .map_err(|source| GrantError::Resolve {
                    annotation,
                    host: host.to_owned(),
                    source,
                })?;
            resolved
                .map(|a| IpNet::from(a.ip().to_canonical()))
                .collect()
        } else {
            return Err(syntax());
        };
        Ok(Self {
            nets,
            ports,
            written: entry.to_owned(),
        })
    }
}

/// Peers are compared in their canonical form (an IPv4-mapped IPv6 address
/// as IPv4, see [`Destination::contains`]), so a grant written in the mapped
/// form is kept in the IPv4 one; otherwise it would never match (an
/// invariant of the `socket_grants` fuzz target).
fn canonical(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(len)) => Ipv4Net::new(v4, len).map_or(net, IpNet::V4),
        _ => net,
    }
}

/// Every socket grant of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketGrants {
    /// Ports the guest may listen on (TCP).
    pub tcp_listen: Vec<Ports>,
    /// Where the guest may connect (TCP).
    pub tcp_connect: Vec<Destination>,
    /// Ports the guest may bind (UDP).
    pub udp_bind: Vec<Ports>,
    /// Where the guest may send datagrams.
    pub udp_connect: Vec<Destination>,
    /// Whether the guest may look names up.
    pub dns: bool,
}

impl SocketGrants {
    /// Reads the grants from a container's annotations.
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Result<Self, GrantError> {
        let entries = |annotation: &'static str| {
            annotations
                .get(annotation)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|e| !e.is_empty())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let ports = |annotation: &'static str| {
            entries(annotation)
                .into_iter()
                .map(|e| {
                    Ports::parse(e).ok_or_else(|| GrantError::Syntax {
                        annotation,
                        entry: e.to_owned(),
                        expected: "a port, a range a-b, or *",
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let destinations = |annotation: &'static str| {
            entries(annotation)
                .into_iter()
                .map(|e| Destination::parse(annotation, e))
                .collect::<Result<Vec<_>, _>>()
        };
        let dns = match annotations.get(DNS).map(|v| v.trim()) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(GrantError::Syntax {
                    annotation: DNS,
                    entry: other.to_owned(),
                    expected: "true or false",
                });
            }
        };
        Ok(Self {
            tcp_listen: ports(TCP_LISTEN)?,
            tcp_connect: destinations(TCP_CONNECT)?,
            udp_bind: ports(UDP_BIND)?,
            udp_connect: destinations(UDP_CONNECT)?,
            dns,
        })
    }

    /// True when the guest may use no socket at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the guest may use `addr` for `used`. An ephemeral bind
    /// (port 0, before a connect or a send) is always allowed: it exposes
    /// nothing, and the connect or send that follows is checked.
    pub fn allows(&self, addr: SocketAddr, used: SocketAddrUse) -> bool {
        let port = addr.port();
        match used {
            SocketAddrUse::TcpBind => port == 0 || self.tcp_listen.iter().any(|p| p.contains(port)),
            SocketAddrUse::TcpListen => self.tcp_listen.iter().any(|p| p.contains(port)),
            // Only a socket that was allowed to listen can accept.
            SocketAddrUse::TcpAccept => true,
            SocketAddrUse::TcpConnect => self.tcp_connect.iter().any(|d| d.contains(addr)),
            SocketAddrUse::UdpBind => port == 0 || self.udp_bind.iter().any(|p| p.contains(port)),
            SocketAddrUse::UdpSend => self.udp_connect.iter().any(|d| d.contains(addr)),
            // Replies from where it may send, or anything on a granted port.
            SocketAddrUse::UdpReceive => {
                !self.udp_bind.is_empty() || self.udp_connect.iter().any(|d| d.contains(addr))
            }
        }
    }

    /// The line a guest's stderr gets when `used` of `addr` is refused:
    /// what was denied and the annotation that would grant it. `None` for
    /// uses that are dropped silently (incoming connections and datagrams).
    pub fn denial(addr: SocketAddr, used: SocketAddrUse) -> Option<String> {
        let (what, annotation, value) = match used {
            SocketAddrUse::TcpBind => ("TCP bind to port", TCP_LISTEN, addr.port().to_string()),
            SocketAddrUse::TcpListen => ("TCP listen on port", TCP_LISTEN, addr.port().to_string()),
            SocketAddrUse::TcpConnect => ("TCP connect to", TCP_CONNECT, addr.to_string()),
            SocketAddrUse::UdpBind => ("UDP bind to port", UDP_BIND, addr.port().to_string()),
            SocketAddrUse::UdpSend => ("UDP send to", UDP_CONNECT, addr.to_string()),
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => return None,
        };
        Some(format!(
            "denied: {what} {value}; the pod annotation {annotation}: \"{value}\" would grant it"
        ))
    }
}

/// Reports refused socket uses on the guest's stderr, once per use and
/// address, so that a retrying guest cannot flood its log.
#[derive(Clone)]
pub struct Denials {
    stderr: Arc<Mutex<Option<File>>>,
    seen: Arc<Mutex<HashSet<String>>>,
}

/// Distinct denials reported per container; later ones only reach the guest
/// as errors.
const MAX_REPORTED: usize = 32;

impl Denials {
    /// Reports to `stderr`, or nowhere.
    pub fn new(stderr: Option<File>) -> Self {
        Self {
            stderr: Arc::new(Mutex::new(stderr)),
            seen: Arc::default(),
        }
    }

    /// Reports `line` unless it was reported before.
    pub fn report(&self, line: String) {
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() >= MAX_REPORTED || !seen.insert(line.clone()) {
                return;
            }
        }
        tracing::info!("{line}");
        if let Some(f) = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            // The stream may be gone with its reader; the log line stays.
            let _ = writeln!(f, "wasmpod: {line}");
        }
    }
}

/// One summary for the log: `none`, or each grant as written.
impl fmt::Display for SocketGrants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "none");
        }
        let mut parts = Vec::new();
        let join = |items: Vec<String>| items.join(",");
        if !self.tcp_listen.is_empty() {
            parts.push(format!(
                "tcp-listen:{}",
                join(self.tcp_listen.iter().map(Ports::to_string).collect())
            ));
        }
        if !self.tcp_connect.is_empty() {
            parts.push(format!(
                "tcp-connect:{}",
                join(self.tcp_connect.iter().map(|d| d.written.clone()).collect())
            ));
        }
        if !self.udp_bind.is_empty() {
            parts.push(format!(
                "udp-bind:{}",
                join(self.udp_bind.iter().map(Ports::to_string).collect())
            ));
        }
        if !self.udp_connect.is_empty() {
            parts.push(format!(
                "udp-connect:{}",
                join(self.udp_connect.iter().map(|d| d.written.clone()).collect())
            ));
        }
        if self.dns {
            parts.push("dns".to_owned());
        }
        write!(f, "[{}]", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(pairs: &[(&str, &str)]) -> Result<SocketGrants, GrantError> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SocketGrants::from_annotations(&map)
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn nothing_without_annotations() {
        let g = grants(&[("wasmpod.dev/other", "x")]).expect("grants");
        assert!(g.is_empty());
        assert_eq!(g.to_string(), "none");
        assert!(!g.allows(addr("0.0.0.0:8080"), SocketAddrUse::TcpListen));
        assert!(!g.allows(addr("127.0.0.1:80"), SocketAddrUse::TcpConnect));
        assert!(!g.allows(addr("10.0.0.1:53"), SocketAddrUse::UdpSend));
        assert!(!g.allows(addr("10.0.0.1:53"), SocketAddrUse::UdpReceive));
        assert!(!g.allows(addr("0.0.0.0:8080"), SocketAddrUse::TcpBind));
    }

    #[test]
    fn a_grant_in_ipv4_mapped_form_allows_that_peer() {
        // The peer is compared as IPv4; a grant kept as IPv6 matched
        // nothing (the socket_grants fuzz target's literal-grant invariant).
        let g = grants(&[
            (TCP_CONNECT, "[::ffff:1.2.3.4]:80"),
            (UDP_CONNECT, "[::ffff:10.0.0.0/104]:53"),
        ])
        .expect("grants");
        for peer in ["1.2.3.4:80", "[::ffff:1.2.3.4]:80"] {
            assert!(g.allows(addr(peer), SocketAddrUse::TcpConnect), "{peer}");
        }
        assert!(!g.allows(addr("1.2.3.5:80"), SocketAddrUse::TcpConnect));
        for peer in ["10.9.8.7:53", "[::ffff:10.9.8.7]:53"] {
            assert!(g.allows(addr(peer), SocketAddrUse::UdpSend), "{peer}");
        }
        assert!(!g.allows(addr("11.0.0.1:53"), SocketAddrUse::UdpSend));
    }

    #[test]
    fn listen_ports_and_ranges() {
        let g = grants(&[(TCP_LISTEN, "8080, 9000-9010")]).expect("grants");
        for port in [8080, 9000, 9005, 9010] {
            assert!(g.allows(addr(&format!("0.0.0.0:{port}")), SocketAddrUse::TcpListen));
            assert!(g.allows(addr(&format!("[::]:{port}")), SocketAddrUse::TcpBind));
        }
        assert!(!g.allows(addr("0.0.0.0:8081"), SocketAddrUse::TcpListen));
        assert!(!g.allows(addr("0.0.0.0:0"), SocketAddrUse::TcpListen));
        assert!(!g.allows(addr("127.0.0.1:8080"), SocketAddrUse::TcpConnect));
        assert_eq!(g.to_string(), "[tcp-listen:8080,9000-9010]");
    }

    #[test]
    fn destinations_match_address_and_port() {
        let g = grants(&[
            (TCP_CONNECT, "10.0.0.0/8:443,192.168.1.5:*,[fd00::/8]:80-81"),
            (UDP_CONNECT, "*:53"),
            (DNS, "true"),
        ])
        .expect("grants");
        let connect = |a: &str| g.allows(addr(a), SocketAddrUse::TcpConnect);
        assert!(connect("10.1.2.3:443"));
        assert!(!connect("10.1.2.3:444"));
        assert!(!connect("11.0.0.1:443"));
        assert!(connect("192.168.1.5:1"));
        assert!(!connect("192.168.1.6:1"));
        assert!(connect("[fd00::1]:81"));
        assert!(
            connect("[::ffff:10.0.0.1]:443"),
            "IPv4-mapped addresses are IPv4"
        );
        assert!(!connect("[fe80::1]:80"));
        assert!(g.allows(addr("8.8.8.8:53"), SocketAddrUse::UdpSend));
        assert!(g.allows(addr("8.8.8.8:53"), SocketAddrUse::UdpReceive));
        assert!(!g.allows(addr("8.8.8.8:54"), SocketAddrUse::UdpSend));
        assert!(g.dns);
        assert_eq!(
            g.to_string(),
            "[tcp-connect:10.0.0.0/8:443,192.168.1.5:*,[fd00::/8]:80-81 udp-connect:*:53 dns]"
        );
    }

    #[test]
    fn host_names_resolve_when_created() {
        let g = grants(&[(TCP_CONNECT, "localhost:5432")]).expect("grants");
        assert!(g.allows(addr("127.0.0.1:5432"), SocketAddrUse::TcpConnect));
        assert!(!g.allows(addr("127.0.0.1:5433"), SocketAddrUse::TcpConnect));
    }

    #[test]
    fn bad_entries_name_the_annotation() {
        for (k, v) in [
            (TCP_LISTEN, "http"),
            (TCP_LISTEN, "90-80"),
            (TCP_LISTEN, "70000"),
            (TCP_CONNECT, "10.0.0.1"),
            (TCP_CONNECT, "10.0.0.0/33:80"),
            (UDP_CONNECT, "[fd00::1:53"),
            (DNS, "yes"),
        ] {
            let err = grants(&[(k, v)]).expect_err(v).to_string();
            assert!(err.contains(k) && err.contains(v.trim()), "{err}");
        }
    }

    #[test]
    fn denial_names_the_annotation_that_grants_it() {
        let line = SocketGrants::denial(addr("10.0.0.1:80"), SocketAddrUse::TcpConnect);
        assert_eq!(
            line.as_deref(),
            Some(
                "denied: TCP connect to 10.0.0.1:80; the pod annotation wasmpod.dev/tcp-connect: \"10.0.0.1:80\" would grant it"
            )
        );
        let line = SocketGrants::denial(addr("0.0.0.0:8080"), SocketAddrUse::TcpListen);
        assert!(line.is_some_and(|l| l.contains("wasmpod.dev/tcp-listen: \"8080\"")));
        assert_eq!(
            SocketGrants::denial(addr("1.2.3.4:5"), SocketAddrUse::TcpAccept),
            None
        );
    }

    #[test]
    fn denials_are_reported_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stderr");
        let denials = Denials::new(Some(File::create(&path).expect("file")));
        for _ in 0..3 {
            denials.report("denied: a".into());
        }
        denials.report("denied: b".into());
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "wasmpod: denied: a\nwasmpod: denied: b\n");
    }
}
