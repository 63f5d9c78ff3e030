//! A path naming something other than a regular file (a FIFO, a device) gets a clear
//! per-image error at once, even when the file is swapped between any check and the
//! read: opening a FIFO by path would block until a writer came, for ever, and a
//! receiver stuck in open() cannot be stopped by SIGTERM.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use facewire_config::{ImageRoot, PathError};
use facewire_queue::{MemoryQueue, WorkQueue};
use facewire_receiver::{Ingest, ItemResult};
use facewire_storage::{Store, StoreOptions};

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

async fn ingest(root: &Path, data: &Path) -> Ingest {
    let url = format!("sqlite://{}/f.db", data.display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    Ingest::new(ImageRoot::new(root, 1 << 20).unwrap(), store, queue, 100)
}

/// Lets any open() blocked on the FIFO `fifo` go on: it returns once a writer opens it.
/// The opening thread is left to itself (a writer's open blocks while nobody reads).
fn release_readers(fifo: &Path) {
    let fifo = fifo.to_path_buf();
    std::thread::spawn(move || {
        for _ in 0..100 {
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
        }
    });
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
    // One FIFO, kept under a name of its own so that readers stuck on it can be let go.
    let keep = data.path().join("keep.fifo");
    mkfifo(&keep);
    let target = dir.join("photo.jpg");
    std::fs::write(&target, b"jpeg").unwrap();
    let ingest = ingest(&dir, data.path()).await;

    // Swap photo.jpg between a regular file and the FIFO, as fast as rename allows.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, keep, dir) = (stop.clone(), keep.clone(), dir.clone());
        std::thread::spawn(move || {
            let file = dir.join(".file");
            std::fs::write(&file, b"jpeg").unwrap();
            let (file_tmp, fifo_tmp) = (dir.join(".file.tmp"), dir.join(".fifo.tmp"));
            while !stop.load(Ordering::Relaxed) {
                std::fs::hard_link(&file, &file_tmp).unwrap();
                std::fs::rename(&file_tmp, dir.join("photo.jpg")).unwrap();
                std::fs::hard_link(&keep, &fifo_tmp).unwrap();
                std::fs::rename(&fifo_tmp, dir.join("photo.jpg")).unwrap();
            }
        })
    };

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
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    if hung {
        release_readers(&keep);
    }
    assert!(
        !hung,
        "a submission hung opening the FIFO (after {outcomes:?} accepted/refused)"
    );
    // Both kinds were met: the swaps did happen under the submissions.
    assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
}
