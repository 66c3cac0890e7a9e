//! What a pod grants its guests over HTTP: the port a wasi:http server
//! listens on, and the hosts its outgoing requests may reach, enforced by
//! wasmtime-wasi-http's hooks. Beside the socket grants ([`crate::sockets`]),
//! and used by the server ([`crate::http`]) and the store ([`crate::engine`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

use crate::sockets::Denials;

/// Annotation naming the port to serve on when the container has no `PORT`.
pub const HTTP_PORT: &str = "wasmpod.dev/http-port";
/// Annotation listing the hosts a guest may send HTTP requests to.
pub const HTTP_CONNECT: &str = "wasmpod.dev/http-connect";
/// The port served when neither `PORT` nor the annotation gives one.
pub const DEFAULT_PORT: u16 = 8080;

/// The pod asks for HTTP settings that make no sense.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The port is not a number from 1 to 65535.
    #[error("{source_name} {value:?} is not a port number (1-65535)")]
    Port {
        /// `PORT` or the annotation.
        source_name: &'static str,
        /// The value given.
        value: String,
    },
}

/// The port a proxy component is served on: the container's `PORT`
/// environment variable (the serverless convention), else the
/// `wasmpod.dev/http-port` annotation, else 8080.
pub fn port(
    env: &[(String, String)],
    annotations: &HashMap<String, String>,
) -> Result<u16, HttpError> {
    let (source_name, value) = match env.iter().rev().find(|(k, _)| k == "PORT") {
        Some((_, v)) => ("environment variable PORT", v),
        None => match annotations.get(HTTP_PORT) {
            Some(v) => ("annotation wasmpod.dev/http-port", v),
            None => return Ok(DEFAULT_PORT),
        },
    };
    match value.trim().parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(HttpError::Port {
            source_name,
            value: value.clone(),
        }),
    }
}

/// Hosts a guest may send HTTP requests to, from `wasmpod.dev/http-connect`:
/// `host` (any port), `host:port`, or `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpGrants {
    authorities: Vec<String>,
}

impl HttpGrants {
    /// Reads the grant from a container's annotations.
    pub fn from_annotations(annotations: &HashMap<String, String>) -> Self {
        let authorities = annotations
            .get(HTTP_CONNECT)
            .map(|v| {
                v.split(',')
                    .map(|a| a.trim().to_ascii_lowercase())
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self { authorities }
    }

    /// True when no host is granted.
    pub fn is_empty(&self) -> bool {
        self.authorities.is_empty()
    }

    /// Whether a request to `host` on `port` may go out.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        let with_port = format!("{host}:{port}");
        self.authorities
            .iter()
            .any(|a| a == "*" || *a == host || *a == with_port)
    }
}

impl std::fmt::Display for HttpGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}]", self.authorities.join(","))
    }
}

/// wasmtime-wasi-http's hooks for one store: outgoing requests go out only
/// to granted hosts; others fail with `HTTP-request-denied` and a line on
/// the guest's stderr.
pub struct OutgoingHttp {
    grants: Arc<HttpGrants>,
    denials: Denials,
}

impl OutgoingHttp {
    /// Requests to what `grants` lists; refusals reported to `denials`.
    pub fn new(grants: Arc<HttpGrants>, denials: Denials) -> Self {
        Self { grants, denials }
    }
}

impl WasiHttpHooks for OutgoingHttp {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    hyper::Response<WasiBody>,
                    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
                )>,
            > + Send,
    > {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let https = uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !self.grants.allows(&host, port) {
            self.denials.report(format!(
                "denied: HTTP request to {host}:{port}; the pod annotation {HTTP_CONNECT}: \"{host}\" would grant it"
            ));
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn port_from_env_then_annotation_then_default() {
        let annotations: HashMap<String, String> =
            [(HTTP_PORT.to_owned(), "9000".to_owned())].into();
        assert_eq!(
            port(&env(&[("PORT", "3000")]), &annotations).ok(),
            Some(3000)
        );
        assert_eq!(port(&env(&[]), &annotations).ok(), Some(9000));
        assert_eq!(port(&env(&[]), &HashMap::new()).ok(), Some(DEFAULT_PORT));
        let err = port(&env(&[("PORT", "http")]), &annotations).expect_err("bad port");
        assert!(err.to_string().contains("PORT \"http\""), "{err}");
        assert!(port(&env(&[("PORT", "0")]), &annotations).is_err());
    }

    #[test]
    fn outgoing_hosts_are_granted_by_name_and_port() {
        let annotations: HashMap<String, String> = [(
            HTTP_CONNECT.to_owned(),
            "api.example.com, Cache:8080".to_owned(),
        )]
        .into();
        let g = HttpGrants::from_annotations(&annotations);
        assert!(g.allows("api.example.com", 443));
        assert!(g.allows("API.example.com", 80));
        assert!(g.allows("cache", 8080));
        assert!(!g.allows("cache", 80));
        assert!(!g.allows("example.com", 443));
        assert!(HttpGrants::from_annotations(&HashMap::new()).is_empty());
        let any: HashMap<String, String> = [(HTTP_CONNECT.to_owned(), "*".to_owned())].into();
        assert!(HttpGrants::from_annotations(&any).allows("anything", 1));
    }
}
