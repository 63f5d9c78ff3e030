//! Router tests: against services that are down, and against in-process fakes of the
//! receiver and the people service.

use super::*;
use crate::{Frontend, FrontendConfig};
use axum::body::Body;
use tower::ServiceExt;

#[test]
fn assets_are_quiet_and_pages_are_not() {
    for path in [
        "/assets/page.js",
        "/images/7/thumbnail",
        "/faces/3/crop.jpg",
        "/people/Ada/faces/3.jpg",
    ] {
        assert!(is_asset(path), "{path}");
    }
    for path in [
        "/",
        "/people",
        "/people/3",
        "/people/enroll",
        "/api/images",
        "/images",
        "/images/7",
        "/faces/7/similar",
    ] {
        assert!(!is_asset(path), "{path}");
    }
}

/// A frontend whose receiver and recognition service are both down (port 1 refuses).
async fn orphan(root: &std::path::Path) -> Router {
    let config = FrontendConfig::local("http://127.0.0.1:1", "http://127.0.0.1:1", root.into());
    Frontend::build(&config).await.unwrap().router()
}

async fn send(router: &Router, request: http::Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

async fn get(router: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
    send(router, http::Request::get(uri).body(Body::empty()).unwrap()).await
}

fn post_form(uri: &str, body: &str) -> http::Request<Body> {
    http::Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn post_json(uri: &str, body: &str) -> http::Request<Body> {
    http::Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn pages_render_and_say_what_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let router = orphan(dir.path()).await;
    let (status, headers, body) = get(&router, "/?status=pending").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(
        body.contains("The receiver at http://127.0.0.1:1 is unreachable"),
        "{body}"
    );
    assert!(body.contains("<table id=\"images\">"));

    let (status, _, body) = get(&router, "/people").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("The recognition service at http://127.0.0.1:1 is unreachable"),
        "{body}"
    );
    assert!(body.contains("action=\"/people/enroll\""));

    let (status, _, body) = get(&router, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("unreachable"), "{body}");
    assert_eq!(get(&router, "/healthz").await.0, StatusCode::OK);

    for page in ["/images/5/thumbnail", "/images/5"] {
        let (status, _, body) = get(&router, page).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{page}");
        assert!(body.contains("Receiver unreachable"), "{page}: {body}");
    }
    let (status, _, body) = get(&router, "/people/3").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("is unreachable"), "{body}");

    // A face picture needs recognition; an address that names no picture needs nothing.
    for crop in ["/people/Ada%20L/faces/3.jpg", "/faces/3/crop.jpg"] {
        let (status, _, body) = get(&router, crop).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{crop}");
        assert!(body.contains("Recognition unreachable"), "{crop}: {body}");
    }
    for bad in [
        "/people/ada/faces/3.png",
        "/people/ada/faces/x.jpg",
        "/faces/x/crop.jpg",
        "/faces/-1/crop.jpg",
    ] {
        assert_eq!(get(&router, bad).await.0, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn bad_filters_and_ids_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let router = orphan(dir.path()).await;
    let (status, _, body) = get(&router, "/?status=%3Cscript%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("unknown status &quot;&lt;script&gt;&quot;"),
        "{body}"
    );
    let (status, _, body) = get(&router, "/?person=%3Cb%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("person=&quot;&lt;b&gt;&quot; is not a person id"),
        "{body}"
    );
    assert_eq!(
        get(&router, "/api/images?person=0").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, _, body) = get(&router, "/images/..%2Fetc/thumbnail").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("is not an image id"), "{body}");
    let (status, _, body) = get(&router, "/people/%3Cscript%3E").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body.contains("&quot;&lt;script&gt;&quot; is not a person id"),
        "{body}"
    );
    assert_eq!(get(&router, "/nope").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn assets_and_metrics_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let router = orphan(dir.path()).await;
    let (status, headers, body) = get(&router, "/assets/page.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(body.contains("EventSource"));
    assert_eq!(get(&router, "/assets/style.css").await.0, StatusCode::OK);
    assert_eq!(get(&router, "/metrics").await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_change_and_every_page_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = FrontendConfig::local(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        dir.path().into(),
    );
    config.auth.auth_token = Some("t0k".into());
    let router = Frontend::build(&config).await.unwrap().router();
    let remove = |auth: Option<&'static str>| {
        let mut request = post_form("/people/remove", "name=ada");
        if let Some(auth) = auth {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_static(auth));
        }
        request
    };
    let refused = router.clone().oneshot(remove(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.headers()[header::WWW_AUTHENTICATE]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    let wrong = router.clone().oneshot(remove(Some("Bearer nope"))).await;
    assert_eq!(wrong.unwrap().status(), StatusCode::UNAUTHORIZED);
    // With the token the request reaches the handler, which finds recognition down.
    // ("u:t0k" in base64 is dTp0MGs=.)
    for auth in ["Bearer t0k", "Basic dTp0MGs="] {
        let passed = router.clone().oneshot(remove(Some(auth))).await.unwrap();
        assert_eq!(passed.status(), StatusCode::SERVICE_UNAVAILABLE, "{auth}");
    }
    // Every other change too, forms and JSON alike.
    for request in [
        post_form("/people/3/rename", "name=x"),
        post_form("/people/3/hide", "hidden=1"),
        post_form("/people/3/merge", "from=4"),
        post_form("/people/3/undo-merge", "merge_id=1"),
        post_form("/people/3/decline", "other=4"),
        post_form("/people/3/delete", ""),
        post_form("/images/1/faces/2", "action=unassign"),
        post_json("/api/faces/assign", r#"{"face_ids":[1],"person_id":2}"#),
        post_json("/api/faces/unassign", r#"{"face_ids":[1]}"#),
    ] {
        let uri = request.uri().to_string();
        assert_eq!(
            send(&router, request).await.0,
            StatusCode::UNAUTHORIZED,
            "{uri}"
        );
    }
    // Pages and files show photos, faces, names and paths: they need the token too.
    for page in [
        "/",
        "/people",
        "/people/3",
        "/images/1",
        "/images/1/thumbnail?full=1",
        "/faces/1/crop.jpg",
        "/faces/1/similar",
        "/api/images",
        "/events",
    ] {
        assert_eq!(
            get(&router, page).await.0,
            StatusCode::UNAUTHORIZED,
            "{page}"
        );
    }
    // Probes and assets stay open.
    for open in ["/healthz", "/assets/page.js", "/assets/style.css"] {
        assert_eq!(get(&router, open).await.0, StatusCode::OK, "{open}");
    }
}

#[test]
fn cross_site_posts_are_recognised() {
    let mut h = HeaderMap::new();
    assert!(same_origin(&h));
    h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("http://127.0.0.1:8081"),
    );
    assert!(same_origin(&h));
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    assert!(same_origin(&h));
    h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
    assert!(!same_origin(&h));
    h.remove("sec-fetch-site");
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(!same_origin(&h));
    h.insert(header::ORIGIN, HeaderValue::from_static("null"));
    assert!(!same_origin(&h));
}

#[tokio::test]
async fn every_post_from_another_site_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let router = orphan(dir.path()).await;
    let cross = |mut request: http::Request<Body>| {
        let headers = request.headers_mut();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        request
    };
    let (status, headers, body) =
        send(&router, cross(post_form("/people/remove", "name=ada"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("posted from another site"), "{body}");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    for request in [
        post_form("/people/3/rename", "name=x"),
        post_form("/people/3/merge", "from=4"),
        post_form("/people/3/decline", "other=4"),
        post_form("/people/3/delete", ""),
        post_form("/images/1/faces/2", "action=unassign"),
        post_form("/no/such/route", ""),
    ] {
        let uri = request.uri().to_string();
        assert_eq!(
            send(&router, cross(request)).await.0,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    let (status, _, body) = send(
        &router,
        cross(post_json(
            "/api/faces/assign",
            r#"{"face_ids":[1],"person_id":2}"#,
        )),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(json(&body)["error"]["code"], "PERMISSION_DENIED");
    // Reads from anywhere are fine (links, images).
    let mut read = http::Request::get("/people").body(Body::empty()).unwrap();
    read.headers_mut().insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert_eq!(send(&router, read).await.0, StatusCode::OK);
}

#[tokio::test]
async fn face_endpoints_check_their_input_before_calling_anything() {
    let dir = tempfile::tempdir().unwrap();
    let router = orphan(dir.path()).await;
    let cases = [
        (
            "/api/faces/assign",
            r#"{"face_ids":[],"person_id":3}"#,
            "empty",
        ),
        (
            "/api/faces/assign",
            r#"{"face_ids":[0],"person_id":3}"#,
            "not a face id",
        ),
        ("/api/faces/assign", r#"{"face_ids":[1]}"#, "give person_id"),
        (
            "/api/faces/assign",
            r#"{"face_ids":[1],"person_id":3,"person_name":"a"}"#,
            "not both",
        ),
        (
            "/api/faces/assign",
            r#"{"face_ids":[1],"person_name":"  "}"#,
            "give person_id",
        ),
        (
            "/api/faces/assign",
            r#"{"face_ids":[1],"person_name":"a\nb"}"#,
            "control",
        ),
        (
            "/api/faces/assign",
            r#"{"face_ids":[1],"person_id":-3}"#,
            "not a person id",
        ),
        (
            "/api/faces/assign",
            r#"{"face_ids":"1","person_id":3}"#,
            "face_ids",
        ),
        (
            "/api/faces/assign",
            r#"{"face_ids":[1],"person_id":3,"x":1}"#,
            "unknown field",
        ),
        ("/api/faces/assign", r#"{"face_ids":[1],"#, "EOF"),
        ("/api/faces/unassign", r#"{}"#, "face_ids"),
        (
            "/api/faces/unassign",
            r#"{"face_ids":[-1]}"#,
            "not a face id",
        ),
    ];
    for (uri, body, says) in cases {
        let (status, headers, answer) = send(&router, post_json(uri, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let answer = json(&answer);
        assert_eq!(answer["error"]["code"], "INVALID_ARGUMENT", "{body}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    // Not JSON at all.
    let request = http::Request::post("/api/faces/assign")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("face_ids=1"))
        .unwrap();
    let (status, _, answer) = send(&router, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(json(&answer)["error"]["code"], "INVALID_ARGUMENT");
    // Valid input reaches the service, which is down: said so, as JSON.
    let (status, _, answer) = send(
        &router,
        post_json(
            "/api/faces/assign",
            r#"{"face_ids":[1,1],"person_name":"Ada"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let answer = json(&answer);
    assert_eq!(answer["error"]["code"], "UNAVAILABLE");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("is unreachable"));
}

mod fake;

use fake::{FakeSite, World};

#[tokio::test]
async fn naming_a_face_puts_the_photo_on_the_persons_page() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;

    let (status, headers, page) = get(router, "/images/42").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("style-src 'self'"));
    assert!(!page.contains("<script>alert"), "{page}");
    // The file is 200 x 100: the box (20, 10, 40 x 40) is placed in percent at once.
    assert!(page.contains(
        "class=\"face unknown\" data-face-id=\"7\" data-person-id=\"0\" data-box=\"20 10 40 40\" data-pct=\"10.000 10.000 20.000 40.000\""
    ), "{page}");
    assert!(page.contains("<span class=\"face-name\">&lt;script&gt;alert(1)&lt;/script&gt;</span> <span class=\"face-how\">auto 0.91</span>"), "{page}");
    assert!(page.contains("<option value=\"&lt;script&gt;alert(1)&lt;/script&gt;\"></option>"));
    assert!(page.contains("<option value=\"bob\"></option>"));

    let (status, _, answer) = send(
        router,
        post_json(
            "/api/faces/assign",
            r#"{"face_ids":[7],"person_name":" Grace <Hopper> "}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let answer = json(&answer);
    let grace = answer["person"]["id"].as_i64().unwrap();
    assert_eq!(answer["person"]["name"], "Grace <Hopper>");
    assert_eq!(answer["person"]["href"], format!("/people/{grace}"));
    assert_eq!(answer["faces"][0]["id"], 7);
    assert_eq!(answer["faces"][0]["label"], "Grace <Hopper>");
    assert_eq!(answer["faces"][0]["how"], "manual");
    assert_eq!(
        answer["faces"][0]["person_href"],
        format!("/people/{grace}")
    );

    // The person's page has the photo; the images list filtered by them has its row.
    let (status, _, page) = get(router, &format!("/people/{grace}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<h1 id=\"person-name\">Grace &lt;Hopper&gt;</h1>"),
        "{page}"
    );
    assert!(
        page.contains("<a href=\"/images/42\" title=\"team/a.jpg\">"),
        "{page}"
    );
    let (_, _, list) = get(router, &format!("/?person={grace}")).await;
    assert!(list.contains("id=\"image-42\""), "{list}");
    assert!(!list.contains("id=\"image-43\""), "{list}");
    assert!(list.contains(&format!(
        "<a href=\"/people/{grace}\">Grace &lt;Hopper&gt;</a>"
    )));
    let (_, _, rows) = get(router, &format!("/api/images?person={grace}&person=3")).await;
    let rows = json(&rows);
    assert_eq!(rows["rows"].as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows["rows"][0]["person_ids"], serde_json::json!([3, grace]));

    // By id, then taken away by hand.
    let (status, _, answer) = send(
        router,
        post_json("/api/faces/assign", r#"{"face_ids":[7],"person_id":4}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&answer)["faces"][0]["label"], "bob");
    let (status, _, answer) = send(
        router,
        post_json("/api/faces/unassign", r#"{"face_ids":[7]}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let answer = json(&answer);
    assert_eq!(answer["faces"][0]["label"], "unknown");
    assert_eq!(answer["faces"][0]["person_href"], serde_json::Value::Null);
    let (_, _, faces) = get(router, "/api/images/42/faces").await;
    let faces = json(&faces);
    assert_eq!(faces["faces"][1]["label"], "unknown", "{faces}");
    assert_eq!(faces["faces"][0]["label"], "<script>alert(1)</script>");

    // The service's refusals keep their meaning.
    let (status, _, answer) = send(
        router,
        post_json("/api/faces/assign", r#"{"face_ids":[999],"person_id":4}"#),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&answer)["error"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn faces_can_be_named_without_script() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;
    let (status, headers, _) = send(
        router,
        post_form("/images/42/faces/7", "action=assign&person_name=Ada"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/images/42?done=named");
    let (_, _, page) = get(router, "/images/42?done=named").await;
    assert!(page.contains("Named."));
    assert!(
        page.contains("<a class=\"face-name\" href=\"/people/"),
        "{page}"
    );
    assert!(
        page.contains(">Ada</a> <span class=\"face-how\">manual</span>"),
        "{page}"
    );

    let (status, _, page) = send(
        router,
        post_form("/images/42/faces/7", "action=assign&person_name="),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Give a name."), "{page}");
    let (status, _, page) = send(router, post_form("/images/42/faces/7", "action=%3Cx%3E")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("&quot;&lt;x&gt;&quot; is not something to do"),
        "{page}"
    );
    let (status, headers, _) =
        send(router, post_form("/images/42/faces/7", "action=unassign")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/images/42?done=unassigned");
    let (status, _, page) =
        send(router, post_form("/images/42/faces/999", "action=unassign")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("There is no such face"), "{page}");
}

#[tokio::test]
async fn the_people_page_lists_named_suggested_and_on_request_hidden_people() {
    let site = FakeSite::start(World::example()).await;
    let (status, _, page) = get(&site.router, "/people").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains(
        "<td class=\"name\"><a href=\"/people/3\">&lt;script&gt;alert(1)&lt;/script&gt;</a></td>"
    ), "{page}");
    assert!(page.contains("<img class=\"crop\" src=\"/faces/8/crop.jpg\""));
    assert!(
        page.contains("<a class=\"person-card\" href=\"/people/5\">"),
        "{page}"
    );
    assert!(
        !page.contains("/people/6\""),
        "a hidden person is listed: {page}"
    );
    let (_, _, page) = get(&site.router, "/people?hidden=1").await;
    assert!(page.contains("<a href=\"/people/6\">carol</a>"), "{page}");

    let (status, headers, crop) = get(&site.router, "/faces/8/crop.jpg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], FILE_CSP);
    assert!(headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert_eq!(crop.as_bytes(), b"jpeg of face 8");
    assert_eq!(
        get(&site.router, "/faces/7/crop.jpg").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_person_is_renamed_hidden_merged_unmerged_and_deleted() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;

    // A stale version: refused, and the page shows the current one.
    let (status, _, page) = send(
        router,
        post_form("/people/4/rename", "name=Robert&version=99"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        page.contains("Someone else changed this person meanwhile"),
        "{page}"
    );
    assert!(page.contains("<h1 id=\"person-name\">bob</h1>"));
    let (status, headers, _) = send(
        router,
        post_form("/people/4/rename", "name=Robert&version=1"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/people/4?done=renamed");
    let (_, _, page) = get(router, "/people/4?done=renamed").await;
    assert!(
        page.contains("<h1 id=\"person-name\">Robert</h1>"),
        "{page}"
    );
    assert!(page.contains("Renamed."));
    let (status, _, page) = send(
        router,
        post_form("/people/4/rename", "name=%20%20&version=2"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Give a name."), "{page}");
    // The service's own wording of a refusal is shown; its internals are not.
    let (status, _, page) = send(
        router,
        post_form("/people/4/rename", "name=x%3Cy&version=2"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("Refused: a name may not hold &lt;"), "{page}");
    let (status, _, page) =
        send(router, post_form("/people/4/rename", "name=boom&version=2")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(page.contains("failed (Internal)"), "{page}");
    assert!(!page.contains("secret table"), "{page}");

    let (status, headers, _) =
        send(router, post_form("/people/4/hide", "hidden=1&version=2")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/people/4?done=hidden");
    let (_, _, page) = get(router, "/people/4").await;
    assert!(
        page.contains("<button type=\"submit\">Unhide</button>"),
        "{page}"
    );

    // Merge bob into the first person, then undo it.
    let (status, _, page) = send(router, post_form("/people/3/merge", "from=3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("cannot be merged into themselves"), "{page}");
    let (status, headers, _) = send(router, post_form("/people/3/merge", "from=4")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers[header::LOCATION].to_str().unwrap().to_string();
    let merge_id = location
        .strip_prefix("/people/3?merged=")
        .unwrap_or_else(|| panic!("{location}"))
        .to_string();
    let (status, _, page) = get(router, &location).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(&format!(
            "<input type=\"hidden\" name=\"merge_id\" value=\"{merge_id}\">"
        )),
        "{page}"
    );
    assert!(
        page.contains("<span id=\"face-count\">2 faces</span>"),
        "{page}"
    );
    assert_eq!(get(router, "/people/4").await.0, StatusCode::NOT_FOUND);
    let undo = format!("merge_id={merge_id}");
    let (status, headers, _) = send(router, post_form("/people/3/undo-merge", &undo)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/people/3?done=unmerged");
    assert_eq!(get(router, "/people/4").await.0, StatusCode::OK);
    let (status, _, page) = send(router, post_form("/people/3/undo-merge", &undo)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        page.contains("Not possible now: the merge was undone already"),
        "{page}"
    );

    let (status, headers, _) = send(router, post_form("/people/4/delete", "")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/people?done=deleted");
    let (status, _, page) = get(router, "/people/4").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("There is no such person"), "{page}");
    let (status, _, _) = send(router, post_form("/people/4/delete", "")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Marks `request` as posted by a page of another site.
fn cross_site(mut request: http::Request<Body>) -> http::Request<Body> {
    let headers = request.headers_mut();
    headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8081"));
    headers.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    request
}

#[tokio::test]
async fn a_face_is_searched_for_from_its_image_page() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;
    let (_, _, page) = get(router, "/images/42").await;
    assert!(
        page.contains("<a class=\"face-similar\" href=\"/faces/7/similar\">find this person</a>"),
        "{page}"
    );

    // From the unknown face 7: the first match is person 3 (whose name is markup), its
    // similarity a hair over 1 from the service, shown as 1.00.
    let (status, headers, page) = get(router, "/faces/7/similar").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(page.contains(concat!(
        "<li class=\"person-card\" data-face-id=\"8\" data-person-id=\"3\">",
        "<img class=\"crop\" src=\"/faces/8/crop.jpg\" alt=\"Face 8\" width=\"96\" height=\"96\" loading=\"lazy\">",
        "<a class=\"card-name\" href=\"/people/3\">&lt;script&gt;alert(1)&lt;/script&gt;</a>",
        "<span class=\"card-counts similarity\">similarity 1.00</span>",
        "<a class=\"card-counts\" href=\"/images/42\" title=\"team/a.jpg\">in team/a.jpg</a>"
    )), "{page}");
    assert!(
        page.contains(concat!(
            "<a class=\"card-name\" href=\"/people/4\">bob</a>",
            "<span class=\"card-counts similarity\">similarity 0.80</span>",
            "<a class=\"card-counts\" href=\"/images/43\" title=\"b.jpg\">in b.jpg</a>"
        )),
        "{page}"
    );
    assert!(page.contains(
        "data-face-id=\"11\" data-person-id=\"5\"><img class=\"crop\" src=\"/faces/11/crop.jpg\" alt=\"Face 11\" width=\"96\" height=\"96\" loading=\"lazy\"><a class=\"card-name unnamed\" href=\"/people/5\">unnamed</a>"
    ), "{page}");
    // The face searched with is not among its own matches.
    assert!(!page.contains("data-face-id=\"7\""), "{page}");

    // From face 8: the unknown face 7 belongs to nobody.
    let (_, _, page) = get(router, "/faces/8/similar").await;
    assert!(page.contains(concat!(
        "<li class=\"person-card\" data-face-id=\"7\" data-person-id=\"0\">",
        "<img class=\"crop\" src=\"/faces/7/crop.jpg\" alt=\"Face 7\" width=\"96\" height=\"96\" loading=\"lazy\">",
        "<span class=\"card-name nobody\">nobody</span>"
    )), "{page}");
    assert_eq!(site.world().searched, vec![7, 8]);
}

#[tokio::test]
async fn a_failed_search_says_why_in_words_of_its_own() {
    let site = FakeSite::start(World::example()).await;
    let (status, _, page) = get(&site.router, "/faces/999/similar").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("There is no such face (any more)."), "{page}");
    assert!(!page.contains("faces_v3"), "{page}");
    for bad in ["/faces/x/similar", "/faces/0/similar", "/faces/-3/similar"] {
        let (status, _, page) = get(&site.router, bad).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        assert!(page.contains("is not a face id"), "{bad}: {page}");
    }
    assert_eq!(site.world().searched, vec![999]);

    // A service without a face index: search is unavailable, and a person's page simply
    // has no "same person?" section.
    let site = FakeSite::start(World::example().without_index()).await;
    let (status, _, page) = get(&site.router, "/faces/7/similar").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        page.contains("Search by face is not available: the recognition service keeps no index"),
        "{page}"
    );
    assert!(!page.contains("hnsw"), "{page}");
    assert!(!page.contains("/var/lib"), "{page}");
    let (status, _, page) = get(&site.router, "/people/3").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("look-alikes"), "{page}");
    assert!(!page.contains("hnsw"), "{page}");

    // Recognition down: said so, like every page.
    let dir = tempfile::tempdir().unwrap();
    let (status, _, page) = get(&orphan(dir.path()).await, "/faces/7/similar").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(page.contains("is unreachable"), "{page}");
}

#[tokio::test]
async fn look_alikes_are_merged_or_declined_from_the_persons_page() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;
    let (status, _, page) = get(router, "/people/3").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<h2>Same person?</h2>"), "{page}");
    assert!(
        page.contains(concat!(
            "<li class=\"person-card look-alike\" data-person-id=\"5\">",
            "<a href=\"/people/5\"><img class=\"crop\" src=\"/faces/11/crop.jpg\" ",
            "alt=\"Face of Unnamed person #5\" width=\"96\" height=\"96\" loading=\"lazy\"></a>",
            "<a class=\"card-name\" href=\"/people/5\">unnamed</a>",
            "<span class=\"card-counts\">2 faces</span>",
            "<span class=\"card-counts\">similarity 0.83 · 3 votes</span>"
        )),
        "{page}"
    );
    assert!(page.contains("<form method=\"post\" action=\"/people/3/decline\"><input type=\"hidden\" name=\"other\" value=\"5\">"));
    assert!(page.contains("<input type=\"hidden\" name=\"from\" value=\"4\">"));
    // On bob's page, person 3's name is escaped.
    let (_, _, page) = get(router, "/people/4").await;
    assert!(
        page.contains(
            "<a class=\"card-name\" href=\"/people/3\">&lt;script&gt;alert(1)&lt;/script&gt;</a>"
        ),
        "{page}"
    );
    assert!(!page.contains("<script>alert"), "{page}");

    // Posted from another site: refused before the service hears of it.
    for request in [
        post_form("/people/3/decline", "other=5"),
        post_form("/people/3/merge", "from=4"),
    ] {
        let uri = request.uri().to_string();
        let (status, _, page) = send(router, cross_site(request)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{uri}");
        assert!(page.contains("posted from another site"), "{uri}: {page}");
    }
    assert!(site.world().declined.is_empty());
    assert_eq!(get(router, "/people/4").await.0, StatusCode::OK);

    // Not the same: the service is told which pair, and the suggestion is gone.
    let (status, headers, _) = send(router, post_form("/people/3/decline", "other=5")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/people/3?done=declined");
    assert_eq!(site.world().declined, vec![(3, 5)]);
    let (_, _, page) = get(router, "/people/3?done=declined").await;
    assert!(
        page.contains("will not be suggested as this one again"),
        "{page}"
    );
    assert!(
        !page.contains("look-alike\" data-person-id=\"5\""),
        "{page}"
    );
    assert!(page.contains("look-alike\" data-person-id=\"4\""), "{page}");

    // Ids that are no other person are refused here; gone ones by the service.
    for (body, expect) in [
        ("other=3", StatusCode::BAD_REQUEST),
        ("other=x", StatusCode::BAD_REQUEST),
        ("other=999", StatusCode::NOT_FOUND),
    ] {
        let (status, _, page) = send(router, post_form("/people/3/decline", body)).await;
        assert_eq!(status, expect, "{body}: {page}");
        assert!(page.contains("<h1 id=\"person-name\">"), "{body}: {page}");
    }
    assert_eq!(
        site.world().declined,
        vec![(3, 5)],
        "refused ones not passed on"
    );

    // Merge: the same form the merge section posts, into the person shown.
    let (status, headers, _) = send(router, post_form("/people/3/merge", "from=4")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("/people/3?merged="), "{location}");
    let (_, _, page) = get(router, location).await;
    assert!(page.contains("Undo merge"), "{page}");
    assert!(
        !page.contains("look-alikes"),
        "nothing left to suggest: {page}"
    );
    assert_eq!(get(router, "/people/4").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn suggested_people_are_named_in_one_step_and_small_ones_shown_on_request() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;
    let (_, _, page) = get(router, "/people").await;
    assert!(
        page.contains(concat!(
            "<form class=\"name-suggested\" method=\"post\" action=\"/people/5/rename\">",
            "<input type=\"hidden\" name=\"version\" value=\"1\">",
            "<input type=\"hidden\" name=\"back\" value=\"people\">"
        )),
        "{page}"
    );
    // Person 15 has one face, fewer than the grouping minimum.
    assert!(!page.contains("/people/15\""), "{page}");
    assert!(page.contains("href=\"/people?small=1\">Show small suggestions too</a>"));
    let (_, _, page) = get(router, "/people?small=1").await;
    assert!(
        page.contains("<a class=\"person-card\" href=\"/people/15\">"),
        "{page}"
    );
    assert!(page.contains("href=\"/people\">Leave out small suggestions</a>"));

    let (status, headers, _) = send(
        router,
        post_form("/people/5/rename", "name=Dora&version=1&back=people"),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/people?done=named");
    let (_, _, page) = get(router, "/people?done=named").await;
    assert!(
        page.contains("Named: every face of the group is now theirs"),
        "{page}"
    );
    assert!(
        page.contains("<td class=\"name\"><a href=\"/people/5\">Dora</a></td>"),
        "{page}"
    );
    assert!(!page.contains("action=\"/people/5/rename\""), "{page}");
    // `back` names a page of this site, never an address to go to.
    let (_, headers, _) = send(
        router,
        post_form(
            "/people/15/rename",
            "name=Eve&back=https%3A%2F%2Fevil.example",
        ),
    )
    .await;
    assert_eq!(headers[header::LOCATION], "/people/15?done=renamed");
}

/// A multipart upload of one file in field `photo`, as a browser's form sends it.
fn post_photo(uri: &str, file: &str, bytes: &[u8]) -> http::Request<Body> {
    let boundary = "facewire-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"{file}\"\r\n\
         Content-Type: image/jpeg\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    http::Request::post(uri)
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn a_photo_from_this_computer_is_searched_with() {
    let site = FakeSite::start(World::example()).await;
    let router = &site.router;
    let (_, _, page) = get(router, "/people").await;
    assert!(page.contains("action=\"/search\""), "{page}");

    let (status, _, page) = send(router, post_photo("/search", "me <1>.jpg", b"jpeg bytes")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains("<h1>Faces like the one in me &lt;1&gt;.jpg</h1>"),
        "{page}"
    );
    // Every stored face is a candidate: none is the query.
    for face in [7, 8, 11] {
        assert!(
            page.contains(&format!("data-face-id=\"{face}\"")),
            "{face}: {page}"
        );
    }
    assert_eq!(site.world().searched_photos, vec![b"jpeg bytes".to_vec()]);

    // No face in it: said in the page's words, not the service's.
    let (status, _, page) = send(router, post_photo("/search", "cat.jpg", b"no face here")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("No face was found in this photo"), "{page}");
    assert!(!page.contains("yunet"), "{page}");

    // No photo chosen.
    let (status, _, page) = send(router, post_photo("/search", "", b"")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(page.contains("Choose a photo"), "{page}");

    // Another site's page cannot make a visitor's browser search (and send a photo).
    let (status, _, _) = send(router, cross_site(post_photo("/search", "x.jpg", b"jpeg"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        site.world().searched_photos.len(),
        2,
        "only the two photos sent"
    );
}
