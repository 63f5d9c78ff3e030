//! Serving plumbing shared by every facewire service.
//!
//! - [`GrpcServer`]: a tonic server that always carries gRPC health and server
//!   reflection (v1 and v1alpha, since grpcurl 1.8 speaks only v1alpha) and the request
//!   telemetry layer (metrics, trace context from `traceparent`, one log line per call).
//! - [`Health`]: the health statuses of one server's services, flipped together.
//! - [`status`]: the one mapping from errors to `tonic::Status`, with `google.rpc` error
//!   details (`ErrorInfo`, `BadRequest`).
//! - [`drain_on`]: the SIGTERM sequence — report NOT_SERVING, wait for load balancers to
//!   notice, then stop accepting and let in-flight requests finish.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::net::TcpListener;
use tokio_stream::{wrappers::TcpListenerStream, StreamExt};
pub use tokio_util::sync::CancellationToken;

pub mod auth;
mod message_limit;
pub mod status;
pub mod tls;
pub mod wire;
/// The one mapping of a storage error to a gRPC status (see [`status`]).
pub use status::store_status;
use tonic::{
    server::NamedService,
    service::{Routes, RoutesBuilder},
};
use tonic_health::{server::HealthReporter, ServingStatus};

/// Errors from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(std::io::Error),
}

/// Binds `addr` (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// The health statuses of one gRPC server: the overall status (`""`) and one per service.
#[derive(Clone)]
pub struct Health {
    reporter: HealthReporter,
    names: Vec<&'static str>,
    serving: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("names", &self.names)
            .finish()
    }
}

impl Health {
    /// Reports every service SERVING, unless the process is draining (a drain is final).
    pub async fn serving(&self) {
        if self.draining.load(Ordering::SeqCst) {
            return;
        }
        self.set(ServingStatus::Serving).await;
    }

    /// Reports NOT_SERVING for good: the process is shutting down.
    pub async fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.set(ServingStatus::NotServing).await;
    }

    /// Reports every service NOT_SERVING (draining, or a dependency is down).
    pub async fn not_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// Whether the process is draining (SIGTERM received).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Whether the last status reported was SERVING (for HTTP readiness probes).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    async fn set(&self, status: ServingStatus) {
        self.serving
            .store(status == ServingStatus::Serving, Ordering::Relaxed);
        self.reporter.set_service_status("", status).await;
        for name in &self.names {
            self.reporter.set_service_status(*name, status).await;
        }
    }
}

/// A tonic server with health, reflection, request metrics and trace context built in.
pub struct GrpcServer {
    routes: RoutesBuilder,
    health: Health,
    max_message_bytes: usize,
    message_limit_setting: Option<Arc<str>>,
    tls: Option<tls::TlsAcceptor>,
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcServer {
    /// A server with only health and reflection.
    pub fn new() -> Self {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(facewire_proto::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                // The google.rpc error details our statuses carry, so reflection clients
                // (grpcurl) can decode them.
                .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        };
        match reflection().build_v1() {
            Ok(svc) => {
                routes.add_service(svc);
            }
            Err(e) => tracing::error!("reflection v1 unavailable: {e}"),
        }
        match reflection().build_v1alpha() {
            Ok(svc) => {
                routes.add_service(svc);
            }
            Err(e) => tracing::error!("reflection v1alpha unavailable: {e}"),
        }
        Self {
            routes,
            health: Health {
                reporter,
                names: Vec::new(),
                serving: Arc::new(AtomicBool::new(false)),
                draining: Arc::new(AtomicBool::new(false)),
            },
            max_message_bytes: 4 * 1024 * 1024,
            message_limit_setting: None,
            tls: None,
        }
    }

    /// Serves TLS with `acceptor` instead of plaintext (`None`: plaintext).
    pub fn tls(mut self, acceptor: Option<tls::TlsAcceptor>) -> Self {
        self.tls = acceptor;
        self
    }

    /// Adds a service; its health is reported under its full name.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = std::convert::Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.health.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// The largest request message accepted, for documentation and limits; services
    /// apply it to their generated servers with `max_decoding_message_size`.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The environment variable that sets the service's request limit, named in the
    /// INVALID_ARGUMENT an oversized request gets. Take it from the config struct with
    /// [`facewire_config::env_var`] rather than spelling it, so it cannot drift.
    pub fn message_limit_setting(mut self, env_var: impl Into<Arc<str>>) -> Self {
        self.message_limit_setting = Some(env_var.into());
        self
    }

    /// The health handle, to flip statuses later.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves on `listener` until `shutdown` is cancelled, then stops accepting and
    /// waits for in-flight requests. Health is reported SERVING once serving starts.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), ServeError> {
        let routes: Routes = self.routes.routes();
        self.health.serving().await;
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(facewire_telemetry::RequestTelemetryLayer::grpc())
            .layer(tower::util::MapResponseLayer::new(
                message_limit::rewrite_response::<tonic::body::Body>(self.message_limit_setting),
            ))
            .add_routes(routes);
        match self.tls {
            Some(acceptor) => {
                router
                    .serve_with_incoming_shutdown(
                        tls::incoming(listener, acceptor),
                        shutdown.cancelled_owned(),
                    )
                    .await?
            }
            None => {
                router
                    .serve_with_incoming_shutdown(
                        accept_no_delay(listener),
                        shutdown.cancelled_owned(),
                    )
                    .await?
            }
        }
        Ok(())
    }
}

/// Turns off Nagle's algorithm on an accepted connection. Replies are written in pieces
/// (HTTP/2 headers, data and trailers frames); with Nagle on, a piece written while an
/// earlier one is unacknowledged waits for the peer's delayed ACK, up to 40 ms on Linux,
/// which was most of a `SubmitImages` call's latency. (tonic's and axum's own
/// `tcp_nodelay` settings only apply to listeners they bind themselves.)
pub fn no_delay(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

/// The connections accepted on `listener`, each with [`no_delay`] applied.
pub fn accept_no_delay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| accepted.inspect(no_delay))
}

/// Serves an axum router on `listener` until `shutdown` is cancelled.
pub async fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    use axum::serve::ListenerExt;
    axum::serve(
        listener.tap_io(|tcp: &mut tokio::net::TcpStream| no_delay(tcp)),
        router,
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .map_err(ServeError::Http)
}

/// The routes of an operations port: `/healthz` (liveness: the process answers, and keeps
/// answering while it drains, so a drain never gets the pod restarted), `/metrics`, and
/// with `health`, `/readyz` (readiness: 200 while `health` reports SERVING, 503 while a
/// dependency is down or the process drains).
pub fn ops_routes(health: Option<Health>) -> axum::Router {
    let router = axum::Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .merge(facewire_telemetry::metrics_router());
    match health {
        Some(health) => router.route(
            "/readyz",
            axum::routing::get(move || {
                let serving = health.is_serving();
                async move {
                    if serving {
                        (http::StatusCode::OK, "ready")
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not serving")
                    }
                }
            }),
        ),
        None => router,
    }
}

/// Answers every HTTP request with `Connection: close` once `health` is draining.
///
/// HTTP/1.1 clients keep idle connections in a pool; when a server closes an idle one at
/// shutdown, a client that has just picked it for a request sees the connection reset
/// (a POST is not retried). Telling clients during the drain delay to stop reusing
/// their connections moves them to other replicas before the listener closes.
pub fn close_connections_while_draining(router: axum::Router, health: Health) -> axum::Router {
    router.layer(tower::util::MapResponseLayer::new(
        move |mut response: axum::response::Response| {
            if health.is_draining() {
                response.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            response
        },
    ))
}

/// [`serve_http`], over TLS when `tls` is given.
pub async fn serve_http_tls(
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    tls: Option<tls::TlsAcceptor>,
) -> Result<(), ServeError> {
    let Some(acceptor) = tls else {
        return serve_http(listener, router, shutdown).await;
    };
    axum::serve(tls::incoming(listener, acceptor.http1_only()), router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(ServeError::Http)
}

/// A future that resolves on SIGTERM or Ctrl-C. The handlers are installed when this
/// is called, not when first polled, so call it before announcing readiness: a signal
/// that arrives in between is then caught instead of killing the process.
pub fn termination_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        if let Some(mut term) = term {
            tokio::select! {
                _ = term.recv() => {}
                _ = ctrl_c => {}
            }
            return;
        }
        let _ = ctrl_c.await;
    }
}

/// The drain sequence: when `signal` fires, report NOT_SERVING on every `health`, wait
/// `delay` so load balancers and clients move away, then cancel `shutdown` so servers
/// stop accepting and finish what is in flight.
pub async fn drain_on(
    signal: impl Future<Output = ()>,
    health: Vec<Health>,
    delay: Duration,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = signal => {}
        _ = shutdown.cancelled() => return,
    }
    tracing::info!(
        delay_ms = delay.as_millis() as u64,
        "draining: reporting NOT_SERVING"
    );
    for h in &health {
        h.drain().await;
    }
    tokio::time::sleep(delay).await;
    shutdown.cancel();
}

/// A name for this process as a job runner: host, process id and role.
pub fn job_owner(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("{host}/{}/{role}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = Box::pin(accept_no_delay(listener));
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is off");
    }
}
