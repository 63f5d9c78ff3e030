//! The receiver: gRPC `ImageService` plus the tutorial's JSON endpoints.
//!
//! Every submission, whatever the API, goes through [`Ingest::submit`]: paths are
//! checked against the image root, the accepted ones are recorded in one transaction,
//! then their ids are published to the work queue.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{http::StatusCode, routing::get, Router};
use facewire_config::ImageRoot;
use facewire_proto::v1::image_service_server::ImageServiceServer;
use facewire_queue::WorkQueue;
use facewire_server::{
    auth::AuthLayer, tls::TlsAcceptor, tls::TlsError, CancellationToken, GrpcServer, Health,
    ServeError,
};
use facewire_storage::Store;
use tokio::net::TcpListener;

pub mod config;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod ingest;
pub mod redetect;
pub mod watch;

pub use config::{Limits, ReceiverConfig};
pub use grpc::ImageApi;
pub use ingest::{Ingest, IngestError, ItemResult};

/// Failure to start the receiver.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The image root is unusable.
    #[error("FACEWIRE_IMAGE_ROOT: {0}")]
    ImageRoot(std::io::Error),
    /// A listener could not be bound.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// FACEWIRE_TLS_CERT / FACEWIRE_TLS_KEY are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The database could not be opened (or migrated).
    #[error("opening the database {url}: {source}")]
    Database {
        /// The database URL, password redacted.
        url: String,
        /// Why.
        source: facewire_storage::StoreError,
    },
    /// The work queue could not be opened.
    #[error("opening the work queue: {0}")]
    Queue(#[from] facewire_queue::QueueError),
}

/// Runs a receiver process until SIGTERM or Ctrl-C: opens the database (running
/// migrations) and the queue, binds, prints the `receiver: gRPC on … · HTTP on …` line
/// that scripts and tests read, then serves and drains. `facewire receiver` and the
/// lean `facewire-receiver` binary both run this.
pub async fn serve(config: ReceiverConfig) -> Result<(), ReceiverError> {
    let url = config.storage.database_url();
    let store = Store::open(&url, facewire_storage::StoreOptions::default())
        .await
        .map_err(|source| ReceiverError::Database {
            url: facewire_storage::redact(&url),
            source,
        })?;
    let queue =
        facewire_queue::open(config.queue.amqp_url.as_deref(), &config.queue.queue_name).await?;
    let receiver = Receiver::build(&config, store, queue).await?;
    let signal = facewire_server::termination_signal();
    println!(
        "receiver: gRPC on {} · HTTP on {}",
        receiver.grpc_addr(),
        receiver.http_addr()
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(facewire_server::drain_on(
        signal,
        vec![receiver.health()],
        config.drain.delay(),
        shutdown.clone(),
    ));
    receiver.run_until_stopped(shutdown).await?;
    tracing::info!("receiver stopped");
    Ok(())
}

/// A built receiver, bound to its ports and ready to run.
pub struct Receiver {
    grpc: GrpcServer,
    grpc_listener: TcpListener,
    http: Router,
    http_listener: TcpListener,
    store: Store,
    tls: Option<TlsAcceptor>,
    feed: watch::ChangeFeed,
    queue: Arc<dyn WorkQueue>,
}

impl Receiver {
    /// Binds the gRPC and HTTP listeners and wires the services over `store` and `queue`.
    pub async fn build(
        config: &ReceiverConfig,
        store: Store,
        queue: Arc<dyn WorkQueue>,
    ) -> Result<Self, ReceiverError> {
        let root = ImageRoot::new(&config.image_root, config.limits.max_image_bytes)
            .map_err(ReceiverError::ImageRoot)?;
        let ingest = Ingest::new(root, store.clone(), queue.clone(), config.limits.max_batch);
        let batch_api = !config.legacy_api_only;
        let feed = watch::ChangeFeed::new(store.clone(), Duration::from_millis(200));
        let watch_feed = feed.clone();
        let api = ImageServiceServer::new(ImageApi::new(
            ingest.clone(),
            batch_api,
            feed,
            config.limits.max_batch,
        ))
        .max_decoding_message_size(config.limits.max_message_bytes);
        let tls = TlsAcceptor::from_config(&config.tls)?;
        // With a token configured, every ImageService call needs it: reads reveal paths
        // and the people in them. Health and reflection are other services: open.
        let api = tower::Layer::layer(&AuthLayer::grpc_all(config.auth.token()), api);
        let grpc = GrpcServer::new()
            .add_service(api)
            .max_message_bytes(config.limits.max_message_bytes)
            .message_limit_setting(facewire_config::env_var::<Limits>("max_message_bytes"))
            .tls(tls.clone());
        let http = http::routes(ingest, batch_api, config.limits.max_message_bytes)
            .route_layer(AuthLayer::http(config.auth.token()))
            .merge(facewire_telemetry::metrics_router())
            .merge(probe_routes(store.clone(), grpc.health()))
            .layer(facewire_telemetry::RequestTelemetryLayer::http());
        let http = facewire_server::close_connections_while_draining(http, grpc.health());
        let grpc_listener = facewire_server::bind(config.grpc.grpc_addr).await?;
        let http_listener = facewire_server::bind(config.http.http_addr).await?;
        Ok(Self {
            grpc,
            grpc_listener,
            http,
            http_listener,
            store,
            tls,
            feed: watch_feed,
            queue,
        })
    }

    /// Adds more gRPC services to the receiver's server (`facewire up` serves every
    /// service on one address).
    pub fn with_grpc(mut self, add: impl FnOnce(GrpcServer) -> GrpcServer) -> Self {
        self.grpc = add(self.grpc);
        self
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The gRPC health handle (flipped to NOT_SERVING when draining).
    pub fn health(&self) -> Health {
        self.grpc.health()
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let health = self.grpc.health();
        tokio::spawn(watch_database(self.store.clone(), health, shutdown.clone()));
        tokio::spawn(redetect::run_jobs(
            self.store.clone(),
            self.queue.clone(),
            facewire_server::job_owner("receiver"),
            Duration::from_secs(1),
            shutdown.clone(),
        ));
        // Open WatchImages streams would hold graceful shutdown forever: end them.
        let feed = self.feed.clone();
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            feed.close();
        });
        let grpc = self.grpc.serve(self.grpc_listener, shutdown.clone());
        let http =
            facewire_server::serve_http_tls(self.http_listener, self.http, shutdown, self.tls);
        tokio::try_join!(grpc, http)?;
        Ok(())
    }
}

/// `/healthz` (alive) and `/readyz` (database answers and not draining).
fn probe_routes(store: Store, health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let store = store.clone();
                let health = health.clone();
                async move {
                    if !health.is_serving() {
                        return (StatusCode::SERVICE_UNAVAILABLE, "not serving".to_string());
                    }
                    match store.ping().await {
                        Ok(()) => (StatusCode::OK, "ready".to_string()),
                        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                    }
                }
            }),
        )
}

/// Reports NOT_SERVING while the database is unreachable, so readiness follows it.
async fn watch_database(store: Store, health: Health, shutdown: CancellationToken) {
    let mut up = true;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let ok = store.ping().await.is_ok();
        if shutdown.is_cancelled() {
            return;
        }
        if ok != up {
            up = ok;
            if ok {
                tracing::info!("database reachable again");
                health.serving().await;
            } else {
                tracing::warn!("database unreachable; reporting NOT_SERVING");
                health.not_serving().await;
            }
        }
    }
}
