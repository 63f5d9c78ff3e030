//! The images list (with its live updates), an image's page and the image files.

use std::convert::Infallible;

use axum::{
    extract::{Path, Query, State},
    http::{header, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    Json,
};
use facewire_config::PathError;
use facewire_proto::v1 as pb;
use futures::{stream, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};
use tonic::Code;

use super::{error_page, file_response, html, json_error, people_failure, Shared, FILE_CACHE};
use crate::{
    render::{
        self,
        image::{FaceJson, FaceView, ImagePage},
        ImagesPage, PersonChip, Row, RowUpdate,
    },
    thumbnail,
    upstream::{describe_failure, FeedEvent, FeedState, Service},
    AppState,
};

/// Images per page.
const PAGE_SIZE: i32 = 50;
/// Most people the images list can be filtered by at once.
const MAX_PERSON_FILTERS: usize = 8;
/// Most names offered when naming a face.
const MAX_NAMES: i32 = 1000;

/// What an images listing asks for: `?status=`, `?person=` (repeatable: images showing
/// every one of them) and `?page=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ListParams {
    pub(super) filter: Option<pb::ImageStatus>,
    pub(super) persons: Vec<i64>,
    pub(super) token: String,
}

/// Parses the query of an images listing; the error is a sentence for the page.
pub(super) fn parse_list(pairs: &[(String, String)]) -> Result<ListParams, String> {
    let mut params = ListParams::default();
    let mut status = None;
    for (key, value) in pairs {
        match key.as_str() {
            "status" => status = Some(value.as_str()),
            "page" => params.token = value.clone(),
            "person" => {
                let id = value
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| format!("person={value:?} is not a person id"))?;
                if !params.persons.contains(&id) {
                    params.persons.push(id);
                }
            }
            _ => {}
        }
    }
    if params.persons.len() > MAX_PERSON_FILTERS {
        return Err(format!(
            "filter by at most {MAX_PERSON_FILTERS} people at once"
        ));
    }
    params.filter = render::parse_filter(status)?;
    Ok(params)
}

/// Lists one page; the error is a sentence for the page.
async fn list(state: &AppState, params: &ListParams) -> (Result<Vec<Row>, String>, String) {
    let request = pb::ListImagesRequest {
        page_size: PAGE_SIZE,
        page_token: params.token.clone(),
        status: params.filter.unwrap_or_default() as i32,
        person_ids: params.persons.clone(),
        has_unknown_faces: false,
    };
    match state.upstream.list_images(request).await {
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

/// The filter chips: each person's name, looked up (a failed look-up shows the id).
async fn chips(state: &AppState, persons: &[i64]) -> Vec<PersonChip> {
    futures::future::join_all(persons.iter().map(|&id| async move {
        let label = match state.upstream.get_person(id).await {
            Ok(p) if p.name.is_empty() => format!("Unnamed person #{id}"),
            Ok(p) => p.name,
            Err(s) if s.code() == Code::NotFound => format!("#{id} (no longer exists)"),
            Err(_) => format!("#{id}"),
        };
        PersonChip { id, label }
    }))
    .await
}

pub(super) async fn images_page(
    State(state): State<Shared>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let params = match parse_list(&query) {
        Ok(p) => p,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, "Unknown filter", &e),
    };
    let ((rows, next_page_token), persons) =
        futures::join!(list(&state, &params), chips(&state, &params.persons));
    html(
        StatusCode::OK,
        render::images_page(&ImagesPage {
            filter: params.filter,
            persons,
            page_token: params.token,
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

pub(super) async fn images_json(
    State(state): State<Shared>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let params = match parse_list(&query) {
        Ok(p) => p,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let as_of = now_millis();
    let (rows, next_page_token) = list(&state, &params).await;
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
pub(super) async fn events(
    State(state): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
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

/// The image with this id (as the path gave it), or the page saying why not.
async fn load_image(state: &AppState, raw_id: &str) -> Result<pb::Image, Response> {
    let Ok(id) = raw_id.parse::<i64>() else {
        return Err(error_page(
            StatusCode::NOT_FOUND,
            "No such image",
            &format!("{raw_id:?} is not an image id."),
        ));
    };
    match state.upstream.get_image(id).await {
        Ok(image) => Ok(image),
        Err(s) if s.code() == Code::NotFound => Err(error_page(
            StatusCode::NOT_FOUND,
            "No such image",
            &format!("There is no image with id {id}."),
        )),
        Err(s) => Err(error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Receiver unreachable",
            &describe_failure(Service::Receiver, &state.upstream.receiver_url, &s),
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ThumbQuery {
    full: Option<String>,
}

/// `/images/{id}/thumbnail`: the image file, downscaled when it is a large JPEG or PNG
/// (`?full=1` for the original). The path comes from the receiver's record and is
/// confined to the image root exactly as the receiver confines submissions.
pub(super) async fn thumbnail_file(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<ThumbQuery>,
) -> Response {
    let image = match load_image(&state, &id).await {
        Ok(image) => image,
        Err(page) => return page,
    };
    // Opened once, through the root's one safe open, and read from that very handle.
    let root = state.root.clone();
    let path = image.path.clone();
    let read =
        tokio::task::spawn_blocking(move || thumbnail::read_image(&root, &path, u64::MAX)).await;
    let (checked, bytes) = match read {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => {
            let status = match e {
                PathError::Unreadable { .. } => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::NOT_FOUND,
            };
            return error_page(status, "Image file unavailable", &e.to_string());
        }
        Err(_) => {
            return error_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Image file unavailable",
                "Reading the image file failed.",
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

/// The size a browser shows the image at, from the start of its file; `None` when the
/// file cannot be read or its header says nothing (the page then places boxes once the
/// photo has loaded).
async fn display_size(state: &AppState, path: &str) -> Option<(u32, u32)> {
    let root = state.root.clone();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let (_, prefix) =
            thumbnail::read_image(&root, &path, thumbnail::SIZE_PREFIX_BYTES as u64).ok()?;
        thumbnail::display_size(&prefix)
    })
    .await
    .ok()
    .flatten()
}

/// The names offered when naming a face: everyone named and not hidden.
async fn names(state: &AppState) -> Result<Vec<String>, String> {
    let request = pb::ListPersonsRequest {
        page_size: MAX_NAMES,
        filter: pb::PersonFilter::Named as i32,
        ..Default::default()
    };
    match state.upstream.list_persons(request).await {
        Ok(listing) => Ok(listing.persons.into_iter().map(|p| p.name).collect()),
        Err(s) => Err(people_failure(state, &s, "Nobody is named yet.").message),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct DoneQuery {
    done: Option<String>,
}

/// The image page with `notice`, answered with `status`.
pub(super) async fn image_view(
    state: &AppState,
    raw_id: &str,
    status: StatusCode,
    notice: Option<(&'static str, String)>,
) -> Response {
    let image = match load_image(state, raw_id).await {
        Ok(image) => image,
        Err(page) => return page,
    };
    let (names, size) = futures::join!(names(state), display_size(state, &image.path));
    html(
        status,
        render::image::image_page(&ImagePage {
            id: image.id,
            path: image.path,
            status: pb::ImageStatus::try_from(image.status).unwrap_or_default(),
            error: image.last_error,
            faces: image.faces.iter().map(FaceView::from).collect(),
            size,
            names,
            notice,
        }),
    )
}

/// `/images/{id}`: the photo with its faces drawn, labelled and nameable.
pub(super) async fn image_page(
    State(state): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let notice = match q.done.as_deref() {
        Some("named") => Some(("ok", "Named.".to_string())),
        Some("unassigned") => Some(("ok", "Unassigned.".to_string())),
        _ => None,
    };
    image_view(&state, &id, StatusCode::OK, notice).await
}

/// `/api/images/{id}/faces`: the image's faces as the page labels them, for relabelling
/// after a change named other faces too.
pub(super) async fn image_faces_json(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", "not an image id");
    };
    match state.upstream.get_image(id).await {
        Ok(image) => {
            let faces: Vec<FaceJson> = image
                .faces
                .iter()
                .map(|f| FaceJson::from(&FaceView::from(f)))
                .collect();
            (
                [(header::CACHE_CONTROL, "no-store")],
                Json(serde_json::json!({ "faces": faces })),
            )
                .into_response()
        }
        Err(s) if s.code() == Code::NotFound => json_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("There is no image with id {id}."),
        ),
        Err(s) => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            &describe_failure(Service::Receiver, &state.upstream.receiver_url, &s),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &[(&str, &str)]) -> Vec<(String, String)> {
        query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn listing_queries_parse_people_status_and_page() {
        let params = parse_list(&pairs(&[
            ("person", "3"),
            ("status", "done"),
            ("person", "5"),
            ("person", "3"),
            ("page", "t"),
            ("other", "x"),
        ]))
        .unwrap();
        assert_eq!(
            params,
            ListParams {
                filter: Some(pb::ImageStatus::Done),
                persons: vec![3, 5],
                token: "t".into(),
            }
        );
        for bad in ["0", "-2", "ada", ""] {
            let err = parse_list(&pairs(&[("person", bad)])).unwrap_err();
            assert!(err.contains("is not a person id"), "{bad}: {err}");
        }
        let many: Vec<(String, String)> =
            (1..=9).map(|i| ("person".into(), i.to_string())).collect();
        assert!(parse_list(&many).unwrap_err().contains("at most 8"));
        assert!(parse_list(&pairs(&[("status", "nope")])).is_err());
    }
}
