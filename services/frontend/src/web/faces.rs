//! Naming faces: the JSON endpoints the image page's script calls, and the plain form
//! they stand in for when there is no script.

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Form, Json,
};
use serde::{Deserialize, Serialize};

use super::{
    images::image_view, json_error, people::check_name, people_failure, see_other, Shared,
};
use crate::{
    render::{
        image::{FaceJson, FaceView},
        person_href,
    },
    upstream::Assignee,
    AppState,
};

/// Most faces one call may name or unassign.
const MAX_FACES: usize = 1000;

/// `POST /api/faces/assign`: `face_ids`, and either `person_id` or `person_name`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AssignBody {
    face_ids: Vec<i64>,
    #[serde(default)]
    person_id: Option<i64>,
    #[serde(default)]
    person_name: Option<String>,
}

/// `POST /api/faces/unassign`: `face_ids`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UnassignBody {
    face_ids: Vec<i64>,
}

/// The face ids of a request: at least one, at most [`MAX_FACES`], all ids; repeats
/// dropped. The error says what is wrong.
pub(super) fn check_face_ids(ids: &[i64]) -> Result<Vec<i64>, String> {
    if ids.is_empty() {
        return Err("face_ids is empty: name at least one face".into());
    }
    if ids.len() > MAX_FACES {
        return Err(format!(
            "face_ids has {} faces; at most {MAX_FACES} at once",
            ids.len()
        ));
    }
    if let Some(bad) = ids.iter().find(|id| **id <= 0) {
        return Err(format!("face_ids: {bad} is not a face id"));
    }
    let mut unique = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(id) {
            unique.push(*id);
        }
    }
    Ok(unique)
}

/// Whom to assign to: exactly one of a person id and a name (an id of 0 counts as
/// none, as in the API).
pub(super) fn check_assignee(
    person_id: Option<i64>,
    person_name: Option<&str>,
) -> Result<Assignee, String> {
    let person_id = person_id.filter(|id| *id != 0);
    let name = person_name.filter(|n| !n.trim().is_empty());
    match (person_id, name) {
        (Some(_), Some(_)) => Err("give person_id or person_name, not both".into()),
        (None, None) => Err("give person_id (an existing person) or person_name".into()),
        (Some(id), None) if id < 0 => Err(format!("person_id: {id} is not a person id")),
        (Some(id), None) => Ok(Assignee::Id(id)),
        (None, Some(name)) => check_name(name)
            .map(Assignee::Name)
            .map_err(|e| format!("person_name: {e}")),
    }
}

/// A refused request body: 400 with what was wrong.
fn invalid(message: &str) -> Response {
    json_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

/// A body that is not the JSON asked for (wrong content type, syntax, fields).
fn unreadable(rejection: &JsonRejection) -> Response {
    let status = match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE => rejection.status(),
        _ => StatusCode::BAD_REQUEST,
    };
    json_error(status, "INVALID_ARGUMENT", &rejection.body_text())
}

/// The person faces were given to.
#[derive(Debug, Serialize)]
struct PersonJson {
    id: i64,
    name: String,
    href: String,
}

/// What the endpoints answer: the faces as they are now, and the person named.
#[derive(Debug, Serialize)]
struct ChangedJson {
    person: Option<PersonJson>,
    faces: Vec<FaceJson>,
    /// Other faces the re-check that followed named automatically: when non-zero, the
    /// page refreshes every label of the image.
    rematched: i64,
}

fn answer(changed: ChangedJson) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], Json(changed)).into_response()
}

async fn assign_faces(
    state: &AppState,
    ids: Vec<i64>,
    to: Assignee,
) -> Result<ChangedJson, super::Failure> {
    let changed =
        state.upstream.assign_faces(ids, to).await.map_err(|s| {
            people_failure(state, &s, "There is no such face or person (any more).")
        })?;
    Ok(ChangedJson {
        person: changed.person.map(|p| PersonJson {
            id: p.id,
            href: person_href(p.id),
            name: p.name,
        }),
        faces: changed
            .faces
            .iter()
            .map(|f| FaceJson::from(&FaceView::from(f)))
            .collect(),
        rematched: changed.rematched,
    })
}

async fn unassign_faces(state: &AppState, ids: Vec<i64>) -> Result<ChangedJson, super::Failure> {
    let faces = state
        .upstream
        .unassign_faces(ids)
        .await
        .map_err(|s| people_failure(state, &s, "There is no such face (any more)."))?;
    Ok(ChangedJson {
        person: None,
        faces: faces
            .iter()
            .map(|f| FaceJson::from(&FaceView::from(f)))
            .collect(),
        rematched: 0,
    })
}

/// `POST /api/faces/assign`.
pub(super) async fn assign(
    State(state): State<Shared>,
    body: Result<Json<AssignBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return unreadable(&rejection),
    };
    let ids = match check_face_ids(&body.face_ids) {
        Ok(ids) => ids,
        Err(e) => return invalid(&e),
    };
    let to = match check_assignee(body.person_id, body.person_name.as_deref()) {
        Ok(to) => to,
        Err(e) => return invalid(&e),
    };
    match assign_faces(&state, ids, to).await {
        Ok(changed) => answer(changed),
        Err(failure) => failure.json(),
    }
}

/// `POST /api/faces/unassign`.
pub(super) async fn unassign(
    State(state): State<Shared>,
    body: Result<Json<UnassignBody>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(rejection) => return unreadable(&rejection),
    };
    let ids = match check_face_ids(&body.face_ids) {
        Ok(ids) => ids,
        Err(e) => return invalid(&e),
    };
    match unassign_faces(&state, ids).await {
        Ok(changed) => answer(changed),
        Err(failure) => failure.json(),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct FaceForm {
    action: String,
    #[serde(default)]
    person_name: String,
}

/// `POST /images/{id}/faces/{face}` (form: `action` = assign or unassign,
/// `person_name`): the image page's forms without script.
pub(super) async fn form(
    State(state): State<Shared>,
    Path((image, face)): Path<(String, String)>,
    Form(form): Form<FaceForm>,
) -> Response {
    let refused = |status: StatusCode, message: String| {
        let state = state.clone();
        let image = image.clone();
        async move { image_view(&state, &image, status, Some(("error", message))).await }
    };
    let Some(face) = face.parse::<i64>().ok().filter(|f| *f > 0) else {
        return refused(StatusCode::NOT_FOUND, format!("{face:?} is not a face id.")).await;
    };
    let result = match form.action.as_str() {
        "assign" => match check_name(&form.person_name) {
            Ok(name) => assign_faces(&state, vec![face], Assignee::Name(name))
                .await
                .map(|_| "named"),
            Err(e) => return refused(StatusCode::BAD_REQUEST, e).await,
        },
        "unassign" => unassign_faces(&state, vec![face])
            .await
            .map(|_| "unassigned"),
        other => {
            let message = format!("{other:?} is not something to do with a face.");
            return refused(StatusCode::BAD_REQUEST, message).await;
        }
    };
    match result {
        Ok(done) => see_other(&format!("/images/{image}?done={done}")),
        Err(failure) => refused(failure.status, failure.message).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_ids_must_be_ids_and_not_too_many() {
        assert_eq!(check_face_ids(&[3, 4, 3]), Ok(vec![3, 4]));
        assert!(check_face_ids(&[]).unwrap_err().contains("empty"));
        assert!(check_face_ids(&[1, 0])
            .unwrap_err()
            .contains("0 is not a face id"));
        assert!(check_face_ids(&[-5]).unwrap_err().contains("-5"));
        let many: Vec<i64> = (1..=1001).collect();
        assert!(check_face_ids(&many).unwrap_err().contains("at most 1000"));
    }

    #[test]
    fn exactly_one_assignee() {
        assert_eq!(check_assignee(Some(4), None), Ok(Assignee::Id(4)));
        assert_eq!(
            check_assignee(None, Some(" Ada ")),
            Ok(Assignee::Name("Ada".into()))
        );
        assert_eq!(
            check_assignee(Some(0), Some("Ada")),
            Ok(Assignee::Name("Ada".into()))
        );
        assert!(check_assignee(Some(4), Some("Ada"))
            .unwrap_err()
            .contains("not both"));
        assert!(check_assignee(None, Some("  ")).is_err());
        assert!(check_assignee(None, None).is_err());
        assert!(check_assignee(Some(-1), None).is_err());
        assert!(check_assignee(None, Some("a\u{7}b"))
            .unwrap_err()
            .contains("person_name"));
    }
}
