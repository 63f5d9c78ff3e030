//! The RabbitMQ queue against the real broker (`$FACEWIRE_TEST_AMQP_URL`, default the
//! local RabbitMQ). Each test works on queues of its own (a unique name, deleted at
//! the end); one uses a throwaway vhost.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use facewire_queue::{
    testing::{amqp_url, unique_name, TestQueue, TestVhost},
    Consumer, Headers, QueueError, RabbitOptions, RabbitQueue, ResubscribingConsumer, WorkQueue,
};
use lapin::{options::BasicGetOptions, Connection, ConnectionProperties};
use tokio::{
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

/// A queue of the test's own. Field order matters: the queue's connections close
/// before its queues are deleted.
struct Fixture {
    queue: RabbitQueue,
    names: TestQueue,
}

async fn fixture() -> Fixture {
    let names = TestQueue::new("work");
    let queue = RabbitQueue::connect(names.url(), names.name())
        .await
        .unwrap();
    queue.ping().await.expect("the test broker is reachable");
    Fixture { queue, names }
}

fn trace_headers() -> Headers {
    Headers::from([(
        "traceparent".to_string(),
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_string(),
    )])
}

/// Polls `depth` until it equals `expected` (the broker moves dead letters
/// asynchronously), giving up after a bounded number of tries.
async fn wait_for_count<F, Fut>(expected: u64, mut depth: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, QueueError>>,
{
    let mut last = u64::MAX;
    for _ in 0..100 {
        last = depth().await.unwrap();
        if last == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

#[tokio::test]
async fn a_thousand_confirmed_ids_are_all_consumed() {
    let f = fixture().await;
    let ids: Vec<i64> = (1..=1000).collect();
    f.queue.publish(&ids, &trace_headers()).await.unwrap();
    assert_eq!(f.queue.depth().await.unwrap(), 1000);

    let mut consumer = f.queue.consume(100).await.unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < ids.len() {
        let delivery = consumer.next().await.unwrap();
        assert_eq!(delivery.headers, trace_headers());
        assert!(!delivery.redelivered);
        assert!(seen.insert(delivery.image_id().unwrap()), "duplicate");
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen, ids.into_iter().collect());
    assert_eq!(f.queue.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn an_empty_publish_is_a_no_op() {
    let f = fixture().await;
    f.queue.publish(&[], &Headers::new()).await.unwrap();
    assert_eq!(f.queue.depth().await.unwrap(), 0);
}

#[tokio::test]
async fn prefetch_bounds_unacknowledged_deliveries() {
    let f = fixture().await;
    f.queue
        .publish(&(1..=10).collect::<Vec<_>>(), &Headers::new())
        .await
        .unwrap();
    let mut consumer = f.queue.consume(3).await.unwrap();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(consumer.next().await.unwrap());
    }
    // The broker pushes deliveries without being asked; without the bound it would
    // have sent all ten together with the first three.
    assert_eq!(f.queue.depth().await.unwrap(), 7);

    held.remove(0).ack().await.unwrap();
    let fourth = consumer.next().await.unwrap();
    assert_eq!(fourth.image_id().unwrap(), 4);
    assert_eq!(f.queue.depth().await.unwrap(), 6);
}

#[tokio::test]
async fn two_consumers_share_the_work() {
    let f = fixture().await;
    f.queue.publish(&[1, 2], &Headers::new()).await.unwrap();
    let mut a = f.queue.consume(1).await.unwrap();
    let mut b = f.queue.consume(1).await.unwrap();
    let from_a = a.next().await.unwrap();
    let from_b = b.next().await.unwrap();
    let both: BTreeSet<i64> = [from_a.image_id().unwrap(), from_b.image_id().unwrap()].into();
    assert_eq!(both, BTreeSet::from([1, 2]));
}

#[tokio::test]
async fn requeue_redelivers() {
    let f = fixture().await;
    f.queue.publish(&[42], &trace_headers()).await.unwrap();
    let mut consumer = f.queue.consume(1).await.unwrap();

    let first = consumer.next().await.unwrap();
    assert!(!first.redelivered);
    first.requeue().await.unwrap();

    let again = consumer.next().await.unwrap();
    assert_eq!(again.image_id().unwrap(), 42);
    assert!(again.redelivered);
    assert_eq!(again.headers, trace_headers());
    again.ack().await.unwrap();
}

#[tokio::test]
async fn a_dropped_delivery_is_requeued() {
    let f = fixture().await;
    f.queue.publish(&[8], &Headers::new()).await.unwrap();
    let mut consumer = f.queue.consume(1).await.unwrap();
    drop(consumer.next().await.unwrap());
    // With prefetch 1 this only arrives once the dropped one was given back.
    let again = consumer.next().await.unwrap();
    assert_eq!(again.image_id().unwrap(), 8);
    assert!(again.redelivered);
}

#[tokio::test]
async fn dead_letter_lands_in_the_dead_queue() {
    let f = fixture().await;
    f.queue.publish(&[5, 6], &Headers::new()).await.unwrap();
    let mut consumer = f.queue.consume(1).await.unwrap();
    consumer.next().await.unwrap().dead_letter().await.unwrap();

    let queue = &f.queue;
    assert_eq!(wait_for_count(1, || queue.dead_letter_depth()).await, 1);
    assert_eq!(f.queue.depth().await.unwrap(), 0, "6 is with the consumer");

    // Look at it with a plain AMQP client: it is the first id, in `<name>.dead`.
    let connection = Connection::connect(f.names.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dead = channel
        .basic_get(f.queue.dead_letter_name(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a dead letter");
    assert_eq!(dead.delivery.data, b"5");
    connection.close(200, "done").await.unwrap();
}

#[tokio::test]
async fn a_garbage_body_is_reported_and_can_be_dead_lettered() {
    let f = fixture().await;
    f.queue
        .publish_raw(&[b"not-an-id".to_vec()], &Headers::new())
        .await
        .unwrap();
    f.queue.publish(&[3], &Headers::new()).await.unwrap();
    let mut consumer = f.queue.consume(1).await.unwrap();

    let poison = consumer.next().await.unwrap();
    match poison.image_id() {
        Err(QueueError::BadBody(body)) => assert_eq!(body, "not-an-id"),
        other => panic!("expected BadBody, got {other:?}"),
    }
    poison.dead_letter().await.unwrap();

    let next = consumer.next().await.unwrap();
    assert_eq!(next.image_id().unwrap(), 3);
    let queue = &f.queue;
    assert_eq!(wait_for_count(1, || queue.dead_letter_depth()).await, 1);
}

#[tokio::test]
async fn open_with_an_amqp_url_in_a_throwaway_vhost() {
    let vhost = TestVhost::create().expect("create a test vhost with rabbitmqctl");
    let name = unique_name("open");
    let queue = facewire_queue::open(Some(vhost.url()), &name)
        .await
        .unwrap();
    queue.publish(&[1, 2, 3], &Headers::new()).await.unwrap();
    assert_eq!(queue.depth().await.unwrap(), 3);
    assert_eq!(queue.dead_letter_depth().await.unwrap(), 0);

    // The vhost isolates: the same name on the default vhost is another, empty queue.
    let other = RabbitQueue::connect(&amqp_url(), &name).await.unwrap();
    assert_eq!(other.depth().await.unwrap(), 0);
    other.delete().await.unwrap();
}

#[tokio::test]
async fn a_refused_declaration_is_an_error_not_a_hang() {
    let names = TestQueue::new("taken");
    let name = names.name();
    // Someone else declared `<name>` without our dead-letter argument: the broker
    // refuses our declaration (PRECONDITION_FAILED).
    let connection = Connection::connect(names.url(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_declare(
            name,
            lapin::options::QueueDeclareOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let queue = RabbitQueue::connect(names.url(), name).await.unwrap();
    match queue.publish(&[1], &Headers::new()).await {
        Err(QueueError::Refused { operation, .. }) => assert_eq!(operation, "queue.declare"),
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_broker_is_unavailable_not_a_hang() {
    // Nothing listens on port 1.
    let queue = RabbitQueue::connect("amqp://guest:guest@127.0.0.1:1/%2f", "nowhere")
        .await
        .expect("connecting lazily does not fail");
    assert!(matches!(
        queue.publish(&[1], &Headers::new()).await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(matches!(
        queue.consume(1).await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(matches!(
        queue.depth().await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(matches!(
        queue.ping().await,
        Err(QueueError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_silent_broker_is_unavailable_after_the_connect_timeout() {
    // Accepts TCP connections and never says a word, like a hung broker.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            sockets.push(socket);
        }
    });
    let options = RabbitOptions {
        connect_timeout: Duration::from_millis(300),
        ..RabbitOptions::default()
    };
    let queue =
        RabbitQueue::new(&format!("amqp://guest:guest@{addr}/%2f"), "silent", options).unwrap();
    match queue.publish(&[1], &Headers::new()).await {
        Err(QueueError::Unavailable(reason)) => assert!(reason.contains("longer than"), "{reason}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    held.abort();
}

/// A TCP proxy to the broker that the test can cut (closing every connection through
/// it and refusing new ones) and restore, to break connections on purpose without
/// touching anyone else's.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (up, links) = (up.clone(), links.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection close
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut broker) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                        }
                    });
                    links.lock().unwrap().push(link.abort_handle());
                }
            })
            .abort_handle()
        };
        Self {
            addr,
            up,
            links,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (userinfo, hostpath) = rest.rsplit_once('@').unwrap_or(("", rest));
        let path = &hostpath[hostpath.find('/').unwrap_or(hostpath.len())..];
        let at = if userinfo.is_empty() { "" } else { "@" };
        format!("{scheme}://{userinfo}{at}{}{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The broker's address, from the test URL.
fn broker_addr(url: &str) -> SocketAddr {
    let uri: lapin::uri::AMQPUri = url.parse().unwrap();
    format!("{}:{}", uri.authority.host, uri.authority.port)
        .parse()
        .unwrap()
}

#[tokio::test]
async fn publish_and_consume_reconnect_after_the_connection_breaks() {
    let names = TestQueue::new("flaky");
    let proxy = Proxy::start(broker_addr(names.url())).await;
    let queue = RabbitQueue::connect(&proxy.url_for(names.url()), names.name())
        .await
        .unwrap();

    queue.publish(&[1], &Headers::new()).await.unwrap();
    let mut consumer = queue.consume(10).await.unwrap();
    let unacked = consumer.next().await.unwrap();
    assert_eq!(unacked.image_id().unwrap(), 1);

    proxy.cut();
    assert!(matches!(
        consumer.next().await,
        Err(QueueError::Unavailable(_))
    ));
    assert!(matches!(
        queue.publish(&[2], &Headers::new()).await,
        Err(QueueError::Unavailable(_))
    ));
    // Settling on the dead connection fails or goes nowhere; either way the broker
    // requeues the message because its channel closed.
    let _ = unacked.ack().await;

    proxy.restore();
    queue.publish(&[2], &Headers::new()).await.unwrap();
    let mut consumer = queue.consume(10).await.unwrap();
    let mut seen = BTreeSet::new();
    for _ in 0..2 {
        let delivery = consumer.next().await.unwrap();
        let id = delivery.image_id().unwrap();
        // 1 was delivered before the cut, so it comes back marked redelivered.
        assert_eq!(delivery.redelivered, id == 1, "id {id}");
        seen.insert(id);
        delivery.ack().await.unwrap();
    }
    assert_eq!(seen, BTreeSet::from([1, 2]));
}

#[tokio::test]
async fn a_resubscribing_consumer_rides_out_an_outage() {
    let names = TestQueue::new("outage");
    let proxy = Proxy::start(broker_addr(names.url())).await;
    let queue = Arc::new(
        RabbitQueue::connect(&proxy.url_for(names.url()), names.name())
            .await
            .unwrap(),
    );
    let mut consumer = ResubscribingConsumer::new(queue.clone(), 5)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200));

    queue.publish(&[1], &Headers::new()).await.unwrap();
    consumer.next().await.unwrap().ack().await.unwrap();

    proxy.cut();
    // The consumer notices, then keeps trying to subscribe while the broker is away.
    let waiting = tokio::spawn(async move {
        loop {
            let delivery = consumer.next().await?;
            let id = delivery.image_id()?;
            delivery.ack().await?;
            // The ack of 1 may not have reached the broker before the cut; then 1
            // comes back first, marked redelivered (at-least-once).
            if id != 1 {
                return Ok::<_, QueueError>(id);
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());

    proxy.restore();
    queue.publish(&[2], &Headers::new()).await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 2);
}

/// Closes, from the broker's side, the connections whose name mentions `queue` (ours
/// are named `facewire <role> <queue>`), as a broker shutting down does.
fn broker_closes_connections_of(queue: &str) -> usize {
    let run = |args: &[&str]| {
        let output = std::process::Command::new("rabbitmqctl")
            .args(args)
            .output()
            .expect("run rabbitmqctl");
        assert!(output.status.success(), "rabbitmqctl {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let listing = run(&["-q", "list_connections", "pid", "client_properties"]);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|line| line.contains(queue))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for pid in &pids {
        run(&["-q", "close_connection", pid, "test: broker going away"]);
    }
    pids.len()
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_is_unavailable_then_reconnects() {
    let f = fixture().await;
    let queue = Arc::new(f.queue);
    // Prefetch 1 each: while `plain` holds 1, the broker gives 2 to `resilient`
    // (which subscribes on its first `next()`), so both have a live subscription.
    let mut plain = queue.consume(1).await.unwrap();
    let mut resilient = ResubscribingConsumer::new(queue.clone(), 1)
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200));
    queue.publish(&[1, 2], &Headers::new()).await.unwrap();
    let first = plain.next().await.unwrap();
    let second = resilient.next().await.unwrap();
    first.ack().await.unwrap();
    second.ack().await.unwrap();

    assert_eq!(
        broker_closes_connections_of(f.names.name()),
        2,
        "publisher and consumer"
    );
    match plain.next().await {
        Err(QueueError::Unavailable(_)) => {}
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // Both publishing and the resilient consumer come back by themselves.
    queue.publish(&[3], &Headers::new()).await.unwrap();
    let third = resilient.next().await.unwrap();
    assert_eq!(third.image_id().unwrap(), 3);
    third.ack().await.unwrap();
}
