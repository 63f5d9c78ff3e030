//! The people page, a person's page and the forms that change people, and face pictures.

use axum::{
    extract::{FromRequestParts, Multipart, Path, Query, State},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    Form,
};
use facewire_proto::v1 as pb;
use serde::Deserialize;
use tonic::Code;

use super::{error_page, file_response, html, people_failure, see_other, Shared, CROP_CACHE};
use crate::{
    render::{
        self,
        people::{
            EnrollLine, LookAlike, PeopleListing, PeoplePage, PersonPage, PersonSummary, Photo,
        },
    },
    upstream::{describe_failure, Service},
    AppState,
};

/// Named people per page of the people page.
const NAMED_PAGE_SIZE: i32 = 200;
/// Suggested people shown on the people page.
const SUGGESTED_SHOWN: i32 = 60;
/// Photos per page of a person's page.
const PHOTOS_PAGE_SIZE: i32 = 48;
/// Most people offered in the merge form.
const MERGE_CHOICES: i32 = 1000;
/// Most "same person?" suggestions on a person's page.
const LOOK_ALIKES: i32 = 5;
/// Longest name accepted from a form (the service checks names further).
pub(super) const MAX_NAME_CHARS: usize = 200;

/// A name typed into a form: trimmed; refused when empty, too long or holding control
/// characters. The error is a sentence for the page.
pub(super) fn check_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("Give a name.".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("A name has at most {MAX_NAME_CHARS} characters."));
    }
    if name.chars().any(char::is_control) {
        return Err("A name cannot hold control characters (such as line breaks).".into());
    }
    Ok(name.to_string())
}

/// One page of named people and the first suggested ones.
async fn load_people(
    state: &AppState,
    show_hidden: bool,
    show_small: bool,
    token: &str,
) -> Result<PeopleListing, String> {
    let named = state.upstream.list_persons(pb::ListPersonsRequest {
        page_size: NAMED_PAGE_SIZE,
        page_token: token.to_string(),
        filter: pb::PersonFilter::Named as i32,
        include_hidden: show_hidden,
        include_small: false,
    });
    let suggested = state.upstream.list_persons(pb::ListPersonsRequest {
        page_size: SUGGESTED_SHOWN,
        page_token: String::new(),
        filter: pb::PersonFilter::Suggested as i32,
        include_hidden: show_hidden,
        include_small: show_small,
    });
    let (named, suggested) = futures::join!(named, suggested);
    let named = named.map_err(|s| people_failure(state, &s, "Nobody is named yet.").message)?;
    let (suggested, more_suggested) = match suggested {
        Ok(page) => (
            Ok(page.persons.iter().map(PersonSummary::from).collect()),
            !page.next_page_token.is_empty(),
        ),
        Err(s) => (Err(people_failure(state, &s, "").message), false),
    };
    Ok(PeopleListing {
        named: named.persons.iter().map(PersonSummary::from).collect(),
        page_token: token.to_string(),
        next_page_token: named.next_page_token,
        suggested,
        more_suggested,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct PeopleQuery {
    hidden: Option<String>,
    small: Option<String>,
    page: Option<String>,
    done: Option<String>,
}

/// Whether a query flag is set (`1` or `true`).
fn flag(value: Option<&str>) -> bool {
    value.is_some_and(|v| v == "1" || v == "true")
}

/// `/people`: everyone (`?hidden=1`: the hidden too; `?small=1`: suggested people with
/// fewer faces than the grouping minimum too), with the enrol form.
pub(super) async fn people_page(
    State(state): State<Shared>,
    Query(q): Query<PeopleQuery>,
) -> Response {
    let show_hidden = flag(q.hidden.as_deref());
    let show_small = flag(q.small.as_deref());
    let token = q.page.unwrap_or_default();
    let people = load_people(&state, show_hidden, show_small, &token).await;
    let notice = match q.done.as_deref() {
        Some("deleted") => Some(("ok", "Deleted. Their photos stay, without the name.".into())),
        Some("named") => Some((
            "ok",
            "Named: every face of the group is now theirs, and new photos of them will be \
             recognised."
                .into(),
        )),
        _ => None,
    };
    html(
        StatusCode::OK,
        render::people::people_page(&PeoplePage {
            people: Some(people),
            show_hidden,
            show_small,
            notice,
            ..Default::default()
        }),
    )
}

/// Renders the people page after an enrolment or removal, with a fresh list.
async fn after_action(
    state: &AppState,
    status: StatusCode,
    notice: Option<(&'static str, String)>,
    enrolled: Vec<EnrollLine>,
    name: String,
) -> Response {
    let people = load_people(state, false, false, "").await;
    html(
        status,
        render::people::people_page(&PeoplePage {
            people: Some(people),
            show_hidden: false,
            show_small: false,
            notice,
            enrolled,
            name,
        }),
    )
}

/// `POST /people/enroll` (multipart: `name`, `photos`…): one line per photo.
pub(super) async fn enroll(State(state): State<Shared>, mut form: Multipart) -> Response {
    let mut name = String::new();
    let mut photos: Vec<(String, Vec<u8>)> = Vec::new();
    let mut lines = Vec::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                let message =
                    super::upload_failure(&state, &e, "enrol fewer or smaller photos at a time");
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
                        super::upload_failure(
                            &state,
                            &e,
                            "enrol fewer or smaller photos at a time",
                        ),
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
pub(super) struct RemoveForm {
    name: String,
}

/// `POST /people/remove` (form: `name`): forgets an enrolled person.
pub(super) async fn remove(State(state): State<Shared>, Form(form): Form<RemoveForm>) -> Response {
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

/// The person id of a `/people/{person}…` path; anything else is answered with the
/// page saying there is no such person.
pub(super) struct PersonId(i64);

impl<S: Send + Sync> FromRequestParts<S> for PersonId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(PersonId)
            .ok_or_else(|| {
                error_page(
                    StatusCode::NOT_FOUND,
                    "No such person",
                    &format!("{raw:?} is not a person id."),
                )
            })
    }
}

/// What a person page shows besides the person: set by the query or by a failed form.
#[derive(Debug, Default)]
struct PersonExtras {
    token: String,
    notice: Option<(&'static str, String)>,
    merged: Option<i64>,
    name: Option<String>,
}

const NO_SUCH_PERSON: &str =
    "There is no such person (any more): they may have been merged or deleted.";
const ONE_IS_GONE: &str =
    "One of these people no longer exists: they may have been merged or deleted.";

/// A person's page, answered with `status`.
async fn person_view(
    state: &AppState,
    id: i64,
    status: StatusCode,
    extras: PersonExtras,
) -> Response {
    let person = match state.upstream.get_person(id).await {
        Ok(p) => PersonSummary::from(&p),
        Err(s) => return people_failure(state, &s, NO_SUCH_PERSON).page("No such person"),
    };
    let photos = state.upstream.list_images(pb::ListImagesRequest {
        page_size: PHOTOS_PAGE_SIZE,
        page_token: extras.token.clone(),
        person_ids: vec![id],
        ..Default::default()
    });
    let others = state.upstream.list_persons(pb::ListPersonsRequest {
        page_size: MERGE_CHOICES,
        include_hidden: true,
        ..Default::default()
    });
    let look_alikes = look_alikes(state, id);
    let (photos, others, look_alikes) = futures::join!(photos, others, look_alikes);
    let (photos, next_page_token) = match photos {
        Ok(page) => (
            Ok(page
                .images
                .into_iter()
                .map(|i| Photo {
                    id: i.id,
                    path: i.path,
                })
                .collect()),
            page.next_page_token,
        ),
        Err(s) => (
            Err(describe_failure(
                Service::Receiver,
                &state.upstream.receiver_url,
                &s,
            )),
            String::new(),
        ),
    };
    let others = others
        .map(|listing| {
            listing
                .persons
                .iter()
                .filter(|p| p.id != id)
                .map(PersonSummary::from)
                .collect()
        })
        .map_err(|s| people_failure(state, &s, "").message);
    html(
        status,
        render::people::person_page(&PersonPage {
            person,
            photos,
            page_token: extras.token,
            next_page_token,
            others,
            notice: extras.notice,
            merged: extras.merged,
            name: extras.name,
            look_alikes,
        }),
    )
}

/// The people who may be the same as person `id`. A service that keeps no face index
/// (or predates suggestions) has none to offer: that is no error worth showing.
async fn look_alikes(state: &AppState, id: i64) -> Result<Vec<LookAlike>, String> {
    match state.upstream.merge_suggestions(id, LOOK_ALIKES).await {
        Ok(list) => Ok(list
            .iter()
            .filter_map(LookAlike::from_suggestion)
            .filter(|l| l.person.id != id)
            .collect()),
        Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::Unimplemented) => {
            Ok(Vec::new())
        }
        Err(s) => Err(format!(
            "Look-alikes could not be listed. {}",
            people_failure(state, &s, NO_SUCH_PERSON).message
        )),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PersonQuery {
    page: Option<String>,
    merged: Option<String>,
    done: Option<String>,
}

/// `/people/{id}`: a person's photos, and forms to rename, hide, merge and delete them.
pub(super) async fn person_page(
    State(state): State<Shared>,
    PersonId(id): PersonId,
    Query(q): Query<PersonQuery>,
) -> Response {
    let notice = match q.done.as_deref() {
        Some("renamed") => Some(("ok", "Renamed.".to_string())),
        Some("hidden") => Some(("ok", "Hidden: left out of the people page.".to_string())),
        Some("shown") => Some(("ok", "Shown on the people page again.".to_string())),
        Some("unmerged") => Some((
            "ok",
            "Merge undone: the people merged in are back, with their faces.".to_string(),
        )),
        Some("declined") => Some((
            "ok",
            "Noted: that person will not be suggested as this one again.".to_string(),
        )),
        _ => None,
    };
    let extras = PersonExtras {
        token: q.page.unwrap_or_default(),
        notice,
        merged: q
            .merged
            .and_then(|m| m.parse().ok())
            .filter(|m: &i64| *m > 0),
        name: None,
    };
    person_view(&state, id, StatusCode::OK, extras).await
}

/// After a refused change to person `id`: their page again, saying why.
async fn refused(
    state: &AppState,
    id: i64,
    status: StatusCode,
    message: String,
    name: Option<String>,
) -> Response {
    let extras = PersonExtras {
        notice: Some(("error", message)),
        name,
        ..Default::default()
    };
    person_view(state, id, status, extras).await
}

#[derive(Debug, Deserialize)]
pub(super) struct RenameForm {
    name: String,
    version: Option<i64>,
    /// `people` when the form is on the people page (naming a suggested person there),
    /// which is then shown again; anything else means the person's page.
    back: Option<String>,
}

/// `POST /people/{id}/rename` (form: `name`, `version`, optional `back`). Naming a
/// suggested person makes every face of the group theirs (the service does that).
pub(super) async fn rename(
    State(state): State<Shared>,
    PersonId(id): PersonId,
    Form(form): Form<RenameForm>,
) -> Response {
    let name = match check_name(&form.name) {
        Ok(n) => n,
        Err(e) => return refused(&state, id, StatusCode::BAD_REQUEST, e, Some(form.name)).await,
    };
    let request = pb::UpdatePersonRequest {
        person_id: id,
        name: Some(name),
        expected_version: form.version.unwrap_or(0),
        ..Default::default()
    };
    match state.upstream.update_person(request).await {
        Ok(_) if form.back.as_deref() == Some("people") => see_other("/people?done=named"),
        Ok(_) => see_other(&format!("/people/{id}?done=renamed")),
        Err(s) => {
            let failure = people_failure(&state, &s, NO_SUCH_PERSON);
            if s.code() == Code::NotFound {
                return failure.page("No such person");
            }
            // After a conflict the page shows the current name; otherwise keep the typed one.
            let keep = (s.code() != Code::Aborted).then_some(form.name);
            refused(&state, id, failure.status, failure.message, keep).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct HideForm {
    hidden: String,
    version: Option<i64>,
}

/// `POST /people/{id}/hide` (form: `hidden` = 1 or 0, `version`).
pub(super) async fn hide(
    State(state): State<Shared>,
    PersonId(id): PersonId,
    Form(form): Form<HideForm>,
) -> Response {
    let hidden = match form.hidden.as_str() {
        "1" | "true" => true,
        "0" | "false" => false,
        _ => {
            let message = "hidden must be 1 or 0.".to_string();
            return refused(&state, id, StatusCode::BAD_REQUEST, message, None).await;
        }
    };
    let request = pb::UpdatePersonRequest {
        person_id: id,
        hidden: Some(hidden),
        expected_version: form.version.unwrap_or(0),
        ..Default::default()
    };
    match state.upstream.update_person(request).await {
        Ok(_) => see_other(&format!(
            "/people/{id}?done={}",
            if hidden { "hidden" } else { "shown" }
        )),
        Err(s) if s.code() == Code::NotFound => {
            people_failure(&state, &s, NO_SUCH_PERSON).page("No such person")
        }
        Err(s) => {
            let failure = people_failure(&state, &s, NO_SUCH_PERSON);
            refused(&state, id, failure.status, failure.message, None).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct MergeForm {
    from: String,
}

/// `POST /people/{id}/merge` (form: `from`): moves every face of `from` into this
/// person; the page then offers to undo it.
pub(super) async fn merge(
    State(state): State<Shared>,
    PersonId(id): PersonId,
    Form(form): Form<MergeForm>,
) -> Response {
    let from = match form.from.trim().parse::<i64>() {
        Ok(from) if from > 0 && from != id => from,
        Ok(from) if from == id => {
            let message =
                "Choose someone else to merge: a person cannot be merged into themselves.";
            return refused(&state, id, StatusCode::BAD_REQUEST, message.into(), None).await;
        }
        _ => {
            let message = "Choose the person to merge into this one.";
            return refused(&state, id, StatusCode::BAD_REQUEST, message.into(), None).await;
        }
    };
    match state.upstream.merge_persons(id, vec![from]).await {
        Ok(merged) => see_other(&format!("/people/{id}?merged={}", merged.merge_id)),
        Err(s) => {
            let failure = people_failure(&state, &s, ONE_IS_GONE);
            refused(&state, id, failure.status, failure.message, None).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct DeclineForm {
    other: String,
}

/// `POST /people/{id}/decline` (form: `other`): "not the same person" — the pair is
/// never suggested again.
pub(super) async fn decline(
    State(state): State<Shared>,
    PersonId(id): PersonId,
    Form(form): Form<DeclineForm>,
) -> Response {
    let Some(other) = form
        .other
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|o| *o > 0 && *o != id)
    else {
        let message = "Choose another person who is not the same as this one.";
        return refused(&state, id, StatusCode::BAD_REQUEST, message.into(), None).await;
    };
    match state.upstream.decline_merge_suggestion(id, other).await {
        Ok(()) => see_other(&format!("/people/{id}?done=declined")),
        Err(s) => {
            let failure = people_failure(&state, &s, ONE_IS_GONE);
            refused(&state, id, failure.status, failure.message, None).await
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct UndoForm {
    merge_id: String,
}

/// `POST /people/{id}/undo-merge` (form: `merge_id`).
pub(super) async fn undo_merge(
    State(state): State<Shared>,
    PersonId(id): PersonId,
    Form(form): Form<UndoForm>,
) -> Response {
    let Some(merge_id) = form.merge_id.trim().parse::<i64>().ok().filter(|m| *m > 0) else {
        let message = "That is not a merge that can be undone.";
        return refused(&state, id, StatusCode::BAD_REQUEST, message.into(), None).await;
    };
    match state.upstream.undo_merge(merge_id).await {
        Ok(_) => see_other(&format!("/people/{id}?done=unmerged")),
        Err(s) => {
            let failure = people_failure(&state, &s, "There is no such merge to undo.");
            refused(&state, id, failure.status, failure.message, None).await
        }
    }
}

/// `POST /people/{id}/delete`: erases the person; their photos stay.
pub(super) async fn delete(State(state): State<Shared>, PersonId(id): PersonId) -> Response {
    match state.upstream.delete_person(id).await {
        Ok(_) => see_other("/people?done=deleted"),
        Err(s) if s.code() == Code::NotFound => {
            people_failure(&state, &s, NO_SUCH_PERSON).page("No such person")
        }
        Err(s) => {
            let failure = people_failure(&state, &s, NO_SUCH_PERSON);
            refused(&state, id, failure.status, failure.message, None).await
        }
    }
}

fn no_face_picture() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "No such face",
        "There is no picture of that face.",
    )
}

/// `/faces/{id}/crop.jpg`: the picture of any face (detected or enrolled).
pub(super) async fn face_crop(State(state): State<Shared>, Path(raw): Path<String>) -> Response {
    let Some(id) = raw.parse::<i64>().ok().filter(|id| *id > 0) else {
        return no_face_picture();
    };
    match state.upstream.face_crop(id).await {
        Ok(jpeg) if !jpeg.is_empty() => file_response(jpeg, "image/jpeg", CROP_CACHE),
        Ok(_) => no_face_picture(),
        Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => no_face_picture(),
        Err(s) => people_failure(&state, &s, "").page("Recognition unreachable"),
    }
}

/// `/people/{name}/faces/{id}.jpg`: the picture of one enrolled face, by the person's
/// name (the address earlier pages used).
pub(super) async fn enrolled_face_crop(
    State(state): State<Shared>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    let Some(id) = file
        .strip_suffix(".jpg")
        .and_then(|id| id.parse::<i64>().ok())
    else {
        return no_face_picture();
    };
    match state.upstream.list_faces(name).await {
        Ok(faces) => match faces.into_iter().find(|f| f.id == id) {
            Some(face) if !face.crop_jpeg.is_empty() => {
                file_response(face.crop_jpeg, "image/jpeg", CROP_CACHE)
            }
            _ => no_face_picture(),
        },
        Err(s) if matches!(s.code(), Code::NotFound | Code::InvalidArgument) => no_face_picture(),
        Err(s) => error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Recognition unreachable",
            &describe_failure(Service::Recognition, &state.upstream.recognition_url, &s),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_checked() {
        assert_eq!(check_name("  Ada Lovelace \t"), Ok("Ada Lovelace".into()));
        assert_eq!(check_name("<script>"), Ok("<script>".into()));
        assert!(check_name("   ").is_err());
        assert!(check_name("a\nb").unwrap_err().contains("control"));
        assert!(check_name(&"x".repeat(MAX_NAME_CHARS + 1))
            .unwrap_err()
            .contains("at most"));
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
    }
}
