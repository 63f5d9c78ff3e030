//! Client-side resilience for calls between facewire services, built in one place.
//!
//! [`balanced_channel`] spreads calls over every endpoint behind the configured URLs
//! (HTTP/2 pins a connection to one pod behind a plain Kubernetes Service, so balancing
//! happens here, over the addresses a headless Service's DNS name resolves to). On top of
//! a typed call, [`stack`] composes, outermost first:
//!
//! 1. a concurrency limit (back-pressure instead of an unbounded pile of requests),
//! 2. retries of transient failures, drawn from a budget so retries never multiply load,
//! 3. a circuit breaker (open after consecutive failures; one half-open probe),
//! 4. a per-attempt timeout.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use facewire_proto::ClientOptions;
use tonic::transport::{channel::Change, Channel};
use tower::{
    retry::budget::{Budget, TpsBudget},
    Layer, Service, ServiceBuilder,
};

/// Settings of the stack.
#[derive(Debug, Clone)]
pub struct ResilienceConfig {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Most calls in flight.
    pub concurrency: usize,
    /// Consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open before a probe.
    pub breaker_cooldown: Duration,
    /// Most retries of one call.
    pub max_retries: u32,
    /// Retries allowed per second on top of `retry_ratio` of successful calls.
    pub retry_min_per_sec: u32,
    /// Share of successful calls that may be retried.
    pub retry_ratio: f32,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            concurrency: 8,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
            max_retries: 2,
            retry_min_per_sec: 5,
            retry_ratio: 0.2,
        }
    }
}

/// Errors building a channel.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A URL could not be parsed.
    #[error("invalid endpoint URL {0:?}")]
    InvalidUrl(String),
    /// The TLS settings cannot serve a URL (e.g. `https://` without a CA).
    #[error(transparent)]
    Client(#[from] facewire_proto::ClientError),
}

/// Whether a failed call is worth retrying / counts against the breaker: the server was
/// unreachable, overloaded or slow, cancelled the call (as a draining server does with
/// calls it will not finish), or the connection closed or was reset under the call.
pub fn is_transient(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::Aborted
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => true,
        tonic::Code::Internal => is_connection_failure(status),
        _ => false,
    }
}

/// Whether an INTERNAL status stands for a broken connection rather than a server's
/// answer: tonic makes one, with the transport error as its source, from an HTTP/2 stream
/// or connection error (`h2 protocol error: ...`, e.g. the connection closed mid-call). A
/// server's own INTERNAL answer arrives as trailers and has no source.
fn is_connection_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some() || status.message().starts_with("h2 protocol error")
}

/// A channel balancing over every address behind `urls` (comma-separated
/// `http://host:port` or `https://host:port`). Names are re-resolved every `refresh`, so
/// replicas that come and go are followed. `https://` endpoints speak TLS with `options`;
/// each address is dialled directly, and its certificate verified against the host name
/// of the URL it was resolved from (pod addresses are not in certificates).
pub fn balanced_channel(
    urls: &str,
    refresh: Duration,
    options: &ClientOptions,
) -> Result<Channel, ChannelError> {
    let targets: Vec<(String, String, u16)> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            let uri: tonic::codegen::http::Uri = u
                .parse()
                .map_err(|_| ChannelError::InvalidUrl(u.to_string()))?;
            let scheme = uri.scheme_str().unwrap_or("http").to_string();
            let host = uri
                .host()
                .ok_or_else(|| ChannelError::InvalidUrl(u.to_string()))?
                .to_string();
            let port = uri
                .port_u16()
                .unwrap_or(if scheme == "https" { 443 } else { 80 });
            Ok((scheme, host, port))
        })
        .collect::<Result<_, ChannelError>>()?;
    if targets.is_empty() {
        return Err(ChannelError::InvalidUrl(urls.to_string()));
    }
    // Refuse unusable TLS settings now rather than on every connection attempt.
    for (scheme, host, port) in &targets {
        options.endpoint(&format!("{scheme}://{host}:{port}"))?;
    }
    let options = options.clone();
    let (channel, tx) = Channel::balance_channel::<SocketAddr>(64);
    tokio::spawn(async move {
        let mut current: Vec<SocketAddr> = Vec::new();
        loop {
            let mut resolved = Vec::new();
            for (scheme, host, port) in &targets {
                match tokio::net::lookup_host((host.as_str(), *port)).await {
                    Ok(addrs) => resolved.extend(addrs.map(|a| (scheme.clone(), host.clone(), a))),
                    Err(e) => tracing::warn!(%host, error = %e, "cannot resolve endpoint"),
                }
            }
            let addrs: Vec<SocketAddr> = resolved.iter().map(|(_, _, a)| *a).collect();
            for (scheme, host, addr) in &resolved {
                if !current.contains(addr) {
                    let uri = format!("{scheme}://{addr}");
                    match options.endpoint_resolved_from(&uri, host) {
                        Ok(ep) => {
                            let ep = ep
                                .connect_timeout(Duration::from_secs(2))
                                .tcp_nodelay(true)
                                .http2_keep_alive_interval(Duration::from_secs(30));
                            if tx.send(Change::Insert(*addr, ep)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(%uri, error = %e, "cannot use endpoint"),
                    }
                }
            }
            for gone in current.iter().filter(|a| !addrs.contains(a)) {
                if tx.send(Change::Remove(*gone)).await.is_err() {
                    return;
                }
            }
            // Keep the last known endpoints when resolution fails entirely.
            if !addrs.is_empty() {
                current = addrs;
            }
            metrics::gauge!("client_endpoints").set(current.len() as f64);
            tokio::time::sleep(refresh).await;
        }
    });
    Ok(channel)
}

/// Wraps a typed call `svc` in the resilience stack, with `breaker` (keep a clone to
/// wait for it with [`BreakerLayer::ready`]).
pub fn stack<S, Req>(
    svc: S,
    config: &ResilienceConfig,
    breaker: BreakerLayer,
) -> tower::util::BoxCloneSyncService<Req, S::Response, tonic::Status>
where
    S: Service<Req, Error = tonic::Status> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    Req: Clone + Send + 'static,
{
    let budget = Arc::new(TpsBudget::new(
        Duration::from_secs(10),
        config.retry_min_per_sec,
        config.retry_ratio,
    ));
    let timeout = config.timeout;
    let svc = ServiceBuilder::new()
        .concurrency_limit(config.concurrency)
        .layer(tower::retry::RetryLayer::new(RetryTransient {
            budget,
            left: config.max_retries,
            backoff: Duration::from_millis(100),
        }))
        .layer(breaker)
        .map_err(
            move |e: tower::BoxError| match e.downcast::<tonic::Status>() {
                Ok(status) => *status,
                Err(e) if e.is::<tower::timeout::error::Elapsed>() => {
                    tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}"))
                }
                Err(e) => tonic::Status::unavailable(e.to_string()),
            },
        )
        .timeout(timeout)
        .service(svc);
    tower::util::BoxCloneSyncService::new(svc)
}

/// Retries transient failures while the budget allows, with a growing pause.
#[derive(Clone)]
struct RetryTransient {
    budget: Arc<TpsBudget>,
    left: u32,
    backoff: Duration,
}

impl<Req: Clone, Res> tower::retry::Policy<Req, Res, tonic::Status> for RetryTransient {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Req,
        result: &mut Result<Res, tonic::Status>,
    ) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.budget.deposit();
                None
            }
            Err(status) if is_transient(status) && !is_breaker_open(status) && self.left > 0 => {
                if !self.budget.withdraw() {
                    return None;
                }
                self.left -= 1;
                metrics::counter!("client_retries_total").increment(1);
                let pause = self.backoff;
                self.backoff *= 2;
                Some(tokio::time::sleep(pause))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

const BREAKER_OPEN: &str = "circuit breaker open";

/// Whether a status was produced by an open breaker (not worth retrying right away).
pub fn is_breaker_open(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message().starts_with(BREAKER_OPEN)
}

#[derive(Debug)]
enum BreakerState {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen,
}

/// A circuit breaker: after `failures` consecutive transient failures it fails every
/// call at once for `cooldown`, then lets one probe through; its success closes it.
#[derive(Clone)]
pub struct BreakerLayer {
    state: Arc<Mutex<BreakerState>>,
    name: &'static str,
    failures: u32,
    cooldown: Duration,
}

impl BreakerLayer {
    /// A breaker named `name` (for metrics) with the settings of `config`.
    pub fn from_config(name: &'static str, config: &ResilienceConfig) -> Self {
        Self::new(name, config.breaker_failures, config.breaker_cooldown)
    }

    /// A breaker named `name` (for metrics).
    pub fn new(name: &'static str, failures: u32, cooldown: Duration) -> Self {
        Self {
            state: Arc::new(Mutex::new(BreakerState::Closed { failures: 0 })),
            name,
            failures: failures.max(1),
            cooldown,
        }
    }
}

impl<S> Layer<S> for BreakerLayer {
    type Service = Breaker<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Breaker {
            inner,
            shared: self.clone(),
        }
    }
}

/// The service made by [`BreakerLayer`].
#[derive(Clone)]
pub struct Breaker<S> {
    inner: S,
    shared: BreakerLayer,
}

impl BreakerLayer {
    /// Whether a call may go through now (moving Open → HalfOpen when the cooldown ends).
    fn admit(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *st {
            BreakerState::Closed { .. } => true,
            BreakerState::Open { until } if Instant::now() >= until => {
                *st = BreakerState::HalfOpen;
                self.gauge(1.0);
                true
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => false,
        }
    }

    fn record(&self, ok: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let next = match (&*st, ok) {
            (_, true) => BreakerState::Closed { failures: 0 },
            (BreakerState::Closed { failures }, false) if failures + 1 < self.failures => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            (_, false) => {
                tracing::warn!(breaker = self.name, cooldown = ?self.cooldown, "circuit breaker open");
                BreakerState::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
        self.gauge(match next {
            BreakerState::Closed { .. } => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open { .. } => 2.0,
        });
        *st = next;
    }

    fn gauge(&self, v: f64) {
        metrics::gauge!("client_breaker_state", "breaker" => self.name).set(v);
    }

    /// Waits until the breaker would admit a call (returns at once when closed).
    pub async fn ready(&self) {
        loop {
            let wait = {
                let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match *st {
                    BreakerState::Closed { .. } => return,
                    BreakerState::Open { until } => until.saturating_duration_since(Instant::now()),
                    BreakerState::HalfOpen => Duration::from_millis(100),
                }
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

impl<S, Req> Service<Req> for Breaker<S>
where
    S: Service<Req, Error = tonic::Status>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = tonic::Status;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, tonic::Status>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.shared.admit() {
            let name = self.shared.name;
            return Box::pin(async move {
                Err(tonic::Status::unavailable(format!(
                    "{BREAKER_OPEN}: {name} is failing"
                )))
            });
        }
        let shared = self.shared.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let failed = matches!(&result, Err(status) if is_transient(status));
            shared.record(!failed);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::ServiceExt;

    #[derive(Clone)]
    struct Flaky {
        calls: Arc<AtomicU32>,
        fail_first: u32,
        code: tonic::Code,
    }

    impl Service<u32> for Flaky {
        type Response = u32;
        type Error = tonic::Status;
        type Future = Pin<Box<dyn Future<Output = Result<u32, tonic::Status>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u32) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let (fail, code) = (n < self.fail_first, self.code);
            Box::pin(async move {
                if fail {
                    Err(tonic::Status::new(code, "down"))
                } else {
                    Ok(req * 2)
                }
            })
        }
    }

    fn flaky(fail_first: u32, code: tonic::Code) -> (Flaky, Arc<AtomicU32>) {
        let calls = Arc::new(AtomicU32::new(0));
        (
            Flaky {
                calls: calls.clone(),
                fail_first,
                code,
            },
            calls,
        )
    }

    #[test]
    fn a_call_cut_short_by_the_server_or_the_connection_is_transient() {
        let transient = [
            // A server draining for a restart cancels the calls it will not finish.
            tonic::Status::cancelled("the server is shutting down"),
            tonic::Status::unavailable("connection refused"),
            tonic::Status::deadline_exceeded("no answer within 30s"),
            // The connection closed or was reset under the call (tonic's own words).
            tonic::Status::internal("h2 protocol error: error reading a body from connection"),
            tonic::Status::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            tonic::Status::unknown("connection closed before message completed"),
        ];
        for status in &transient {
            assert!(is_transient(status), "{status:?}");
        }
        let permanent = [
            tonic::Status::invalid_argument("9 images in one request; at most 8"),
            tonic::Status::internal("the model failed"),
            tonic::Status::permission_denied("no"),
        ];
        for status in &permanent {
            assert!(!is_transient(status), "{status:?}");
        }
    }

    #[tokio::test]
    async fn retries_transient_failures() {
        let (svc, calls) = flaky(2, tonic::Code::Unavailable);
        let config = ResilienceConfig::default();
        let mut s = stack(svc, &config, BreakerLayer::from_config("t", &config));
        assert_eq!(s.ready().await.unwrap().call(21).await.unwrap(), 42);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn does_not_retry_permanent_failures() {
        let (svc, calls) = flaky(1, tonic::Code::InvalidArgument);
        let config = ResilienceConfig::default();
        let mut s = stack(svc, &config, BreakerLayer::from_config("t", &config));
        let err = s.ready().await.unwrap().call(1).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn breaker_opens_then_probes() {
        let (svc, calls) = flaky(1000, tonic::Code::Unavailable);
        let config = ResilienceConfig {
            breaker_failures: 3,
            breaker_cooldown: Duration::from_millis(200),
            max_retries: 0,
            ..ResilienceConfig::default()
        };
        let mut s = stack(svc, &config, BreakerLayer::from_config("t", &config));
        for _ in 0..3 {
            let _ = s.ready().await.unwrap().call(1).await;
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Open: fails fast without calling through.
        let err = s.ready().await.unwrap().call(1).await.unwrap_err();
        assert!(is_breaker_open(&err), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // After the cooldown one probe goes through.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = s.ready().await.unwrap().call(1).await;
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn https_endpoints_need_a_ca_up_front() {
        let none = ClientOptions::default();
        let refresh = Duration::from_secs(10);
        let err = balanced_channel(
            "http://127.0.0.1:1,https://recognition:50051",
            refresh,
            &none,
        )
        .unwrap_err();
        assert!(matches!(err, ChannelError::Client(_)), "{err}");
        assert!(balanced_channel("http://127.0.0.1:1", refresh, &none).is_ok());
        assert!(matches!(
            balanced_channel(" , ", refresh, &none),
            Err(ChannelError::InvalidUrl(_))
        ));
    }

    #[tokio::test]
    async fn timeouts_become_deadline_exceeded() {
        #[derive(Clone)]
        struct Slow;
        impl Service<u32> for Slow {
            type Response = u32;
            type Error = tonic::Status;
            type Future = Pin<Box<dyn Future<Output = Result<u32, tonic::Status>> + Send>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, r: u32) -> Self::Future {
                Box::pin(async move {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(r)
                })
            }
        }
        let config = ResilienceConfig {
            timeout: Duration::from_millis(50),
            max_retries: 0,
            ..ResilienceConfig::default()
        };
        let mut s = stack(Slow, &config, BreakerLayer::from_config("t", &config));
        let err = s.ready().await.unwrap().call(1).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
    }
}
