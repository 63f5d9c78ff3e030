//! The work queue: a doorbell that carries image ids.
//!
//! The database is the truth; the queue only says "look at image N". Each message
//! carries one image id (its body is the id in decimal ASCII) and, in its headers, the
//! trace context of whoever published it. Consumers acknowledge a delivery only after
//! the database write it caused has committed, so delivery is at-least-once; a
//! delivery that is given up on goes to the dead-letter queue.
//!
//! Two implementations share the [`WorkQueue`] trait: [`rabbitmq`] (lapin; durable
//! queue, persistent messages, pipelined publisher confirms, manual acks, a dead-letter
//! exchange) and [`memory`] (in-process, for the embedded `facewire up`).
//!
//! A broker can go away and come back. [`WorkQueue::publish`] then fails with
//! [`QueueError::Unavailable`] (promptly: the connection attempt is bounded) and the
//! next call reconnects; a consumer's `next()` fails the same way, and
//! [`ResubscribingConsumer`] turns that into "wait with backoff and subscribe again",
//! so a processor started before the broker simply waits for it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use facewire_resilience::Backoff;

pub mod memory;
pub mod rabbitmq;
#[cfg(feature = "testing")]
pub mod testing;

pub use memory::MemoryQueue;
pub use rabbitmq::{RabbitOptions, RabbitQueue};

/// Errors at the queue boundary.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker cannot be reached or the connection broke.
    #[error("queue unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a publish (negative confirm) or an operation.
    #[error("broker refused {operation}: {reason}")]
    Refused {
        /// What was being done.
        operation: &'static str,
        /// What the broker said.
        reason: String,
    },
    /// The queue was closed (in-process queue dropped, consumer cancelled).
    #[error("queue closed")]
    Closed,
    /// A message body that is not an image id.
    #[error("message body is not an image id: {0:?}")]
    BadBody(String),
    /// The URL given for the queue is not usable.
    #[error("invalid queue URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given (credentials are not printed).
        url: String,
        /// Why it is unusable.
        reason: String,
    },
}

/// Headers carried by a message (trace context and the like), as text.
pub type Headers = BTreeMap<String, String>;

/// One delivered message.
pub struct Delivery {
    /// The raw body.
    pub body: Vec<u8>,
    /// Text headers the publisher attached.
    pub headers: Headers,
    /// Whether the broker has delivered this message before (to this or another consumer).
    pub redelivered: bool,
    acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("headers", &self.headers)
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Delivery {
    /// Builds a delivery; used by implementations.
    pub fn new(body: Vec<u8>, headers: Headers, redelivered: bool, acker: Box<dyn Acker>) -> Self {
        Self {
            body,
            headers,
            redelivered,
            acker,
        }
    }

    /// The image id this message carries.
    pub fn image_id(&self) -> Result<i64, QueueError> {
        let text = std::str::from_utf8(&self.body)
            .map_err(|_| QueueError::BadBody(String::from_utf8_lossy(&self.body).into_owned()))?;
        text.trim()
            .parse::<i64>()
            .map_err(|_| QueueError::BadBody(text.to_string()))
    }

    /// Done with it: the broker forgets the message.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.acker.ack().await
    }

    /// Not done: put it back for another try.
    pub async fn requeue(self) -> Result<(), QueueError> {
        self.acker.requeue().await
    }

    /// Given up: route it to the dead-letter queue.
    pub async fn dead_letter(self) -> Result<(), QueueError> {
        self.acker.dead_letter().await
    }
}

/// How a delivery is settled; one implementation per queue backend.
#[async_trait]
pub trait Acker: Send + Sync {
    /// Acknowledge.
    async fn ack(&self) -> Result<(), QueueError>;
    /// Negative-acknowledge and requeue.
    async fn requeue(&self) -> Result<(), QueueError>;
    /// Negative-acknowledge without requeue, so the message is dead-lettered.
    async fn dead_letter(&self) -> Result<(), QueueError>;
}

/// A stream of deliveries for one consumer.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `Err(Closed)` when the consumer was cancelled or the queue dropped.
    async fn next(&mut self) -> Result<Delivery, QueueError>;
}

/// A work queue of image ids.
#[async_trait]
pub trait WorkQueue: Send + Sync {
    /// Publishes one message per id, each with `headers`, and returns once the broker has
    /// confirmed every one of them (confirms are pipelined, not awaited one by one).
    async fn publish(&self, ids: &[i64], headers: &Headers) -> Result<(), QueueError>;

    /// Starts a consumer that holds at most `prefetch` unacknowledged deliveries.
    async fn consume(&self, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError>;

    /// Messages waiting in the queue (ready, not yet delivered), if the backend knows.
    async fn depth(&self) -> Result<u64, QueueError>;

    /// Messages in the dead-letter queue, if the backend knows.
    async fn dead_letter_depth(&self) -> Result<u64, QueueError>;

    /// For a queue that cannot hold messages published before some instant, that
    /// instant: an in-process queue holds nothing from before it was made (the messages
    /// of an earlier process died with it). `None` (the default) for a broker that keeps
    /// its messages across restarts of its clients.
    fn messages_lost_before(&self) -> Option<std::time::SystemTime> {
        None
    }
}

/// Opens the queue named by `url`: `amqp://...` for RabbitMQ, `None` or `memory:` for an
/// in-process queue. `queue_name` names the work queue (its dead-letter queue is
/// `<queue_name>.dead`).
pub async fn open(url: Option<&str>, queue_name: &str) -> Result<Arc<dyn WorkQueue>, QueueError> {
    match url {
        None | Some("") | Some("memory:") => Ok(Arc::new(memory::MemoryQueue::new())),
        Some(u) if u.starts_with("amqp://") || u.starts_with("amqps://") => Ok(Arc::new(
            rabbitmq::RabbitQueue::connect(u, queue_name).await?,
        )),
        Some(u) => Err(QueueError::InvalidUrl {
            url: u.to_string(),
            reason: "expected amqp://, amqps:// or memory:".to_string(),
        }),
    }
}

/// A consumer that outlives broker outages: when subscribing or receiving fails with
/// [`QueueError::Unavailable`], it waits (facewire-resilience's exponential backoff with
/// jitter, reset after each delivery) and subscribes again, for as long as it takes. Other errors, such as
/// [`QueueError::Closed`], are returned.
///
/// Deliveries taken before an outage may fail to settle afterwards; the broker has
/// already requeued them, so such errors can be logged and ignored.
pub struct ResubscribingConsumer {
    queue: Arc<dyn WorkQueue>,
    prefetch: u16,
    backoff: Backoff,
    current: Option<Box<dyn Consumer>>,
}

impl ResubscribingConsumer {
    /// Subscribes lazily, on the first `next()`, with at most `prefetch` unacknowledged
    /// deliveries; backoff from 100 ms up to 5 s (plus jitter).
    pub fn new(queue: Arc<dyn WorkQueue>, prefetch: u16) -> Self {
        Self {
            queue,
            prefetch,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            current: None,
        }
    }

    /// Sets the first and the longest wait between attempts (before jitter).
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }
}

#[async_trait]
impl Consumer for ResubscribingConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        let mut pauses = self.backoff.delays();
        loop {
            let consumer = match &mut self.current {
                Some(consumer) => consumer,
                None => match self.queue.consume(self.prefetch).await {
                    Ok(consumer) => self.current.insert(consumer),
                    Err(QueueError::Unavailable(reason)) => {
                        let pause = pauses.next().unwrap_or_default();
                        tracing::warn!(%reason, ?pause, "queue unavailable; will subscribe again");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    Err(other) => return Err(other),
                },
            };
            match consumer.next().await {
                Ok(delivery) => return Ok(delivery),
                Err(QueueError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "lost the queue subscription; subscribing again");
                    self.current = None;
                    // Wait before resubscribing too, so a broker that accepts and then
                    // drops subscriptions is not hammered.
                    tokio::time::sleep(pauses.next().unwrap_or_default()).await;
                }
                Err(other) => return Err(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_picks_the_backend_by_url() {
        for url in [None, Some(""), Some("memory:")] {
            let queue = open(url, "work").await.unwrap();
            queue.publish(&[1], &Headers::new()).await.unwrap();
            assert_eq!(queue.depth().await.unwrap(), 1);
        }
        assert!(matches!(
            open(Some("redis://127.0.0.1"), "work").await,
            Err(QueueError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn image_id_parses_decimal_and_rejects_the_rest() {
        let delivery =
            |body: &[u8]| Delivery::new(body.to_vec(), Headers::new(), false, Box::new(NoAck));
        assert_eq!(delivery(b"42").image_id().unwrap(), 42);
        assert_eq!(delivery(b" 7\n").image_id().unwrap(), 7);
        for bad in [
            &b""[..],
            b"x1",
            b"1.5",
            b"\xff\xfe",
            b"99999999999999999999",
        ] {
            assert!(
                matches!(delivery(bad).image_id(), Err(QueueError::BadBody(_))),
                "{bad:?}"
            );
        }
    }

    struct NoAck;

    #[async_trait]
    impl Acker for NoAck {
        async fn ack(&self) -> Result<(), QueueError> {
            Ok(())
        }
        async fn requeue(&self) -> Result<(), QueueError> {
            Ok(())
        }
        async fn dead_letter(&self) -> Result<(), QueueError> {
            Ok(())
        }
    }

    /// A queue whose first `failures` subscriptions fail as if the broker were down.
    struct Flaky {
        inner: MemoryQueue,
        failures: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl WorkQueue for Flaky {
        async fn publish(&self, ids: &[i64], headers: &Headers) -> Result<(), QueueError> {
            self.inner.publish(ids, headers).await
        }
        async fn consume(&self, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
            use std::sync::atomic::Ordering;
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(QueueError::Unavailable("broker down".to_string()));
            }
            self.inner.consume(prefetch).await
        }
        async fn depth(&self) -> Result<u64, QueueError> {
            self.inner.depth().await
        }
        async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
            self.inner.dead_letter_depth().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn resubscribing_consumer_waits_out_an_outage() {
        let flaky = Arc::new(Flaky {
            inner: MemoryQueue::new(),
            failures: 3.into(),
        });
        flaky.publish(&[5], &Headers::new()).await.unwrap();
        let mut consumer = ResubscribingConsumer::new(flaky.clone(), 1);
        let delivery = consumer.next().await.unwrap();
        assert_eq!(delivery.image_id().unwrap(), 5);
        assert_eq!(flaky.failures.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn resubscribing_consumer_returns_closed() {
        let queue = MemoryQueue::new();
        let mut consumer = ResubscribingConsumer::new(Arc::new(queue.clone()), 1);
        queue.close();
        assert!(matches!(consumer.next().await, Err(QueueError::Closed)));
    }
}
