//! Tracing, logs and Prometheus metrics for facewire services.

use std::sync::OnceLock;

use facewire_config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

mod request;
pub mod trace_context;

pub use request::RequestTelemetryLayer;
pub use trace_context::{InjectTraceContextLayer, TraceContext};

/// Histogram: seconds from an image's submission (its row's `created_at`) to the
/// processor writing its terminal state, labelled `outcome` (`done`, `no_face`, `failed`).
pub const SUBMIT_TO_DONE_SECONDS: &str = "facewire_submit_to_done_seconds";
/// Gauge: messages waiting in the work queue, sampled by the processor.
pub const QUEUE_DEPTH: &str = "facewire_queue_depth";
/// Gauge: messages in the dead-letter queue, sampled by the processor.
pub const DEAD_LETTER_DEPTH: &str = "facewire_queue_dead_letter_depth";

/// Buckets of request-scale histograms (RPC durations, recognition calls), in seconds.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of [`SUBMIT_TO_DONE_SECONDS`]: an image may wait for retries with backoff
/// and for the reconciler, so minutes are in range.
const PIPELINE_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Installs the global tracing subscriber. Later calls (several services in one process,
/// tests) are no-ops.
pub fn init_tracing(config: &LogConfig) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use. Every histogram has
/// buckets (rendered as a Prometheus histogram, not a summary).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        match builder().install_recorder() {
            Ok(handle) => handle,
            // Another recorder is already global (e.g. a test harness): keep a private one
            // so /metrics still renders.
            Err(_) => builder().build_recorder().handle(),
        }
    })
}

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(REQUEST_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(SUBMIT_TO_DONE_SECONDS.to_string()),
                PIPELINE_BUCKETS,
            )
        })
        .expect("static bucket lists are non-empty")
}

/// An axum router serving `GET /metrics` in Prometheus text format.
pub fn metrics_router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let handle = prometheus();
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            (
                [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                handle.render(),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_with_buckets() {
        let handle = prometheus();
        metrics::histogram!(SUBMIT_TO_DONE_SECONDS, "outcome" => "done").record(42.0);
        metrics::histogram!("grpc_server_request_duration_seconds", "method" => "/x/Y")
            .record(0.003);
        let text = handle.render();
        assert!(
            text.contains(&format!(
                "{SUBMIT_TO_DONE_SECONDS}_bucket{{outcome=\"done\",le=\"60\"}} 1"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{SUBMIT_TO_DONE_SECONDS}_bucket{{outcome=\"done\",le=\"30\"}} 0"
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "grpc_server_request_duration_seconds_bucket{method=\"/x/Y\",le=\"0.005\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("quantile="), "no summaries: {text}");
    }
}
