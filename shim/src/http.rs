//! wasi:http/proxy components, served over HTTP/1.1 in the pod's network
//! namespace: one listener per container, and a fresh instance of the
//! pre-instantiated component for every request, so no request sees
//! another's state. SIGTERM stops accepting and lets the requests in flight
//! finish, then the container exits 0, as a well-behaved server does.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::watch;
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks, WasiHttpView};

use crate::capabilities::Grants;
use crate::engine::ComponentState;
use crate::limits::MemoryLimit;
use crate::sockets::Denials;
use crate::usage::Usage;

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

/// What every request's store is made from.
struct Requests {
    pre: ProxyPre<ComponentState>,
    grants: Grants,
    http: Arc<HttpGrants>,
    stdout: Option<File>,
    stderr: Option<File>,
    usage: Usage,
    kill: watch::Receiver<i32>,
    violation: Arc<crate::syscalls::Violation>,
}

impl Requests {
    fn store(&self, engine: &Engine) -> wasmtime::Result<Store<ComponentState>> {
        let clone = |f: &Option<File>| f.as_ref().and_then(|f| f.try_clone().ok());
        let mut builder = WasiCtxBuilder::new();
        self.grants.apply(&mut builder, clone(&self.stderr))?;
        if let Some(f) = clone(&self.stdout) {
            builder.stdout(OutputFile::new(f));
        }
        if let Some(f) = clone(&self.stderr) {
            builder.stderr(OutputFile::new(f));
        }
        let outgoing = OutgoingHttp::new(self.http.clone(), Denials::new(clone(&self.stderr)));
        // All requests in flight count against the container's one limit.
        let limit = MemoryLimit::new(self.grants.memory_limit, self.usage.clone());
        let state = ComponentState::new(builder.build(), outgoing, limit);
        // SIGTERM lets a request finish; only SIGKILL interrupts it.
        Ok(crate::guest::guest_store(
            engine,
            state,
            self.kill.clone(),
            self.violation.clone(),
            |s| s == libc::SIGKILL,
        ))
    }

    fn report(&self, message: &str) {
        tracing::info!("{message}");
        if let Some(mut f) = self.stderr.as_ref() {
            let _ = writeln!(f, "wasmpod: {message}");
        }
    }

    async fn handle(
        self: Arc<Self>,
        request: hyper::Request<Incoming>,
    ) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
        let mut store = self.store(self.pre.engine())?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The handler may go on streaming the body after it has set the
        // response, so it runs as a task of its own.
        let task = tokio::spawn(async move {
            let handled = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            }
            .await;
            let limit = &store.data().limit;
            handled.map_err(|e| match (limit.denied(), limit.max()) {
                (Some(asked), Some(max)) => e.context(format!(
                    "out of memory: the requests in flight would hold {asked} bytes of linear memory, over the container's limit of {max} bytes (resources.limits.memory), which they share"
                )),
                _ => e,
            })
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => {
                self.report(&format!("the handler answered with an error: {code:?}"));
                Ok(status(500))
            }
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "it returned without setting a response".to_owned(),
                    Ok(Err(e)) => format!("it trapped: {e:?}"),
                    Err(e) => format!("it panicked: {e}"),
                };
                self.report(&format!("the HTTP handler failed: {why}"));
                Ok(status(500))
            }
        }
    }
}

fn status(code: u16) -> hyper::Response<HyperOutgoingBody> {
    let mut response = hyper::Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response
}

/// Serves `pre` on `port` until killed; returns the exit status. Must run
/// on the guest's thread, already in the pod's network namespace.
pub async fn serve(
    pre: ProxyPre<ComponentState>,
    grants: Grants,
    stdout: Option<File>,
    stderr: Option<File>,
    usage: Usage,
    mut kill: watch::Receiver<i32>,
    violation: Arc<crate::syscalls::Violation>,
) -> u32 {
    let port = grants.http_port;
    let requests = Arc::new(Requests {
        pre,
        http: Arc::new(grants.http_connect.clone()),
        grants,
        stdout,
        stderr,
        usage,
        kill: kill.clone(),
        violation: violation.clone(),
    });
    let address = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match std::net::TcpListener::bind(address)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std)
    {
        Ok(l) => l,
        Err(e) => {
            requests.report(&format!("cannot listen on {address}: {e}"));
            return 1;
        }
    };
    tracing::info!(%address, "serving wasi:http");
    let connections = GracefulShutdown::new();
    let signal = loop {
        tokio::select! {
            signal = kill.wait_for(|s| *s != 0) => break signal.map(|s| *s).unwrap_or(libc::SIGKILL),
            () = violation.wait() => break libc::SIGSYS,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let requests = requests.clone();
                let connection = http1::Builder::new().keep_alive(true).serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(move |request| requests.clone().handle(request)),
                );
                let connection = connections.watch(connection);
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    };
    drop(listener);
    // A forbidden system call ends the server as SIGKILL does: the guest
    // is no longer trusted to finish a request.
    if signal == libc::SIGKILL || signal == libc::SIGSYS {
        return 128 + signal as u32;
    }
    // Drain: idle keep-alive connections close now, busy ones after their
    // response; a SIGKILL (the end of the grace period) cuts it short.
    tracing::info!(signal, "draining wasi:http connections");
    tokio::select! {
        () = connections.shutdown() => 0,
        _ = kill.wait_for(|s| *s == libc::SIGKILL) => 128 + libc::SIGKILL as u32,
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
