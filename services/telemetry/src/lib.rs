//! Tracing, logs and Prometheus metrics for facewire services.

use std::sync::OnceLock;

use facewire_config::{LogConfig, LogFormat};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

mod grpc_metrics;

pub use grpc_metrics::GrpcMetricsLayer;

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

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static bucket list is non-empty");
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is already global (e.g. a test harness): keep a private one
            // so /metrics still renders.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
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
