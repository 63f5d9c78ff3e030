//! The HTTP routes. Handlers are short: call a backing service, hand the result (or a
//! sentence saying what is unreachable) to [`crate::render`].

use std::{convert::Infallible, sync::atomic::Ordering, sync::Arc};

use axum::{
    extract::{DefaultBodyLimit, Multipart, Path, Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Form, Json, Router,
};
use facewire_config::PathError;
use facewire_proto::v1 as pb;
use facewire_server::auth::AuthLayer;
use futures::{stream, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use tonic::Code;

use crate::{
    render::{self, EnrollLine, FaceThumb, ImagesPage, PeoplePage, Person, Row, RowUpdate},
    thumbnail,
    upstream::{describe_failure, FeedEvent, FeedState, Service},
    AppState,
};

/// Images per page.
const PAGE_SIZE: i32 = 50;

/// Pages may load only their own scripts, styles, images and event stream; nothing
/// inline. Even a value that escaped escaping could not run.
const PAGE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// Image bytes are never a document that could run anything.
const FILE_CSP: &str = "default-src 'none'; sandbox";

const PAGE_JS: &str = include_str!("assets/page.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

type Shared = Arc<AppState>;

/// Every route; enrolling and removing people need `token` when one is set (browsers
/// are asked for it as an HTTP Basic password, scripts may send it as a bearer token),
/// and are refused before an upload is read.
pub(crate) fn routes(state: Shared, token: Option<&str>) -> Router {
    let upload_limit = state.max_upload_bytes;
    let gallery_changes = Router::new()
        .route(
            "/people/enroll",
            post(enroll).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/people/remove", post(remove))
        .route_layer(AuthLayer::browser(token));
    Router::new()
        .route("/", get(images_page))
        .route("/api/images", get(images_json))
        .route("/events", get(events))
        .route("/images/{id}/thumbnail", get(thumbnail_file))
        .route("/people", get(people_page))
        .route("/people/{name}/faces/{file}", get(face_crop))
        .merge(gallery_changes)
        .route("/assets/page.js", get(page_js))
        .route("/assets/style.css", get(style_css))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Whether `path` is one of the many small files a page pulls in (thumbnails, face
/// crops, script and style): logged at debug level, not once each at info.
pub(crate) fn is_asset(path: &str) -> bool {
    path.starts_with("/assets/")
        || (path.starts_with("/images/") && path.ends_with("/thumbnail"))
        || (path.starts_with("/people/") && path.contains("/faces/"))
}

/// An HTML page with the page security headers.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    html(status, render::error_page(title, message))
}

async fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no page at this address.",
    )
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    status: Option<String>,
    page: Option<String>,
}

/// Lists one page; the error is a sentence for the page.
async fn list(
    state: &AppState,
    filter: Option<pb::ImageStatus>,
    token: &str,
) -> (Result<Vec<Row>, String>, String) {
    match state.upstream.list_images(filter, token, PAGE_SIZE).await {
        Ok(page) => (
            Ok(page.images.iter().map(Row::from_image).collect()),
            page.next_page_token,
        ),
        Err(status) if status.code() == Code::InvalidArgument => (
            Err(format!(
                "The receiver refused this listing: {}. Start again from the newest images.",
                status.message()
            )),
            String::new(),
        ),
        Err(status) => (
            Err(describe_failure(
                Service::Receiver,
                &state.upstream.receiver_url,
                &status,
            )),
            String::new(),
        ),
    }
}

async fn images_page(State(state): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let filter = match render::parse_filter(q.status.as_deref()) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Unknown status", &e),
    };
    let token = q.page.unwrap_or_default();
    let (rows, next_page_token) = list(&state, filter, &token).await;
    html(
        StatusCode::OK,
        render::images_page(&ImagesPage {
            filter,
            page_token: token,
            rows,
            next_page_token,
        }),
    )
}

/// `/api/images`: the rows of one page as the live script re-lists them.
#[derive(Debug, Serialize)]
struct RowsJson {
    /// When the listing was requested (ms): rows the page changed later stay as they are.
    as_of: i64,
    rows: Vec<RowUpdate>,
    error: Option<String>,
    next_page_token: String,
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn images_json(State(state): State<Shared>, Query(q): Query<ListQuery>) -> Response {
    let filter = match render::parse_filter(q.status.as_deref()) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let as_of = now_millis();
    let (rows, next_page_token) = list(&state, filter, q.page.as_deref().unwrap_or("")).await;
    let (rows, error) = match rows {
        Ok(rows) => (rows.iter().map(RowUpdate::from).collect(), None),
        Err(e) => (Vec::new(), Some(e)),
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(RowsJson {
            as_of,
            rows,
            error,
            next_page_token,
        }),
    )
        .into_response()
}

fn state_event(state: &FeedState) -> Event {
    Event::default()
        .event("upstream")
        .json_data(state)
        .unwrap_or_else(|_| Event::default().event("resync").data("{}"))
}

/// `/events`: `upstream` events when the receiver stream opens or breaks (the page
/// re-lists on every open), `image` events with a rendered row per change, and
/// `resync` when this page fell behind and missed changes.
async fn events(State(state): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (rx, current) = state.feed.subscribe();
    let first = stream::once(futures::future::ready(state_event(&current)));
    let changes = BroadcastStream::new(rx).map(|item| match item {
        Ok(FeedEvent::Image(image)) => {
            let update = RowUpdate::from(&Row::from_image(&image));
            Event::default()
                .event("image")
                .json_data(&update)
                .unwrap_or_else(|_| Event::default().event("resync").data("{}"))
        }
        Ok(FeedEvent::State(s)) => state_event(&s),
        Err(BroadcastStreamRecvError::Lagged(_)) => Event::default().event("resync").data("{}"),
    });
    let stream = first
        .chain(changes)
        .take_until(state.closing.clone().cancelled_owned())
        .map(Ok);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
struct ThumbQuery {
    full: Option<String>,
}

/// How long browsers may keep an image file or thumbnail (the file may change).
const FILE_CACHE: &str = "private, max-age=60";
/// How long browsers may keep a face picture: a face id names one picture for good (ids
/// are never reused, and a face is never re-pictured).
const CROP_CACHE: &str = "private, max-age=86400, immutable";

fn file_response(bytes: Vec<u8>, content_type: &'static str, cache: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(FILE_CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        bytes,
    )
        .into_response()
}

/// `/images/{id}/thumbnail`: the image file, downscaled when it is a large JPEG or PNG
/// (`?full=1` for the original). The path comes from the receiver's record and is
/// confined to the image root exactly as the receiver confines submissions.
async fn thumbnail_file(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return error_page(
            StatusCode::NOT_FOUND,
            "No such image",
            &format!("{id:?} is not an image id."),
        );
    };
    let image = match state.upstream.get_image(id).await {
        Ok(image) => image,
        Err(s) if s.code() == Code::NotFound => {
            return error_page(
                StatusCode::NOT_FOUND,
                "No such image",
                &format!("There is no image with id {id}."),
            )
        }
        Err(s) => {
            return error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Receiver unreachable",
                &describe_failure(Service::Receiver, &state.upstream.receiver_url, &s),
            )
        }
    };
    let checked = match state.root.check(&image.path) {
        Ok(c) => c,
        Err(e) => {
            let status = match e {
                PathError::Unreadable { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::NOT_FOUND,
            };
            return error_page(status, "Image file unavailable", &e.to_string());
        }
    };
    let bytes = match tokio::fs::read(&checked.resolved).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error_page(
                StatusCode::NOT_FOUND,
                "Image file unavailable",
                &format!("{} does not exist", image.path),
            )
        }
        Err(e) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Image file unavailable",
                &format!("{} cannot be read: {e}", image.path),
            )
        }
    };
    let original_type = thumbnail::content_type_for(&checked.relative);
    if q.full.is_some() {
        return file_response(bytes, original_type, FILE_CACHE);
    }
    match tokio::task::spawn_blocking(move || match thumbnail::thumbnail(&bytes) {
        Some(small) => Ok(small),
        None => Err(bytes),
    })
    .await
    {
        Ok(Ok((small, content_type))) => file_response(small, content_type, FILE_CACHE),
        Ok(Err(original)) => file_response(original, original_type, FILE_CACHE),
        Err(_) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Thumbnail failed",
            "Making the thumbnail failed.",
        ),
    }
}

/// At most this many `ListFaces` calls at once while rendering the people page.
const FACE_LISTINGS_AT_ONCE: usize = 8;

async fn load_people(state: &AppState) -> Result<Vec<Person>, String> {
    let people =
        state.upstream.list_people().await.map_err(|s| {
            describe_failure(Service::Recognition, &state.upstream.recognition_url, &s)
        })?;
    let people = stream::iter(people)
        .map(|p| async move {
            // A person removed meanwhile, or a failed call, shows the count alone.
            let faces = state
                .upstream
                .list_faces(p.name.clone())
                .await
                .ok()
                .map(|faces| {
                    faces
                        .iter()
                        .map(|f| FaceThumb {
                            id: f.id,
                            has_crop: !f.crop_jpeg.is_empty(),
                        })
                        .collect()
                });
            Person {
                name: p.name,
                face_count: p.face_count,
                faces,
            }
        })
        .buffered(FACE_LISTINGS_AT_ONCE)
        .collect()
        .await;
    Ok(people)
}

async fn people_page(State(state): State<Shared>) -> Response {
    let people = load_people(&state).await;
    html(
        StatusCode::OK,
        render::people_page(&PeoplePage {
            people: Some(people),
            ..Default::default()
        }),
    )
}

/// `/people/{name}/faces/{id}.jpg`: the picture of one enrolled face, from recognition.
async fn face_crop(
    State(state): State<Shared>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    let not_found = || {
        error_page(
            StatusCode::NOT_FOUND,
            "No such face",
            "There is no picture of that face.",
        )
    };
    let Some(id) = file
        .strip_suffix(".jpg")
        .and_then(|id| id.parse::<i64>().ok())
    else {
        return not_found();
    };
    match state.upstream.list_faces(name).await {
        Ok(faces) => match faces.into_iter().find(|f| f.id == id) {
            Some(face) if !face.crop_jpeg.is_empty() => {
                file_response(face.crop_jpeg, "image/jpeg", CROP_CACHE)
            }
            _ => not_found(),
        },
        Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => not_found(),
        Err(s) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Recognition unreachable",
            &describe_failure(Service::Recognition, &state.upstream.recognition_url, &s),
        ),
    }
}

/// Refuses cross-site form posts: a browser always sends `Origin` on a POST, and it
/// must name this server. (Without this, any web page could remove people.)
fn same_origin(headers: &HeaderMap) -> bool {
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

fn cross_site() -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        "Refused",
        "This form was posted from another site.",
    )
}

/// Renders the people page after an action, with a fresh list.
async fn after_action(
    state: &AppState,
    status: StatusCode,
    notice: Option<(&'static str, String)>,
    enrolled: Vec<EnrollLine>,
    name: String,
) -> Response {
    let people = load_people(state).await;
    html(
        status,
        render::people_page(&PeoplePage {
            people: Some(people),
            notice,
            enrolled,
            name,
        }),
    )
}

/// `POST /people/enroll` (multipart: `name`, `photos`…): one line per photo.
async fn enroll(State(state): State<Shared>, headers: HeaderMap, mut form: Multipart) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let mut name = String::new();
    let mut photos: Vec<(String, Vec<u8>)> = Vec::new();
    let mut lines = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                let message = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    format!(
                        "The upload is larger than {} bytes (FACEWIRE_MAX_UPLOAD_BYTES); enrol fewer or smaller photos at a time.",
                        state.max_upload_bytes
                    )
                } else {
                    format!("The upload could not be read: {}", e.body_text())
                };
                return after_action(
                    &state,
                    e.status(),
                    Some(("error", message)),
                    Vec::new(),
                    name,
                )
                .await;
            }
        };
        let field_name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().unwrap_or("").to_string();
        let bytes = match field.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return after_action(
                    &state,
                    e.status(),
                    Some((
                        "error",
                        format!("The upload could not be read: {}", e.body_text()),
                    )),
                    Vec::new(),
                    name,
                )
                .await
            }
        };
        match field_name.as_str() {
            "name" => name = String::from_utf8_lossy(&bytes).trim().to_string(),
            "photos" if bytes.is_empty() && file_name.is_empty() => {}
            "photos" if bytes.is_empty() => lines.push(EnrollLine {
                file: file_name,
                outcome: Err("empty file".into()),
            }),
            "photos" => photos.push((file_name, bytes.to_vec())),
            _ => {}
        }
    }
    if name.is_empty() {
        return after_action(
            &state,
            StatusCode::BAD_REQUEST,
            Some(("error", "Give the person a name.".into())),
            lines,
            name,
        )
        .await;
    }
    if photos.is_empty() {
        return after_action(
            &state,
            StatusCode::BAD_REQUEST,
            Some(("error", "Choose at least one photo.".into())),
            lines,
            name,
        )
        .await;
    }
    let (files, images): (Vec<String>, Vec<Vec<u8>>) = photos.into_iter().unzip();
    let results = match state.upstream.enroll(name.clone(), images).await {
        Ok(r) => r,
        Err(s) => {
            let status = if s.code() == Code::InvalidArgument {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            let message = if s.code() == Code::InvalidArgument {
                format!("Not enrolled: {}", s.message())
            } else {
                describe_failure(Service::Recognition, &state.upstream.recognition_url, &s)
            };
            return after_action(&state, status, Some(("error", message)), lines, name).await;
        }
    };
    let mut enrolled = 0;
    for (index, file) in files.into_iter().enumerate() {
        let result = results.iter().find(|r| r.index as usize == index);
        let outcome = match result.and_then(|r| r.outcome.as_ref()) {
            Some(pb::enroll_result::Outcome::Face(face)) => {
                enrolled += 1;
                Ok(if face.created {
                    format!("enrolled as face {}", face.id)
                } else {
                    format!("already enrolled (face {})", face.id)
                })
            }
            Some(pb::enroll_result::Outcome::Error(e)) => Err(e.message.clone()),
            None => Err("the recognition service returned no result for this photo".into()),
        };
        lines.push(EnrollLine {
            file: if file.is_empty() {
                format!("photo {}", index + 1)
            } else {
                file
            },
            outcome,
        });
    }
    let failed = lines.len() - enrolled;
    let notice = if failed == 0 {
        ("ok", format!("Enrolled {name}: {enrolled} photo(s)."))
    } else {
        (
            "error",
            format!("{name}: {enrolled} photo(s) enrolled, {failed} refused (see below)."),
        )
    };
    let keep = if failed == 0 { String::new() } else { name };
    after_action(&state, StatusCode::OK, Some(notice), lines, keep).await
}

#[derive(Debug, Deserialize)]
struct RemoveForm {
    name: String,
}

/// `POST /people/remove` (form: `name`).
async fn remove(
    State(state): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<RemoveForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let (status, notice) = match state.upstream.remove_person(form.name.clone()).await {
        Ok(faces) => (
            StatusCode::OK,
            ("ok", format!("Removed {} ({faces} face(s)).", form.name)),
        ),
        Err(s) if s.code() == Code::NotFound => (
            StatusCode::NOT_FOUND,
            ("error", format!("Nobody named {} is enrolled.", form.name)),
        ),
        Err(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            (
                "error",
                describe_failure(Service::Recognition, &state.upstream.recognition_url, &s),
            ),
        ),
    };
    after_action(&state, status, Some(notice), Vec::new(), String::new()).await
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
async fn readyz(State(state): State<Shared>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match state.upstream.receiver_ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Frontend, FrontendConfig};
    use axum::body::Body;
    use tower::ServiceExt;

    #[test]
    fn assets_are_quiet_and_pages_are_not() {
        for path in [
            "/assets/page.js",
            "/images/7/thumbnail",
            "/people/Ada/faces/3.jpg",
        ] {
            assert!(is_asset(path), "{path}");
        }
        for path in ["/", "/people", "/people/enroll", "/api/images", "/images"] {
            assert!(!is_asset(path), "{path}");
        }
    }

    /// A frontend whose receiver and recognition service are both down (port 1 refuses).
    async fn orphan(root: &std::path::Path) -> Router {
        let config = FrontendConfig::local("http://127.0.0.1:1", "http://127.0.0.1:1", root.into());
        Frontend::build(&config).await.unwrap().router()
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, HeaderMap, String) {
        let response = router
            .clone()
            .oneshot(http::Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
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

        let (status, _, body) = get(&router, "/images/5/thumbnail").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("Receiver unreachable"));

        // A face picture needs recognition; an address that names no picture needs nothing.
        let (status, _, body) = get(&router, "/people/Ada%20L/faces/3.jpg").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("Recognition unreachable"), "{body}");
        for bad in ["/people/ada/faces/3.png", "/people/ada/faces/x.jpg"] {
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
        let (status, _, body) = get(&router, "/images/..%2Fetc/thumbnail").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("is not an image id"), "{body}");
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
    async fn gallery_changes_need_the_token_and_pages_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FrontendConfig::local(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            dir.path().into(),
        );
        config.auth.auth_token = Some("t0k".into());
        let router = Frontend::build(&config).await.unwrap().router();
        let remove = |auth: Option<&'static str>| {
            let mut request = http::Request::post("/people/remove")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            request.body(Body::from("name=ada")).unwrap()
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
        assert_eq!(get(&router, "/people").await.0, StatusCode::OK);
        assert_eq!(get(&router, "/").await.0, StatusCode::OK);
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
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
    }
}
