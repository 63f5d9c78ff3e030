//! Search by face: `/faces/{id}/similar`, the stored faces most like one face, and
//! `POST /search`, the stored faces most like the face in an uploaded photo.

use axum::{
    extract::{Multipart, Path, State},
    http::StatusCode,
    response::Response,
};
use facewire_proto::v1::search_faces_request::Query;
use tonic::{Code, Status};

use super::{html, people_failure, Shared};
use crate::{
    render::{
        self,
        search::{Searched, SimilarFace, SimilarPage},
    },
    AppState,
};

/// Most faces a search lists.
const MATCHES_SHOWN: i32 = 40;

/// What a failed search means to the person using the page: a status and a sentence
/// that never passes on the service's own wording (which names its internals).
fn search_failure(state: &AppState, status: &Status) -> (StatusCode, String) {
    match status.code() {
        Code::NotFound => (
            StatusCode::NOT_FOUND,
            "There is no such face (any more).".into(),
        ),
        Code::FailedPrecondition => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Search by face is not available: the recognition service keeps no index of \
             faces to search."
                .into(),
        ),
        Code::InvalidArgument => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "This face cannot be searched with: nothing about it is stored to compare \
             (re-run detection on its photo to fix that)."
                .into(),
        ),
        _ => {
            let failure = people_failure(state, status, "There is no such face (any more).");
            (failure.status, failure.message)
        }
    }
}

/// `/faces/{id}/similar`: the faces most like face `id`, with their people and photos.
pub(super) async fn similar_page(State(state): State<Shared>, Path(raw): Path<String>) -> Response {
    let Some(face_id) = raw.parse::<i64>().ok().filter(|id| *id > 0) else {
        return super::error_page(
            StatusCode::NOT_FOUND,
            "No such face",
            &format!("{raw:?} is not a face id."),
        );
    };
    let (status, matches) = search(&state, Query::FaceId(face_id), |s| {
        search_failure(&state, s)
    })
    .await;
    let exclude = |m: &SimilarFace| m.face_id != face_id;
    let matches = matches.map(|found| found.into_iter().filter(exclude).collect());
    html(
        status,
        render::search::similar_page(&SimilarPage {
            searched: Searched::Face(face_id),
            matches,
        }),
    )
}

/// Runs one search and turns its answer into what the page shows.
async fn search(
    state: &AppState,
    query: Query,
    failure: impl Fn(&Status) -> (StatusCode, String),
) -> (StatusCode, Result<Vec<SimilarFace>, String>) {
    match state.upstream.search_faces(query, MATCHES_SHOWN).await {
        Ok(found) => (
            StatusCode::OK,
            Ok(found.iter().map(SimilarFace::from).collect()),
        ),
        Err(s) => {
            let (status, message) = failure(&s);
            (status, Err(message))
        }
    }
}

/// What a failed search with a photo means, in words about the photo.
fn photo_failure(state: &AppState, status: &Status) -> (StatusCode, String) {
    match status.code() {
        Code::InvalidArgument => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "No face was found in this photo, or it is not an image that can be read \
             (JPEG, PNG, WebP, BMP, TIFF or GIF)."
                .into(),
        ),
        Code::ResourceExhausted => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The recognition service is busy with other photos; try again in a moment.".into(),
        ),
        _ => search_failure(state, status),
    }
}

/// `POST /search` (multipart: `photo`): the stored faces most like the largest face in
/// the uploaded photo.
pub(super) async fn photo_page(State(state): State<Shared>, mut form: Multipart) -> Response {
    let mut photo: Option<(String, Vec<u8>)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return upload_failed(&state, e),
        };
        if field.name() != Some("photo") {
            continue;
        }
        let file = field.file_name().unwrap_or("").to_string();
        match field.bytes().await {
            Ok(bytes) => photo = Some((file, bytes.to_vec())),
            Err(e) => return upload_failed(&state, e),
        }
    }
    let (file, bytes) = match photo {
        Some((file, bytes)) if !bytes.is_empty() => (file, bytes),
        _ => {
            return super::error_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "No photo",
                "Choose a photo of someone to search with.",
            )
        }
    };
    let (status, matches) = search(&state, Query::Image(bytes), |s| photo_failure(&state, s)).await;
    html(
        status,
        render::search::similar_page(&SimilarPage {
            searched: Searched::Photo(file),
            matches,
        }),
    )
}

/// The page for an upload that could not be read (too large, cut short).
fn upload_failed(state: &AppState, e: axum::extract::multipart::MultipartError) -> Response {
    let message = super::upload_failure(state, &e, "choose a smaller photo");
    super::error_page(e.status(), "Upload failed", &message)
}
