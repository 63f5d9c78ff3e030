//! W3C trace context (`traceparent`) carried across facewire's hops, without OpenTelemetry.
//!
//! A submission gets a trace id where it enters facewire (or keeps the one its caller
//! sent), and every hop records that id as the `trace_id` field of its `tracing` span, so
//! one id finds the submission's log lines in the receiver, the processor and recognition.
//!
//! - Servers: [`crate::RequestTelemetryLayer`] reads `traceparent` from the request (a
//!   missing or malformed header starts a new trace), opens a span carrying `trace_id`
//!   and `span_id`, and makes the context current while the handler runs.
//! - gRPC clients: [`InjectTraceContextLayer`], around the channel, writes the current
//!   context into every request's metadata.
//! - Queue messages: [`message_headers`] when publishing; [`TraceContext::incoming`] on a
//!   delivery's headers.
//!
//! The current context lives in a tokio task-local ([`scope`], [`current`]), not in span
//! data, so it propagates whatever the log filter is; spans only record it for the logs.
//! Each hop keeps the trace id and takes a new span id; the `traceparent` it sends names
//! its own span id as the parent, as the W3C format intends.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    task::{Context, Poll},
};

use tower::{Layer, Service};

/// The header (gRPC metadata key, HTTP header, AMQP message header) carrying the context.
pub const TRACEPARENT: &str = "traceparent";

/// The only `traceparent` version this module writes (and fully understands).
const VERSION: u8 = 0;
/// The `sampled` trace flag, set on traces started here.
const SAMPLED: u8 = 0x01;

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// A 16-byte trace id, shown as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// An 8-byte span id, shown as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a `traceparent` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {value:?}: {reason}")]
pub struct InvalidTraceParent {
    /// The value as received (truncated to 100 characters).
    pub value: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One hop's view of a trace: the trace id, this hop's span id and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: TraceId,
    span_id: SpanId,
    flags: u8,
}

impl TraceContext {
    /// A new trace (random trace and span ids, sampled).
    pub fn new_root() -> Self {
        Self {
            trace_id: TraceId(nonzero(random_u128)),
            span_id: SpanId(nonzero(|| random_u128() as u64)),
            flags: SAMPLED,
        }
    }

    /// The next hop of the same trace: same trace id and flags, a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: SpanId(nonzero(|| random_u128() as u64)),
            ..*self
        }
    }

    /// Parses a `traceparent` value: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`,
    /// lowercase. Versions above `00` are read by their first four fields, as the W3C
    /// specification asks; version `ff`, all-zero ids and anything else are refused.
    pub fn parse(value: &str) -> Result<Self, InvalidTraceParent> {
        let refuse = |reason| InvalidTraceParent {
            value: value.chars().take(100).collect(),
            reason,
        };
        let trimmed = value.trim_matches([' ', '\t']);
        let mut fields = trimmed.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(refuse("expected version-traceid-spanid-flags"));
        };
        let version = hex_field(version, 2).ok_or_else(|| refuse("version is not 2 hex digits"))?;
        if version == 0xff {
            return Err(refuse("version ff is forbidden"));
        }
        if version == u128::from(VERSION) && fields.next().is_some() {
            return Err(refuse("version 00 has exactly four fields"));
        }
        let trace = hex_field(trace, 32).ok_or_else(|| refuse("trace id is not 32 hex digits"))?;
        let span = hex_field(span, 16).ok_or_else(|| refuse("span id is not 16 hex digits"))?;
        let flags = hex_field(flags, 2).ok_or_else(|| refuse("flags are not 2 hex digits"))?;
        if trace == 0 {
            return Err(refuse("trace id is all zeros"));
        }
        if span == 0 {
            return Err(refuse("span id is all zeros"));
        }
        Ok(Self {
            trace_id: TraceId(trace),
            span_id: SpanId(span as u64),
            flags: flags as u8,
        })
    }

    /// The context a caller sent in `carrier`, if it sent a valid one. A malformed value
    /// is logged (debug) and ignored.
    pub fn extract(carrier: &impl Carrier) -> Option<Self> {
        let value = carrier.get(TRACEPARENT)?;
        match Self::parse(value) {
            Ok(context) => Some(context),
            Err(e) => {
                tracing::debug!(error = %e, "ignoring the traceparent header");
                None
            }
        }
    }

    /// This hop's context for work that arrived with `carrier`: the caller's trace with a
    /// new span id, or a new trace when the caller sent none (or a malformed one).
    pub fn incoming(carrier: &impl Carrier) -> Self {
        Self::extract(carrier)
            .map(|parent| parent.child())
            .unwrap_or_else(Self::new_root)
    }

    /// Writes this context into `carrier` as `traceparent`, replacing any value there.
    pub fn inject(&self, carrier: &mut impl Carrier) {
        carrier.set(TRACEPARENT, self.to_string());
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// This hop's span id.
    pub fn span_id(&self) -> SpanId {
        self.span_id
    }
}

/// The `traceparent` value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION:02x}-{}-{}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

/// Parses exactly `len` lowercase hex digits.
fn hex_field(field: &str, len: usize) -> Option<u128> {
    let lowercase_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
    if field.len() != len || !field.as_bytes().iter().all(lowercase_hex) {
        return None;
    }
    u128::from_str_radix(field, 16).ok()
}

/// 128 random bits. A v4 UUID fixes 6 of its bits; xor-ing one with another rotated by
/// 64 bits puts a random bit under each fixed one, in either half.
fn random_u128() -> u128 {
    uuid::Uuid::new_v4().as_u128() ^ uuid::Uuid::new_v4().as_u128().rotate_left(64)
}

/// Draws until the value is non-zero (all-zero ids are invalid).
fn nonzero<T: PartialEq + Default>(draw: impl Fn() -> T) -> T {
    loop {
        let value = draw();
        if value != T::default() {
            return value;
        }
    }
}

/// Where a context is read from and written to: HTTP headers / gRPC metadata, or queue
/// message headers (`facewire_queue::Headers` is a `BTreeMap<String, String>`).
pub trait Carrier {
    /// The text value of header `name`, if present.
    fn get(&self, name: &'static str) -> Option<&str>;
    /// Sets header `name` to `value`.
    fn set(&mut self, name: &'static str, value: String);
}

impl Carrier for http::HeaderMap {
    fn get(&self, name: &'static str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }

    fn set(&mut self, name: &'static str, value: String) {
        // A formatted context is always a valid header value.
        if let Ok(value) = http::HeaderValue::try_from(value) {
            self.insert(http::HeaderName::from_static(name), value);
        }
    }
}

impl Carrier for BTreeMap<String, String> {
    fn get(&self, name: &'static str) -> Option<&str> {
        BTreeMap::get(self, name).map(String::as_str)
    }

    fn set(&mut self, name: &'static str, value: String) {
        self.insert(name.to_string(), value);
    }
}

/// The context of the work this task is doing, if any (see [`scope`]).
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// Runs `work` with `context` as the current context.
pub async fn scope<F: Future>(context: TraceContext, work: F) -> F::Output {
    CURRENT.scope(context, work).await
}

/// Runs `work` (synchronous) with `context` as the current context.
pub(crate) fn sync_scope<R>(context: TraceContext, work: impl FnOnce() -> R) -> R {
    CURRENT.sync_scope(context, work)
}

/// Headers for queue messages published now: the current context, if any.
pub fn message_headers() -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    if let Some(context) = current() {
        context.inject(&mut headers);
    }
    headers
}

/// Client side: writes the current context (see [`scope`]) into every request as
/// `traceparent`, unless the request already carries one. Wrap a channel with it before
/// handing it to a generated client. Without a current context nothing is written and the
/// server starts a trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct InjectTraceContextLayer;

impl<S> Layer<S> for InjectTraceContextLayer {
    type Service = InjectTraceContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InjectTraceContext { inner }
    }
}

/// The service made by [`InjectTraceContextLayer`].
#[derive(Debug, Clone)]
pub struct InjectTraceContext<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for InjectTraceContext<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !req.headers().contains_key(TRACEPARENT) {
            if let Some(context) = current() {
                context.inject(req.headers_mut());
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::ServiceExt;

    /// The W3C specification's example.
    pub(crate) const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// What an inner service saw: the current context and the request's traceparent.
    pub(crate) type Seen = (Option<TraceContext>, Option<String>);

    /// A service answering with what it saw.
    pub(crate) fn recorder() -> impl Service<
        http::Request<()>,
        Response = http::Response<Seen>,
        Error = Infallible,
        Future = impl Future<Output = Result<http::Response<Seen>, Infallible>> + Send + 'static,
    > + Clone {
        tower::service_fn(|req: http::Request<()>| async move {
            let header = req
                .headers()
                .get(TRACEPARENT)
                .map(|v| v.to_str().unwrap().to_string());
            Ok::<_, Infallible>(http::Response::new((current(), header)))
        })
    }

    /// A `SubmitImages` request, with `traceparent` if given.
    pub(crate) fn request(traceparent: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri("/facewire.v1.ImageService/SubmitImages");
        if let Some(value) = traceparent {
            builder = builder.header(TRACEPARENT, value);
        }
        builder.body(()).unwrap()
    }

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let context = TraceContext::parse(GOOD).unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert_eq!(context.to_string(), GOOD);
        // Surrounding blanks are tolerated; unsampled flags are kept.
        let unsampled = GOOD.replace("-01", "-00");
        assert_eq!(
            TraceContext::parse(&format!(" {unsampled}\t"))
                .unwrap()
                .to_string(),
            unsampled
        );
    }

    #[test]
    fn refuses_malformed_values() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert!(TraceContext::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn reads_later_versions_by_their_first_four_fields() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more-fields";
        let context = TraceContext::parse(future).unwrap();
        assert_eq!(context.to_string(), GOOD, "written back as version 00");
    }

    #[test]
    fn new_roots_and_children() {
        let a = TraceContext::new_root();
        let b = TraceContext::new_root();
        assert_ne!(a.trace_id(), b.trace_id());
        assert!(TraceContext::parse(&a.to_string()).is_ok(), "{a}");
        assert!(
            a.to_string().ends_with("-01"),
            "new traces are sampled: {a}"
        );
        let child = a.child();
        assert_eq!(child.trace_id(), a.trace_id());
        assert_ne!(child.span_id(), a.span_id());
    }

    #[test]
    fn inject_then_extract_through_both_carriers() {
        let context = TraceContext::new_root();
        let mut headers = http::HeaderMap::new();
        context.inject(&mut headers);
        assert_eq!(TraceContext::extract(&headers), Some(context));
        let mut message = BTreeMap::new();
        context.inject(&mut message);
        assert_eq!(message[TRACEPARENT], context.to_string());
        assert_eq!(TraceContext::extract(&message), Some(context));
    }

    #[test]
    fn incoming_continues_a_valid_trace_and_starts_one_otherwise() {
        let mut message = BTreeMap::new();
        message.insert(TRACEPARENT.to_string(), GOOD.to_string());
        let continued = TraceContext::incoming(&message);
        assert_eq!(
            continued.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(continued.span_id().to_string(), "00f067aa0ba902b7");

        message.insert(TRACEPARENT.to_string(), "00-nonsense".to_string());
        let fresh = TraceContext::incoming(&message);
        assert_ne!(fresh.trace_id(), continued.trace_id());
        assert!(TraceContext::parse(&fresh.to_string()).is_ok());
        let none = TraceContext::incoming(&BTreeMap::new());
        assert_ne!(none.trace_id(), fresh.trace_id());
    }

    #[tokio::test]
    async fn message_headers_carry_the_current_context() {
        assert!(message_headers().is_empty());
        let context = TraceContext::new_root();
        let headers = scope(context, async { message_headers() }).await;
        assert_eq!(TraceContext::extract(&headers), Some(context));
    }

    #[tokio::test]
    async fn client_layer_injects_the_current_context_only() {
        let context = TraceContext::parse(GOOD).unwrap();
        let call = |req| InjectTraceContextLayer.layer(recorder()).oneshot(req);
        // Without a current context nothing is written.
        let (_, header) = call(request(None)).await.unwrap().into_body();
        assert_eq!(header, None);
        // With one, it is written.
        let (_, header) = scope(context, call(request(None)))
            .await
            .unwrap()
            .into_body();
        assert_eq!(header.as_deref(), Some(GOOD));
        // A header the caller set is left alone.
        let other = TraceContext::new_root().to_string();
        let (_, header) = scope(context, call(request(Some(&other))))
            .await
            .unwrap()
            .into_body();
        assert_eq!(header, Some(other));
    }
}
