//! `facewire up`: every service in one process on the embedded default (SQLite in the
//! data dir, the in-process queue). Each service is the same library code that runs as
//! a separate process in production; only the wiring here is shared.
//!
//! With no settings everything is plaintext and open, for a laptop. With
//! `FACEWIRE_TLS_CERT`/`FACEWIRE_TLS_KEY`, every listener (gRPC, JSON, recognition, the
//! web page) serves TLS with that certificate; with `FACEWIRE_AUTH_TOKEN`, every service
//! requires the token on its writes. The services inside also call each other through
//! those listeners, so they trust `FACEWIRE_TLS_CA` (default: the certificate itself,
//! which works when it is self-signed), check it against `FACEWIRE_TLS_SERVER_NAME`
//! (default `localhost`), and send the token.

use std::{path::PathBuf, process::ExitCode};

use facewire_config::{
    AuthConfig, ClientTlsConfig, DrainConfig, GrpcListen, HttpListen, QueueConfig, StorageConfig,
    TlsConfig,
};
use facewire_frontend::{Frontend, FrontendConfig};
use facewire_processor::{Processor, WorkConfig};
use facewire_receiver::{Limits, Receiver, ReceiverConfig};
use facewire_recognition::{
    config::EngineArgs, grouping::GroupingConfig, Recognition, RecognitionConfig, RecognizerArgs,
};
use facewire_reconciler::{Reconciler, SweepConfig};
use facewire_server::CancellationToken;

use super::serve::open_backends;

/// Arguments of `facewire up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    storage: StorageConfig,
    #[command(flatten)]
    queue: QueueConfig,
    #[command(flatten)]
    grpc: GrpcListen,
    #[command(flatten)]
    http: HttpListen,
    #[command(flatten)]
    drain: DrainConfig,
    #[command(flatten)]
    limits: Limits,
    #[command(flatten)]
    sweep: SweepConfig,
    #[command(flatten)]
    tls: TlsConfig,
    #[command(flatten)]
    client_tls: ClientTlsConfig,
    #[command(flatten)]
    auth: AuthConfig,
    /// Directory that submitted paths are relative to and confined to.
    #[arg(long, env = "FACEWIRE_IMAGE_ROOT", default_value = ".")]
    image_root: PathBuf,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    grouping: GroupingConfig,
    /// Share of all faces that named faces must reach for lookups to search the face index
    /// instead of a graph of their own (less memory, slower lookups; above 1: never).
    #[arg(long, env = "FACEWIRE_GALLERY_SHARE_FROM", default_value_t = facewire_recognition::gallery::SHARED_FROM_SHARE)]
    gallery_share_from: f64,
    /// Cosine similarity at or above which a face is identified as an enrolled person.
    #[arg(long, env = "FACEWIRE_MATCH_THRESHOLD", default_value_t = facewire_recognition::DEFAULT_MATCH_THRESHOLD)]
    match_threshold: f32,
    /// Known people to enroll at start (`<name>_<n>.jpg`, the tutorial's convention).
    #[arg(long, env = "FACEWIRE_KNOWN_PEOPLE")]
    known_people: Option<PathBuf>,
    /// Address of the web page.
    #[arg(long, env = "FACEWIRE_WEB_ADDR", default_value = "127.0.0.1:8081")]
    web_addr: std::net::SocketAddr,
    /// Address of the recognition gRPC server inside this process.
    #[arg(
        long,
        env = "FACEWIRE_RECOGNITION_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    recognition_addr: std::net::SocketAddr,
}

impl UpArgs {
    fn recognition(&self) -> RecognitionConfig {
        RecognitionConfig {
            storage: self.storage.clone(),
            recognizer: RecognizerArgs {
                engine: self.engine.clone(),
                match_threshold: self.match_threshold,
                max_image_bytes: self.limits.max_image_bytes as usize,
                ..facewire_config::declared_defaults()
            },
            drain: self.drain.clone(),
            tls: self.tls.clone(),
            auth: self.auth.clone(),
            grpc_addr: self.recognition_addr,
            // /healthz, /readyz and /metrics are on the receiver's HTTP port.
            http_addr: None,
            known_people: self.known_people.clone(),
            image_root: Some(self.image_root.clone()),
            grouping: self.grouping,
            gallery_share_from: self.gallery_share_from,
            ..facewire_config::declared_defaults()
        }
    }

    /// `http` or `https`: how the services inside call each other.
    fn scheme(&self) -> &'static str {
        if self.tls.paths().is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// How the services inside trust each other's listeners (see the module docs).
    fn internal_tls(&self) -> ClientTlsConfig {
        if self.tls.paths().is_none() {
            return self.client_tls.clone();
        }
        ClientTlsConfig {
            tls_ca: self
                .client_tls
                .tls_ca
                .clone()
                .or_else(|| self.tls.tls_cert.clone()),
            tls_server_name: self
                .client_tls
                .tls_server_name
                .clone()
                .or_else(|| Some("localhost".to_string())),
        }
    }

    fn work(&self, recognition_url: String) -> WorkConfig {
        WorkConfig {
            recognition_url,
            recognition_tls: self.internal_tls(),
            auth: self.auth.clone(),
            max_image_bytes: self.limits.max_image_bytes,
            ..facewire_config::declared_defaults()
        }
    }
}

/// Runs everything until SIGTERM / Ctrl-C.
pub async fn run(args: UpArgs) -> anyhow::Result<ExitCode> {
    let (store, queue) = open_backends(&args.storage, &args.queue).await?;
    let receiver_config = ReceiverConfig {
        storage: args.storage.clone(),
        queue: args.queue.clone(),
        grpc: args.grpc.clone(),
        http: args.http.clone(),
        drain: args.drain.clone(),
        limits: args.limits.clone(),
        image_root: args.image_root.clone(),
        legacy_api_only: false,
        tls: args.tls.clone(),
        auth: args.auth.clone(),
    };
    let scheme = args.scheme();
    let recognition = Recognition::build(&args.recognition(), store.clone()).await?;
    let recognition_url = format!("{scheme}://{}", recognition.grpc_addr());
    // Every gRPC service on the one gRPC address: images, recognition and people.
    let people = recognition.people().clone();
    let recognition_config = args.recognition();
    let (max_batch, max_message_bytes) = (
        recognition_config.max_batch,
        recognition_config.max_message_bytes,
    );
    let token = args.auth.token().map(str::to_string);
    let receiver = Receiver::build(&receiver_config, store.clone(), queue.clone())
        .await?
        .with_grpc(|grpc| {
            facewire_recognition::add_services(
                grpc,
                &people,
                max_batch,
                max_message_bytes,
                token.as_deref(),
            )
        });
    let processor = Processor::new(
        store.clone(),
        queue.clone(),
        &args.image_root,
        args.work(recognition_url.clone()),
    )?;
    let frontend = Frontend::build(&FrontendConfig {
        http_addr: args.web_addr,
        receiver_url: format!("{scheme}://{}", receiver.grpc_addr()),
        recognition_url: recognition_url.clone(),
        image_root: args.image_root.clone(),
        max_image_bytes: args.limits.max_image_bytes,
        max_upload_bytes: 32 * 1024 * 1024,
        drain: args.drain.clone(),
        tls: args.tls.clone(),
        client_tls: args.internal_tls(),
        auth: args.auth.clone(),
        upstream: Default::default(),
    })
    .await?;
    let signal = facewire_server::termination_signal();
    println!(
        "facewire up: gRPC on {} · HTTP on {} · recognition on {} · web on {}",
        receiver.grpc_addr(),
        receiver.http_addr(),
        recognition.grpc_addr(),
        frontend.http_addr()
    );
    println!("web page: {scheme}://{}/", frontend.http_addr());
    println!(
        "database {} · queue {}",
        facewire_storage::redact(&args.storage.database_url()),
        if args.queue.amqp_url.is_some() {
            "RabbitMQ"
        } else {
            "in-process"
        }
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(facewire_server::drain_on(
        signal,
        vec![receiver.health(), recognition.health()],
        args.drain.delay(),
        shutdown.clone(),
    ));
    let reconciler = Reconciler::new(store, queue, args.sweep.clone());
    let sweeps = tokio::spawn(reconciler.run(shutdown.clone()));
    let recognizing = tokio::spawn(recognition.run_until_stopped(shutdown.clone()));
    let processing = tokio::spawn(processor.run(shutdown.clone()));
    let web = tokio::spawn(frontend.run_until_stopped(shutdown.clone()));
    receiver.run_until_stopped(shutdown).await?;
    processing.await?;
    sweeps.await?;
    recognizing.await??;
    web.await??;
    Ok(ExitCode::SUCCESS)
}
