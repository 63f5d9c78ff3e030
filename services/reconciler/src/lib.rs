//! The reconciler: the database is the truth and the queue only a doorbell, so a lost
//! message (broker down at publish, a crashed consumer) must only delay an image. But a
//! message still waiting in the queue is not lost, and publishing it again only makes the
//! backlog longer (every copy is a delivery, a claim and a database write), so each sweep
//! re-publishes only images that may have no message:
//!
//! 1. pending images whose publish the broker never confirmed (`published_at` unset),
//!    untouched for `reconcile_after_seconds`;
//! 2. processing images whose claim is older than that: the processor's lease expired
//!    (it died, or hangs); they go back to pending and are published again;
//! 3. the slow safety net: pending images with a confirmed message untouched for
//!    `reconcile_safety_net_seconds` (a purged queue, a broker that lost its disk), and
//!    only as many as the queue lacks: pending confirmed images beyond its depth;
//! 4. once, at start, with an in-process queue: every pending or processing image of an
//!    earlier process, since that queue died with it.
//!
//! Every re-published image is marked confirmed only after the broker confirms its
//! message, so a failed publish is retried after the short deadline. Several reconcilers
//! may run at once: rows are taken with `FOR UPDATE SKIP LOCKED` (PostgreSQL) and
//! stamped, so each is re-queued by one of them.
//!
//! The original submission's trace context is not stored with the row, so each sweep
//! starts a trace of its own: its span's `trace_id` is sent in the re-queued messages'
//! `traceparent`, and the processor's work on them joins that trace.

use std::{sync::Arc, time::Duration};

use facewire_config::{QueueConfig, StorageConfig};
use facewire_queue::{Headers, QueueError, WorkQueue};
use facewire_server::CancellationToken;
use facewire_storage::{now_millis, Requeue, Store, StoreError};
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
    /// Re-queue images pending this many seconds without a confirmed message, and images
    /// whose processing claim (the processor's lease) is this old.
    #[arg(long, env = "FACEWIRE_RECONCILE_AFTER_SECONDS", default_value_t = 60.0)]
    pub reconcile_after_seconds: f64,
    /// Re-queue images pending this many seconds with a confirmed message (a safety net
    /// for messages lost by the broker), while the queue holds fewer messages than such
    /// images.
    #[arg(
        long,
        env = "FACEWIRE_RECONCILE_SAFETY_NET_SECONDS",
        default_value_t = 1800.0
    )]
    pub reconcile_safety_net_seconds: f64,
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
            reconcile_safety_net_seconds: 1800.0,
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
    /// With an in-process queue: when it was made (it holds no message from before),
    /// until the first sweep has re-queued the images of earlier processes.
    restart: Arc<std::sync::Mutex<Option<i64>>>,
}

impl Reconciler {
    /// A reconciler over `store` and `queue`.
    pub fn new(store: Store, queue: Arc<dyn WorkQueue>, config: SweepConfig) -> Self {
        let restart = queue.messages_lost_before().map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        });
        Self {
            store,
            queue,
            config,
            restart: Arc::new(std::sync::Mutex::new(restart)),
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
        let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0)).as_millis() as i64;
        // One cutoff per rule for the whole sweep: rows this sweep stamps are newer than
        // it, so a short deadline cannot make the sweep take its own rows again.
        let now = now_millis();
        let mut total = 0;
        let restart = *self.restart.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(started) = restart {
            total += self.requeue(Requeue::Any, started, &headers).await?;
            *self.restart.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let short = now - seconds(self.config.reconcile_after_seconds);
        total += self.requeue(Requeue::Unconfirmed, short, &headers).await?;
        total += self.requeue(Requeue::LeaseExpired, short, &headers).await?;
        let missing = self.missing_messages().await?;
        if missing > 0 {
            let long = now - seconds(self.config.reconcile_safety_net_seconds);
            total += self
                .requeue_at_most(Requeue::Confirmed, long, &headers, missing)
                .await?;
        }
        if total > 0 {
            tracing::info!(count = total, "re-queued stuck images");
        }
        Ok(total)
    }

    /// How many messages may have been lost: the pending images with a confirmed
    /// message beyond those the queue holds (all of them if the queue cannot say). Under
    /// a plain backlog this is at most what consumers hold unacknowledged, so the safety
    /// net re-publishes that many at most, never the backlog.
    async fn missing_messages(&self) -> Result<usize, ReconcileError> {
        let confirmed = self.store.count_confirmed_pending().await?.max(0) as u64;
        if confirmed == 0 {
            return Ok(0);
        }
        let depth = self.queue.depth().await.unwrap_or(0);
        Ok(confirmed.saturating_sub(depth) as usize)
    }

    /// Re-queues every image of kind `which` untouched since `cutoff`, a batch at a time;
    /// returns how many.
    async fn requeue(
        &self,
        which: Requeue,
        cutoff: i64,
        headers: &Headers,
    ) -> Result<usize, ReconcileError> {
        self.requeue_at_most(which, cutoff, headers, usize::MAX)
            .await
    }

    /// [`Reconciler::requeue`], oldest first, for at most `most` images.
    async fn requeue_at_most(
        &self,
        which: Requeue,
        cutoff: i64,
        headers: &Headers,
        most: usize,
    ) -> Result<usize, ReconcileError> {
        let mut total = 0;
        while total < most {
            let batch = self
                .config
                .reconcile_batch
                .max(1)
                .min((most - total).min(i64::MAX as usize) as i64);
            let ids = self.store.take_for_requeue(which, cutoff, batch).await?;
            if ids.is_empty() {
                break;
            }
            // A failed publish leaves the images unconfirmed: retried after the deadline.
            self.queue.publish(&ids, headers).await?;
            if let Err(e) = self.store.mark_published(ids.clone()).await {
                // Only costs a duplicate message after the deadline.
                tracing::warn!(error = %e, "could not record confirmed publishes");
            }
            total += ids.len();
            let rule = match which {
                Requeue::Unconfirmed => "unconfirmed",
                Requeue::LeaseExpired => "lease_expired",
                Requeue::Confirmed => "safety_net",
                Requeue::Any => "restart",
            };
            metrics::counter!("reconciler_requeued_total", "reason" => rule)
                .increment(ids.len() as u64);
            if (ids.len() as i64) < batch {
                break;
            }
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
        // The queue is older than the images: nothing to re-queue for a restart.
        tokio::time::sleep(Duration::from_millis(5)).await;
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
            ..SweepConfig::default()
        };
        let r = Reconciler::new(store.clone(), queue.clone(), config.clone());
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Six images never queued, in batches of four; the finished one is left alone.
        assert_eq!(r.sweep().await.unwrap(), 6);
        assert_eq!(queue.depth().await.unwrap(), 6);
        // Their messages are confirmed now: neither this reconciler nor a second one
        // queues them again, however short the deadline.
        assert_eq!(r.sweep().await.unwrap(), 0);
        let other = Reconciler::new(store, queue.clone(), config);
        assert_eq!(other.sweep().await.unwrap(), 0);
        assert_eq!(queue.depth().await.unwrap(), 6);
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
