//! The web page listing images, their status and the people found.
//!
//! The frontend holds no state of its own: the receiver (gRPC `ImageService`) has the
//! images and their faces, the people service (gRPC `PeopleService`, served beside
//! `RecognitionService` on recognition's address) the people and who each face is,
//! recognition the enrolment, the image root the files. Pages are rendered on the server
//! with typed templates ([`render`]); a small script keeps the image table current from
//! `/events`, a Server-Sent Events stream fed by one shared `WatchImages` stream to the
//! receiver ([`upstream::LiveFeed`]), and names faces on an image's page through small
//! JSON endpoints, relabelling them in place.
//!
//! Pages: `/` (images, filtered by status and by people), `/images/{id}` (the photo with
//! its faces), `/faces/{id}/similar` (search by face: the faces most like one),
//! `/people` (named and suggested people; suggested ones named in one step),
//! `/people/{id}` (a person's photos and look-alikes; rename, hide, merge, undo a merge,
//! "not the same person", delete).
//!
//! Whatever is down, every page still renders and says what is unreachable.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use axum::Router;
use facewire_config::ImageRoot;
use facewire_proto::{ClientError, ClientOptions};
use facewire_server::{
    tls::{TlsAcceptor, TlsError},
    CancellationToken, ServeError,
};
use tokio::net::TcpListener;

pub mod config;
pub mod render;
pub mod thumbnail;
pub mod upstream;
mod web;

pub use config::FrontendConfig;

/// Failure to start the frontend.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// The image root is unusable.
    #[error("FACEWIRE_IMAGE_ROOT: {0}")]
    ImageRoot(std::io::Error),
    /// A service URL does not parse.
    #[error("{what}: {url:?} is not a valid URL: {reason}")]
    BadUrl {
        /// The setting.
        what: &'static str,
        /// The value given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// The listener could not be bound.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// FACEWIRE_TLS_CERT / FACEWIRE_TLS_KEY are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// FACEWIRE_TLS_CA or the token cannot be used to call the receiver or recognition.
    #[error("calling the receiver and recognition: {0}")]
    Client(#[from] ClientError),
}

/// Shared by every handler.
pub(crate) struct AppState {
    pub(crate) upstream: upstream::Upstream,
    pub(crate) feed: upstream::LiveFeed,
    pub(crate) root: ImageRoot,
    pub(crate) max_upload_bytes: usize,
    /// Cancelled on shutdown: ends the live streams, which would otherwise keep a
    /// graceful shutdown waiting forever.
    pub(crate) closing: CancellationToken,
    pub(crate) draining: AtomicBool,
}

/// Flips the frontend's readiness to "draining" (`/readyz` answers 503), so load
/// balancers move away before the listener closes.
#[derive(Clone)]
pub struct DrainHandle(Arc<AppState>);

impl DrainHandle {
    /// Reports not ready from now on.
    pub fn drain(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }
}

/// A built frontend, bound to its port and ready to run.
pub struct Frontend {
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    tls: Option<TlsAcceptor>,
}

impl Frontend {
    /// Checks the image root and the TLS settings, prepares the (lazily connecting)
    /// clients and binds the HTTP listener. Neither the receiver nor recognition needs to
    /// be up.
    pub async fn build(config: &FrontendConfig) -> Result<Self, FrontendError> {
        let root = ImageRoot::new(&config.image_root, config.max_image_bytes)
            .map_err(FrontendError::ImageRoot)?;
        let tls = TlsAcceptor::from_config(&config.tls)?;
        let client = ClientOptions::load(
            config.client_tls.tls_ca.as_deref(),
            config.client_tls.tls_server_name.as_deref(),
            config.auth.token(),
        )?;
        let upstream = upstream::Upstream::new(
            &config.receiver_url,
            &config.recognition_url,
            &client,
            &config.upstream,
        )?;
        let closing = CancellationToken::new();
        let state = Arc::new(AppState {
            feed: upstream::LiveFeed::new(upstream.clone(), closing.clone()),
            upstream,
            root,
            max_upload_bytes: config.max_upload_bytes,
            closing,
            draining: AtomicBool::new(false),
        });
        // Every request gets a span and a trace context, which the calls it makes to the
        // receiver and recognition carry on (see `upstream`).
        let router = web::routes(state.clone(), config.auth.token())
            .merge(facewire_telemetry::metrics_router())
            .layer(facewire_telemetry::RequestTelemetryLayer::http().quiet(web::is_asset));
        let listener = facewire_server::bind(config.http_addr).await?;
        Ok(Self {
            listener,
            router,
            state,
            tls,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Every route of the frontend (pages, `/events`, thumbnails, face pictures, the face
    /// endpoints, `/healthz`, `/readyz`, `/metrics`), for a caller that serves them on its
    /// own listener. Such a caller must call [`Frontend::close_streams`] when it shuts down.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// A handle that makes `/readyz` report draining.
    pub fn drain_handle(&self) -> DrainHandle {
        DrainHandle(self.state.clone())
    }

    /// Ends every open live stream (`/events`) and stops following the receiver, so a
    /// graceful HTTP shutdown is not held up by pages that never disconnect.
    pub fn close_streams(&self) {
        self.state.closing.cancel();
    }

    /// Serves (over TLS when configured) until `shutdown` is cancelled, then closes the
    /// live streams and finishes in-flight requests.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let closing = self.state.closing.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            closing.cancel();
        });
        facewire_server::serve_http_tls(self.listener, self.router, shutdown, self.tls).await
    }
}
