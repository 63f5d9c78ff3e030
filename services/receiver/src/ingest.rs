//! The one code path every submission takes, whatever the API: check each path, record
//! the accepted ones in one transaction, then ring the queue's doorbell with their ids.

use std::{io::Read, sync::Arc};

use facewire_config::{ImageRoot, PathError};
use facewire_queue::WorkQueue;
use facewire_storage::{ImageRecord, NewImage, Store, StoreError};
use sha2::{Digest, Sha256};

/// A refusal of the whole batch.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// No paths at all.
    #[error("the batch is empty; send at least one path")]
    EmptyBatch,
    /// More paths than allowed.
    #[error("the batch has {got} paths; the limit is {limit} (FACEWIRE_MAX_BATCH)")]
    BatchTooLarge {
        /// Paths sent.
        got: usize,
        /// The limit.
        limit: usize,
    },
    /// The database failed; nothing was recorded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The outcome of one submitted path.
#[derive(Debug, Clone)]
pub enum ItemResult {
    /// Recorded and queued (or to be re-queued by the reconciler).
    Accepted(ImageRecord),
    /// Refused, with the reason.
    Refused(PathError),
}

/// Records submitted images and queues them.
#[derive(Clone)]
pub struct Ingest {
    root: ImageRoot,
    store: Store,
    queue: Arc<dyn WorkQueue>,
    max_batch: usize,
}

impl Ingest {
    /// An ingest path over `root`, `store` and `queue`.
    pub fn new(root: ImageRoot, store: Store, queue: Arc<dyn WorkQueue>, max_batch: usize) -> Self {
        Self {
            root,
            store,
            queue,
            max_batch,
        }
    }

    /// The database this ingest writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Submits a batch: one result per path, in order. A refused path never affects
    /// the others. If publishing fails the rows stay pending and the reconciler re-queues
    /// them later, so the images are accepted either way.
    #[tracing::instrument(skip_all, fields(batch = paths.len()))]
    pub async fn submit(&self, paths: Vec<String>) -> Result<Vec<ItemResult>, IngestError> {
        if paths.is_empty() {
            return Err(IngestError::EmptyBatch);
        }
        if paths.len() > self.max_batch {
            return Err(IngestError::BatchTooLarge {
                got: paths.len(),
                limit: self.max_batch,
            });
        }
        let root = self.root.clone();
        let checked = tokio::task::spawn_blocking(move || check_and_hash_all(&root, &paths).0)
            .await
            .map_err(|e| StoreError::Unavailable(format!("path check task failed: {e}")))?;

        let new: Vec<NewImage> = checked
            .iter()
            .filter_map(|c| c.as_ref().ok().cloned())
            .collect();
        let mut records = self.store.insert_batch(new).await?.into_iter();
        let results: Vec<ItemResult> = checked
            .into_iter()
            .map(|c| match c {
                Ok(_) => {
                    ItemResult::Accepted(records.next().expect("one record per accepted path"))
                }
                Err(e) => ItemResult::Refused(e),
            })
            .collect();

        let ids: Vec<i64> = results
            .iter()
            .filter_map(|r| match r {
                ItemResult::Accepted(rec) => Some(rec.id),
                ItemResult::Refused(_) => None,
            })
            .collect();
        metrics::counter!("receiver_images_accepted_total").increment(ids.len() as u64);
        metrics::counter!("receiver_images_refused_total")
            .increment((results.len() - ids.len()) as u64);
        if !ids.is_empty() {
            // The messages carry the request's trace context (`traceparent`), so the
            // processor's work on them joins the submitter's trace.
            let headers = facewire_telemetry::trace_context::message_headers();
            match self.queue.publish(&ids, &headers).await {
                // Confirmed by the broker: the reconciler leaves these images to the
                // queue (re-publishing a waiting message would only grow the backlog).
                Ok(()) => {
                    if let Err(e) = self.store.mark_published(ids.clone()).await {
                        // At worst one duplicate message, from the reconciler.
                        tracing::warn!(error = %e, "could not record the confirmed publish");
                    }
                }
                Err(e) => {
                    // The rows are pending and unconfirmed; the reconciler will queue them.
                    metrics::counter!("receiver_publish_failures_total").increment(1);
                    tracing::warn!(error = %e, count = ids.len(), "publish failed; images stay pending for the reconciler");
                }
            }
        }
        Ok(results)
    }
}

/// Checks every path and hashes each distinct file once, however often the batch names
/// it (a small request naming one large file a thousand times must not cost a thousand
/// reads of it). Returns the results in order and how many files were read.
///
/// Each file is hashed from the handle [`ImageRoot::open`] checked, never reopened by
/// path: a file swapped for a FIFO after a check by path would block `open()` for ever.
fn check_and_hash_all(
    root: &ImageRoot,
    paths: &[String],
) -> (Vec<Result<NewImage, PathError>>, usize) {
    let mut hashes: std::collections::HashMap<std::path::PathBuf, Result<String, PathError>> =
        std::collections::HashMap::new();
    let results = paths
        .iter()
        .map(|raw| {
            let (checked, file) = root.open(raw)?;
            let hash = hashes
                .entry(checked.resolved.clone())
                .or_insert_with(|| hash_file(file, raw))
                .clone()?;
            Ok(NewImage {
                path: checked.relative,
                content_hash: hash,
            })
        })
        .collect();
    (results, hashes.len())
}

fn hash_file(mut file: std::fs::File, raw: &str) -> Result<String, PathError> {
    let unreadable = |e: std::io::Error| PathError::Unreadable {
        path: raw.to_string(),
        reason: e.to_string(),
    };
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_named_many_times_is_hashed_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), vec![7u8; 100_000]).unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"other").unwrap();
        let root = ImageRoot::new(dir.path(), 1 << 20).unwrap();
        let mut paths = vec!["a.jpg".to_string(); 1000];
        paths.push("./a.jpg".into());
        paths.push("b.jpg".into());
        paths.push("missing.jpg".into());
        let (results, hashed) = check_and_hash_all(&root, &paths);
        assert_eq!(hashed, 2, "each distinct file read once");
        assert_eq!(results.len(), 1003);
        let first = results[0].as_ref().unwrap().content_hash.clone();
        assert!(results[..1001]
            .iter()
            .all(|r| r.as_ref().unwrap().content_hash == first));
        assert_ne!(results[1001].as_ref().unwrap().content_hash, first);
        assert!(matches!(results[1002], Err(PathError::NotFound(_))));
    }
}
