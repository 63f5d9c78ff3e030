//! The reconciler re-publishes only images that may have no message: a submission whose
//! publish the broker never confirmed, a processing lease that expired, and (slowly) a
//! confirmed message that was apparently lost. A backlog safely in the queue is left
//! alone, however long it waits: the queue never holds more messages than images.

use std::{sync::Arc, time::Duration};

use facewire_config::ImageRoot;
use facewire_queue::{testing::TestQueue, MemoryQueue, RabbitQueue, WorkQueue};
use facewire_receiver::Ingest;
use facewire_reconciler::{Reconciler, SweepConfig};
use facewire_storage::{testing::TestDatabase, NewImage, Store, StoreOptions};

/// A directory of `n` small files and their names.
fn images(n: usize) -> (tempfile::TempDir, ImageRoot, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = (0..n)
        .map(|i| {
            let name = format!("{i}.jpg");
            std::fs::write(dir.path().join(&name), format!("image {i}")).unwrap();
            name
        })
        .collect();
    let root = ImageRoot::new(dir.path(), 1 << 20).unwrap();
    (dir, root, paths)
}

/// A reconciler with a short deadline (the safety net stays at its default).
fn eager(store: Store, queue: Arc<dyn WorkQueue>) -> Reconciler {
    #[allow(clippy::needless_update)]
    let config = SweepConfig {
        reconcile_after_seconds: 0.2,
        reconcile_interval_seconds: 0.1,
        reconcile_batch: 64,
        ..SweepConfig::default()
    };
    Reconciler::new(store, queue, config)
}

async fn postgres() -> (TestDatabase, Store) {
    let db = TestDatabase::create();
    let store = Store::open(&db.url, StoreOptions::default()).await.unwrap();
    (db, store)
}

async fn rabbit(test: &TestQueue) -> Arc<dyn WorkQueue> {
    Arc::new(RabbitQueue::connect(test.url(), test.name()).await.unwrap())
}

#[tokio::test]
async fn a_queued_backlog_is_never_multiplied() {
    let (_db, store) = postgres().await;
    let test_queue = TestQueue::new("reconciler-backlog");
    let queue = rabbit(&test_queue).await;
    const N: u64 = 300;
    let (_dir, root, paths) = images(N as usize);
    let ingest = Ingest::new(root, store.clone(), queue.clone(), 1000);
    ingest.submit(paths).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), N);

    // Nobody consumes: every image waits in the queue far past the deadline.
    let reconciler = eager(store, queue.clone());
    let mut depths = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reconciler.sweep().await.unwrap();
        depths.push(queue.depth().await.unwrap());
    }
    assert!(
        depths.iter().all(|&d| d == N),
        "queue depth after each sweep: {depths:?} (images: {N})"
    );
}

#[tokio::test]
async fn an_image_never_confirmed_queued_is_published_once() {
    let (_db, store) = postgres().await;
    let test_queue = TestQueue::new("reconciler-unconfirmed");
    let queue = rabbit(&test_queue).await;
    // Recorded, but the publish never happened (the broker was down at submission).
    let rec = store
        .insert_batch(vec![NewImage {
            path: "a.jpg".into(),
            content_hash: "h".into(),
        }])
        .await
        .unwrap();
    let reconciler = eager(store, queue.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reconciler.sweep().await.unwrap(), 1);
    assert_eq!(queue.depth().await.unwrap(), 1);
    // Confirmed now: later sweeps leave it in the queue.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reconciler.sweep().await.unwrap();
    }
    assert_eq!(queue.depth().await.unwrap(), 1, "image {}", rec[0].id);
}

#[tokio::test]
async fn an_expired_processing_lease_is_published_again() {
    let (_db, store) = postgres().await;
    let test_queue = TestQueue::new("reconciler-lease");
    let queue = rabbit(&test_queue).await;
    let (_dir, root, paths) = images(2);
    let ingest = Ingest::new(root, store.clone(), queue.clone(), 1000);
    let results = ingest.submit(paths).await.unwrap();
    let ids: Vec<i64> = results
        .iter()
        .map(|r| match r {
            facewire_receiver::ItemResult::Accepted(rec) => rec.id,
            other => panic!("{other:?}"),
        })
        .collect();
    // A processor took the first image and vanished along with its message (the
    // messages are purged here to stand for it).
    store.claim(vec![ids[0]]).await.unwrap();
    let mut consumer = queue.consume(10).await.unwrap();
    for _ in 0..2 {
        consumer.next().await.unwrap().ack().await.unwrap();
    }
    drop(consumer);
    let reconciler = eager(store.clone(), queue.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The expired lease is re-queued; the pending image's message was confirmed, and
    // only the slow safety net (not due yet) would re-queue it.
    assert_eq!(reconciler.sweep().await.unwrap(), 1);
    let mut consumer = queue.consume(10).await.unwrap();
    let delivery = consumer.next().await.unwrap();
    assert_eq!(delivery.image_id().unwrap(), ids[0]);
    delivery.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(reconciler.sweep().await.unwrap(), 0);
}

#[tokio::test]
async fn a_restarted_in_process_queue_is_refilled_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/f.db", dir.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let (_images, root, paths) = images(5);
    // Submitted to the previous process's in-process queue, which died with it.
    let before: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    Ingest::new(root, store.clone(), before, 1000)
        .submit(paths)
        .await
        .unwrap();
    // A restart takes longer than a millisecond: the new queue is younger than every row
    // (rows stamped in the queue's own millisecond count as its own, and a fast machine
    // gets here within it).
    tokio::time::sleep(Duration::from_millis(5)).await;
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    // A normal deadline: the images are not stale, but their messages are gone.
    let reconciler = Reconciler::new(store, queue.clone(), SweepConfig::default());
    assert_eq!(reconciler.sweep().await.unwrap(), 5);
    assert_eq!(queue.depth().await.unwrap(), 5);
    assert_eq!(reconciler.sweep().await.unwrap(), 0);
    assert_eq!(queue.depth().await.unwrap(), 5);
}

#[tokio::test]
async fn the_safety_net_replaces_only_the_messages_the_queue_lost() {
    let (_db, store) = postgres().await;
    let test_queue = TestQueue::new("reconciler-safety-net");
    let queue = rabbit(&test_queue).await;
    let (_dir, root, paths) = images(5);
    Ingest::new(root, store.clone(), queue.clone(), 1000)
        .submit(paths)
        .await
        .unwrap();
    // Two confirmed messages vanish (an operator purged them, say).
    let mut consumer = queue.consume(2).await.unwrap();
    for _ in 0..2 {
        consumer.next().await.unwrap().ack().await.unwrap();
    }
    drop(consumer);
    // Messages the dropped consumer had prefetched go back to the queue when the broker
    // sees the cancel: wait for them rather than racing it.
    assert_eq!(settled_depth(&*queue, 3).await, 3);
    let config = SweepConfig {
        reconcile_after_seconds: 0.2,
        reconcile_safety_net_seconds: 3.0,
        ..SweepConfig::default()
    };
    let reconciler = Reconciler::new(store, queue.clone(), config);
    // Not yet due.
    assert_eq!(reconciler.sweep().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(reconciler.sweep().await.unwrap(), 2);
    assert_eq!(settled_depth(&*queue, 5).await, 5);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(reconciler.sweep().await.unwrap(), 0);
    assert_eq!(queue.depth().await.unwrap(), 5);
}

/// The queue's depth once it reads `expected`, or whatever it reads after 10 s.
async fn settled_depth(queue: &dyn WorkQueue, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let depth = queue.depth().await.unwrap();
        if depth == expected || tokio::time::Instant::now() > deadline {
            return depth;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
