//! `facewire up`: every service in one process on the embedded default (SQLite in the
//! data dir, the in-process queue). Each service is the same library code that runs as
//! a separate process in production; only the wiring here is shared.

use std::{path::PathBuf, process::ExitCode};

use facewire_config::{DrainConfig, GrpcListen, HttpListen, QueueConfig, StorageConfig};
use facewire_receiver::{Limits, Receiver, ReceiverConfig};
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
    /// Directory that submitted paths are relative to and confined to.
    #[arg(long, env = "FACEWIRE_IMAGE_ROOT", default_value = ".")]
    image_root: PathBuf,
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
    };
    let receiver = Receiver::build(&receiver_config, store.clone(), queue.clone()).await?;
    let signal = facewire_server::termination_signal();
    println!(
        "facewire up: gRPC on {} · HTTP on {}",
        receiver.grpc_addr(),
        receiver.http_addr()
    );
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
        vec![receiver.health()],
        args.drain.delay(),
        shutdown.clone(),
    ));
    let reconciler = Reconciler::new(store, queue, args.sweep.clone());
    let sweeps = tokio::spawn(reconciler.run(shutdown.clone()));
    receiver.run_until_stopped(shutdown).await?;
    sweeps.await?;
    Ok(ExitCode::SUCCESS)
}
