//! Running services as separate processes (production) — the same library entry points
//! `facewire up` uses in one process.

use std::{process::ExitCode, sync::Arc};

use anyhow::Context;
use facewire_config::{QueueConfig, StorageConfig};
use facewire_queue::WorkQueue;
use facewire_server::{tls::TlsAcceptor, CancellationToken};
use facewire_storage::{Store, StoreOptions};

/// Opens the database (running migrations) and the work queue.
pub async fn open_backends(
    storage: &StorageConfig,
    queue: &QueueConfig,
) -> anyhow::Result<(Store, Arc<dyn WorkQueue>)> {
    let url = storage.database_url();
    let store = Store::open(&url, StoreOptions::default())
        .await
        .with_context(|| format!("opening the database {}", facewire_storage::redact(&url)))?;
    let queue = facewire_queue::open(queue.amqp_url.as_deref(), &queue.queue_name)
        .await
        .context("opening the work queue")?;
    Ok((store, queue))
}

/// `facewire receiver`.
pub async fn receiver(config: facewire_receiver::ReceiverConfig) -> anyhow::Result<ExitCode> {
    facewire_receiver::serve(config).await?;
    Ok(ExitCode::SUCCESS)
}

/// `facewire reconciler`.
pub async fn reconciler(config: facewire_reconciler::ReconcilerConfig) -> anyhow::Result<ExitCode> {
    let tls = TlsAcceptor::from_config(&config.tls)?;
    let (store, queue) = open_backends(&config.storage, &config.queue).await?;
    let listener = facewire_server::bind(config.http.http_addr).await?;
    let signal = facewire_server::termination_signal();
    println!("reconciler: HTTP on {}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let http = tokio::spawn(facewire_server::serve_http_tls(
        listener,
        facewire_server::ops_routes(None),
        shutdown.clone(),
        tls,
    ));
    let sweeper = facewire_reconciler::Reconciler::new(store, queue, config.sweep.clone());
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signal.await;
        stop.cancel();
    });
    sweeper.run(shutdown).await;
    http.await??;
    Ok(ExitCode::SUCCESS)
}

/// `facewire processor`: the queue consumer, with gRPC health and the HTTP operations
/// port (`/healthz`, `/readyz`, `/metrics`), both over TLS when a certificate is set.
pub async fn processor(config: facewire_processor::ProcessorConfig) -> anyhow::Result<ExitCode> {
    let tls = TlsAcceptor::from_config(&config.tls)?;
    let (store, queue) = open_backends(&config.storage, &config.queue).await?;
    let processor =
        facewire_processor::Processor::new(store, queue, &config.image_root, config.work.clone())?;
    let grpc = facewire_server::GrpcServer::new().tls(tls.clone());
    let health = grpc.health();
    let grpc_listener = facewire_server::bind(config.grpc.grpc_addr).await?;
    let http_listener = facewire_server::bind(config.http.http_addr).await?;
    let signal = facewire_server::termination_signal();
    println!(
        "processor: gRPC on {} · HTTP on {}",
        grpc_listener.local_addr()?,
        http_listener.local_addr()?
    );
    let shutdown = CancellationToken::new();
    tokio::spawn(facewire_server::drain_on(
        signal,
        vec![health.clone()],
        config.drain.delay(),
        shutdown.clone(),
    ));
    let router = facewire_server::ops_routes(Some(health));
    let grpc_task = tokio::spawn(grpc.serve(grpc_listener, shutdown.clone()));
    let http_task = tokio::spawn(facewire_server::serve_http_tls(
        http_listener,
        router,
        shutdown.clone(),
        tls,
    ));
    processor.run(shutdown).await;
    grpc_task.await??;
    http_task.await??;
    Ok(ExitCode::SUCCESS)
}
