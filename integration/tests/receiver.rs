//! The receiver as users meet it: the real binary, grpcurl with the tutorial's body,
//! the JSON endpoints, and every kind of bad input.

use std::{collections::HashMap, time::Duration};

use facewire_integration::{
    facewire_bin, grpcurl, image_dir, proxy::TcpProxy, receiver_bin, url_addr, via, Backends,
    Service,
};
use facewire_proto::v1::{submit_result::Outcome, ImageStatus, SubmitErrorCode};
use serde_json::{json, Value};

struct App {
    service: Service,
    backends: Backends,
    images: tempfile::TempDir,
}

async fn spawn_receiver(backends: Backends, extra: &[(&str, &str)]) -> App {
    spawn_receiver_program(facewire_bin(), &["receiver"], backends, extra).await
}

async fn spawn_receiver_program(
    program: &std::path::Path,
    args: &[&str],
    backends: Backends,
    extra: &[(&str, &str)],
) -> App {
    let images = image_dir();
    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert("FACEWIRE_MAX_BATCH".into(), "10".into());
    env.insert("FACEWIRE_MAX_IMAGE_BYTES".into(), "1000".into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let service = Service::spawn_program(program, args, &env).await;
    App {
        service,
        backends,
        images,
    }
}

impl App {
    async fn post(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.service.http_url()))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("HTTP request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        let path = self.images.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, bytes).unwrap();
    }
}

async fn grpcurl_tutorial_body(backends: Backends) -> App {
    grpcurl_tutorial_body_on(spawn_receiver(backends, &[]).await).await
}

async fn grpcurl_tutorial_body_on(app: App) -> App {
    let addr = app.service.grpc_addr().to_string();
    let out = grpcurl(&["-plaintext", &addr, "list"]).await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "grpcurl list: {out:?}");
    assert!(
        listed.lines().any(|l| l == "facewire.v1.ImageService"),
        "{listed}"
    );
    assert!(
        listed.lines().any(|l| l == "grpc.health.v1.Health"),
        "{listed}"
    );

    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"paths":[{"path":"unknown4456.jpg"}]}"#,
        &addr,
        "facewire.v1.ImageService/SubmitImages",
    ])
    .await;
    assert!(out.status.success(), "grpcurl SubmitImages: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["results"][0]["image"]["status"], "IMAGE_STATUS_PENDING");
    let id: i64 = v["results"][0]["image"]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    let out = grpcurl(&[
        "-plaintext",
        "-d",
        r#"{"path":"unknown4456.jpg"}"#,
        &addr,
        "facewire.v1.ImageService/SubmitImage",
    ])
    .await;
    assert!(out.status.success(), "grpcurl SubmitImage: {out:?}");

    let mut client = app.service.client().await;
    let image = client.get_image(id).await.unwrap();
    assert_eq!(image.path, "unknown4456.jpg");
    assert_eq!(image.content_hash.len(), 64);
    let page = client
        .list_images(10, String::new(), Some(ImageStatus::Pending))
        .await
        .unwrap();
    assert_eq!(page.images.len(), 2);
    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(String::from_utf8_lossy(&health.stdout).contains("SERVING"));
    app
}

#[tokio::test]
async fn grpcurl_with_the_tutorial_body_embedded() {
    grpcurl_tutorial_body(Backends::embedded()).await;
}

#[tokio::test]
async fn grpcurl_with_the_tutorial_body_on_postgres_and_rabbitmq() {
    let backends = Backends::production();
    let queue_name = backends.queue.as_ref().unwrap().name().to_string();
    let amqp = backends.queue.as_ref().unwrap().url().to_string();
    let _app = grpcurl_tutorial_body(backends).await;
    // The ids went to the real queue.
    let queue = facewire_queue::open(Some(&amqp), &queue_name)
        .await
        .unwrap();
    assert_eq!(queue.depth().await.unwrap(), 2);
}

#[tokio::test]
async fn lean_receiver_binary_serves_the_same_api_without_opencv() {
    let app = spawn_receiver_program(receiver_bin(), &[], Backends::production(), &[]).await;
    let app = grpcurl_tutorial_body_on(app).await;
    // The point of the lean binary: none of OpenCV's libraries is mapped.
    let pid = app.service.pid().expect("running");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(
        !maps.contains("libopencv"),
        "OpenCV mapped into the lean receiver"
    );
    let (status, _) = app
        .post(
            "/images/post",
            r#"{"paths":[{"path":"unknown4456.jpg"}]}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn reflection_v1_is_served_too() {
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let app = spawn_receiver(Backends::embedded(), &[]).await;
    let channel = tonic::transport::Channel::from_shared(app.service.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    assert!(list
        .service
        .iter()
        .any(|s| s.name == "facewire.v1.ImageService"));
}

#[tokio::test]
async fn bad_paths_get_precise_errors_and_spare_the_rest() {
    let app = spawn_receiver(Backends::embedded(), &[]).await;
    app.write("empty.jpg", b"");
    app.write("big.jpg", &[1u8; 2000]);
    std::fs::create_dir(app.images.path().join("adir")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", app.images.path().join("escape.jpg")).unwrap();
    let mut client = app.service.client().await;
    let cases = [
        ("", SubmitErrorCode::InvalidPath),
        ("../../etc/passwd", SubmitErrorCode::InvalidPath),
        ("/etc/passwd", SubmitErrorCode::OutsideRoot),
        ("escape.jpg", SubmitErrorCode::OutsideRoot),
        ("missing.jpg", SubmitErrorCode::NotFound),
        ("adir", SubmitErrorCode::NotAFile),
        ("empty.jpg", SubmitErrorCode::EmptyFile),
        ("big.jpg", SubmitErrorCode::TooLarge),
    ];
    let mut paths: Vec<String> = cases.iter().map(|(p, _)| p.to_string()).collect();
    paths.push("unknown4456.jpg".into());
    let results = client.submit_images(paths).await.unwrap();
    for ((path, code), result) in cases.iter().zip(&results) {
        match &result.outcome {
            Some(Outcome::Error(e)) => {
                assert_eq!(e.code, *code as i32, "{path}: {e:?}");
                assert!(!e.message.is_empty());
            }
            other => panic!("{path} was not refused: {other:?}"),
        }
    }
    match &results[8].outcome {
        Some(Outcome::Image(img)) => assert_eq!(img.status, ImageStatus::Pending as i32),
        other => panic!("the good path was not accepted: {other:?}"),
    }
    // The size limit is named in the message.
    if let Some(Outcome::Error(e)) = &results[7].outcome {
        assert!(e.message.contains("1000"), "{}", e.message);
    }
    // Legacy single call: a precise status code.
    let err = client.submit_image("missing.jpg").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client.submit_image("../x.jpg").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // And the server is still up and nothing accepted was lost.
    let page = client.list_images(100, String::new(), None).await.unwrap();
    assert_eq!(page.images.len(), 1);
}

#[tokio::test]
async fn batch_limits_are_invalid_argument_naming_the_limit() {
    let app = spawn_receiver(
        Backends::embedded(),
        &[("FACEWIRE_MAX_MESSAGE_BYTES", "4096")],
    )
    .await;
    let mut client = app.service.client().await;
    let err = client
        .submit_images(Vec::<String>::new())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("empty"), "{}", err.message());
    let err = client
        .submit_images(vec!["unknown4456.jpg"; 11])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("limit is 10"), "{}", err.message());
    // A message over the size limit.
    let err = client
        .submit_images(vec!["x".repeat(3000), "y".repeat(3000)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("4096"), "{}", err.message());
    // Still serving.
    assert_eq!(
        client
            .submit_images(["unknown4456.jpg"])
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn json_endpoints_share_the_path_and_refuse_bad_bodies() {
    let app = spawn_receiver(Backends::embedded(), &[]).await;
    let json_ct = "application/json";
    let (status, body) = app
        .post("/image/post", r#"{"path":"unknown4456.jpg"}"#, json_ct)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "pending");
    let (status, body) = app
        .post(
            "/images/post",
            &json!({"paths":[{"path":"unknown4456.jpg"},{"path":"nope.jpg"}]}).to_string(),
            json_ct,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "pending");
    assert_eq!(
        body["results"][1]["error"]["code"],
        "SUBMIT_ERROR_CODE_NOT_FOUND"
    );

    let (status, body) = app
        .post("/image/post", r#"{"path":"nope.jpg"}"#, json_ct)
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app.post("/image/post", r#"{"path": "#, json_ct).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_JSON");
    let (status, body) = app.post("/images/post", r#"{"paths":"x"}"#, json_ct).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_JSON");
    let (status, body) = app
        .post("/image/post", r#"{"path":"unknown4456.jpg"}"#, "text/plain")
        .await;
    assert_eq!(status, 415, "{body}");
    // curl -d (form-encoded, no Origin) keeps working, as the tutorial documented it; a
    // cross-site form post from a browser (it says where it comes from) is refused.
    let form = "application/x-www-form-urlencoded";
    let (status, body) = app
        .post("/image/post", r#"{"path":"unknown4456.jpg"}"#, form)
        .await;
    assert_eq!(status, 200, "{body}");
    for (header, value) in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let resp = reqwest::Client::new()
            .post(format!("{}/image/post", app.service.http_url()))
            .header("content-type", form)
            .header(header, value)
            .body(r#"{"path":"unknown4456.jpg"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 415, "{header}");
    }
    let (status, body) = app.post("/images/post", r#"{"paths":[]}"#, json_ct).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "EMPTY_BATCH");

    let mut client = app.service.client().await;
    let page = client.list_images(100, String::new(), None).await.unwrap();
    assert_eq!(
        page.images.len(),
        3,
        "exactly the accepted images are recorded"
    );
}

#[tokio::test]
async fn database_down_is_unavailable_and_recovers() {
    let mut backends = Backends::production();
    let db_url = backends.database_url();
    let proxy = TcpProxy::start(url_addr(&db_url)).await;
    backends
        .env
        .insert("FACEWIRE_DATABASE_URL".into(), via(&db_url, proxy.addr()));
    let app = spawn_receiver(backends, &[]).await;
    let mut client = app.service.client().await;
    assert!(client.submit_images(["unknown4456.jpg"]).await.is_ok());

    proxy.cut();
    let err = client.submit_images(["unknown4456.jpg"]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    let (status, _) = app
        .post(
            "/image/post",
            r#"{"path":"unknown4456.jpg"}"#,
            "application/json",
        )
        .await;
    assert_eq!(status, 503);

    proxy.restore();
    let mut ok = false;
    for _ in 0..50 {
        if client.submit_images(["unknown4456.jpg"]).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "receiver did not recover when the database came back");
    let page = client.list_images(100, String::new(), None).await.unwrap();
    assert_eq!(page.images.len(), 2);
}

#[tokio::test]
async fn rabbitmq_down_at_publish_keeps_rows_pending_for_the_reconciler() {
    let mut backends = Backends::production();
    let amqp = backends.env["FACEWIRE_AMQP_URL"].clone();
    let proxy = TcpProxy::start(url_addr(&amqp)).await;
    backends
        .env
        .insert("FACEWIRE_AMQP_URL".into(), via(&amqp, proxy.addr()));
    let queue_name = backends.queue.as_ref().unwrap().name().to_string();
    proxy.cut();
    let app = spawn_receiver(backends, &[]).await;
    let mut client = app.service.client().await;
    let results = client.submit_images(["unknown4456.jpg"; 3]).await.unwrap();
    assert!(results
        .iter()
        .all(|r| matches!(r.outcome, Some(Outcome::Image(_)))));
    let page = client
        .list_images(10, String::new(), Some(ImageStatus::Pending))
        .await
        .unwrap();
    assert_eq!(
        page.images.len(),
        3,
        "accepted rows are pending in the database"
    );

    // The reconciler re-queues them once RabbitMQ is reachable.
    proxy.restore();
    let mut env = app.backends.env.clone();
    env.insert("FACEWIRE_AMQP_URL".into(), amqp.clone());
    env.insert("FACEWIRE_RECONCILE_AFTER_SECONDS".into(), "0".into());
    env.insert("FACEWIRE_RECONCILE_INTERVAL_SECONDS".into(), "0.2".into());
    let _reconciler = Service::spawn(&["reconciler"], &env).await;
    let queue = facewire_queue::open(Some(&amqp), &queue_name)
        .await
        .unwrap();
    let mut depth = 0;
    for _ in 0..100 {
        depth = queue.depth().await.unwrap_or(0);
        if depth >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(depth >= 3, "reconciler re-queued {depth} of 3");
}

#[tokio::test]
async fn sigterm_reports_not_serving_then_exits_cleanly() {
    let mut app = spawn_receiver(Backends::embedded(), &[("FACEWIRE_DRAIN_SECONDS", "5")]).await;
    let addr = app.service.grpc_addr().to_string();
    app.service.terminate();
    // During the drain delay the server still answers, reporting NOT_SERVING.
    let mut seen = String::new();
    for _ in 0..20 {
        let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
        seen = String::from_utf8_lossy(&health.stdout).into_owned();
        if seen.contains("NOT_SERVING") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("NOT_SERVING"), "{seen}");
    let status = app
        .service
        .wait(Duration::from_secs(20))
        .await
        .expect("exits");
    assert!(status.success(), "{status:?}");
}
