//! The socket and HTTP grant grammar of a pod's `wasmpod.dev/` annotations.
//!
//! Input: lines of `NAME=VALUE`, where NAME is the annotation without its
//! prefix (`tcp-connect=10.0.0.0/8:443, *:80`). Host names are looked up;
//! test/fuzz.sh runs the target in a network namespace of its own, so a
//! lookup never leaves the machine.

#![no_main]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use containerd_shim_wasmpod::http_grants::{self, HTTP_CONNECT, HttpGrants};
use containerd_shim_wasmpod::sockets::{SocketGrants, TCP_CONNECT, TCP_LISTEN, UDP_CONNECT};
use libfuzzer_sys::fuzz_target;
use wasmtime_wasi::sockets::SocketAddrUse;

const USES: [SocketAddrUse; 7] = [
    SocketAddrUse::TcpBind,
    SocketAddrUse::TcpListen,
    SocketAddrUse::TcpAccept,
    SocketAddrUse::TcpConnect,
    SocketAddrUse::UdpBind,
    SocketAddrUse::UdpSend,
    SocketAddrUse::UdpReceive,
];

/// Addresses every grant set is asked about: loopback, private, public,
/// both families, the ends of the port range, and the ports the input names.
fn probes(text: &str) -> Vec<SocketAddr> {
    let ips = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
    ];
    let mut ports = vec![0, 1, 53, 80, 443, 8080, u16::MAX];
    ports.extend(
        text.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse::<u16>().ok())
            .take(16),
    );
    ips.iter()
        .flat_map(|ip| ports.iter().map(|&port| SocketAddr::new(*ip, port)))
        .collect()
}

fn annotations(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (format!("wasmpod.dev/{name}"), value.to_owned()))
        .collect()
}

fn check_sockets(text: &str, annotations: &HashMap<String, String>) {
    let grants = match SocketGrants::from_annotations(annotations) {
        Ok(grants) => grants,
        Err(e) => {
            // An admin reads this in the pod's events: it names the annotation.
            let message = e.to_string();
            assert!(message.contains("wasmpod.dev/"), "{message}");
            return;
        }
    };
    // The same annotations grant the same, every time.
    let again = SocketGrants::from_annotations(annotations).expect("parsed once, parses again");
    assert_eq!(grants, again);
    // A written-out port list reads back as itself.
    for ports in &grants.tcp_listen {
        let written = HashMap::from([(TCP_LISTEN.to_owned(), ports.to_string())]);
        let read = SocketGrants::from_annotations(&written).expect("a written port list parses");
        assert_eq!(read.tcp_listen, vec![*ports], "{ports}");
    }
    // An address granted literally is allowed, however it is written.
    for (name, used) in [
        (TCP_CONNECT, SocketAddrUse::TcpConnect),
        (UDP_CONNECT, SocketAddrUse::UdpSend),
    ] {
        let written = annotations
            .get(name)
            .map(String::as_str)
            .unwrap_or_default();
        for addr in written
            .split(',')
            .filter_map(|e| e.trim().parse::<SocketAddr>().ok())
        {
            assert!(
                grants.allows(addr, used),
                "{name}: {addr} is granted but refused"
            );
        }
    }
    for addr in probes(text) {
        let allowed = USES.map(|used| grants.allows(addr, used));
        let [bind, listen, accept, connect, udp_bind, send, _] = allowed;
        // Accepting was decided when the socket was allowed to listen.
        assert!(accept);
        // An ephemeral bind exposes nothing; the connect or send is checked.
        if addr.port() == 0 {
            assert!(bind && udp_bind);
        }
        // Whatever may listen may bind that port first.
        assert!(!listen || bind, "{addr}: listen without bind");
        if grants.is_empty() {
            assert!(!listen && !connect && !send, "{addr}: nothing was granted");
            assert_eq!(bind, addr.port() == 0);
        }
        // An IPv4 peer seen through an IPv4-mapped IPv6 socket is the same peer.
        if let IpAddr::V4(v4) = addr.ip() {
            let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port());
            for used in [SocketAddrUse::TcpConnect, SocketAddrUse::UdpSend] {
                assert_eq!(
                    grants.allows(addr, used),
                    grants.allows(mapped, used),
                    "{addr}"
                );
            }
        }
        // What the guest is refused is explained, naming the annotation;
        // incoming connections and datagrams are dropped silently.
        for (used, ok) in USES.into_iter().zip(allowed) {
            let denial = SocketGrants::denial(addr, used);
            if matches!(used, SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive) {
                assert_eq!(denial, None);
            } else if !ok {
                assert!(denial.is_some_and(|d| d.contains("wasmpod.dev/")));
            }
        }
    }
}

fn check_http(annotations: &HashMap<String, String>) {
    let grants = HttpGrants::from_annotations(annotations);
    let any = annotations
        .get(HTTP_CONNECT)
        .is_some_and(|v| v.split(',').any(|a| a.trim() == "*"));
    for host in ["localhost", "Example.COM", "10.0.0.1", ""] {
        for port in [80, 443, 8080] {
            let allowed = grants.allows(host, port);
            // Host names compare without case.
            assert_eq!(allowed, grants.allows(&host.to_ascii_uppercase(), port));
            if any {
                assert!(allowed);
            }
            if grants.is_empty() {
                assert!(!allowed);
            }
        }
    }
    if let Ok(port) = http_grants::port(&[], annotations) {
        assert_ne!(port, 0);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let annotations = annotations(text);
    check_sockets(text, &annotations);
    check_http(&annotations);
});
