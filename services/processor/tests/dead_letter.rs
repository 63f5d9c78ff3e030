//! What happens to an image recognition keeps failing on, against the real RabbitMQ (a
//! queue of the test's own, deleted afterwards):
//!
//! - failing transiently on every attempt, it is retried up to the attempt limit, then
//!   ends `failed` (with the last error) and its message is in the dead-letter queue;
//! - refused for good, it fails at once and its message is acknowledged (retrying
//!   cannot help, and the dead-letter queue is for messages given up on).

mod support;

use std::{sync::Arc, time::Duration};

use facewire_queue::{testing::TestQueue, Headers, QueueError, RabbitQueue, WorkQueue};
use facewire_storage::{ImageRecord, ImageStatus, NewImage, Store, StoreOptions};
use lapin::{options::BasicGetOptions, Connection, ConnectionProperties};
use support::{run_until_finished, Stand};

/// A queue of the test's own. Field order matters: the queue's connections close before
/// its queues are deleted.
struct Fixture {
    queue: Arc<RabbitQueue>,
    names: TestQueue,
    store: Store,
    images: tempfile::TempDir,
    _data: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let names = TestQueue::new("processor-dead-letter");
    let queue = RabbitQueue::connect(names.url(), names.name())
        .await
        .unwrap();
    queue.ping().await.expect("the test broker is reachable");
    let data = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/f.db", data.path().display());
    let store = Store::open(&url, StoreOptions::default()).await.unwrap();
    Fixture {
        queue: Arc::new(queue),
        names,
        store,
        images: tempfile::tempdir().unwrap(),
        _data: data,
    }
}

impl Fixture {
    /// Records and queues one image; returns its id.
    async fn submit(&self) -> i64 {
        std::fs::write(self.images.path().join("a.jpg"), b"a photo").unwrap();
        let id = self
            .store
            .insert_batch(vec![NewImage {
                path: "a.jpg".into(),
                content_hash: "h".into(),
            }])
            .await
            .unwrap()[0]
            .id;
        self.queue.publish(&[id], &Headers::new()).await.unwrap();
        id
    }

    /// Processes until the image is finished, giving up after two attempts.
    async fn process(&self, stand: Stand, id: i64) -> ImageRecord {
        let queue: Arc<dyn WorkQueue> = self.queue.clone();
        let tweak = |config: &mut facewire_processor::WorkConfig| {
            config.max_attempts = 2;
            // The breaker stays out of it: every attempt reaches the stand-in.
            config.breaker_failures = 1_000;
        };
        run_until_finished(&self.store, queue, self.images.path(), stand, tweak, &[id])
            .await
            .remove(0)
    }

    /// The dead-letter queue's messages, taken off it.
    async fn dead_letters(&self) -> Vec<Vec<u8>> {
        let connection = Connection::connect(self.names.url(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut bodies = Vec::new();
        while let Some(dead) = channel
            .basic_get(
                self.queue.dead_letter_name(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            bodies.push(dead.delivery.data);
        }
        connection.close(200, "done").await.unwrap();
        bodies
    }
}

/// Polls `depth` until it is `expected` (the broker moves dead letters asynchronously),
/// for at most five seconds; returns the last value.
async fn settled_depth<F, Fut>(expected: u64, mut depth: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, QueueError>>,
{
    let mut last = u64::MAX;
    for _ in 0..50 {
        last = depth().await.unwrap();
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test]
async fn an_image_failing_transiently_past_the_attempt_limit_is_failed_and_dead_lettered() {
    let f = fixture().await;
    let id = f.submit().await;
    let stand = Stand::always_failing(tonic::Code::Unavailable, "recognition is restarting");
    let calls = stand.calls.clone();

    let image = f.process(stand, id).await;

    assert_eq!(image.status, ImageStatus::Failed, "{image:?}");
    let reason = image.last_error.unwrap_or_default();
    assert!(
        reason.starts_with("gave up after 2 attempts: recognition unavailable")
            && reason.contains("recognition is restarting"),
        "{reason}"
    );
    // Two attempts, then a third claim that gives up without calling.
    assert_eq!(image.attempts, 3);
    assert!(calls.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    let queue = &f.queue;
    assert_eq!(settled_depth(1, || queue.dead_letter_depth()).await, 1);
    assert_eq!(f.dead_letters().await, vec![id.to_string().into_bytes()]);
    assert_eq!(f.queue.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn an_image_refused_for_good_fails_at_once_and_is_not_dead_lettered() {
    let f = fixture().await;
    let id = f.submit().await;
    let stand = Stand::always_failing(tonic::Code::Internal, "the model failed");

    let image = f.process(stand, id).await;

    assert_eq!(image.status, ImageStatus::Failed, "{image:?}");
    assert_eq!(image.attempts, 1, "not retried");
    let reason = image.last_error.unwrap_or_default();
    assert!(reason.contains("the model failed"), "{reason}");
    // Acknowledged: not back in the work queue once the processor stopped, not dead.
    let queue = &f.queue;
    assert_eq!(settled_depth(0, || queue.depth()).await, 0);
    assert_eq!(f.queue.dead_letter_depth().await.unwrap(), 0);
    assert!(f.dead_letters().await.is_empty());
}
