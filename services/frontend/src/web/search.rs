//! Search by face: `/faces/{id}/similar`, the stored faces most like one face.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use tonic::{Code, Status};

use super::{html, people_failure, Shared};
use crate::{
    render::{
        self,
        search::{SimilarFace, SimilarPage},
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
    let (status, matches) = match state.upstream.search_faces(face_id, MATCHES_SHOWN).await {
        Ok(found) => (
            StatusCode::OK,
            Ok(found
                .iter()
                .filter(|m| m.face_id != face_id)
                .map(SimilarFace::from)
                .collect()),
        ),
        Err(s) => {
            let (status, message) = search_failure(&state, &s);
            (status, Err(message))
        }
    };
    html(
        status,
        render::search::similar_page(&SimilarPage { face_id, matches }),
    )
}
