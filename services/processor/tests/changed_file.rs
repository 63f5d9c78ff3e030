//! A file replaced between submission and processing: what is recognised is what is on
//! disk now, and the image's recorded content hash becomes that file's hash, so the faces
//! on record always belong to the bytes of the recorded hash. Run on both backends.

mod support;

use std::sync::Arc;

use facewire_queue::{Headers, MemoryQueue, WorkQueue};
use facewire_storage::{testing::TestDatabase, ImageStatus, NewImage, Store, StoreOptions};
use sha2::{Digest, Sha256};
use support::{run_until_finished, Stand};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Records `kept.jpg` and `replaced.jpg` as submitted, replaces `replaced.jpg`, then
/// processes both.
async fn a_replaced_file_is_recognised_and_its_new_hash_recorded(store: Store) {
    let images = tempfile::tempdir().unwrap();
    let (kept, before, after) = (
        b"the kept photo".to_vec(),
        b"the photo as submitted".to_vec(),
        b"another photo, put in its place before processing".to_vec(),
    );
    std::fs::write(images.path().join("kept.jpg"), &kept).unwrap();
    std::fs::write(images.path().join("replaced.jpg"), &before).unwrap();
    let ids: Vec<i64> = store
        .insert_batch(vec![
            NewImage {
                path: "kept.jpg".into(),
                content_hash: sha256_hex(&kept),
            },
            NewImage {
                path: "replaced.jpg".into(),
                content_hash: sha256_hex(&before),
            },
        ])
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    std::fs::write(images.path().join("replaced.jpg"), &after).unwrap();

    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    queue.publish(&ids, &Headers::new()).await.unwrap();
    let stand = Stand::default();
    let seen = stand.seen.clone();
    let records = run_until_finished(&store, queue, images.path(), stand, |_| {}, &ids).await;

    assert!(
        records.iter().all(|r| r.status == ImageStatus::NoFace),
        "{records:?}"
    );
    assert_eq!(records[0].content_hash, sha256_hex(&kept), "unchanged file");
    assert_eq!(
        records[1].content_hash,
        sha256_hex(&after),
        "the hash recorded is the recognised file's"
    );
    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    let mut expected = vec![kept, after];
    expected.sort();
    assert_eq!(seen, expected, "recognition was sent what is on disk now");
}

#[tokio::test]
async fn a_replaced_file_gets_its_new_hash_on_sqlite() {
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/f.db", data.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    a_replaced_file_is_recognised_and_its_new_hash_recorded(store).await;
}

#[tokio::test]
async fn a_replaced_file_gets_its_new_hash_on_postgres() {
    let db = TestDatabase::create();
    let store = Store::open(&db.url, StoreOptions::default()).await.unwrap();
    a_replaced_file_is_recognised_and_its_new_hash_recorded(store).await;
}
