//! How the processor's calls to recognition fail, and what that does to images, against
//! a stand-in recognition service served like the real one (same server, same request
//! limit, same "too large" answer) that finds no face in anything.
//!
//! - A batch of large photos must be sent in calls within recognition's request limit,
//!   and no valid image may fail for its size or for its neighbours' sizes.
//! - A call cut short (recognition draining: CANCELLED, connection closed) is retried.

mod support;

use std::sync::Arc;

use facewire_processor::WorkConfig;
use facewire_queue::{Headers, MemoryQueue, WorkQueue};
use facewire_storage::{ImageRecord, ImageStatus, NewImage, Store, StoreOptions};
use support::{run_until_finished, Stand};

/// Images of the given sizes, recorded and queued; then a processor over them runs until
/// every image is finished, and their records are returned.
async fn process(sizes: &[usize], stand: Stand) -> Vec<ImageRecord> {
    process_with(sizes, stand, |_| {}).await
}

/// [`process`] with the processor's settings changed by `tweak`.
async fn process_with(
    sizes: &[usize],
    stand: Stand,
    tweak: impl FnOnce(&mut WorkConfig),
) -> Vec<ImageRecord> {
    let data = tempfile::tempdir().unwrap();
    let images = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/f.db", data.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    let queue: Arc<dyn WorkQueue> = Arc::new(MemoryQueue::new());
    let new = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let path = format!("{i}.jpg");
            std::fs::write(images.path().join(&path), vec![0xa5u8; size]).unwrap();
            NewImage {
                path,
                content_hash: i.to_string(),
            }
        })
        .collect();
    let ids: Vec<i64> = store
        .insert_batch(new)
        .await
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    queue.publish(&ids, &Headers::new()).await.unwrap();

    run_until_finished(&store, queue, images.path(), stand, tweak, &ids).await
}

fn assert_none_failed(records: &[ImageRecord]) {
    for r in records {
        assert_eq!(
            r.status,
            ImageStatus::NoFace,
            "image {} ({}): {:?}",
            r.id,
            r.path,
            r.last_error
        );
    }
}

#[tokio::test]
async fn large_photos_are_sent_within_the_request_limit_and_none_fails() {
    const MB: usize = 1_000_000;
    // Eight phone photos of 10 to 14 MB (96 MB together) and a 9 KB one.
    let mut sizes: Vec<usize> = (0..8).map(|i| (10 + i % 5) * MB).collect();
    sizes.push(9_000);
    let stand = Stand::default();
    let answered = stand.answered.clone();
    let records = process(&sizes, stand).await;
    assert_none_failed(&records);
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.iter().sum::<usize>(), 9, "{answered:?}");
}

#[tokio::test]
async fn an_image_at_the_size_limit_is_recognised() {
    // The largest file the receiver accepts, alone and next to others.
    let limit = facewire_config::DEFAULT_MAX_IMAGE_BYTES as usize;
    let records = process(&[limit, limit, 1_000], Stand::default()).await;
    assert_none_failed(&records);
}

#[tokio::test]
async fn a_call_recognition_cancels_while_draining_is_retried() {
    let stand = Stand {
        fail_first: 3,
        failure: Some((tonic::Code::Cancelled, "the server is shutting down")),
        ..Stand::default()
    };
    let records = process(&[1_000, 2_000], stand).await;
    assert_none_failed(&records);
}

#[tokio::test]
async fn a_call_refused_as_too_large_is_split_until_it_fits() {
    const MB: usize = 1_000_000;
    let mut sizes: Vec<usize> = (0..8).map(|i| (10 + i % 5) * MB).collect();
    sizes.push(9_000);
    let stand = Stand::default();
    let answered = stand.answered.clone();
    // The processor is told recognition takes far more than it does, so its first call
    // (all eight photos, 96 MB) is refused.
    let records = process_with(&sizes, stand, |config| {
        config.batch_bytes = 1 << 30;
        config.recognition_max_message_bytes = 1 << 30;
    })
    .await;
    assert_none_failed(&records);
    let answered = answered.lock().unwrap().clone();
    assert_eq!(answered.iter().sum::<usize>(), 9, "{answered:?}");
    assert!(answered.iter().all(|&n| n < 8), "{answered:?}");
}
