//! Face detection, embedding and the gallery of enrolled people.
//!
//! - [`Recognizer`]: image bytes → faces (YuNet detection, SFace embedding) → names,
//!   against an in-memory [`Gallery`] matrix. No network, no database.
//! - [`image`]: decoding with limits checked from the header before any pixel exists.
//! - [`Roster`]: the gallery in the database (SQLite or PostgreSQL), mirrored in memory
//!   and kept in step with other replicas by polling the gallery version.
//! - [`RecognitionApi`]: the gRPC service over a roster; [`Recognition`] binds it with
//!   health and reflection; [`run`] is the whole service from its config.

pub mod config;
pub mod detect;
pub mod embed;
pub mod engine;
pub mod evaluation;
pub mod gallery;
pub mod grouping;
pub mod grpc;
pub mod image;
pub mod people;
pub mod people_grpc;
pub mod recognizer;
pub mod roster;

use std::{net::SocketAddr, sync::Arc};

use facewire_config::ImageRoot;
use facewire_proto::v1::{
    people_service_server::PeopleServiceServer,
    recognition_service_server::RecognitionServiceServer,
};
use facewire_server::{
    auth::AuthLayer,
    tls::{TlsAcceptor, TlsError},
    CancellationToken, GrpcServer, Health, ServeError,
};
use facewire_storage::{Store, StoreError, StoreOptions};
use tokio::net::TcpListener;

pub use self::image::{ImageLimits, OversizePolicy};
pub use config::{RecognitionConfig, RecognizerArgs};
pub use detect::{Detection, DetectorOptions};
pub use embed::{Embedding, EMBEDDING_DIM};
pub use engine::{Engine, EngineError, EngineKind, EngineOptions};
pub use gallery::{BestMatch, Gallery, GalleryFace};
pub use grpc::RecognitionApi;
pub use people::{People, PeopleError, PersonRef};
pub use people_grpc::PeopleApi;
pub use recognizer::{
    AnalyzedFace, EnrolmentFace, RecognizedFace, Recognizer, RecognizerOptions,
    DEFAULT_MATCH_THRESHOLD, DETECTOR_MODEL, EMBEDDER_MODEL,
};
pub use roster::{BootstrapReport, EnrollResult, EnrolledFace, Roster, RosterError};

/// Why one image could not be used. The service carries on; the caller gets this reason
/// for that image only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// No bytes at all.
    #[error("empty image: no bytes")]
    Empty,
    /// Not an image we decode, or corrupt.
    #[error("undecodable image: {0}")]
    Undecodable(String),
    /// Over the byte or pixel limit.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// An enrolment image without exactly one face.
    #[error("expected exactly one face, found {0}")]
    FaceCount(usize),
    /// OpenCV failed while analysing a decoded image.
    #[error("face analysis failed: {0}")]
    Analysis(String),
    /// A drawn face box that cannot be used (outside the image, too small).
    #[error("unusable face box: {0}")]
    Drawn(String),
}

impl ImageError {
    pub(crate) fn from_cv(e: opencv::Error) -> Self {
        ImageError::Analysis(e.to_string())
    }

    pub(crate) fn from_engine(e: EngineError) -> Self {
        ImageError::Analysis(e.to_string())
    }
}

/// Errors setting up recognition.
#[derive(Debug, thiserror::Error)]
pub enum RecognitionError {
    /// The models or their engine could not be found or loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The database could not be opened or read.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Loading the gallery or the known people failed.
    #[error("gallery: {0}")]
    Roster(#[from] RosterError),
    /// The listener could not be bound or the server failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// FACEWIRE_TLS_CERT / FACEWIRE_TLS_KEY are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A blocking task died.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Loads the models on a blocking thread (they take a second or two).
pub async fn load_recognizer(options: RecognizerOptions) -> Result<Recognizer, RecognitionError> {
    tokio::task::spawn_blocking(move || Recognizer::load(&options))
        .await
        .map_err(|e| RecognitionError::Internal(e.to_string()))?
}

/// The recognition service, built and bound, ready to run.
pub struct Recognition {
    grpc: GrpcServer,
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    tls: Option<TlsAcceptor>,
    people: People,
    grouper: grouping::Grouper,
    poll: std::time::Duration,
}

impl std::fmt::Debug for Recognition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recognition")
            .field("listener", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Recognition {
    /// Loads the models (failing with the missing file's name), loads the gallery from
    /// `store`, enrols the known-people directory if configured, and binds the listeners.
    pub async fn build(config: &RecognitionConfig, store: Store) -> Result<Self, RecognitionError> {
        // A bad certificate should fail before the models take their seconds to load.
        let tls = TlsAcceptor::from_config(&config.tls)?;
        let recognizer = Arc::new(load_recognizer(config.recognizer.options()).await?);
        let snapshot = config.face_index_snapshot();
        let (faces, loaded) =
            grouping::FaceIndex::load_logged(&store, config.grouping, snapshot.as_deref()).await?;
        let faces = Arc::new(faces);
        // The gallery's faces are among the face index's: loaded after it, the gallery keeps
        // no second copy of them once they are many (one graph in memory, none to build).
        recognizer
            .gallery()
            .share_when(faces.vectors(), config.gallery_sharing());
        let roster = Arc::new(Roster::open(recognizer, store).await?);
        if let Some(dir) = &config.known_people {
            let report = roster.enroll_directory(dir).await?;
            for (path, why) in &report.rejected {
                tracing::warn!(path = %path.display(), "known person photo skipped: {why}");
            }
            tracing::info!(
                dir = %dir.display(),
                enrolled = report.enrolled,
                unchanged = report.unchanged,
                rejected = report.rejected.len(),
                "known people enrolled"
            );
        }
        // The image root only serves drawn faces (AddFace): a missing one disables that
        // call, with a warning, rather than the whole service.
        let image_root = config.image_root.as_ref().and_then(|dir| {
            ImageRoot::new(dir, config.max_message_bytes as u64)
                .map_err(|e| {
                    tracing::warn!(
                        dir = %dir.display(),
                        "image root unusable ({e}); faces drawn on images cannot be added"
                    )
                })
                .ok()
        });
        let mut grouper = grouping::Grouper::new(
            roster.store().clone(),
            faces.clone(),
            config.grouping,
            facewire_server::job_owner("grouping"),
        );
        if let Some(path) = snapshot {
            // Saved now too when the start had to build much of it, so that a crash
            // before a clean stop does not cost the next start the same work.
            let rebuilt = loaded.indexed + loaded.removed > loaded.restored / 10;
            grouper = grouper.with_snapshot(path, rebuilt);
        }
        let people =
            People::new(roster.clone(), image_root).with_face_index(faces, config.grouping);
        let grpc = GrpcServer::new()
            .max_message_bytes(config.max_message_bytes)
            .message_limit_setting(facewire_config::env_var::<RecognitionConfig>(
                "max_message_bytes",
            ))
            .tls(tls.clone());
        let grpc = add_services(
            grpc,
            &people,
            config.max_batch,
            config.max_message_bytes,
            config.auth.token(),
        );
        let listener = facewire_server::bind(config.grpc_addr).await?;
        let http_listener = match config.http_addr {
            Some(addr) => Some(facewire_server::bind(addr).await?),
            None => None,
        };
        Ok(Self {
            grpc,
            listener,
            http_listener,
            tls,
            people,
            grouper,
            poll: config.gallery_poll(),
        })
    }

    /// The bound address of the HTTP operations port, when there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// The gRPC health handle (flipped to NOT_SERVING when draining).
    pub fn health(&self) -> Health {
        self.grpc.health()
    }

    /// The roster (gallery) the service answers from.
    pub fn roster(&self) -> &Arc<Roster> {
        self.people.roster()
    }

    /// The people operations the service answers from.
    pub fn people(&self) -> &People {
        &self.people
    }

    /// Serves until `shutdown` is cancelled, then finishes in-flight requests. Polls the
    /// gallery version meanwhile, to see other replicas' enrolments.
    pub async fn run_until_stopped(
        self,
        shutdown: CancellationToken,
    ) -> Result<(), RecognitionError> {
        let Self {
            grpc,
            listener,
            http_listener,
            tls,
            people,
            grouper,
            poll,
        } = self;
        // Awaited at the end: it saves the face index when it stops.
        let grouping =
            tokio::spawn(grouper.run(std::time::Duration::from_secs(1), shutdown.clone()));
        tokio::spawn(people.roster().clone().watch(poll, shutdown.clone()));
        tokio::spawn(people.clone().run_jobs(
            facewire_server::job_owner("recognition"),
            std::time::Duration::from_secs(1),
            shutdown.clone(),
        ));
        let routes = facewire_server::ops_routes(Some(grpc.health()));
        let stop = shutdown.clone();
        let ops = async move {
            match http_listener {
                Some(listener) => {
                    facewire_server::serve_http_tls(listener, routes, stop, tls).await
                }
                None => Ok(()),
            }
        };
        tokio::try_join!(grpc.serve(listener, shutdown), ops)?;
        if let Err(e) = grouping.await {
            tracing::warn!("grouping stopped abnormally: {e}");
        }
        Ok(())
    }
}

/// Adds RecognitionService and PeopleService (over `people`) to `grpc`. With a token
/// configured, every call of either needs it; health and reflection stay open (the processors call RecognizeBatch;
/// the NetworkPolicy limits who reaches this port at all). `facewire up` adds them to
/// the receiver's server, so every service is on one address.
pub fn add_services(
    grpc: GrpcServer,
    people: &People,
    max_batch: usize,
    max_message_bytes: usize,
    token: Option<&str>,
) -> GrpcServer {
    let api =
        RecognitionServiceServer::new(RecognitionApi::new(people.roster().clone(), max_batch))
            .max_decoding_message_size(max_message_bytes);
    // Recognising reveals who is in a photo and listing reveals names and faces: with a
    // token, every call needs it (the processors send it).
    let api = tower::Layer::layer(&AuthLayer::grpc_all(token), api);
    // People, faces, crops and jobs are biometric data: with a token, every method
    // needs it, reads included.
    let people_api = PeopleServiceServer::new(PeopleApi::new(people.clone()));
    let people_api = tower::Layer::layer(&AuthLayer::grpc_all(token), people_api);
    grpc.add_service(api).add_service(people_api)
}

/// The whole service from its configuration: opens the database, builds, serves until
/// `shutdown` is cancelled.
pub async fn run(
    config: RecognitionConfig,
    shutdown: CancellationToken,
) -> Result<(), RecognitionError> {
    let store = Store::open(&config.storage.database_url(), StoreOptions::default()).await?;
    let service = Recognition::build(&config, store).await?;
    tracing::info!(addr = %service.grpc_addr(), "recognition service listening");
    service.run_until_stopped(shutdown).await
}
