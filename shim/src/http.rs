//! wasi:http/proxy components, served over HTTP/1.1 in the pod's network
//! namespace: one listener per container, and a fresh instance of the
//! pre-instantiated component for every request, so no request sees
//! another's state. SIGTERM stops accepting and lets the requests in flight
//! finish, then the container exits 0, as a well-behaved server does.

use http_body_util::BodyExt;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::{Notify, watch};
use wasmtime::{Engine, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::cli::OutputFile;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::capabilities::Grants;
use crate::engine::{ComponentState, Proxy};
use crate::http_grants::{HttpGrants, OutgoingHttp};
use crate::limits::MemoryLimit;
use crate::sockets::Denials;
use crate::usage::Usage;

/// How long a server must have had no request in flight before it hands
/// the heap its requests freed back to the kernel.
const TRIM_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Requests in flight, so that an idle server can give back the heap its
/// requests freed: glibc keeps freed pages for the next allocation, and an
/// idle pod would hold them for nothing (about 0.45 MB of the Python
/// handler's 3 MB heap after one request).
#[derive(Default)]
struct Idle {
    in_flight: AtomicUsize,
    /// Requests begun so far: a request that began and ended while the
    /// trimmer slept makes it wait again.
    begun: AtomicU64,
    went_idle: Notify,
}

/// One request in flight; its drop ends it.
struct Busy(Arc<Idle>);

impl Idle {
    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Calls `release` each time the server has been idle for `after`
    /// since its last request ended; runs until aborted.
    async fn trim(self: Arc<Self>, after: Duration, release: impl Fn()) {
        loop {
            self.went_idle.notified().await;
            let begun = self.begun.load(Ordering::Acquire);
            tokio::time::sleep(after).await;
            if self.in_flight.load(Ordering::Acquire) == 0
                && self.begun.load(Ordering::Acquire) == begun
            {
                release();
            }
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.went_idle.notify_one();
        }
    }
}

/// Hands the free pages of the malloc heap back to the kernel.
#[allow(unsafe_code)]
fn release_free_heap() {
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What every request's store is made from.
struct Requests {
    proxy: Proxy,
    grants: Grants,
    http: Arc<HttpGrants>,
    stdout: Option<File>,
    stderr: Option<File>,
    usage: Usage,
    kill: watch::Receiver<i32>,
    violation: Arc<crate::syscalls::Violation>,
    idle: Arc<Idle>,
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
        Ok(crate::engine::guest_store(
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
        // The code compiled last: a first pod's baseline code until the
        // optimised code is ready (engine.rs).
        let busy = self.idle.begin();
        let pre = self.proxy.current();
        let mut store = self.store(pre.engine())?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        // The handler may go on streaming the body after it has set the
        // response, so it runs as a task of its own.
        let task = tokio::spawn(async move {
            let _busy = busy;
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

/// Serves `proxy` on `port` until killed; returns the exit status. Must run
/// on the guest's thread, already in the pod's network namespace.
pub async fn serve(
    proxy: Proxy,
    grants: Grants,
    stdout: Option<File>,
    stderr: Option<File>,
    usage: Usage,
    mut kill: watch::Receiver<i32>,
    violation: Arc<crate::syscalls::Violation>,
) -> u32 {
    let port = grants.http_port;
    let requests = Arc::new(Requests {
        proxy,
        http: Arc::new(grants.http_connect.clone()),
        grants,
        stdout,
        stderr,
        usage,
        kill: kill.clone(),
        violation: violation.clone(),
        idle: Arc::default(),
    });
    let trimmer = tokio::spawn(
        requests
            .idle
            .clone()
            .trim(TRIM_WHEN_IDLE_FOR, release_free_heap),
    );
    let status = serve_on(&requests, port, &mut kill, &violation).await;
    trimmer.abort();
    status
}

/// The accept loop and the drain of [`serve`].
async fn serve_on(
    requests: &Arc<Requests>,
    port: u16,
    kill: &mut watch::Receiver<i32>,
    violation: &crate::syscalls::Violation,
) -> u32 {
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

    #[tokio::test]
    async fn an_idle_server_gives_its_free_heap_back_once_per_idle_spell() {
        let idle = Arc::new(Idle::default());
        let trims = Arc::new(AtomicUsize::new(0));
        let counted = trims.clone();
        let trimmer = tokio::spawn(idle.clone().trim(Duration::from_millis(20), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        }));
        let trimmed = |n: usize| {
            let trims = trims.clone();
            async move {
                for _ in 0..200 {
                    if trims.load(Ordering::SeqCst) >= n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            }
        };
        drop(idle.begin());
        assert!(trimmed(1).await, "no trim after a request");
        // Busy: no trim, however long it lasts.
        let busy = idle.begin();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(trims.load(Ordering::SeqCst), 1, "trimmed while busy");
        drop(busy);
        assert!(trimmed(2).await, "no trim after the second request");
        // Idle with nothing new: no more trims.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(trims.load(Ordering::SeqCst), 2);
        trimmer.abort();
    }
}
