//! The HTTP routes. Handlers are short: call a backing service, hand the result (or a
//! sentence saying what is unreachable) to [`crate::render`]. What every page needs —
//! security headers, the same-origin check on every POST, the token on every change —
//! is a layer on the router, not a call each handler must remember.

mod faces;
mod images;
mod people;
mod search;

use std::{sync::atomic::Ordering, sync::Arc};

use axum::{
    extract::{DefaultBodyLimit, Request},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use facewire_server::auth::AuthLayer;
use maud::Markup;
use tonic::{Code, Status};

use crate::{
    render,
    upstream::{describe_failure, Service},
    AppState,
};

/// Pages may load only their own scripts, styles, images and event stream; nothing
/// inline. Even a value that escaped escaping could not run.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// Image bytes are never a document that could run anything.
const FILE_CSP: &str = "default-src 'none'; sandbox";

const PAGE_JS: &str = include_str!("../assets/page.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");

type Shared = Arc<AppState>;

/// Every route. Every POST changes something: it must come from this site (or from no
/// browser at all), and needs `token` when one is set (browsers are asked for it as an
/// HTTP Basic password, scripts may send it as a bearer token) — checked before an
/// upload is read.
pub(crate) fn routes(state: Shared, token: Option<&str>) -> Router {
    let upload_limit = state.max_upload_bytes;
    let changes = Router::new()
        .route(
            "/people/enroll",
            post(people::enroll).layer(DefaultBodyLimit::max(upload_limit)),
        )
        // A read, but an upload: like every POST it must come from this site.
        .route(
            "/search",
            post(search::photo_page).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/people/remove", post(people::remove))
        .route("/people/{person}/rename", post(people::rename))
        .route("/people/{person}/hide", post(people::hide))
        .route("/people/{person}/merge", post(people::merge))
        .route("/people/{person}/undo-merge", post(people::undo_merge))
        .route("/people/{person}/decline", post(people::decline))
        .route("/people/{person}/delete", post(people::delete))
        .route("/images/{id}/faces/{face}", post(faces::form))
        .route("/api/faces/assign", post(faces::assign))
        .route("/api/faces/unassign", post(faces::unassign))
        .route_layer(AuthLayer::browser(token));
    // Pages and files show photos, faces, names and paths: with a token, reading them
    // needs it too (a browser asks once and keeps it for the session).
    let reads = Router::new()
        .route("/", get(images::images_page))
        .route("/api/images", get(images::images_json))
        .route("/api/images/{id}/faces", get(images::image_faces_json))
        .route("/events", get(images::events))
        .route("/images/{id}", get(images::image_page))
        .route("/images/{id}/thumbnail", get(images::thumbnail_file))
        .route("/faces/{face}/crop.jpg", get(people::face_crop))
        .route("/faces/{face}/similar", get(search::similar_page))
        .route("/people", get(people::people_page))
        .route("/people/{person}", get(people::person_page))
        .route(
            "/people/{person}/faces/{file}",
            get(people::enrolled_face_crop),
        )
        .route_layer(AuthLayer::browser(token));
    Router::new()
        .merge(reads)
        .merge(changes)
        .route("/assets/page.js", get(page_js))
        .route("/assets/style.css", get(style_css))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(middleware::from_fn(refuse_cross_site))
        .layer(middleware::map_response(security_headers))
        .with_state(state)
}

/// Whether `path` is one of the many small files a page pulls in (thumbnails, face
/// crops, script and style): logged at debug level, not once each at info.
pub(crate) fn is_asset(path: &str) -> bool {
    path.starts_with("/assets/")
        || (path.starts_with("/images/") && path.ends_with("/thumbnail"))
        || (path.starts_with("/faces/") && path.ends_with("/crop.jpg"))
        || (path.starts_with("/people/") && path.contains("/faces/"))
}

/// Headers every response gets unless its handler chose otherwise (files set their own
/// CSP): no inline script or style can run on a page, nothing is sniffed into a type.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(PAGE_CSP));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    response
}

/// Refuses cross-site requests that change something: a browser always sends `Origin`
/// on a POST (and `Sec-Fetch-Site`), and they must name this server. Without this, any
/// web page could post the forms of this one. Reads (GET, HEAD) pass.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if request.method().is_safe() || same_origin(request.headers()) {
        return next.run(request).await;
    }
    let message = "This change was posted from another site.";
    if request.uri().path().starts_with("/api/") {
        json_error(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    } else {
        error_page(StatusCode::FORBIDDEN, "Refused", message)
    }
}

/// Whether a request comes from a page of this server, or from no browser at all.
fn same_origin(headers: &HeaderMap) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        // Not a browser form post (curl, tests): nothing cross-site to defend against.
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

/// An HTML page. Pages change with every image, so nothing keeps them.
fn html(status: StatusCode, body: Markup) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.into_string(),
    )
        .into_response()
}

/// What an unreadable upload means, in the page's words: over the upload limit (then
/// `advice`), or cut short.
fn upload_failure(
    state: &AppState,
    e: &axum::extract::multipart::MultipartError,
    advice: &str,
) -> String {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        format!(
            "The upload is larger than {} bytes (FACEWIRE_MAX_UPLOAD_BYTES); {advice}.",
            state.max_upload_bytes
        )
    } else {
        format!("The upload could not be read: {}", e.body_text())
    }
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, render::error_page(title, message))
}

/// After a change made by a form: the page to show next (303, so a reload does not
/// post again).
fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
        .into_response()
}

/// The error body of the JSON endpoints: `{"error": {"code", "message"}}`, as the
/// receiver's JSON endpoints answer.
fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": { "code": code, "message": message } });
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

/// How long browsers may keep an image file or thumbnail (the file may change).
const FILE_CACHE: &str = "private, max-age=60";
/// How long browsers may keep a face picture: a face id names one picture for good (ids
/// are never reused, and a face is never re-pictured).
const CROP_CACHE: &str = "private, max-age=86400, immutable";

/// Image bytes, with a CSP that keeps them from ever running as a document.
fn file_response(bytes: Vec<u8>, content_type: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(FILE_CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        bytes,
    )
        .into_response()
}

async fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
    )
}

/// What a refused or failed people-service call means to the person using the page:
/// an HTTP status, the gRPC code's name (for JSON) and a sentence. The service's own
/// message is shown only for refusals it words for users (bad input, a precondition);
/// anything internal is named by its code, never passed on.
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn page(&self, title: &str) -> Response {
        error_page(self.status, title, &self.message)
    }

    pub(crate) fn json(&self) -> Response {
        json_error(self.status, self.code, &self.message)
    }
}

/// Maps a people-service `status`; `missing` says what was not found.
pub(crate) fn people_failure(state: &AppState, status: &Status, missing: &str) -> Failure {
    let url = &state.upstream.recognition_url;
    let (http, code, message) = match status.code() {
        Code::InvalidArgument => (
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("Refused: {}", status.message()),
        ),
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND", missing.to_string()),
        Code::FailedPrecondition => (
            StatusCode::CONFLICT,
            "FAILED_PRECONDITION",
            format!("Not possible now: {}", status.message()),
        ),
        Code::AlreadyExists => (
            StatusCode::CONFLICT,
            "ALREADY_EXISTS",
            format!("Already exists: {}", status.message()),
        ),
        Code::Aborted => (
            StatusCode::CONFLICT,
            "ABORTED",
            "Someone else changed this person meanwhile. This page now shows the current \
             version: check it and try again."
                .to_string(),
        ),
        Code::Unauthenticated | Code::PermissionDenied => (
            StatusCode::BAD_GATEWAY,
            "UNAUTHENTICATED",
            format!(
                "The recognition service at {url} refused the web page's token \
                 (FACEWIRE_AUTH_TOKEN must be the same for both)."
            ),
        ),
        Code::Unimplemented => (
            StatusCode::BAD_GATEWAY,
            "UNIMPLEMENTED",
            format!("The recognition service at {url} does not manage people (it is older than this web page)."),
        ),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => (
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            describe_failure(Service::Recognition, url, status),
        ),
        other => (
            StatusCode::BAD_GATEWAY,
            "INTERNAL",
            format!("The recognition service at {url} failed ({other:?}); its log says why."),
        ),
    };
    Failure {
        status: http,
        code,
        message,
    }
}

async fn page_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE_JS,
    )
        .into_response()
}

async fn style_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// Ready when not draining and the receiver answers its health check as SERVING.
async fn readyz(axum::extract::State(state): axum::extract::State<Shared>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match state.upstream.receiver_ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

#[cfg(test)]
mod tests;
