//! Detection re-runs: the receiver runs `detection` jobs, because it is the service that
//! queues images. A job sends finished images back through the pipeline a chunk at a
//! time (pending, attempts reset, id queued) and waits for the chunk to finish before
//! the next, so progress is real and a cancel stops it between chunks. The processor's
//! face write keeps every decision people made (see `facewire_storage::faces`).

use std::{sync::Arc, time::Duration};

use facewire_queue::{Headers, WorkQueue};
use facewire_server::CancellationToken;
use facewire_storage::{now_millis, JobKind, JobScope, JobState, Store, StoreError};

/// Images sent through the pipeline at once.
const CHUNK: i64 = 100;

/// Runs queued detection jobs until `shutdown`, polling every `interval`.
pub async fn run_jobs(
    store: Store,
    queue: Arc<dyn WorkQueue>,
    owner: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = run_next(&store, queue.as_ref(), &owner, &shutdown).await {
            tracing::warn!("detection job failed to run (will retry): {e}");
        }
    }
}

/// Takes and runs one queued detection job, if there is one.
pub async fn run_next(
    store: &Store,
    queue: &dyn WorkQueue,
    owner: &str,
    shutdown: &CancellationToken,
) -> Result<Option<i64>, StoreError> {
    let Some(job) = store
        .take_job(JobKind::Detection, owner, now_millis() - 60_000)
        .await?
    else {
        return Ok(None);
    };
    let all = job.scope == JobScope::All;
    tracing::info!(job = job.id, scope = %job.scope, "detection job started");
    // The images are fixed when the job starts: count them first.
    let mut ids = Vec::new();
    let mut after = 0;
    loop {
        let page = store.detection_candidates(all, after, 10_000).await?;
        let Some(last) = page.last() else { break };
        after = *last;
        ids.extend(page);
    }
    let total = ids.len() as i64;
    let mut done = 0;
    if store.job_progress(job.id, owner, done, total).await? != JobState::Running {
        return Ok(Some(job.id));
    }
    for chunk in ids.chunks(CHUNK as usize) {
        let moved = store.requeue_for_detection(chunk.to_vec()).await?;
        if !moved.is_empty() {
            match queue.publish(&moved, &Headers::new()).await {
                Ok(()) => {
                    if let Err(e) = store.mark_published(moved).await {
                        tracing::warn!(
                            "detection job {}: recording the publish failed: {e}",
                            job.id
                        );
                    }
                }
                // The rows are pending and unconfirmed: the reconciler re-queues them.
                Err(e) => tracing::warn!("detection job {}: queueing failed: {e}", job.id),
            }
        }
        // Wait for the chunk to be processed (or to fail for good).
        loop {
            let states = store.get_many(chunk.to_vec()).await?;
            if states.iter().all(|i| i.status.is_terminal()) {
                break;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(Some(job.id)),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            // A heartbeat while waiting, and a cancel is seen here too.
            if store.job_progress(job.id, owner, done, total).await? != JobState::Running {
                tracing::info!(job = job.id, "detection job cancelled");
                return Ok(Some(job.id));
            }
        }
        done += chunk.len() as i64;
        if store.job_progress(job.id, owner, done, total).await? != JobState::Running {
            tracing::info!(job = job.id, "detection job cancelled");
            return Ok(Some(job.id));
        }
    }
    store.finish_job(job.id, owner, None).await?;
    tracing::info!(job = job.id, images = total, "detection job done");
    Ok(Some(job.id))
}
