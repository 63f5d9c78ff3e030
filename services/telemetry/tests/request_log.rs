//! The request log line and metrics, checked through a scoped subscriber.
//!
//! This lives in its own test binary on purpose: `tracing` caches each callsite's
//! interest when it is first hit. In the library's unit tests another test thread can
//! hit the "request finished" callsite, with no subscriber of its own, while this test
//! is installing its subscriber; the callsite is then cached as uninteresting and this
//! test sees no log line at all (it failed that way on CI). Alone in its process, the
//! subscriber exists before the callsite is first registered.

use std::{
    convert::Infallible,
    io::Write,
    sync::{Arc, Mutex},
};

use facewire_telemetry::RequestTelemetryLayer;
use tower::{Layer, ServiceExt};

const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A `MakeWriter` collecting log output.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_the_trace_id_in_json_and_counts_the_call() {
    use tracing_subscriber::prelude::*;
    let metrics = facewire_telemetry::prometheus();
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::registry().with(
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(move || writer.clone()),
    );
    let _guard = tracing::subscriber::set_default(subscriber);
    let handler = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    });
    let request = http::Request::builder()
        .uri("/facewire.v1.ImageService/SubmitImages")
        .header("traceparent", GOOD)
        .body(())
        .unwrap();
    RequestTelemetryLayer::grpc()
        .layer(handler)
        .oneshot(request)
        .await
        .unwrap();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let first = logs.lines().next().expect("one log line for the request");
    let line: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(line["fields"]["message"], "request finished", "{line}");
    assert_eq!(line["fields"]["outcome"], "OK", "{line}");
    assert_eq!(line["span"]["name"], "grpc", "{line}");
    assert_eq!(
        line["span"]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_eq!(
        line["span"]["method"], "/facewire.v1.ImageService/SubmitImages",
        "{line}"
    );
    let text = metrics.render();
    assert!(
        text.contains(
            "grpc_server_requests_total{method=\"/facewire.v1.ImageService/SubmitImages\",code=\"OK\"}"
        ),
        "{text}"
    );
}
