//! TLS and bearer-token authentication on the real receiver: a self-signed certificate
//! made here (rcgen), the client library over TLS, curl for the JSON endpoints.

use std::collections::HashMap;

use facewire_integration::{image_dir, Backends, Service};
use facewire_proto::{v1::submit_result::Outcome, ClientOptions, FacewireClient};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const TOKEN: &str = "s3cret-token";

struct SecureApp {
    service: Service,
    ca_pem: String,
    dir: tempfile::TempDir,
    _images: tempfile::TempDir,
    _backends: Backends,
}

/// A receiver with a fresh self-signed certificate for `localhost` and the token set.
async fn spawn_secure_receiver() -> SecureApp {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let ca_pem = cert.cert.pem();
    std::fs::write(dir.path().join("tls.crt"), &ca_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    let backends = Backends::embedded();
    let images = image_dir();
    let mut env: HashMap<String, String> = backends.env.clone();
    env.insert(
        "FACEWIRE_IMAGE_ROOT".into(),
        images.path().display().to_string(),
    );
    env.insert(
        "FACEWIRE_TLS_CERT".into(),
        dir.path().join("tls.crt").display().to_string(),
    );
    env.insert(
        "FACEWIRE_TLS_KEY".into(),
        dir.path().join("tls.key").display().to_string(),
    );
    env.insert("FACEWIRE_AUTH_TOKEN".into(), TOKEN.into());
    let service = Service::spawn(&["receiver"], &env).await;
    SecureApp {
        service,
        ca_pem,
        dir,
        _images: images,
        _backends: backends,
    }
}

impl SecureApp {
    fn https_grpc(&self) -> String {
        format!("https://localhost:{}", self.service.grpc_addr().port())
    }

    async fn client(&self, token: Option<&str>) -> FacewireClient {
        FacewireClient::connect_with(
            self.https_grpc(),
            ClientOptions {
                ca_pem: Some(self.ca_pem.clone().into_bytes()),
                token: token.map(str::to_string),
                ..ClientOptions::default()
            },
        )
        .await
        .expect("TLS connection")
    }

    /// `curl` against the HTTPS port: (status, body); status 0 when no HTTP answer came.
    fn curl(
        &self,
        scheme: &str,
        path: &str,
        body: Option<&str>,
        token: Option<&str>,
    ) -> (u16, String) {
        let port = self.service.addrs["HTTP"].port();
        let ca = self.dir.path().join("tls.crt");
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["--cacert", &ca.display().to_string()]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "-d", b]);
        }
        if let Some(t) = token {
            cmd.args(["-H", &format!("authorization: Bearer {t}")]);
        }
        cmd.arg(format!("{scheme}://localhost:{port}{path}"));
        let out = cmd.output().expect("run curl");
        if !out.status.success() {
            eprintln!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

async fn tls_channel(url: String, ca_pem: &str) -> Channel {
    Channel::from_shared(url)
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .unwrap()
        .connect()
        .await
        .expect("TLS channel")
}

#[tokio::test]
async fn grpc_over_tls_with_a_token_round_trips_and_refuses_the_rest() {
    let app = spawn_secure_receiver().await;

    // With the CA and the token: accepted, and readable back.
    let mut client = app.client(Some(TOKEN)).await;
    let results = client.submit_images(["unknown4456.jpg"]).await.unwrap();
    let Some(Outcome::Image(image)) = &results[0].outcome else {
        panic!("not accepted: {results:?}");
    };
    assert_eq!(
        client.get_image(image.id).await.unwrap().path,
        "unknown4456.jpg"
    );
    client.submit_image("unknown4456.jpg").await.unwrap();

    // Over TLS but without a token, or with a wrong one: UNAUTHENTICATED, nothing stored.
    let mut anonymous = app.client(None).await;
    let err = anonymous
        .submit_images(["unknown4456.jpg"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = anonymous.submit_image("unknown4456.jpg").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let mut wrong = app.client(Some("not-the-token")).await;
    let err = wrong.submit_image("unknown4456.jpg").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // Reads stay open; exactly the two authenticated submissions were stored.
    let page = anonymous
        .list_images(100, String::new(), None)
        .await
        .unwrap();
    assert_eq!(page.images.len(), 2);

    // Health needs no token.
    let mut health = HealthClient::new(tls_channel(app.https_grpc(), &app.ca_pem).await);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // A plaintext client gets no gRPC service from a TLS port.
    let plain = format!("http://{}", app.service.grpc_addr());
    match FacewireClient::connect(plain).await {
        Err(_) => {}
        Ok(mut c) => {
            let err = c.submit_images(["unknown4456.jpg"]).await.unwrap_err();
            assert_ne!(err.code(), tonic::Code::Ok);
        }
    }
    // Nor does a client that does not trust the certificate.
    let untrusted = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let refused = FacewireClient::connect_with(
        app.https_grpc(),
        ClientOptions {
            ca_pem: Some(untrusted.cert.pem().into_bytes()),
            token: Some(TOKEN.into()),
            ..ClientOptions::default()
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "a certificate from another CA was trusted"
    );
}

#[tokio::test]
async fn json_endpoints_over_https_need_the_token_and_metrics_stay_open() {
    let app = spawn_secure_receiver().await;
    let body = r#"{"path":"unknown4456.jpg"}"#;
    let (status, text) = app.curl("https", "/image/post", Some(body), None);
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("UNAUTHENTICATED"), "{text}");
    let (status, text) = app.curl("https", "/image/post", Some(body), Some("wrong"));
    assert_eq!(status, 401, "{text}");
    let (status, text) = app.curl("https", "/image/post", Some(body), Some(TOKEN));
    assert_eq!(status, 200, "{text}");
    let (status, text) = app.curl(
        "https",
        "/images/post",
        Some(r#"{"paths":[{"path":"unknown4456.jpg"}]}"#),
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{text}");
    // Unknown paths are still 404 (new clients' fallback depends on it), probes and
    // metrics need no token.
    let (status, _) = app.curl("https", "/nope", Some(body), Some(TOKEN));
    assert_eq!(status, 404);
    assert_eq!(app.curl("https", "/metrics", None, None).0, 200);
    assert_eq!(app.curl("https", "/healthz", None, None).0, 200);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (status, _) = app.curl("http", "/healthz", None, None);
    assert_eq!(status, 0);
}

#[test]
fn mismatched_key_is_refused_at_startup() {
    let a = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), a.cert.pem()).unwrap();
    std::fs::write(dir.path().join("k.pem"), b.signing_key.serialize_pem()).unwrap();
    let out = std::process::Command::new(facewire_integration::facewire_bin())
        .arg("receiver")
        .env("FACEWIRE_DATA_DIR", dir.path())
        .env("FACEWIRE_GRPC_ADDR", "127.0.0.1:0")
        .env("FACEWIRE_HTTP_ADDR", "127.0.0.1:0")
        .env("FACEWIRE_TLS_CERT", dir.path().join("c.pem"))
        .env("FACEWIRE_TLS_KEY", dir.path().join("k.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TLS"), "{stderr}");
}
