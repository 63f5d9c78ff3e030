//! Observability across the real services, as separate processes on PostgreSQL and
//! RabbitMQ with JSON logs: one trace id follows an image from the receiver's
//! `SubmitImages` span, through the queue message, to the processor's batch span and
//! recognition's `RecognizeBatch` span; `/metrics` shows the pipeline's metrics.

use std::{collections::HashMap, time::Duration};

use facewire_integration::{photos, Backends, Service};
use facewire_proto::v1::{
    submit_result::Outcome, Image, ImagePath, ImageStatus, SubmitImagesRequest,
};
use serde_json::Value;

/// The trace a client sends (the W3C specification's example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

const SUBMIT: &str = "/facewire.v1.ImageService/SubmitImages";
const RECOGNIZE: &str = "/facewire.v1.RecognitionService/RecognizeBatch";

/// Recognition, a processor and a receiver on a fresh database and queue, logging JSON
/// at info level; `good0.jpg`, `good1.jpg` and `good2.jpg` are photos of one face.
struct Pipeline {
    backends: Backends,
    images: tempfile::TempDir,
    recognition: Service,
    processor: Service,
    receiver: Service,
}

async fn pipeline() -> Pipeline {
    let backends = Backends::production();
    let images = tempfile::tempdir().unwrap();
    for (i, photo) in photos("John_Salley").iter().take(3).enumerate() {
        std::fs::copy(photo, images.path().join(format!("good{i}.jpg"))).unwrap();
    }
    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_LOG_FORMAT".into(), "json".into());
    env.insert("FACEWIRE_LOG".into(), "info".into());
    let recognition = Service::spawn(&["recognition"], &env).await;
    env.insert("FACEWIRE_RECOGNITION_URL".into(), recognition.grpc_url());
    let processor = Service::spawn(&["processor"], &env).await;
    let receiver = Service::spawn(&["receiver"], &env).await;
    Pipeline {
        backends,
        images,
        recognition,
        processor,
        receiver,
    }
}

fn accepted_id(outcome: Option<&Outcome>) -> i64 {
    match outcome {
        Some(Outcome::Image(image)) => image.id,
        other => panic!("not accepted: {other:?}"),
    }
}

async fn wait_terminal(receiver: &Service, id: i64) -> Image {
    let mut client = receiver.client().await;
    let mut image = None;
    for _ in 0..300 {
        let current = client.get_image(id).await.unwrap();
        let terminal = [ImageStatus::Done, ImageStatus::NoFace, ImageStatus::Failed]
            .iter()
            .any(|s| *s as i32 == current.status);
        if terminal {
            return current;
        }
        image = Some(current);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("image {id} did not finish: {image:?}");
}

/// The spans of a JSON log line (`span` and every entry of `spans`); none for a line
/// that is not a JSON object.
fn spans(line: &str) -> Vec<Value> {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return Vec::new();
    };
    let mut spans: Vec<Value> = value["spans"].as_array().cloned().unwrap_or_default();
    if value["span"].is_object() {
        spans.push(value["span"].clone());
    }
    spans
}

/// Whether `line` was logged inside a span `name` whose `trace_id` is `trace_id` (or,
/// for a batch, whose `linked_trace_ids` lists it), with `method` if given.
fn in_trace(line: &str, name: &str, method: Option<&str>, trace_id: &str) -> bool {
    spans(line).iter().any(|span| {
        let linked = span["linked_trace_ids"]
            .as_str()
            .is_some_and(|ids| ids.split(',').any(|id| id == trace_id));
        span["name"] == name
            && (span["trace_id"] == trace_id || linked)
            && method.is_none_or(|m| span["method"] == m)
    })
}

/// Waits (logs are read asynchronously) until `service` has logged a line in the trace.
async fn assert_logged(
    service: &Service,
    who: &str,
    name: &str,
    method: Option<&str>,
    trace_id: &str,
) {
    for _ in 0..50 {
        if service
            .logs()
            .iter()
            .any(|l| in_trace(l, name, method, trace_id))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{who} logged no line in span {name} {method:?} with trace_id {trace_id}:\n{}",
        service.logs().join("\n")
    );
}

/// The trace ids of the receiver's `SubmitImages` spans.
fn submit_trace_ids(receiver: &Service) -> Vec<String> {
    let mut ids = Vec::new();
    for line in receiver.logs() {
        for span in spans(&line) {
            if span["name"] == "grpc" && span["method"] == SUBMIT {
                if let Some(id) = span["trace_id"].as_str() {
                    if !ids.iter().any(|known| known == id) {
                        ids.push(id.to_string());
                    }
                }
            }
        }
    }
    ids
}

async fn metrics(service: &Service) -> String {
    reqwest::get(format!("{}/metrics", service.http_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn one_trace_id_follows_an_image_through_every_service() {
    let p = pipeline().await;

    // A client that sends its own trace context.
    let mut client = p.receiver.client().await;
    let mut request = tonic::Request::new(SubmitImagesRequest {
        paths: vec![ImagePath {
            path: "good0.jpg".into(),
        }],
    });
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let response = client.raw().submit_images(request).await.unwrap();
    let id = accepted_id(response.get_ref().results[0].outcome.as_ref());
    let image = wait_terminal(&p.receiver, id).await;
    assert_eq!(image.status, ImageStatus::Done as i32, "{image:?}");

    assert_logged(&p.receiver, "receiver", "grpc", Some(SUBMIT), TRACE_ID).await;
    assert_logged(&p.processor, "processor", "batch", None, TRACE_ID).await;
    assert_logged(
        &p.recognition,
        "recognition",
        "grpc",
        Some(RECOGNIZE),
        TRACE_ID,
    )
    .await;

    // A client that sends none (and one that sends garbage): the receiver starts a
    // trace, and the other services join it.
    let results = client.submit_images(["good1.jpg"]).await.unwrap();
    let second = accepted_id(results[0].outcome.as_ref());
    wait_terminal(&p.receiver, second).await;
    let started: Vec<String> = submit_trace_ids(&p.receiver)
        .into_iter()
        .filter(|t| t != TRACE_ID)
        .collect();
    assert_eq!(started.len(), 1, "one new trace: {started:?}");
    let started = &started[0];
    assert!(
        started.len() == 32 && started.bytes().all(|b| b.is_ascii_hexdigit()),
        "{started}"
    );
    assert_logged(&p.processor, "processor", "batch", None, started).await;
    assert_logged(
        &p.recognition,
        "recognition",
        "grpc",
        Some(RECOGNIZE),
        started,
    )
    .await;

    let mut request = tonic::Request::new(SubmitImagesRequest {
        paths: vec![ImagePath {
            path: "good2.jpg".into(),
        }],
    });
    request
        .metadata_mut()
        .insert("traceparent", "00-not-a-trace-01".parse().unwrap());
    let response = client.raw().submit_images(request).await.unwrap();
    wait_terminal(
        &p.receiver,
        accepted_id(response.get_ref().results[0].outcome.as_ref()),
    )
    .await;
    let traces = submit_trace_ids(&p.receiver);
    assert_eq!(
        traces.len(),
        3,
        "a malformed header starts a trace: {traces:?}"
    );

    // The processor's metrics: queue depths (sampled at start and every 5 s), the
    // submit-to-done histogram with buckets, in-flight work and the breaker.
    let text = metrics(&p.processor).await;
    for expected in [
        "facewire_queue_depth ",
        "facewire_queue_dead_letter_depth ",
        "facewire_submit_to_done_seconds_bucket{outcome=\"done\",le=\"60\"} 3",
        "facewire_submit_to_done_seconds_count{outcome=\"done\"} 3",
        "processor_in_flight ",
        "client_breaker_state{breaker=\"recognition\"} 0",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    // The receiver's requests by RPC and code.
    let text = metrics(&p.receiver).await;
    let submits = format!("grpc_server_requests_total{{method=\"{SUBMIT}\",code=\"OK\"}} 3");
    assert!(text.contains(&submits), "no {submits:?} in:\n{text}");
}

#[tokio::test]
async fn the_web_page_calls_join_the_browsers_trace() {
    let p = pipeline().await;
    let mut env: HashMap<String, String> = p.backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        p.images.path().display().to_string(),
    );
    env.insert("FACEWIRE_RECEIVER_URL".into(), p.receiver.grpc_url());
    env.insert("FACEWIRE_RECOGNITION_URL".into(), p.recognition.grpc_url());
    env.insert("FACEWIRE_LOG_FORMAT".into(), "json".into());
    env.insert("FACEWIRE_LOG".into(), "info".into());
    let frontend = Service::spawn(&["frontend"], &env).await;
    let http = reqwest::Client::new();

    // The images page asks the receiver, the people page asks recognition: both calls
    // carry the trace of the page request.
    for path in ["/", "/people"] {
        let page = http
            .get(format!("{}{path}", frontend.http_url()))
            .header("traceparent", TRACEPARENT)
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 200, "{path}");
    }
    assert_logged(&frontend, "frontend", "http", None, TRACE_ID).await;
    assert_logged(
        &p.receiver,
        "receiver",
        "grpc",
        Some("/facewire.v1.ImageService/ListImages"),
        TRACE_ID,
    )
    .await;
    assert_logged(
        &p.recognition,
        "recognition",
        "grpc",
        Some("/facewire.v1.PeopleService/ListPersons"),
        TRACE_ID,
    )
    .await;
}
