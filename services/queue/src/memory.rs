//! The in-process queue for the embedded mode (`facewire up`).
//!
//! It keeps RabbitMQ's semantics where the processor can tell the difference, so the
//! same consumer code behaves the same on both backends:
//! - each consumer holds at most `prefetch` unsettled deliveries (0 means unbounded,
//!   as in AMQP);
//! - a requeued message goes back to the head of the queue, marked redelivered;
//! - a dead-lettered message moves to a dead-letter list;
//! - a delivery dropped without being settled (a crashed task) is requeued, as the
//!   broker does when a consumer's channel closes with unacked messages.
//!
//! Nothing survives the process: the database is the truth, and the reconciler
//! re-queues whatever was pending when the process stopped.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::{Acker, Consumer, Delivery, Headers, QueueError, WorkQueue};

/// One message as stored in the queue.
#[derive(Debug, Clone)]
struct Message {
    body: Vec<u8>,
    headers: Headers,
    redelivered: bool,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Message>,
    dead: Vec<Message>,
    closed: bool,
}

/// State shared by the queue handles, its consumers and their unsettled deliveries.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Woken when a message becomes ready or the queue closes.
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-updated (every
        // critical section is a single push/pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn requeue(&self, mut message: Message) {
        message.redelivered = true;
        let mut state = self.lock();
        if state.closed {
            return;
        }
        state.ready.push_front(message);
        drop(state);
        self.changed.notify_waiters();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }
}

/// Closes the queue when the last [`MemoryQueue`] handle goes away, so that waiting
/// consumers return [`QueueError::Closed`] instead of waiting forever.
#[derive(Debug)]
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// An in-process work queue. Cloning gives another handle to the same queue.
#[derive(Debug, Clone)]
pub struct MemoryQueue {
    owner: Arc<Owner>,
    /// When the queue was made: it holds no message published before.
    created: std::time::SystemTime,
}

impl Default for MemoryQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            owner: Arc::new(Owner(Arc::new(Shared::default()))),
            created: std::time::SystemTime::now(),
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.0
    }

    /// Publishes raw message bodies (which need not be image ids: tests use this to
    /// send poison messages). All of them become ready at once.
    pub fn publish_raw(&self, bodies: &[Vec<u8>], headers: &Headers) -> Result<(), QueueError> {
        let mut state = self.shared().lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        state.ready.extend(bodies.iter().map(|body| Message {
            body: body.clone(),
            headers: headers.clone(),
            redelivered: false,
        }));
        drop(state);
        self.shared().changed.notify_waiters();
        Ok(())
    }

    /// The bodies of the dead-lettered messages, oldest first.
    pub fn dead_letters(&self) -> Vec<Vec<u8>> {
        self.shared()
            .lock()
            .dead
            .iter()
            .map(|m| m.body.clone())
            .collect()
    }

    /// Closes the queue: publishing fails and consumers return [`QueueError::Closed`]
    /// from then on, even if messages are still ready. Used on shutdown.
    pub fn close(&self) {
        self.shared().close();
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    fn messages_lost_before(&self) -> Option<std::time::SystemTime> {
        Some(self.created)
    }

    async fn publish(&self, ids: &[i64], headers: &Headers) -> Result<(), QueueError> {
        let bodies: Vec<Vec<u8>> = ids.iter().map(|id| id.to_string().into_bytes()).collect();
        self.publish_raw(&bodies, headers)
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
        if self.shared().lock().closed {
            return Err(QueueError::Closed);
        }
        Ok(Box::new(MemoryConsumer {
            shared: Arc::clone(self.shared()),
            credit: (prefetch > 0).then(|| Arc::new(Semaphore::new(usize::from(prefetch)))),
        }))
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        Ok(self.shared().lock().ready.len() as u64)
    }

    async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
        Ok(self.shared().lock().dead.len() as u64)
    }
}

/// A consumer of a [`MemoryQueue`].
struct MemoryConsumer {
    shared: Arc<Shared>,
    /// One permit per delivery this consumer may hold unsettled; `None` if unbounded.
    credit: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        // Take the credit first, as the broker does: a consumer at its prefetch limit
        // is not offered messages, so other consumers get them.
        let permit = match &self.credit {
            Some(credit) => Some(
                Arc::clone(credit)
                    .acquire_owned()
                    .await
                    .map_err(|_| QueueError::Closed)?,
            ),
            None => None,
        };
        loop {
            // Register interest before looking, so a publish between the look and the
            // wait is not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if state.closed {
                    return Err(QueueError::Closed);
                }
                if let Some(message) = state.ready.pop_front() {
                    let body = message.body.clone();
                    let headers = message.headers.clone();
                    let redelivered = message.redelivered;
                    let acker = MemoryAcker {
                        shared: Arc::clone(&self.shared),
                        pending: Mutex::new(Some((message, permit))),
                    };
                    return Ok(Delivery::new(body, headers, redelivered, Box::new(acker)));
                }
            }
            changed.await;
        }
    }
}

/// Settles one delivery of a [`MemoryQueue`]; requeues it if dropped unsettled.
struct MemoryAcker {
    shared: Arc<Shared>,
    /// The message and the consumer's credit it holds; taken when settled.
    pending: Mutex<Option<(Message, Option<OwnedSemaphorePermit>)>>,
}

impl MemoryAcker {
    /// Takes the message out; settling twice is an error, as with a broker (which
    /// would close the channel for an unknown delivery tag).
    fn take(&self) -> Result<Message, QueueError> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // The permit is dropped here, returning the credit to the consumer.
        pending
            .take()
            .map(|(message, _permit)| message)
            .ok_or_else(|| QueueError::Refused {
                operation: "settle",
                reason: "delivery already settled".to_string(),
            })
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), QueueError> {
        self.take().map(drop)
    }

    async fn requeue(&self) -> Result<(), QueueError> {
        let message = self.take()?;
        self.shared.requeue(message);
        Ok(())
    }

    async fn dead_letter(&self) -> Result<(), QueueError> {
        let message = self.take()?;
        self.shared.lock().dead.push(message);
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        let pending = self.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some((message, _permit)) = pending.take() {
            self.shared.requeue(message);
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    fn headers() -> Headers {
        Headers::from([("traceparent".to_string(), "00-abc-def-01".to_string())])
    }

    /// The next delivery if one is available right now, without waiting.
    async fn next_now(consumer: &mut Box<dyn Consumer>) -> Option<Delivery> {
        // Yield first so nothing that is merely scheduled is mistaken for "not ready".
        tokio::task::yield_now().await;
        consumer.next().now_or_never().map(|r| r.expect("delivery"))
    }

    #[tokio::test]
    async fn publish_then_consume_in_order_with_headers() {
        let queue = MemoryQueue::new();
        queue.publish(&[1, 2, 3], &headers()).await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 3);

        let mut consumer = queue.consume(10).await.unwrap();
        for expected in [1, 2, 3] {
            let delivery = consumer.next().await.unwrap();
            assert_eq!(delivery.image_id().unwrap(), expected);
            assert_eq!(delivery.headers, headers());
            assert!(!delivery.redelivered);
            delivery.ack().await.unwrap();
        }
        assert_eq!(queue.depth().await.unwrap(), 0);
        assert!(next_now(&mut consumer).await.is_none());
    }

    #[tokio::test]
    async fn prefetch_bounds_unsettled_deliveries() {
        let queue = MemoryQueue::new();
        queue
            .publish(&[1, 2, 3, 4, 5], &Headers::new())
            .await
            .unwrap();
        let mut consumer = queue.consume(2).await.unwrap();

        let first = next_now(&mut consumer).await.expect("first");
        let _second = next_now(&mut consumer).await.expect("second");
        assert!(
            next_now(&mut consumer).await.is_none(),
            "third over prefetch"
        );
        assert_eq!(queue.depth().await.unwrap(), 3);

        first.ack().await.unwrap();
        let third = next_now(&mut consumer)
            .await
            .expect("credit returned by ack");
        assert_eq!(third.image_id().unwrap(), 3);
        assert!(next_now(&mut consumer).await.is_none());
    }

    #[tokio::test]
    async fn consumer_waits_for_a_publish() {
        let queue = MemoryQueue::new();
        let mut consumer = queue.consume(1).await.unwrap();
        let waiting = tokio::spawn(async move { consumer.next().await.unwrap().image_id() });
        tokio::task::yield_now().await;
        queue.publish(&[42], &Headers::new()).await.unwrap();
        assert_eq!(waiting.await.unwrap().unwrap(), 42);
    }

    #[tokio::test]
    async fn requeue_puts_it_back_first_and_redelivered() {
        let queue = MemoryQueue::new();
        queue.publish(&[1, 2], &Headers::new()).await.unwrap();
        let mut consumer = queue.consume(1).await.unwrap();

        let first = consumer.next().await.unwrap();
        assert!(!first.redelivered);
        first.requeue().await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 2);

        let again = consumer.next().await.unwrap();
        assert_eq!(again.image_id().unwrap(), 1);
        assert!(again.redelivered);
        again.ack().await.unwrap();
        let second = consumer.next().await.unwrap();
        assert_eq!(second.image_id().unwrap(), 2);
        assert!(!second.redelivered);
    }

    #[tokio::test]
    async fn dead_letter_moves_it_aside() {
        let queue = MemoryQueue::new();
        queue
            .publish_raw(&[b"garbage".to_vec()], &Headers::new())
            .unwrap();
        queue.publish(&[7], &Headers::new()).await.unwrap();
        let mut consumer = queue.consume(1).await.unwrap();

        let poison = consumer.next().await.unwrap();
        assert!(matches!(poison.image_id(), Err(QueueError::BadBody(b)) if b == "garbage"));
        poison.dead_letter().await.unwrap();

        assert_eq!(queue.dead_letter_depth().await.unwrap(), 1);
        assert_eq!(queue.dead_letters(), vec![b"garbage".to_vec()]);
        assert_eq!(queue.depth().await.unwrap(), 1);
        let good = consumer.next().await.unwrap();
        assert_eq!(good.image_id().unwrap(), 7);
    }

    #[tokio::test]
    async fn dropping_an_unsettled_delivery_requeues_it() {
        let queue = MemoryQueue::new();
        queue.publish(&[9], &Headers::new()).await.unwrap();
        let mut consumer = queue.consume(1).await.unwrap();

        let task = {
            let delivery = consumer.next().await.unwrap();
            tokio::spawn(async move {
                let _held = delivery;
                panic!("worker crashed mid-image");
            })
        };
        assert!(task.await.unwrap_err().is_panic());

        assert_eq!(queue.depth().await.unwrap(), 1);
        let again = next_now(&mut consumer)
            .await
            .expect("requeued, credit returned");
        assert_eq!(again.image_id().unwrap(), 9);
        assert!(again.redelivered);
    }

    #[tokio::test]
    async fn settled_deliveries_are_not_requeued_on_drop() {
        let queue = MemoryQueue::new();
        queue.publish(&[1, 2], &Headers::new()).await.unwrap();
        let mut consumer = queue.consume(5).await.unwrap();
        consumer.next().await.unwrap().ack().await.unwrap();
        consumer.next().await.unwrap().dead_letter().await.unwrap();
        assert_eq!(queue.depth().await.unwrap(), 0);
        assert_eq!(queue.dead_letter_depth().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn several_consumers_share_the_work() {
        let queue = MemoryQueue::new();
        queue.publish(&[1, 2, 3, 4], &Headers::new()).await.unwrap();
        let mut a = queue.consume(1).await.unwrap();
        let mut b = queue.consume(1).await.unwrap();

        // Each holds one; neither may take a second while holding the first.
        let from_a = next_now(&mut a).await.expect("a gets one");
        let from_b = next_now(&mut b).await.expect("b gets one");
        assert!(next_now(&mut a).await.is_none());
        assert!(next_now(&mut b).await.is_none());
        assert_ne!(from_a.image_id().unwrap(), from_b.image_id().unwrap());

        from_a.ack().await.unwrap();
        from_b.ack().await.unwrap();
        let mut seen: Vec<i64> = Vec::new();
        for consumer in [&mut a, &mut b] {
            let d = next_now(consumer).await.expect("more work");
            seen.push(d.image_id().unwrap());
            d.ack().await.unwrap();
        }
        seen.sort_unstable();
        assert_eq!(seen, vec![3, 4]);
    }

    #[tokio::test]
    async fn several_waiting_consumers_each_get_a_message() {
        let queue = MemoryQueue::new();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let mut consumer = queue.consume(1).await.unwrap();
            tasks.push(tokio::spawn(async move {
                let d = consumer.next().await.unwrap();
                let id = d.image_id().unwrap();
                d.ack().await.unwrap();
                id
            }));
        }
        tokio::task::yield_now().await;
        queue.publish(&[10, 11, 12], &Headers::new()).await.unwrap();
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.unwrap());
        }
        ids.sort_unstable();
        assert_eq!(ids, vec![10, 11, 12]);
    }

    #[tokio::test]
    async fn unbounded_prefetch_with_zero() {
        let queue = MemoryQueue::new();
        queue.publish(&[1, 2, 3], &Headers::new()).await.unwrap();
        let mut consumer = queue.consume(0).await.unwrap();
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(next_now(&mut consumer).await.expect("no prefetch bound"));
        }
        assert_eq!(queue.depth().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn closing_wakes_consumers_and_stops_publishers() {
        let queue = MemoryQueue::new();
        let mut consumer = queue.consume(1).await.unwrap();
        let waiting = tokio::spawn(async move { consumer.next().await });
        tokio::task::yield_now().await;
        queue.close();
        assert!(matches!(waiting.await.unwrap(), Err(QueueError::Closed)));
        assert!(matches!(
            queue.publish(&[1], &Headers::new()).await,
            Err(QueueError::Closed)
        ));
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_consumers() {
        let queue = MemoryQueue::new();
        let clone = queue.clone();
        let mut consumer = queue.consume(1).await.unwrap();
        drop(queue);
        clone.publish(&[1], &Headers::new()).await.unwrap();
        consumer.next().await.unwrap().ack().await.unwrap();
        drop(clone);
        assert!(matches!(consumer.next().await, Err(QueueError::Closed)));
    }
}
