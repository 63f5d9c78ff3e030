//! Client-side balancing over every replica, by load.
//!
//! tonic's own balancing channel gives every endpoint the same load, so its power of two
//! choices is a coin toss: with a few long calls in flight (a recognition batch takes a
//! replica ~150 ms), one replica often queues two calls while the other sits idle. Here
//! each replica's load is its calls in flight, and a replica whose connection just failed
//! counts as fully loaded for a while (the one [`Backoff`], growing with consecutive
//! failures): the balancer sends calls to the least busy replica that works, and still
//! picks a failing one when nothing else is left, so calls fail fast (and are retried or
//! trip the breaker) rather than wait.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU32, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
};

use futures::channel::mpsc;
use tokio::time::Instant;
use tonic::{
    body::Body,
    codegen::http::{Request, Response},
    transport::Channel,
};
use tower::{balance::p2c::Balance, buffer::Buffer, discover::Change, load::Load, BoxError};

use crate::Backoff;

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// A channel over every replica (see [`crate::balanced_channel`]): cheap to clone, each
/// call sent to the less busy of two replicas.
#[derive(Clone)]
pub struct BalancedChannel(Buffer<Request<Body>, ResponseFuture>);

impl std::fmt::Debug for BalancedChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancedChannel").finish_non_exhaustive()
    }
}

impl tower::Service<Request<Body>> for BalancedChannel {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        Box::pin(self.0.call(request))
    }
}

/// Load added to a replica while its connection is failing: more than any real number
/// of calls in flight, so any working replica wins.
const FAILING: usize = 1 << 20;

/// Calls waiting for the balancer.
const BUFFER: usize = 1024;

/// Replica changes sent to the balancer.
pub(crate) type Changes = mpsc::Sender<Result<Change<SocketAddr, Replica>, Infallible>>;

/// A balanced channel and the sender of its replica changes.
pub(crate) fn channel() -> (BalancedChannel, Changes) {
    let (tx, rx) = mpsc::channel(64);
    let balance = Balance::new(rx);
    let service = tower::util::BoxService::new(balance);
    (BalancedChannel(Buffer::new(service, BUFFER)), tx)
}

#[derive(Debug, Default)]
struct Health {
    in_flight: AtomicUsize,
    failures: AtomicU32,
    failing_until: Mutex<Option<Instant>>,
}

/// One replica: its channel, its calls in flight and whether it is failing.
#[derive(Debug, Clone)]
pub(crate) struct Replica {
    channel: Channel,
    health: Arc<Health>,
    backoff: Backoff,
}

impl Replica {
    /// A replica reached through `channel`; `backoff` spaces the retries of a failing one.
    pub(crate) fn new(channel: Channel, backoff: Backoff) -> Self {
        Self {
            channel,
            health: Arc::default(),
            backoff,
        }
    }

    fn failing(&self) -> bool {
        let until = self
            .health
            .failing_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|t| Instant::now() < t)
    }
}

impl Load for Replica {
    type Metric = usize;

    fn load(&self) -> usize {
        let in_flight = self.health.in_flight.load(Ordering::Relaxed);
        if self.failing() {
            in_flight + FAILING
        } else {
            in_flight
        }
    }
}

/// Counts a call in flight until dropped.
struct InFlight(Arc<Health>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl tower::Service<Request<Body>> for Replica {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<Body>) -> ResponseFuture {
        self.health.in_flight.fetch_add(1, Ordering::Relaxed);
        let guard = InFlight(self.health.clone());
        let backoff = self.backoff;
        let call = self.channel.call(request);
        Box::pin(async move {
            let result = call.await;
            let health = &guard.0;
            match &result {
                // An answer, even a gRPC error, means the replica is reachable.
                Ok(_) => {
                    health.failures.store(0, Ordering::Relaxed);
                }
                // The channel fails a call only when the connection does.
                Err(_) => {
                    let n = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
                    *health
                        .failing_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now() + backoff.delay(n));
                }
            }
            drop(guard);
            result.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn replica() -> Replica {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        Replica::new(
            channel,
            Backoff::new(Duration::from_millis(200), Duration::from_secs(1)),
        )
    }

    #[tokio::test]
    async fn load_is_calls_in_flight_plus_a_penalty_while_failing() {
        use tower::{Service, ServiceExt};
        let mut r = replica();
        assert_eq!(r.load(), 0);
        let guard = {
            r.health.in_flight.fetch_add(1, Ordering::Relaxed);
            InFlight(r.health.clone())
        };
        assert_eq!(r.load(), 1);
        drop(guard);
        assert_eq!(r.load(), 0);
        // Nothing listens on port 1: the call fails at the connection.
        let request = Request::new(Body::empty());
        let result = r.ready().await.unwrap().call(request).await;
        assert!(result.is_err());
        assert!(r.load() >= FAILING, "a failing replica counts as loaded");
        assert_eq!(r.health.in_flight.load(Ordering::Relaxed), 0);
        // After the pause it competes again on its calls in flight.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert_eq!(r.load(), 0);
    }

    #[tokio::test]
    async fn a_replica_that_cannot_be_reached_stops_getting_calls() {
        use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        // A port that was free a moment ago: nothing listens on it.
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let channel = crate::balanced_channel(
            &format!("http://{live},http://{dead}"),
            Duration::from_secs(60),
            &facewire_proto::ClientOptions::default(),
        )
        .unwrap();
        let mut client = HealthClient::new(channel);
        let mut failed = 0;
        for _ in 0..40 {
            failed += usize::from(client.check(HealthCheckRequest::default()).await.is_err());
        }
        // tonic's own balancing (equal loads: a coin toss) sent about half of them there.
        assert!(
            failed <= 2,
            "{failed} of 40 calls went to the unreachable replica"
        );
    }
}
