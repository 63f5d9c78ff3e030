//! The server side of every request: trace context, span, one log line, gRPC metrics.

use std::{
    borrow::Cow,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Instant,
};

use tower::{Layer, Service};
use tracing::Instrument;

use crate::trace_context::{self, TraceContext};

/// What a server speaks, for the span name, the outcome and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Grpc,
    Http,
}

/// Wraps every request a server handles:
///
/// - continues the caller's trace from its `traceparent` header, or starts a trace when
///   the header is missing or malformed, and makes that context current for the handler
///   (see [`crate::trace_context`]);
/// - runs the handler in a span carrying `trace_id` and `span_id` (`grpc{method}` or
///   `http{method, path}`);
/// - logs one line when the request finishes, with its outcome (the gRPC code or the
///   HTTP status) and duration: at info level, or at debug level for health checks,
///   reflection, probes and scrapes;
/// - for gRPC, records `grpc_server_requests_total{method,code}` and
///   `grpc_server_request_duration_seconds{method}`.
///
/// The gRPC code is read from the response headers: tonic answers a failed unary call
/// with a trailers-only response whose headers carry `grpc-status`; a response without
/// it started successfully and counts as `OK`.
#[derive(Debug, Clone, Copy)]
pub struct RequestTelemetryLayer {
    protocol: Protocol,
    also_routine: fn(&str) -> bool,
}

impl RequestTelemetryLayer {
    /// For a gRPC server.
    pub fn grpc() -> Self {
        Self {
            protocol: Protocol::Grpc,
            also_routine: |_| false,
        }
    }

    /// For an HTTP server.
    pub fn http() -> Self {
        Self {
            protocol: Protocol::Http,
            also_routine: |_| false,
        }
    }

    /// Also logs requests whose path `routine` accepts at debug level only: a server's
    /// own high-volume, low-interest routes (a page's thumbnails and assets, say).
    pub fn quiet(self, routine: fn(&str) -> bool) -> Self {
        Self {
            also_routine: routine,
            ..self
        }
    }
}

impl<S> Layer<S> for RequestTelemetryLayer {
    type Service = RequestTelemetry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestTelemetry {
            inner,
            protocol: self.protocol,
            also_routine: self.also_routine,
        }
    }
}

/// The service made by [`RequestTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct RequestTelemetry<S> {
    inner: S,
    protocol: Protocol,
    also_routine: fn(&str) -> bool,
}

impl<S, B, RB> Service<http::Request<B>> for RequestTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let context = TraceContext::incoming(req.headers());
        let path = req.uri().path().to_string();
        let span = match self.protocol {
            Protocol::Grpc => tracing::info_span!(
                "grpc",
                method = %path,
                trace_id = %context.trace_id(),
                span_id = %context.span_id(),
            ),
            Protocol::Http => tracing::info_span!(
                "http",
                method = %req.method(),
                path = %path,
                trace_id = %context.trace_id(),
                span_id = %context.span_id(),
            ),
        };
        let protocol = self.protocol;
        let routine = is_routine(&path) || (self.also_routine)(&path);
        let started = Instant::now();
        // A handler may do work before its future is first polled: give it the context
        // and the span already.
        let fut = trace_context::sync_scope(context, || span.in_scope(|| self.inner.call(req)));
        let finished = async move {
            let result = fut.await;
            let elapsed = started.elapsed().as_secs_f64();
            let outcome: Cow<'static, str> = match (&result, protocol) {
                (Ok(resp), Protocol::Grpc) => grpc_code(resp.headers()).into(),
                (Err(_), Protocol::Grpc) => "UNKNOWN".into(),
                (Ok(resp), Protocol::Http) => resp.status().as_u16().to_string().into(),
                (Err(_), Protocol::Http) => "error".into(),
            };
            if protocol == Protocol::Grpc {
                metrics::histogram!("grpc_server_request_duration_seconds", "method" => path.clone())
                    .record(elapsed);
                metrics::counter!("grpc_server_requests_total", "method" => path.clone(), "code" => outcome.clone())
                    .increment(1);
            }
            let elapsed_ms = elapsed * 1000.0;
            if routine {
                tracing::debug!(%outcome, elapsed_ms, "request finished");
            } else {
                tracing::info!(%outcome, elapsed_ms, "request finished");
            }
            result
        };
        Box::pin(trace_context::scope(context, finished.instrument(span)))
    }
}

/// Requests too frequent and too dull to log at info: health checks, reflection, probes
/// and scrapes.
fn is_routine(path: &str) -> bool {
    path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.")
        || matches!(path, "/metrics" | "/healthz" | "/readyz")
}

/// The gRPC code of a response, by its headers (see [`RequestTelemetryLayer`]).
fn grpc_code(headers: &http::HeaderMap) -> &'static str {
    code_name(
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0"),
    )
}

fn code_name(numeric: &str) -> &'static str {
    match numeric {
        "0" => "OK",
        "1" => "CANCELLED",
        "2" => "UNKNOWN",
        "3" => "INVALID_ARGUMENT",
        "4" => "DEADLINE_EXCEEDED",
        "5" => "NOT_FOUND",
        "6" => "ALREADY_EXISTS",
        "7" => "PERMISSION_DENIED",
        "8" => "RESOURCE_EXHAUSTED",
        "9" => "FAILED_PRECONDITION",
        "10" => "ABORTED",
        "11" => "OUT_OF_RANGE",
        "12" => "UNIMPLEMENTED",
        "13" => "INTERNAL",
        "14" => "UNAVAILABLE",
        "15" => "DATA_LOSS",
        "16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace_context::tests::{recorder, request, GOOD};
    use tower::ServiceExt;

    #[test]
    fn maps_codes() {
        assert_eq!(code_name("0"), "OK");
        assert_eq!(code_name("14"), "UNAVAILABLE");
        assert_eq!(code_name("x"), "UNKNOWN");
    }

    #[tokio::test]
    async fn continues_the_callers_trace() {
        let svc = RequestTelemetryLayer::grpc().layer(recorder());
        let (seen, _) = svc.oneshot(request(Some(GOOD))).await.unwrap().into_body();
        let seen = seen.expect("a current context in the handler");
        assert_eq!(
            seen.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(seen.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[tokio::test]
    async fn starts_a_trace_for_bad_or_missing_headers() {
        let mut ids = std::collections::HashSet::new();
        for header in [
            None,
            Some("00-zz-zz-01"),
            Some(GOOD.to_uppercase().as_str()),
        ] {
            let svc = RequestTelemetryLayer::http().layer(recorder());
            let (seen, _) = svc.oneshot(request(header)).await.unwrap().into_body();
            let seen = seen.expect("a current context in the handler");
            assert_ne!(
                seen.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            ids.insert(seen.trace_id());
        }
        assert_eq!(ids.len(), 3, "a new trace each time: {ids:?}");
    }
}
