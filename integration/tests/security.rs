//! TLS and bearer-token authentication on the real services: a self-signed certificate
//! made here (rcgen) serves every listener; the client library, generated clients, the
//! `facewire` client commands and curl talk to them over TLS.
//!
//! - the receiver: gRPC and the JSON endpoints;
//! - recognition: gRPC (Enroll / RemovePerson need the token) and its operations port;
//! - the frontend: the page over HTTPS, enrolment and removal behind the token;
//! - the pipeline as separate processes (PostgreSQL + RabbitMQ), and `facewire up`, with
//!   TLS and a token everywhere, processing real photos end to end.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use facewire_integration::{facewire_bin, image_dir, workspace_root, Backends, Service};
use facewire_proto::{
    v1::{
        recognition_service_client::RecognitionServiceClient, submit_result::Outcome,
        EnrollRequest, ImageStatus, ListPeopleRequest, RecognizeRequest, RecognizeResponse,
        RemovePersonRequest,
    },
    BearerAuth, ClientOptions, FacewireClient,
};
use tonic::{
    codegen::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig},
};
use tonic_health::pb::{
    health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
};

const TOKEN: &str = "s3cret-token";

/// A self-signed certificate for `localhost` (so it is its own CA), in a temp dir.
struct Certs {
    ca_pem: String,
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let ca_pem = cert.cert.pem();
        std::fs::write(dir.path().join("tls.crt"), &ca_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
        Self { ca_pem, dir }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    /// `env` plus the server certificate, the CA to trust and the token: every service
    /// serves TLS, requires the token on writes, and trusts and authenticates to the others.
    fn secure(&self, env: &HashMap<String, String>) -> HashMap<String, String> {
        let mut env = env.clone();
        let cert = self.cert_path().display().to_string();
        env.insert("FACEWIRE_TLS_CERT".into(), cert.clone());
        env.insert(
            "FACEWIRE_TLS_KEY".into(),
            self.dir.path().join("tls.key").display().to_string(),
        );
        env.insert("FACEWIRE_TLS_CA".into(), cert);
        env.insert("FACEWIRE_AUTH_TOKEN".into(), TOKEN.into());
        env
    }

    /// The environment of a service on `backends` with the image root `images`, secured.
    fn service_env(&self, backends: &Backends, images: &Path) -> HashMap<String, String> {
        let mut env = backends.env.clone();
        env.insert("FACEWIRE_IMAGE_ROOT".into(), images.display().to_string());
        self.secure(&env)
    }

    fn options(&self, token: Option<&str>) -> ClientOptions {
        ClientOptions {
            ca_pem: Some(self.ca_pem.clone().into_bytes()),
            token: token.map(str::to_string),
            ..ClientOptions::default()
        }
    }

    /// `curl` over HTTPS (or plain HTTP) to `localhost:port`: (status, body); status 0
    /// when no HTTP answer came.
    fn curl(&self, scheme: &str, port: u16, path: &str, extra: &[&str]) -> (u16, String) {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
            .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
            .args(["--cacert", &self.cert_path().display().to_string()])
            .args(extra)
            .arg(format!("{scheme}://localhost:{port}{path}"));
        let out = cmd.output().expect("run curl");
        if !out.status.success() {
            eprintln!("curl failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", text.as_str()));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// `https://localhost:<port of addr>`: the name the test certificate is issued for.
fn https(addr: std::net::SocketAddr) -> String {
    format!("https://localhost:{}", addr.port())
}

struct SecureApp {
    service: Service,
    certs: Certs,
    _images: tempfile::TempDir,
    _backends: Backends,
}

/// A receiver with a fresh self-signed certificate for `localhost` and the token set.
async fn spawn_secure_receiver() -> SecureApp {
    let certs = Certs::new();
    let backends = Backends::embedded();
    let images = image_dir();
    let env = certs.service_env(&backends, images.path());
    let service = Service::spawn(&["receiver"], &env).await;
    SecureApp {
        service,
        certs,
        _images: images,
        _backends: backends,
    }
}

impl SecureApp {
    fn https_grpc(&self) -> String {
        https(self.service.grpc_addr())
    }

    async fn client(&self, token: Option<&str>) -> FacewireClient {
        FacewireClient::connect_with(self.https_grpc(), self.certs.options(token))
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
        let mut extra: Vec<String> = Vec::new();
        if let Some(b) = body {
            extra.extend(["-H", "content-type: application/json", "-d", b].map(String::from));
        }
        if let Some(t) = token {
            extra.extend(["-H".to_string(), format!("authorization: Bearer {t}")]);
        }
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let port = self.service.addrs["HTTP"].port();
        self.certs.curl(scheme, port, path, &extra)
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
    // Reads reveal paths and people: they need the token too. Exactly the two
    // authenticated submissions were stored.
    let err = anonymous
        .list_images(100, String::new(), None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let page = client.list_images(100, String::new(), None).await.unwrap();
    assert_eq!(page.images.len(), 2);

    // Health needs no token.
    let mut health = HealthClient::new(tls_channel(app.https_grpc(), &app.certs.ca_pem).await);
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

// --- recognition, the frontend, the pipeline and `up` -------------------------------------

/// A recognition client whose calls carry the token of `options` (if any).
type RecognitionClient = RecognitionServiceClient<InterceptedService<Channel, BearerAuth>>;

async fn recognition_client(url: &str, options: &ClientOptions) -> RecognitionClient {
    let channel = options
        .endpoint(url)
        .unwrap()
        .connect()
        .await
        .expect("TLS connection to recognition");
    RecognitionServiceClient::with_interceptor(channel, options.bearer().unwrap())
}

/// The `i`-th photo of John Salley in the test data (one face each).
fn salley(i: usize) -> PathBuf {
    let dir = workspace_root().join("testdata/dlib/johns/John_Salley");
    let mut photos: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/fetch-testdata)", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    photos.sort();
    photos[i].clone()
}

fn enroll_salley() -> EnrollRequest {
    EnrollRequest {
        name: "John_Salley".into(),
        images: vec![std::fs::read(salley(0)).unwrap()],
    }
}

/// Who recognition finds in John Salley's second photo.
async fn recognize_salley(client: &mut RecognitionClient) -> RecognizeResponse {
    let image = std::fs::read(salley(1)).unwrap();
    let response = client.recognize(RecognizeRequest { image }).await;
    response.unwrap().into_inner()
}

/// An image root holding `salley<i>.jpg` for the first `count` photos.
fn salley_root(count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..count {
        std::fs::copy(salley(i), dir.path().join(format!("salley{i}.jpg"))).unwrap();
    }
    dir
}

/// Runs a `facewire` client command with only the client settings in its environment.
async fn facewire(args: &[&str], certs: &Certs, token: Option<&str>) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(facewire_bin());
    cmd.args(args)
        .env("FACEWIRE_TLS_CA", certs.cert_path())
        .env("FACEWIRE_LOG", "warn")
        .env_remove("FACEWIRE_AUTH_TOKEN");
    if let Some(t) = token {
        cmd.env("FACEWIRE_AUTH_TOKEN", t);
    }
    cmd.output().await.expect("run facewire")
}

/// `facewire enroll --server <https URL>`: the client command speaks TLS and sends the
/// token from the environment; without it the gallery is not its to change.
async fn enroll_with_the_cli(certs: &Certs, recognition_url: &str, photo: &Path) {
    let enroll = [
        "enroll",
        "--server",
        recognition_url,
        "John_Salley",
        photo.to_str().unwrap(),
    ];
    let out = facewire(&enroll, certs, None).await;
    assert!(!out.status.success(), "enrolled without the token: {out:?}");
    let out = facewire(&enroll, certs, Some(TOKEN)).await;
    assert!(out.status.success(), "{out:?}");
}

async fn wait_terminal(client: &mut FacewireClient, id: i64) -> facewire_proto::v1::Image {
    let terminal = [ImageStatus::Done, ImageStatus::NoFace, ImageStatus::Failed].map(|s| s as i32);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let image = client.get_image(id).await.unwrap();
        if terminal.contains(&image.status) {
            return image;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "image did not finish: {image:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn serving(url: String, certs: &Certs, service: &str) -> i32 {
    let mut health = HealthClient::new(tls_channel(url, &certs.ca_pem).await);
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

#[tokio::test]
async fn recognition_over_tls_needs_the_token_to_change_the_gallery() {
    let certs = Certs::new();
    let backends = Backends::embedded();
    let recognition = Service::spawn(&["recognition"], &certs.secure(&backends.env)).await;
    let url = https(recognition.grpc_addr());

    // Without the token: enrolling, removing, recognising and listing are refused
    // (who is in a photo is biometric data); health answers.
    let mut anonymous = recognition_client(&url, &certs.options(None)).await;
    let err = anonymous.enroll(enroll_salley()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let remove = || RemovePersonRequest {
        name: "John_Salley".into(),
    };
    let err = anonymous.remove_person(remove()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let image = std::fs::read(salley(1)).unwrap();
    let err = anonymous
        .recognize(RecognizeRequest { image })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let err = anonymous
        .list_people(ListPeopleRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    for service in ["", "facewire.v1.RecognitionService"] {
        let status = serving(url.clone(), &certs, service).await;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // With the token: enrolled, and then recognised.
    let mut admin = recognition_client(&url, &certs.options(Some(TOKEN))).await;
    assert!(recognize_salley(&mut admin).await.faces[0]
        .r#match
        .is_none());
    let results = admin.enroll(enroll_salley()).await.unwrap().into_inner();
    assert!(
        matches!(
            results.results[0].outcome,
            Some(facewire_proto::v1::enroll_result::Outcome::Face(_))
        ),
        "{results:?}"
    );
    let faces = recognize_salley(&mut admin).await.faces;
    let person = faces[0].r#match.as_ref().map(|m| m.person.as_str());
    assert_eq!(person, Some("John_Salley"), "{faces:?}");
    let mut wrong = recognition_client(&url, &certs.options(Some("not-the-token"))).await;
    let err = wrong.remove_person(remove()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // People, faces and crops are biometric data: every PeopleService call needs the
    // token, reads included.
    let people_client = |token: Option<&str>| {
        let options = certs.options(token);
        let url = url.clone();
        async move {
            let channel = options.endpoint(&url).unwrap().connect().await.unwrap();
            facewire_proto::v1::people_service_client::PeopleServiceClient::with_interceptor(
                channel,
                options.bearer().unwrap(),
            )
        }
    };
    let list = facewire_proto::v1::ListPersonsRequest::default();
    let err = people_client(None)
        .await
        .list_persons(list.clone())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let crop = facewire_proto::v1::GetFaceCropRequest { face_id: 1 };
    let err = people_client(None)
        .await
        .get_face_crop(crop)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let listed = people_client(Some(TOKEN))
        .await
        .list_persons(list)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.persons.len(), 1, "{listed:?}");
    let removed = admin.remove_person(remove()).await.unwrap().into_inner();
    assert_eq!(removed.faces_removed, 1);

    // A plaintext client gets no service from the TLS port, nor does a client that does
    // not trust the certificate.
    let plain = format!("http://{}", recognition.grpc_addr());
    if let Ok(mut c) = RecognitionServiceClient::connect(plain).await {
        assert!(c.list_people(ListPeopleRequest {}).await.is_err());
    }
    let stranger = Certs::new().options(None);
    if let Ok(channel) = stranger.endpoint(&url).unwrap().connect().await {
        let mut c = RecognitionServiceClient::new(channel);
        assert!(c.list_people(ListPeopleRequest {}).await.is_err());
    }

    // The operations port is HTTPS too; probes and metrics need no token.
    let port = recognition.addrs["HTTP"].port();
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(certs.curl("https", port, path, &[]).0, 200, "{path}");
    }
    assert_eq!(certs.curl("http", port, "/healthz", &[]).0, 0);
}

#[tokio::test]
async fn frontend_over_https_serves_the_page_and_guards_the_gallery() {
    let certs = Certs::new();
    let backends = Backends::embedded();
    let images = image_dir();
    let env = certs.service_env(&backends, images.path());
    let recognition = Service::spawn(&["recognition"], &env).await;
    let receiver = Service::spawn(&["receiver"], &env).await;
    let mut admin =
        recognition_client(&https(recognition.grpc_addr()), &certs.options(Some(TOKEN))).await;
    admin.enroll(enroll_salley()).await.unwrap();
    let mut frontend_env = env.clone();
    frontend_env.insert("FACEWIRE_RECEIVER_URL".into(), https(receiver.grpc_addr()));
    frontend_env.insert(
        "FACEWIRE_RECOGNITION_URL".into(),
        https(recognition.grpc_addr()),
    );
    let frontend = Service::spawn(&["frontend"], &frontend_env).await;
    let port = frontend.addrs["HTTP"].port();

    // Without the token the page asks for it; a browser sends it as a Basic password.
    let (status, _) = certs.curl("https", port, "/", &[]);
    assert_eq!(status, 401);
    let user = format!("any:{TOKEN}");
    let signed_in = ["-u", user.as_str()];
    // The page over HTTPS, filled from the receiver over TLS.
    let (status, body) = certs.curl("https", port, "/", &signed_in);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("<table id=\"images\">"), "{body}");
    assert!(!body.contains("unreachable"), "{body}");
    // The people page, from recognition over TLS; readiness asks the receiver over TLS.
    let (status, body) = certs.curl("https", port, "/people", &signed_in);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("John_Salley"), "{body}");
    assert_eq!(certs.curl("https", port, "/readyz", &[]).0, 200);
    assert_eq!(certs.curl("https", port, "/metrics", &[]).0, 200);
    // Plain HTTP gets no page.
    assert_eq!(certs.curl("http", port, "/", &[]).0, 0);

    // Removing someone needs the token: refused without (the browser is asked for it),
    // done with it as the password a browser sends; the frontend passes its own token on.
    let (status, body) = certs.curl("https", port, "/people/remove", &["-d", "name=John_Salley"]);
    assert_eq!(status, 401, "{body}");
    let wrong = ["-d", "name=John_Salley", "-u", "someone:wrong"];
    assert_eq!(certs.curl("https", port, "/people/remove", &wrong).0, 401);
    let credentials = format!("someone:{TOKEN}");
    let signed_in = ["-d", "name=John_Salley", "-u", credentials.as_str()];
    let (status, body) = certs.curl("https", port, "/people/remove", &signed_in);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Removed John_Salley"), "{body}");
    let people = admin.list_people(ListPeopleRequest {}).await.unwrap();
    assert!(people.into_inner().people.is_empty());
}

#[tokio::test]
async fn the_pipeline_over_tls_with_a_token_recognises_a_photo() {
    let certs = Certs::new();
    let backends = Backends::production();
    let images = salley_root(2);
    let env = certs.service_env(&backends, images.path());
    let recognition = Service::spawn(&["recognition"], &env).await;
    let recognition_url = https(recognition.grpc_addr());
    // The processor names recognition by host name, as in a cluster: each address the
    // name resolves to is dialled, and its certificate checked against the name.
    let mut processor_env = env.clone();
    processor_env.insert("FACEWIRE_RECOGNITION_URL".into(), recognition_url.clone());
    let processor = Service::spawn(&["processor"], &processor_env).await;
    let receiver = Service::spawn(&["receiver"], &env).await;

    enroll_with_the_cli(&certs, &recognition_url, &images.path().join("salley0.jpg")).await;
    let out = facewire(&["people", "--server", &recognition_url], &certs, None).await;
    assert!(
        !out.status.success(),
        "listed people without the token: {out:?}"
    );
    let out = facewire(
        &["people", "--server", &recognition_url],
        &certs,
        Some(TOKEN),
    )
    .await;
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("John_Salley\t1 faces"), "{out:?}");

    let mut client =
        FacewireClient::connect_with(https(receiver.grpc_addr()), certs.options(Some(TOKEN)))
            .await
            .unwrap();
    let results = client.submit_images(["salley1.jpg"]).await.unwrap();
    let Some(Outcome::Image(image)) = &results[0].outcome else {
        panic!("not accepted: {results:?}");
    };
    let image = wait_terminal(&mut client, image.id).await;
    assert_eq!(image.status, ImageStatus::Done as i32, "{image:?}");
    assert!(
        image.people.iter().any(|p| p.name == "John_Salley"),
        "{image:?}"
    );

    // The processor's own listeners are TLS as well.
    let status = serving(https(processor.grpc_addr()), &certs, "").await;
    assert_eq!(status, ServingStatus::Serving as i32);
    let port = processor.addrs["HTTP"].port();
    assert_eq!(certs.curl("https", port, "/readyz", &[]).0, 200);
    assert_eq!(certs.curl("https", port, "/healthz", &[]).0, 200);
}

#[tokio::test]
async fn up_with_tls_and_a_token_secures_every_listener_and_still_works() {
    let certs = Certs::new();
    let backends = Backends::embedded();
    let images = salley_root(2);
    // No FACEWIRE_TLS_CA: inside `up` the services trust the (self-signed) certificate
    // they serve, checked against `localhost`.
    let mut env = certs.service_env(&backends, images.path());
    env.remove("FACEWIRE_TLS_CA");
    let up = Service::spawn(&["up"], &env).await;
    let recognition_url = https(up.addrs["recognition"]);
    let receiver_url = https(up.grpc_addr());

    enroll_with_the_cli(&certs, &recognition_url, &images.path().join("salley0.jpg")).await;

    let submit = ["submit", "--server", &receiver_url, "--wait", "salley1.jpg"];
    let out = facewire(&submit, &certs, None).await;
    assert!(
        !out.status.success(),
        "submitted without the token: {out:?}"
    );
    let out = facewire(&submit, &certs, Some(TOKEN)).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        table.contains("done") && table.contains("John_Salley"),
        "{table}"
    );

    // The JSON port and the web page are HTTPS too.
    let (status, body) = certs.curl("https", up.addrs["HTTP"].port(), "/readyz", &[]);
    assert_eq!(status, 200, "{body}");
    let user = format!("any:{TOKEN}");
    let (status, _) = certs.curl("https", up.addrs["web"].port(), "/people", &[]);
    assert_eq!(status, 401);
    let signed_in = ["-u", user.as_str()];
    let (status, body) = certs.curl("https", up.addrs["web"].port(), "/people", &signed_in);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("John_Salley"), "{body}");
}
