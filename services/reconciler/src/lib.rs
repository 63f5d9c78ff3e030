//! The reconciler: the database is the truth and the queue only a doorbell, so a lost
//! message (broker down at publish, a crashed consumer) must only delay an image. Every
//! sweep finds images stuck in `pending` or `processing` for longer than a deadline and
//! publishes their ids again. Several reconcilers may run at once: rows are claimed with
//! `FOR UPDATE SKIP LOCKED` (PostgreSQL) and stamped, so each is re-queued by one of them.
//!
//! The original submission's trace context is not stored with the row, so each sweep
//! starts a trace of its own: its span's `trace_id` is sent in the re-queued messages'
//! `traceparent`, and the processor's work on them joins that trace.

use std::{sync::Arc, time::Duration};

use facewire_config::{QueueConfig, StorageConfig};
use facewire_queue::{Headers, QueueError, WorkQueue};
use facewire_server::CancellationToken;
use facewire_storage::{now_millis, Store, StoreError};
use facewire_telemetry::TraceContext;
use tracing::Instrument;

/// The reconciler's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcilerConfig {
    #[command(flatten)]
    pub storage: StorageConfig,
    #[command(flatten)]
    pub queue: QueueConfig,
    #[command(flatten)]
    pub sweep: SweepConfig,
    #[command(flatten)]
    pub http: facewire_config::HttpListen,
    /// TLS for the operations port (`/healthz`, `/metrics`), like every other facewire
    /// listener: one certificate setting covers the whole process, so scrapers and
    /// probes use one scheme for every service.
    #[command(flatten)]
    pub tls: facewire_config::TlsConfig,
}

/// How often and how eagerly to sweep.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepConfig {
    /// Re-queue images untouched in pending/processing for this many seconds.
    #[arg(long, env = "FACEWIRE_RECONCILE_AFTER_SECONDS", default_value_t = 60.0)]
    pub reconcile_after_seconds: f64,
    /// Seconds between sweeps.
    #[arg(
        long,
        env = "FACEWIRE_RECONCILE_INTERVAL_SECONDS",
        default_value_t = 10.0
    )]
    pub reconcile_interval_seconds: f64,
    /// Most images re-queued per database round trip.
    #[arg(long, env = "FACEWIRE_RECONCILE_BATCH", default_value_t = 500)]
    pub reconcile_batch: i64,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            reconcile_after_seconds: 60.0,
            reconcile_interval_seconds: 10.0,
            reconcile_batch: 500,
        }
    }
}

/// A failed sweep.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Publishing failed; the images stay stamped and are retried after the deadline.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Sweeps stuck images back onto the queue.
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    queue: Arc<dyn WorkQueue>,
    config: SweepConfig,
}

impl Reconciler {
    /// A reconciler over `store` and `queue`.
    pub fn new(store: Store, queue: Arc<dyn WorkQueue>, config: SweepConfig) -> Self {
        Self {
            store,
            queue,
            config,
        }
    }

    /// One sweep: re-queues every image stuck past the deadline; returns how many.
    pub async fn sweep(&self) -> Result<usize, ReconcileError> {
        let trace = TraceContext::new_root();
        let span = tracing::info_span!("sweep", trace_id = %trace.trace_id());
        self.sweep_in(trace).instrument(span).await
    }

    async fn sweep_in(&self, trace: TraceContext) -> Result<usize, ReconcileError> {
        let mut headers = Headers::new();
        trace.inject(&mut headers);
        let deadline = Duration::from_secs_f64(self.config.reconcile_after_seconds.max(0.0));
        let mut total = 0;
        // One cutoff for the whole sweep: rows this sweep stamps are newer than it, so a
        // short deadline cannot make the sweep take its own rows again.
        let cutoff = now_millis() - deadline.as_millis() as i64;
        loop {
            let ids = self
                .store
                .claim_stale(cutoff, self.config.reconcile_batch.max(1))
                .await?;
            if ids.is_empty() {
                break;
            }
            self.queue.publish(&ids, &headers).await?;
            total += ids.len();
            metrics::counter!("reconciler_requeued_total").increment(ids.len() as u64);
            if (ids.len() as i64) < self.config.reconcile_batch {
                break;
            }
        }
        if total > 0 {
            tracing::info!(count = total, "re-queued stuck images");
        }
        Ok(total)
    }

    /// Sweeps every interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs_f64(self.config.reconcile_interval_seconds.max(0.05));
        loop {
            if let Err(e) = self.sweep().await {
                metrics::counter!("reconciler_errors_total").increment(1);
                tracing::warn!(error = %e, "reconcile sweep failed; retrying next interval");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facewire_queue::memory::MemoryQueue;
    use facewire_storage::{testing::TestDatabase, NewImage, StoreOptions};

    async fn scenario(store: Store) {
        let queue = Arc::new(MemoryQueue::new());
        let new = (0..7)
            .map(|i| NewImage {
                path: format!("{i}.jpg"),
                content_hash: "h".into(),
            })
            .collect();
        let recs = store.insert_batch(new).await.unwrap();
        let claims = store.claim(vec![recs[0].id]).await.unwrap();
        store
            .finish(vec![(claims[0].clone(), facewire_storage::Outcome::NoFace)])
            .await
            .unwrap();
        let config = SweepConfig {
            reconcile_after_seconds: 0.0,
            reconcile_interval_seconds: 1.0,
            reconcile_batch: 4,
        };
        let r = Reconciler::new(store.clone(), queue.clone(), config.clone());
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Six stuck images, in batches of four; the finished one is left alone.
        assert_eq!(r.sweep().await.unwrap(), 6);
        assert_eq!(queue.depth().await.unwrap(), 6);
        // A second reconciler with a real deadline finds nothing: the rows were stamped.
        let patient = Reconciler::new(
            store,
            queue.clone(),
            SweepConfig {
                reconcile_after_seconds: 30.0,
                ..config
            },
        );
        assert_eq!(patient.sweep().await.unwrap(), 0);
        // Re-queued messages carry the sweep's trace context.
        let mut consumer = queue.consume(1).await.unwrap();
        let delivery = consumer.next().await.unwrap();
        assert!(
            TraceContext::extract(&delivery.headers).is_some(),
            "{delivery:?}"
        );
    }

    #[tokio::test]
    async fn requeues_stuck_images_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/f.db", dir.path().display());
        scenario(Store::open(&url, StoreOptions::default()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn requeues_stuck_images_postgres() {
        let db = TestDatabase::create();
        scenario(Store::open(&db.url, StoreOptions::default()).await.unwrap()).await;
    }
}
