//! A path naming something other than a regular file (a FIFO, a device) gets a clear
//! per-image error at once, even when the file is swapped between any check and the
//! read: opening a FIFO by path would block until a writer came, for ever, and a
//! receiver stuck in open() cannot be stopped by SIGTERM.

use std::{path::Path, sync::Arc, time::Duration};

use facewire_config::{
    testing::{mkfifo, release_readers, FifoSwap},
    ImageRoot, PathError,
};
use facewire_queue::{MemoryQueue, WorkQueue};
use facewire_receiver::{Ingest, ItemResult};
use facewire_storage::{Store, StoreOptions};

async fn ingest(root: &Path, data: &Path) -> Ingest {
    let url = format!("sqlite://{}/f.db", data.display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    Ingest::new(ImageRoot::new(root, 1 << 20).unwrap(), store, queue, 100)
}

#[tokio::test]
async fn a_fifo_is_refused_at_once() {
    let (root, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    mkfifo(&root.path().join("pipe.jpg"));
    std::fs::write(root.path().join("ok.jpg"), b"jpeg").unwrap();
    let ingest = ingest(root.path(), data.path()).await;
    let results = tokio::time::timeout(
        Duration::from_secs(10),
        ingest.submit(vec!["pipe.jpg".into(), "ok.jpg".into()]),
    )
    .await;
    let Ok(results) = results else {
        release_readers(&root.path().join("pipe.jpg"));
        panic!("submitting a FIFO hung");
    };
    let results = results.unwrap();
    assert!(
        matches!(&results[0], ItemResult::Refused(PathError::NotAFile(p)) if p == "pipe.jpg"),
        "{:?}",
        results[0]
    );
    assert!(matches!(results[1], ItemResult::Accepted(_)));
}

#[tokio::test]
async fn a_file_swapped_for_a_fifo_never_hangs_a_submission() {
    let (root, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let dir = root.path().to_path_buf();
    let ingest = ingest(&dir, data.path()).await;
    // Swap photo.jpg between a regular file and a FIFO, as fast as rename allows.
    let swap = FifoSwap::start(&dir, "photo.jpg", b"jpeg");

    let mut outcomes = (0, 0);
    let mut hung = false;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        match tokio::time::timeout(
            Duration::from_secs(5),
            ingest.submit(vec!["photo.jpg".into()]),
        )
        .await
        {
            Ok(results) => match &results.unwrap()[0] {
                ItemResult::Accepted(_) => outcomes.0 += 1,
                ItemResult::Refused(PathError::NotAFile(_)) => outcomes.1 += 1,
                other => panic!("unexpected result {other:?}"),
            },
            Err(_) => {
                hung = true;
                break;
            }
        }
    }
    swap.stop(hung);
    assert!(
        !hung,
        "a submission hung opening the FIFO (after {outcomes:?} accepted/refused)"
    );
    // Both kinds were met: the swaps did happen under the submissions.
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
}
