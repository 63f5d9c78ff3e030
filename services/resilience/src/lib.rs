//! Client-side resilience for calls between facewire services, built in one place.
//!
//! [`balanced_channel`] spreads calls over every endpoint behind the configured URLs
//! (HTTP/2 pins a connection to one pod behind a plain Kubernetes Service, so balancing
//! happens here, over the addresses a headless Service's DNS name resolves to), each
//! call to the less busy of two replicas, leaving out for a while one whose connection
//! fails ([`balance`]). On top of
//! a typed call, [`stack`] composes, outermost first:
//!
//! 1. a concurrency limit (back-pressure instead of an unbounded pile of requests),
//! 2. retries of transient failures, drawn from a budget so retries never multiply load,
//! 3. a circuit breaker (open after consecutive failures; one half-open probe),
//! 4. a per-attempt timeout.
//!
//! [`ResilientClient`] puts every RPC of a generated client through one such stack, and
//! [`Backoff`] is the one exponential backoff with jitter that every retry loop uses.

use std::{
    any::Any,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use backon::{BackoffBuilder, ExponentialBuilder};
use facewire_proto::ClientOptions;
use futures::SinkExt;
use tokio::time::Instant;
use tower::{
    discover::Change,
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
    /// Pauses between retries of one call.
    pub retry_backoff: Backoff,
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
            retry_backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
        }
    }
}

/// Exponential backoff with jitter: the `n`-th pause is `min × 2ⁿ⁻¹`, capped at `max`,
/// plus a random share (0–100 %) of itself, so clients that failed together do not
/// retry together. The one backoff of facewire: every retry or reconnect loop asks it
/// for its pauses.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    builder: ExponentialBuilder,
}

impl Backoff {
    /// Pauses from `min` up to `max` (before jitter; `max` below `min` means `min`).
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            builder: ExponentialBuilder::new()
                .with_min_delay(min)
                .with_max_delay(max.max(min))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        }
    }

    /// The endless sequence of pauses: start a new one after each success.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        self.builder.build()
    }

    /// The pause before the retry following the `attempt`-th failure (1 for the first;
    /// 0 counts as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        let nth = attempt.clamp(1, 64) as usize - 1;
        self.delays().nth(nth).unwrap_or_default()
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

pub mod balance;

pub use balance::BalancedChannel;

/// A channel balancing over every address behind `urls` (comma-separated
/// `http://host:port` or `https://host:port`). Names are re-resolved every `refresh`, so
/// replicas that come and go are followed. `https://` endpoints speak TLS with `options`;
/// each address is dialled directly, and its certificate verified against the host name
/// of the URL it was resolved from (pod addresses are not in certificates).
pub fn balanced_channel(
    urls: &str,
    refresh: Duration,
    options: &ClientOptions,
) -> Result<BalancedChannel, ChannelError> {
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
    let (channel, mut tx) = balance::channel();
    // A replica whose connection failed waits this long (growing) before it is preferred
    // again.
    let failing = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
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
                            let replica = balance::Replica::new(ep.connect_lazy(), failing);
                            if tx.send(Ok(Change::Insert(*addr, replica))).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(%uri, error = %e, "cannot use endpoint"),
                    }
                }
            }
            for gone in current.iter().filter(|a| !addrs.contains(a)) {
                if tx.send(Ok(Change::Remove(*gone))).await.is_err() {
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
    stack_with(svc, config, breaker, |_| true)
}

/// [`stack`], retrying only the requests for which `may_retry` says so.
fn stack_with<S, Req>(
    svc: S,
    config: &ResilienceConfig,
    breaker: BreakerLayer,
    may_retry: fn(&Req) -> bool,
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
            done: 0,
            backoff: config.retry_backoff,
            may_retry,
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

/// Retries transient failures while the budget allows, pausing as `backoff` says.
struct RetryTransient<Req> {
    budget: Arc<TpsBudget>,
    left: u32,
    /// Retries made so far for this call.
    done: u32,
    backoff: Backoff,
    may_retry: fn(&Req) -> bool,
}

impl<Req> Clone for RetryTransient<Req> {
    fn clone(&self) -> Self {
        Self {
            budget: self.budget.clone(),
            left: self.left,
            done: self.done,
            backoff: self.backoff,
            may_retry: self.may_retry,
        }
    }
}

impl<Req: Clone, Res> tower::retry::Policy<Req, Res, tonic::Status> for RetryTransient<Req> {
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
                self.done += 1;
                metrics::counter!("client_retries_total").increment(1);
                Some(tokio::time::sleep(self.backoff.delay(self.done)))
            }
            Err(_) => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // No copy, no retry: a call that must not run twice is never retried.
        (self.may_retry)(req).then(|| req.clone())
    }
}

/// A call refused by an open circuit breaker, without reaching the server. Travels as
/// the source of an `UNAVAILABLE` status (see [`is_breaker_open`]).
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker open: {breaker} is failing")]
pub struct BreakerOpen {
    /// The breaker's name.
    pub breaker: &'static str,
}

impl From<BreakerOpen> for tonic::Status {
    fn from(refusal: BreakerOpen) -> Self {
        let mut status = tonic::Status::unavailable(refusal.to_string());
        status.set_source(Arc::new(refusal));
        status
    }
}

/// Whether a status was produced by an open breaker (not worth retrying right away).
/// Decided by the [`BreakerOpen`] error it carries, never by its text: a server's answer
/// whose message happens to read like the breaker's is the server's answer.
pub fn is_breaker_open(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::Unavailable
        && std::error::Error::source(status).is_some_and(|e| e.is::<BreakerOpen>())
}

#[derive(Debug)]
enum BreakerState {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is out; its number tells it apart from probes let through later.
    HalfOpen {
        probe: u64,
    },
}

/// A circuit breaker: after `failures` consecutive transient failures it fails every
/// call at once for `cooldown`, then lets one probe through; its success closes it.
#[derive(Clone)]
pub struct BreakerLayer {
    state: Arc<Mutex<BreakerState>>,
    /// Numbers the probes.
    probes: Arc<std::sync::atomic::AtomicU64>,
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
            probes: Arc::new(std::sync::atomic::AtomicU64::new(0)),
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

/// What [`BreakerLayer::admit`] decided.
enum Admission {
    Refused,
    /// A call while closed.
    Call,
    /// The one half-open probe, with its number.
    Probe(u64),
}

impl BreakerLayer {
    /// Whether a call may go through now (moving Open → HalfOpen when the cooldown ends).
    fn admit(&self) -> Admission {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *st {
            BreakerState::Closed { .. } => Admission::Call,
            BreakerState::Open { until } if Instant::now() >= until => {
                let probe = self
                    .probes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                *st = BreakerState::HalfOpen { probe };
                self.gauge(1.0);
                Admission::Probe(probe)
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => Admission::Refused,
        }
    }

    /// A probe ended without an answer (its caller dropped it): the breaker learnt
    /// nothing, so the next call may probe at once instead of the breaker waiting for
    /// an answer that will never come.
    fn abandon(&self, probe: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*st, BreakerState::HalfOpen { probe: p } if p == probe) {
            *st = BreakerState::Open {
                until: Instant::now(),
            };
            self.gauge(2.0);
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
            BreakerState::HalfOpen { .. } => 1.0,
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
                    BreakerState::HalfOpen { .. } => Duration::from_millis(100),
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
        let probe = match self.shared.admit() {
            Admission::Refused => {
                let refusal = BreakerOpen {
                    breaker: self.shared.name,
                };
                return Box::pin(async move { Err(refusal.into()) });
            }
            Admission::Call => None,
            Admission::Probe(n) => Some(n),
        };
        let mut outcome = Outcome {
            shared: self.shared.clone(),
            probe,
            recorded: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let failed = matches!(&result, Err(status) if is_transient(status));
            outcome.record(!failed);
            result
        })
    }
}

/// Reports a call's end to the breaker even when the call is dropped unfinished (a
/// caller's timeout or cancellation): a dropped probe must not leave the breaker
/// half-open, refusing every call, for ever.
struct Outcome {
    shared: BreakerLayer,
    probe: Option<u64>,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, ok: bool) {
        self.shared.record(ok);
        self.recorded = true;
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        if let (false, Some(probe)) = (self.recorded, self.probe) {
            self.shared.abandon(probe);
        }
    }
}

/// A response of any type, as it travels through a [`ResilientClient`]'s stack.
type AnyResponse = Box<dyn Any + Send>;

/// Makes one RPC on a clone of the client.
type MakeCall<C> = Arc<
    dyn Fn(C) -> Pin<Box<dyn Future<Output = Result<AnyResponse, tonic::Status>> + Send>>
        + Send
        + Sync,
>;

/// One call through a [`ResilientClient`]: the RPC to make, and whether it may run twice.
struct Call<C> {
    make: MakeCall<C>,
    idempotent: bool,
}

impl<C> Clone for Call<C> {
    fn clone(&self) -> Self {
        Self {
            make: self.make.clone(),
            idempotent: self.idempotent,
        }
    }
}

/// A generated gRPC client whose every unary RPC goes through one resilience [`stack`]
/// (one concurrency limit, retry budget and breaker for all of its RPCs). Put it over
/// a [`balanced_channel`] to spread the calls over every replica.
pub struct ResilientClient<C> {
    svc: tower::util::BoxCloneSyncService<Call<C>, AnyResponse, tonic::Status>,
}

impl<C> Clone for ResilientClient<C> {
    fn clone(&self) -> Self {
        Self {
            svc: self.svc.clone(),
        }
    }
}

impl<C> std::fmt::Debug for ResilientClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResilientClient").finish_non_exhaustive()
    }
}

impl<C: Clone + Send + Sync + 'static> ResilientClient<C> {
    /// Calls through `client` with the settings of `config` and `breaker` (share one
    /// breaker between clients of the same servers).
    pub fn new(client: C, config: &ResilienceConfig, breaker: BreakerLayer) -> Self {
        let svc = tower::service_fn(move |call: Call<C>| (call.make)(client.clone()));
        Self {
            svc: stack_with(svc, config, breaker, |call: &Call<C>| call.idempotent),
        }
    }

    /// Makes the RPC `rpc` (e.g. `|mut c| async move { c.get_image(req).await }`),
    /// retrying transient failures: for reads and other calls that may run twice.
    pub async fn call<T, F, Fut>(&self, rpc: F) -> Result<T, tonic::Status>
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
        T: Send + 'static,
    {
        self.run(rpc, true).await
    }

    /// Makes the RPC `rpc` once, never retried: for calls that must not run twice
    /// (a retry after a timeout could repeat what the server already did).
    pub async fn call_once<T, F, Fut>(&self, rpc: F) -> Result<T, tonic::Status>
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
        T: Send + 'static,
    {
        self.run(rpc, false).await
    }

    async fn run<T, F, Fut>(&self, rpc: F, idempotent: bool) -> Result<T, tonic::Status>
    where
        F: Fn(C) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
        T: Send + 'static,
    {
        use tower::ServiceExt;
        let make: MakeCall<C> = Arc::new(move |client: C| {
            let fut = rpc(client);
            let boxed: Pin<Box<dyn Future<Output = Result<AnyResponse, tonic::Status>> + Send>> =
                Box::pin(async move {
                    fut.await
                        .map(|response| Box::new(response.into_inner()) as AnyResponse)
                });
            boxed
        });
        let response = self.svc.clone().oneshot(Call { make, idempotent }).await?;
        response
            .downcast::<T>()
            .map(|r| *r)
            .map_err(|_| tonic::Status::internal("unexpected response type"))
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

    /// A service that never answers its first `hang_first` calls and fails the rest
    /// with UNAVAILABLE, or answers them when `then_ok`.
    #[derive(Clone)]
    struct Hanging {
        calls: Arc<AtomicU32>,
        hang_first: u32,
        then_ok: bool,
    }

    impl Service<u32> for Hanging {
        type Response = u32;
        type Error = tonic::Status;
        type Future = Pin<Box<dyn Future<Output = Result<u32, tonic::Status>> + Send>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, req: u32) -> Self::Future {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let (hang, ok) = (n < self.hang_first, self.then_ok);
            Box::pin(async move {
                if hang {
                    futures::future::pending::<()>().await;
                }
                if ok {
                    Ok(req)
                } else {
                    Err(tonic::Status::unavailable("down"))
                }
            })
        }
    }

    #[test]
    fn a_status_that_merely_reads_like_the_breaker_is_not_the_breaker() {
        // A server (or a proxy) may answer with these very words: that is its answer,
        // to be retried like any UNAVAILABLE, not the local breaker refusing.
        let lookalike = tonic::Status::unavailable("circuit breaker open: recognition is failing");
        assert!(!is_breaker_open(&lookalike));
        let refusal = tonic::Status::from(BreakerOpen {
            breaker: "recognition",
        });
        assert!(is_breaker_open(&refusal), "{refusal:?}");
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_state_changes_on_a_paused_clock() {
        let (svc, calls) = flaky(3, tonic::Code::Unavailable);
        let breaker = BreakerLayer::new("t", 2, Duration::from_secs(10));
        let mut s = breaker.layer(svc);
        // Closed: failures go through until two in a row open it.
        for _ in 0..2 {
            let err = s.call(1).await.unwrap_err();
            assert!(!is_breaker_open(&err));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Open: refused without a call, for the whole cooldown.
        assert!(is_breaker_open(&s.call(1).await.unwrap_err()));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(is_breaker_open(&s.call(1).await.unwrap_err()));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // Cooldown over: one probe; it fails, so the breaker opens again.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!is_breaker_open(&s.call(1).await.unwrap_err()));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(is_breaker_open(&s.call(1).await.unwrap_err()));
        // `ready` waits out the cooldown; the next probe succeeds and closes the breaker.
        breaker.ready().await;
        assert_eq!(s.call(21).await.unwrap(), 42);
        assert_eq!(s.call(1).await.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_half_open_probe_lets_a_later_call_through() {
        let calls = Arc::new(AtomicU32::new(0));
        let breaker = BreakerLayer::new("t", 1, Duration::from_secs(5));
        let mut s = breaker.layer(Hanging {
            calls: calls.clone(),
            hang_first: 0,
            then_ok: false,
        });
        assert!(!is_breaker_open(&s.call(1).await.unwrap_err()));
        assert!(is_breaker_open(&s.call(1).await.unwrap_err()));
        tokio::time::advance(Duration::from_secs(5)).await;
        // The probe hangs and its caller gives up (drops the future).
        let mut s = breaker.layer(Hanging {
            calls: calls.clone(),
            hang_first: u32::MAX,
            then_ok: true,
        });
        let probe = s.call(1);
        assert!(tokio::time::timeout(Duration::from_secs(1), probe)
            .await
            .is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // The breaker learnt nothing from it: the next call is admitted as a new probe.
        let mut s = breaker.layer(Hanging {
            calls: calls.clone(),
            hang_first: 0,
            then_ok: true,
        });
        assert_eq!(s.call(7).await.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = backoff.delays().take(8).collect();
        // Each pause is its base (100 ms doubling, capped at 1 s) plus up to 100 % of it.
        let bases = [100, 200, 400, 800, 1000, 1000, 1000, 1000];
        for (delay, base) in delays.iter().zip(bases) {
            let base = Duration::from_millis(base);
            assert!(
                *delay >= base && *delay < base * 2,
                "{delay:?} for {base:?}"
            );
        }
        assert!(backoff.delay(0) < Duration::from_millis(200));
        assert!(backoff.delay(40) < Duration::from_secs(2));
        // Jittered: clients that failed together spread out.
        let firsts: std::collections::HashSet<Duration> =
            (0..20).map(|_| backoff.delay(1)).collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[tokio::test]
    async fn a_resilient_client_retries_only_calls_that_may_run_twice() {
        let (svc, calls) = flaky(1, tonic::Code::Unavailable);
        let config = ResilienceConfig::default();
        let client = ResilientClient::new(svc, &config, BreakerLayer::from_config("t", &config));
        let rpc = |mut c: Flaky| async move { c.call(4).await.map(tonic::Response::new) };
        assert_eq!(client.call(rpc).await.unwrap(), 8);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let (svc, calls) = flaky(1, tonic::Code::Unavailable);
        let client = ResilientClient::new(svc, &config, BreakerLayer::from_config("t", &config));
        let err = client.call_once(rpc).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
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
