//! RabbitMQ through lapin.
//!
//! Topology, declared (idempotently) on every new connection:
//! - `<name>`: the durable work queue, with `x-dead-letter-exchange = <name>.dlx`;
//! - `<name>.dlx`: a durable fanout exchange, bound to
//! - `<name>.dead`: the durable dead-letter queue.
//!
//! Messages are persistent (delivery mode 2) and published with `mandatory`, on a
//! channel in confirm mode. A batch is published as a whole and its confirms are then
//! awaited together, so a batch costs one round trip, not one per message. A nack or an
//! unroutable return is an error.
//!
//! Connections are made lazily and remade after they break: [`RabbitQueue::connect`]
//! succeeds even when the broker is down (services start in any order), and every
//! later call first makes sure it has a live connection, giving up with
//! [`QueueError::Unavailable`] after [`RabbitOptions::connect_timeout`]. Publishing and
//! consuming use separate connections, as RabbitMQ advises (flow control blocks a
//! publishing connection, which must not stall deliveries). A connection that was
//! fine when last used but fails on its next use (the broker restarted in between)
//! is replaced once, immediately, before an error is returned; a batch may then be
//! published twice in part, which consumers must (and do) tolerate.
//!
//! A consumer whose connection breaks returns `Err(Unavailable)` from `next()`; call
//! [`WorkQueue::consume`] again to reconnect, or wrap the queue in
//! [`crate::ResubscribingConsumer`], which does so with backoff. Deliveries taken from
//! the broken connection can no longer be settled (settling returns an error), and that
//! is harmless: the broker requeues every unacknowledged message of a closed channel.
//!
//! Everything here runs on the tokio runtime it is called from.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_trait::async_trait;
use futures::{future, StreamExt};
use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
    },
    protocol::{AMQPErrorKind, AMQPHardError},
    publisher_confirm::Confirmation,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    uri::AMQPUri,
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::{sync::Mutex, time::timeout};

use crate::{Acker, Consumer, Delivery, Headers, QueueError, WorkQueue};

/// AMQP delivery mode of a message the broker writes to disk.
const PERSISTENT: u8 = 2;

/// Tuning for a [`RabbitQueue`].
#[derive(Debug, Clone)]
pub struct RabbitOptions {
    /// Longest wait for a connection (TCP and AMQP handshake) before an operation
    /// reports [`QueueError::Unavailable`].
    pub connect_timeout: Duration,
    /// Longest wait for one broker operation once connected: a batch's confirms, a
    /// declaration, a subscription. On expiry the connection is dropped and remade on
    /// the next call, since a broker that stopped answering may be gone.
    pub operation_timeout: Duration,
    /// Prefix of the connection name shown by `rabbitmqctl list_connections
    /// client_properties` and the management UI; the role and queue name are appended.
    pub connection_name: String,
}

impl Default for RabbitOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(30),
            connection_name: "facewire".to_string(),
        }
    }
}

/// Which of the two connections; it decides how the link's channel is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Publishes on one confirm-mode channel and answers depth queries.
    Publisher,
    /// Opens one channel per consumer.
    Consumer,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Publisher => "publisher",
            Role::Consumer => "consumer",
        }
    }
}

/// A live connection and its main channel (confirm mode for the publisher).
#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    channel: Channel,
    /// Made by this call rather than reused: an error on it is not a stale connection.
    fresh: bool,
}

/// One lazily made, remade-when-broken connection.
struct Link {
    role: Role,
    live: Mutex<Option<Live>>,
}

impl Link {
    fn new(role: Role) -> Self {
        Self {
            role,
            live: Mutex::new(None),
        }
    }

    /// Forgets the current connection so that the next call makes a new one.
    async fn reset(&self) {
        let old = self.live.lock().await.take();
        Self::close_in_background(old);
    }

    /// Forgets the current connection if it is still `connection` (another caller may
    /// have replaced it already).
    async fn reset_if_current(&self, connection: &Arc<Connection>) {
        let mut guard = self.live.lock().await;
        if guard
            .as_ref()
            .is_some_and(|live| Arc::ptr_eq(&live.connection, connection))
        {
            Self::close_in_background(guard.take());
        }
    }

    fn close_in_background(old: Option<Live>) {
        if let Some(old) = old {
            // Closing politely lets the broker requeue at once; if the broker is gone
            // the close fails, and dropping is all that is left to do.
            tokio::spawn(async move {
                let _ = old.connection.close(200, "reconnecting").await;
            });
        }
    }
}

/// A RabbitMQ work queue. See the [module docs](self) for the topology and the
/// reconnection behaviour.
pub struct RabbitQueue {
    uri: AMQPUri,
    /// The URL without credentials, for messages.
    display_url: String,
    work: String,
    exchange: String,
    dead: String,
    options: RabbitOptions,
    publisher: Link,
    consumer: Link,
}

impl std::fmt::Debug for RabbitQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitQueue")
            .field("url", &self.display_url)
            .field("queue", &self.work)
            .finish()
    }
}

impl RabbitQueue {
    /// Opens the queue `queue_name` on the broker at `url` with default options.
    ///
    /// Tries to connect once (for at most [`RabbitOptions::connect_timeout`]), so that
    /// a reachable broker has the queues declared before the first publish. Only a
    /// malformed URL is an error: if the broker cannot be reached now, this logs a
    /// warning and returns the queue anyway; it connects on first use.
    pub async fn connect(url: &str, queue_name: &str) -> Result<Self, QueueError> {
        Self::connect_with(url, queue_name, RabbitOptions::default()).await
    }

    /// [`RabbitQueue::connect`] with explicit options.
    pub async fn connect_with(
        url: &str,
        queue_name: &str,
        options: RabbitOptions,
    ) -> Result<Self, QueueError> {
        let queue = Self::new(url, queue_name, options)?;
        if let Err(error) = queue.publisher.live_or_connect(&queue).await {
            tracing::warn!(url = %queue.display_url, %error, "RabbitMQ not reachable yet; will connect on first use");
        }
        Ok(queue)
    }

    /// Builds the queue without any network I/O; it connects on first use.
    pub fn new(url: &str, queue_name: &str, options: RabbitOptions) -> Result<Self, QueueError> {
        let display_url = redact(url);
        let uri: AMQPUri = url.parse().map_err(|reason| QueueError::InvalidUrl {
            url: display_url.clone(),
            reason,
        })?;
        if queue_name.is_empty() {
            return Err(QueueError::InvalidUrl {
                url: display_url,
                reason: "the queue name is empty".to_string(),
            });
        }
        Ok(Self {
            uri,
            display_url,
            work: queue_name.to_string(),
            exchange: format!("{queue_name}.dlx"),
            dead: format!("{queue_name}.dead"),
            options,
            publisher: Link::new(Role::Publisher),
            consumer: Link::new(Role::Consumer),
        })
    }

    /// The work queue's name.
    pub fn name(&self) -> &str {
        &self.work
    }

    /// The dead-letter queue's name, `<name>.dead`.
    pub fn dead_letter_name(&self) -> &str {
        &self.dead
    }

    /// Connects if not connected; `Ok` means the broker is reachable and the queues are
    /// declared. For readiness checks.
    pub async fn ping(&self) -> Result<(), QueueError> {
        self.publisher.live_or_connect(self).await.map(drop)
    }

    /// Publishes raw message bodies (which need not be image ids: tests use this for
    /// poison messages) and waits for the broker to confirm all of them.
    pub async fn publish_raw(
        &self,
        bodies: &[Vec<u8>],
        headers: &Headers,
    ) -> Result<(), QueueError> {
        if bodies.is_empty() {
            return Ok(());
        }
        let live = self.publisher.live_or_connect(self).await?;
        match self.publish_on(&live, bodies, headers).await {
            // A connection that was fine when last used may have died since (the
            // broker restarted) without lapin noticing yet: replace it once, at once.
            // Messages confirmed before the failure are sent again; consumers treat
            // redelivery as harmless.
            Err(QueueError::Unavailable(reason)) if !live.fresh => {
                tracing::info!(%reason, "publish on a stale RabbitMQ connection failed; reconnecting");
                self.publisher.reset_if_current(&live.connection).await;
                let live = self.publisher.live_or_connect(self).await?;
                self.publish_on(&live, bodies, headers).await
            }
            other => other,
        }
    }

    /// One attempt at [`RabbitQueue::publish_raw`] on `live`.
    async fn publish_on(
        &self,
        live: &Live,
        bodies: &[Vec<u8>],
        headers: &Headers,
    ) -> Result<(), QueueError> {
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type("text/plain".into())
            .with_headers(field_table(headers));
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        // All publishes go out before any confirm is awaited: join_all polls them in
        // order, each writes its frames and then waits for its own confirm.
        let sends = bodies.iter().map(|body| {
            let channel = &live.channel;
            let properties = properties.clone();
            async move {
                channel
                    .basic_publish("", &self.work, options, body, properties)
                    .await?
                    .await
            }
        });
        let outcomes = match timeout(self.options.operation_timeout, future::join_all(sends)).await
        {
            Ok(outcomes) => outcomes,
            Err(_) => {
                self.publisher.reset_if_current(&live.connection).await;
                return Err(QueueError::Unavailable(format!(
                    "no confirms from {} within {:?}",
                    self.display_url, self.options.operation_timeout
                )));
            }
        };

        let (mut nacked, mut returned) = (0usize, 0usize);
        for outcome in outcomes {
            match outcome {
                Ok(Confirmation::Ack(None)) => {}
                Ok(Confirmation::Ack(Some(_))) => returned += 1,
                // Not requested cannot happen on a confirm channel; count it as
                // unconfirmed rather than assume the message is safe.
                Ok(Confirmation::Nack(_)) | Ok(Confirmation::NotRequested) => nacked += 1,
                Err(error) => return Err(lapin_error("publish", error)),
            }
        }
        if nacked + returned > 0 {
            return Err(QueueError::Refused {
                operation: "publish",
                reason: format!(
                    "of {} messages the broker nacked {nacked} and returned {returned} as unroutable",
                    bodies.len()
                ),
            });
        }
        Ok(())
    }

    /// Deletes the work queue, the dead-letter queue and the exchange. Meant for test
    /// clean-up: this queue is unusable afterwards.
    pub async fn delete(&self) -> Result<(), QueueError> {
        let live = self.publisher.live_or_connect(self).await?;
        let channel = &live.channel;
        let work = async {
            channel
                .queue_delete(&self.work, QueueDeleteOptions::default())
                .await?;
            channel
                .queue_delete(&self.dead, QueueDeleteOptions::default())
                .await?;
            channel
                .exchange_delete(&self.exchange, ExchangeDeleteOptions::default())
                .await
        };
        self.bounded("delete", work).await?;
        self.publisher.reset().await;
        self.consumer.reset().await;
        Ok(())
    }

    /// Ready messages in `queue`, by a passive declare on a throwaway channel (a
    /// passive declare of a missing queue closes its channel).
    async fn count(&self, queue: &str) -> Result<u64, QueueError> {
        let live = self.publisher.live_or_connect(self).await?;
        let work = async {
            let channel = live.connection.create_channel().await?;
            let declared = channel
                .queue_declare(
                    queue,
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let _ = channel.close(200, "done").await;
            Ok(u64::from(declared.message_count()))
        };
        self.bounded("queue.declare", work).await
    }

    /// Runs one broker operation under the operation timeout.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        work: impl std::future::Future<Output = lapin::Result<T>>,
    ) -> Result<T, QueueError> {
        match timeout(self.options.operation_timeout, work).await {
            Ok(result) => result.map_err(|e| lapin_error(operation, e)),
            Err(_) => Err(QueueError::Unavailable(format!(
                "{operation} on {} took longer than {:?}",
                self.display_url, self.options.operation_timeout
            ))),
        }
    }

    /// Opens a connection for `role`, with its main channel, and declares the topology.
    async fn open_link(&self, role: Role) -> Result<Live, QueueError> {
        let name = format!(
            "{} {} {}",
            self.options.connection_name,
            role.as_str(),
            self.work
        );
        let properties = ConnectionProperties::default()
            .with_connection_name(name.into())
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio);
        let work = async {
            let connection = Connection::connect_uri(self.uri.clone(), properties)
                .await
                .map_err(|e| lapin_error("connect", e))?;
            let channel = self.open_channel(&connection, role).await?;
            Ok::<_, QueueError>(Live {
                connection: Arc::new(connection),
                channel,
                fresh: true,
            })
        };
        match timeout(self.options.connect_timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(QueueError::Unavailable(format!(
                "connecting to {} took longer than {:?}",
                self.display_url, self.options.connect_timeout
            ))),
        }
    }

    /// Opens the main channel of a link and declares the topology on it.
    async fn open_channel(
        &self,
        connection: &Connection,
        role: Role,
    ) -> Result<Channel, QueueError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| lapin_error("channel.open", e))?;
        if role == Role::Publisher {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| lapin_error("confirm.select", e))?;
        }
        self.declare(&channel).await?;
        Ok(channel)
    }

    async fn declare(&self, channel: &Channel) -> Result<(), QueueError> {
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                &self.exchange,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| lapin_error("exchange.declare", e))?;
        channel
            .queue_declare(&self.dead, durable, FieldTable::default())
            .await
            .map_err(|e| lapin_error("queue.declare", e))?;
        channel
            .queue_bind(
                &self.dead,
                &self.exchange,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| lapin_error("queue.bind", e))?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.exchange.as_str().into()),
        );
        channel
            .queue_declare(&self.work, durable, arguments)
            .await
            .map_err(|e| lapin_error("queue.declare", e))?;
        Ok(())
    }
}

impl Link {
    /// The live connection, connecting (or reopening a closed main channel) first if
    /// needed. Holding the lock while connecting makes concurrent callers share one
    /// new connection rather than race to open several.
    async fn live_or_connect(&self, queue: &RabbitQueue) -> Result<Live, QueueError> {
        let mut guard = self.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.connection.status().connected() {
                if live.channel.status().connected() {
                    return Ok(live.clone());
                }
                // A channel error (e.g. a refused declaration) closes only the channel.
                let reopened = timeout(
                    queue.options.connect_timeout,
                    queue.open_channel(&live.connection, self.role),
                )
                .await;
                if let Ok(Ok(channel)) = reopened {
                    let live = Live {
                        connection: Arc::clone(&live.connection),
                        channel,
                        fresh: false,
                    };
                    *guard = Some(live.clone());
                    return Ok(Live {
                        fresh: true,
                        ..live
                    });
                }
            }
            tracing::info!(role = self.role.as_str(), url = %queue.display_url, "RabbitMQ connection lost; reconnecting");
        }
        *guard = None;
        let live = queue.open_link(self.role).await?;
        tracing::debug!(role = self.role.as_str(), url = %queue.display_url, "connected to RabbitMQ");
        *guard = Some(Live {
            fresh: false,
            ..live.clone()
        });
        Ok(live)
    }
}

#[async_trait]
impl WorkQueue for RabbitQueue {
    async fn publish(&self, ids: &[i64], headers: &Headers) -> Result<(), QueueError> {
        let bodies: Vec<Vec<u8>> = ids.iter().map(|id| id.to_string().into_bytes()).collect();
        self.publish_raw(&bodies, headers).await
    }

    async fn consume(&self, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
        let live = self.consumer.live_or_connect(self).await?;
        match self.subscribe(&live, prefetch).await {
            // As in publish: a stale connection is replaced once, at once.
            Err(QueueError::Unavailable(reason)) if !live.fresh => {
                tracing::info!(%reason, "subscribing on a stale RabbitMQ connection failed; reconnecting");
                self.consumer.reset_if_current(&live.connection).await;
                let live = self.consumer.live_or_connect(self).await?;
                self.subscribe(&live, prefetch).await
            }
            other => other,
        }
    }

    async fn depth(&self) -> Result<u64, QueueError> {
        self.count(&self.work).await
    }

    async fn dead_letter_depth(&self) -> Result<u64, QueueError> {
        self.count(&self.dead).await
    }
}

impl RabbitQueue {
    /// Opens a channel on `live` with the prefetch bound and subscribes on it.
    async fn subscribe(&self, live: &Live, prefetch: u16) -> Result<Box<dyn Consumer>, QueueError> {
        let tag = format!("facewire-{}", uuid::Uuid::new_v4());
        let subscribe = async {
            let channel = live.connection.create_channel().await?;
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    &self.work,
                    &tag,
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok((channel, consumer))
        };
        let (channel, inner) = self.bounded("basic.consume", subscribe).await?;
        Ok(Box::new(RabbitConsumer { channel, inner }))
    }
}

/// A subscription on its own channel. Dropping it cancels the subscription; the
/// channel stays open until its last delivery is settled or dropped.
struct RabbitConsumer {
    channel: Channel,
    inner: lapin::Consumer,
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Result<Delivery, QueueError> {
        match self.inner.next().await {
            Some(Ok(delivery)) => Ok(Delivery::new(
                delivery.data,
                text_headers(delivery.properties.headers().as_ref()),
                delivery.redelivered,
                Box::new(RabbitAcker {
                    acker: delivery.acker,
                    channel: self.channel.clone(),
                    settled: AtomicBool::new(false),
                }),
            )),
            Some(Err(error)) => Err(lapin_error("basic.consume", error)),
            // The stream ends after an error, or when the broker cancels the
            // subscription (its queue was deleted).
            None if self.channel.status().connected() => Err(QueueError::Closed),
            None => Err(QueueError::Unavailable(
                "the consumer's channel closed".to_string(),
            )),
        }
    }
}

/// Settles a RabbitMQ delivery. It holds the channel so that the channel (and with it
/// the delivery) stays open while the delivery is being worked on.
struct RabbitAcker {
    acker: lapin::acker::Acker,
    channel: Channel,
    settled: AtomicBool,
}

#[async_trait]
impl Acker for RabbitAcker {
    async fn ack(&self) -> Result<(), QueueError> {
        self.settled.store(true, Ordering::SeqCst);
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| lapin_error("basic.ack", e))
    }

    async fn requeue(&self) -> Result<(), QueueError> {
        self.settled.store(true, Ordering::SeqCst);
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .map_err(|e| lapin_error("basic.nack", e))
    }

    async fn dead_letter(&self) -> Result<(), QueueError> {
        self.settled.store(true, Ordering::SeqCst);
        self.acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map_err(|e| lapin_error("basic.reject", e))
    }
}

impl Drop for RabbitAcker {
    fn drop(&mut self) {
        // Unsettled (the task holding it failed): give it back now instead of holding a
        // prefetch slot until the channel closes.
        if self.settled.load(Ordering::SeqCst) || !self.channel.status().connected() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let acker = self.acker.clone();
            runtime.spawn(async move {
                let options = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                if let Err(error) = acker.nack(options).await {
                    tracing::debug!(%error, "requeue of a dropped delivery failed; the broker requeues it when the channel closes");
                }
            });
        }
    }
}

/// Maps a lapin error: a broker refusal is [`QueueError::Refused`]; anything else (I/O,
/// a closed connection or channel, the broker closing the connection because it is
/// stopping) means the broker is unavailable, and trying again later may work.
fn lapin_error(operation: &'static str, error: lapin::Error) -> QueueError {
    match error {
        lapin::Error::ProtocolError(amqp)
            if !matches!(
                amqp.kind(),
                AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED)
            ) =>
        {
            QueueError::Refused {
                operation,
                reason: amqp.to_string(),
            }
        }
        other => QueueError::Unavailable(format!("{operation}: {other}")),
    }
}

fn field_table(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            ShortString::from(name.as_str()),
            AMQPValue::LongString(LongString::from(value.as_str())),
        );
    }
    table
}

/// The text headers of a message; headers of other types (such as the broker's own
/// `x-death` table) are left out.
fn text_headers(table: Option<&FieldTable>) -> Headers {
    let mut headers = Headers::new();
    for (name, value) in table.into_iter().flat_map(|t| t.inner()) {
        let text = match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.as_str().to_string(),
            _ => continue,
        };
        headers.insert(name.as_str().to_string(), text);
    }
    headers
}

/// `url` without the password, for logs and errors.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1/%2f"), "amqp://127.0.0.1/%2f");
    }

    #[test]
    fn headers_round_trip_through_a_field_table() {
        let headers = Headers::from([
            ("traceparent".to_string(), "00-1-2-01".to_string()),
            ("empty".to_string(), String::new()),
        ]);
        let mut table = field_table(&headers);
        table.insert("x-death".into(), AMQPValue::LongLongInt(3));
        assert_eq!(text_headers(Some(&table)), headers);
        assert_eq!(text_headers(None), Headers::new());
    }

    #[test]
    fn a_malformed_url_is_invalid() {
        let error =
            RabbitQueue::new("amqp://guest:pw@[::1", "q", RabbitOptions::default()).unwrap_err();
        match error {
            QueueError::InvalidUrl { url, .. } => assert!(!url.contains("pw"), "{url}"),
            other => panic!("expected InvalidUrl, got {other:?}"),
        }
        assert!(matches!(
            RabbitQueue::new("amqp://127.0.0.1/%2f", "", RabbitOptions::default()),
            Err(QueueError::InvalidUrl { .. })
        ));
    }
}
