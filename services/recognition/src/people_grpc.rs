//! The gRPC `PeopleService`: a thin translation between protobuf and [`People`], with
//! one mapping of people errors to status codes.

use std::{pin::Pin, time::Duration};

use facewire_proto::v1 as pb;
use facewire_server::wire::{assigned_to_pb, bbox_to_pb, timestamp};
use facewire_storage::{
    EditError, FaceRecord, FaceScope, FaceSource, Job, JobKind, JobScope, JobState, PersonFilter,
    PersonRecord, PersonUpdate,
};
use futures::Stream;
use pb::people_service_server::PeopleService;
use tonic::{Request, Response, Status};

use crate::people::{People, PeopleError, PersonRef, SearchQuery};

/// Default and largest page sizes.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;
/// Most faces one assign / unassign may name.
const MAX_FACES_PER_EDIT: usize = 10_000;

/// The service: holds [`People`]; every method delegates.
#[derive(Debug, Clone)]
pub struct PeopleApi {
    people: People,
}

impl PeopleApi {
    /// A service over `people`.
    pub fn new(people: People) -> Self {
        Self { people }
    }
}

impl From<PeopleError> for Status {
    fn from(e: PeopleError) -> Self {
        match e {
            PeopleError::Edit(e) => match e {
                EditError::NoFace(_)
                | EditError::NoPerson(_)
                | EditError::NoName(_)
                | EditError::NoImage(_) => Status::not_found(e.to_string()),
                EditError::Invalid(_) => Status::invalid_argument(e.to_string()),
                EditError::Conflict(_) => Status::failed_precondition(e.to_string()),
                EditError::Stale(_) => Status::aborted(e.to_string()),
                EditError::Store(e) => facewire_server::store_status(&e),
            },
            PeopleError::Roster(e) => e.into(),
            PeopleError::Image(e) => crate::grpc::image_status(e),
            PeopleError::Unsupported(m) => Status::failed_precondition(m),
            PeopleError::Admission(e) => e.into(),
        }
    }
}

/// A person on the wire.
pub fn person_to_pb(p: &PersonRecord) -> pb::PersonRecord {
    pb::PersonRecord {
        id: p.id,
        name: p.name.clone().unwrap_or_default(),
        hidden: p.hidden,
        feature_face_id: p.feature_face_id.unwrap_or_default(),
        face_count: p.face_count,
        image_count: p.image_count,
        version: p.version,
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

/// A face on the wire.
pub fn face_to_pb(f: &FaceRecord) -> pb::FaceRecord {
    pb::FaceRecord {
        id: f.id,
        image_id: f.image_id.unwrap_or_default(),
        person_id: f.person_id.unwrap_or_default(),
        person_name: f.person_name.clone().unwrap_or_default(),
        assigned: assigned_to_pb(f.assigned) as i32,
        // Stored similarities come from the face index, whose float sums can land a
        // hair outside [-1, 1] (1.0000001 for a face with itself); a cosine is shown
        // as one.
        similarity: f.similarity.unwrap_or_default().clamp(-1.0, 1.0),
        r#box: f.bbox.map(bbox_to_pb),
        landmarks: f
            .landmarks
            .iter()
            .map(|p| pb::Point { x: p[0], y: p[1] })
            .collect(),
        detection_score: f.detection_score.unwrap_or_default(),
        quality: f.quality.unwrap_or_default(),
        source: match f.source {
            FaceSource::Detected => pb::FaceSource::Detected,
            FaceSource::Enrolled => pb::FaceSource::Enrolled,
            FaceSource::Drawn => pb::FaceSource::Drawn,
            FaceSource::Legacy => pb::FaceSource::Legacy,
        } as i32,
        image_path: f.image_path.clone().unwrap_or_default(),
        has_crop: f.has_crop,
    }
}

/// A job on the wire.
pub fn job_to_pb(j: &Job) -> pb::Job {
    pb::Job {
        id: j.id,
        kind: match j.kind {
            JobKind::Recognition => pb::JobKind::Recognition,
            JobKind::Detection => pb::JobKind::Detection,
        } as i32,
        scope: match j.scope {
            JobScope::Missing => pb::JobScope::Missing,
            JobScope::All => pb::JobScope::All,
        } as i32,
        state: match j.state {
            JobState::Queued => pb::JobState::Queued,
            JobState::Running => pb::JobState::Running,
            JobState::Done => pb::JobState::Done,
            JobState::Cancelled => pb::JobState::Cancelled,
            JobState::Failed => pb::JobState::Failed,
        } as i32,
        done: j.done,
        total: j.total,
        error: j.error.clone().unwrap_or_default(),
        created_at: Some(timestamp(j.created_at)),
        updated_at: Some(timestamp(j.updated_at)),
    }
}

fn page_size(n: i32) -> Result<i64, Status> {
    match n {
        0 => Ok(DEFAULT_PAGE),
        n if n < 0 => Err(Status::invalid_argument(format!(
            "page_size is {n}; it must be between 0 and {MAX_PAGE}"
        ))),
        n => Ok(i64::from(n).min(MAX_PAGE)),
    }
}

fn page_token(t: &str) -> Result<Option<i64>, Status> {
    if t.is_empty() {
        return Ok(None);
    }
    t.parse::<i64>()
        .map(Some)
        .map_err(|_| Status::invalid_argument("page_token is not one this server issued"))
}

fn person_ref(id: i64, name: &str) -> Result<PersonRef, Status> {
    match (id, name.is_empty()) {
        (0, true) => Err(Status::invalid_argument(
            "name a person: person_id, or person_name for a new or existing name",
        )),
        (0, false) => Ok(PersonRef::Name(name.to_string())),
        (id, true) if id > 0 => Ok(PersonRef::Id(id)),
        _ => Err(Status::invalid_argument(
            "give person_id or person_name, not both",
        )),
    }
}

fn face_ids(ids: Vec<i64>) -> Result<Vec<i64>, Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument("face_ids is empty"));
    }
    if ids.len() > MAX_FACES_PER_EDIT {
        return Err(Status::invalid_argument(format!(
            "{} faces in one request; at most {MAX_FACES_PER_EDIT}",
            ids.len()
        )));
    }
    Ok(ids)
}

async fn person_or_not_found(people: &People, id: i64) -> Result<PersonRecord, Status> {
    people
        .roster()
        .store()
        .person(id)
        .await
        .map_err(|e| facewire_server::store_status(&e))?
        .ok_or_else(|| Status::not_found(format!("no person with id {id}")))
}

type JobStream = Pin<Box<dyn Stream<Item = Result<pb::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PeopleService for PeopleApi {
    async fn list_persons(
        &self,
        request: Request<pb::ListPersonsRequest>,
    ) -> Result<Response<pb::ListPersonsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let offset = page_token(&req.page_token)?.unwrap_or(0).max(0);
        let filter = match pb::PersonFilter::try_from(req.filter) {
            Ok(pb::PersonFilter::Unspecified) => PersonFilter::All,
            Ok(pb::PersonFilter::Named) => PersonFilter::Named,
            Ok(pb::PersonFilter::Suggested) => PersonFilter::Suggested,
            Err(_) => return Err(Status::invalid_argument("unknown person filter")),
        };
        let persons = self
            .people
            .roster()
            .store()
            .list_persons_min(
                filter,
                req.include_hidden,
                if req.include_small {
                    0
                } else {
                    self.people.min_faces() as i64
                },
                offset,
                limit,
            )
            .await
            .map_err(|e| facewire_server::store_status(&e))?;
        let next_page_token = if persons.len() as i64 == limit {
            (offset + limit).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListPersonsResponse {
            persons: persons.iter().map(person_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_person(
        &self,
        request: Request<pb::GetPersonRequest>,
    ) -> Result<Response<pb::GetPersonResponse>, Status> {
        let req = request.into_inner();
        let person = if req.person_id != 0 {
            person_or_not_found(&self.people, req.person_id).await?
        } else {
            self.people
                .roster()
                .store()
                .person_by_name(req.name.trim())
                .await
                .map_err(|e| facewire_server::store_status(&e))?
                .ok_or_else(|| Status::not_found(format!("nobody is named {:?}", req.name)))?
        };
        Ok(Response::new(pb::GetPersonResponse {
            person: Some(person_to_pb(&person)),
        }))
    }

    async fn update_person(
        &self,
        request: Request<pb::UpdatePersonRequest>,
    ) -> Result<Response<pb::UpdatePersonResponse>, Status> {
        let req = request.into_inner();
        let update = PersonUpdate {
            name: req.name,
            hidden: req.hidden,
            feature_face_id: req.feature_face_id,
            expected_version: (req.expected_version != 0).then_some(req.expected_version),
        };
        let person = self.people.update(req.person_id, update).await?;
        Ok(Response::new(pb::UpdatePersonResponse {
            person: Some(person_to_pb(&person)),
        }))
    }

    async fn delete_person(
        &self,
        request: Request<pb::DeletePersonRequest>,
    ) -> Result<Response<pb::DeletePersonResponse>, Status> {
        let erased = self.people.delete(request.into_inner().person_id).await?;
        Ok(Response::new(pb::DeletePersonResponse {
            faces_erased: erased.faces_erased,
            faces_unassigned: erased.faces_unassigned,
        }))
    }

    async fn merge_persons(
        &self,
        request: Request<pb::MergePersonsRequest>,
    ) -> Result<Response<pb::MergePersonsResponse>, Status> {
        let req = request.into_inner();
        let merged = self
            .people
            .merge(req.into_person_id, req.from_person_ids)
            .await?;
        let person = person_or_not_found(&self.people, req.into_person_id).await?;
        Ok(Response::new(pb::MergePersonsResponse {
            merge_id: merged.merge_id,
            person: Some(person_to_pb(&person)),
            faces_moved: merged.faces_moved,
        }))
    }

    async fn undo_merge(
        &self,
        request: Request<pb::UndoMergeRequest>,
    ) -> Result<Response<pb::UndoMergeResponse>, Status> {
        let ids = self
            .people
            .undo_merge(request.into_inner().merge_id)
            .await?;
        let mut persons = Vec::with_capacity(ids.len());
        for id in ids {
            persons.push(person_to_pb(&person_or_not_found(&self.people, id).await?));
        }
        Ok(Response::new(pb::UndoMergeResponse { persons }))
    }

    async fn list_face_records(
        &self,
        request: Request<pb::ListFaceRecordsRequest>,
    ) -> Result<Response<pb::ListFaceRecordsResponse>, Status> {
        let req = request.into_inner();
        let scope = match (req.image_id, req.person_id, req.unassigned) {
            (id, 0, false) if id > 0 => FaceScope::Image(id),
            (0, id, false) if id > 0 => FaceScope::Person(id),
            (0, 0, true) => FaceScope::Unassigned,
            _ => {
                return Err(Status::invalid_argument(
                    "give exactly one of image_id, person_id or unassigned",
                ))
            }
        };
        let limit = page_size(req.page_size)?;
        let after = page_token(&req.page_token)?;
        let faces = self
            .people
            .roster()
            .store()
            .list_faces(scope, after, limit)
            .await
            .map_err(|e| facewire_server::store_status(&e))?;
        let next_page_token = match faces.last() {
            Some(last) if faces.len() as i64 == limit => last.id.to_string(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListFaceRecordsResponse {
            faces: faces.iter().map(face_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_face_crop(
        &self,
        request: Request<pb::GetFaceCropRequest>,
    ) -> Result<Response<pb::GetFaceCropResponse>, Status> {
        let id = request.into_inner().face_id;
        let crop = self
            .people
            .roster()
            .store()
            .face_crop(id)
            .await
            .map_err(|e| facewire_server::store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("face {id} has no stored picture")))?;
        Ok(Response::new(pb::GetFaceCropResponse { crop_jpeg: crop }))
    }

    async fn assign_faces(
        &self,
        request: Request<pb::AssignFacesRequest>,
    ) -> Result<Response<pb::AssignFacesResponse>, Status> {
        let req = request.into_inner();
        let who = person_ref(req.person_id, &req.person_name)?;
        let ids = face_ids(req.face_ids)?;
        let (person, rematched) = self.people.assign(ids.clone(), &who).await?;
        let faces = self
            .people
            .roster()
            .store()
            .faces_by_id(ids)
            .await
            .map_err(|e| facewire_server::store_status(&e))?;
        Ok(Response::new(pb::AssignFacesResponse {
            person: Some(person_to_pb(&person)),
            faces: faces.iter().map(face_to_pb).collect(),
            rematched,
        }))
    }

    async fn unassign_faces(
        &self,
        request: Request<pb::UnassignFacesRequest>,
    ) -> Result<Response<pb::UnassignFacesResponse>, Status> {
        let ids = face_ids(request.into_inner().face_ids)?;
        let faces = self.people.unassign(ids).await?;
        Ok(Response::new(pb::UnassignFacesResponse {
            faces: faces.iter().map(face_to_pb).collect(),
        }))
    }

    async fn add_face(
        &self,
        request: Request<pb::AddFaceRequest>,
    ) -> Result<Response<pb::AddFaceResponse>, Status> {
        let req = request.into_inner();
        let Some(b) = req.r#box else {
            return Err(Status::invalid_argument("box is required"));
        };
        let who = if req.person_id == 0 && req.person_name.is_empty() {
            None
        } else {
            Some(person_ref(req.person_id, &req.person_name)?)
        };
        let face = self
            .people
            .add_face(req.image_id, [b.x, b.y, b.width, b.height], who.as_ref())
            .await?;
        Ok(Response::new(pb::AddFaceResponse {
            face: Some(face_to_pb(&face)),
        }))
    }

    async fn start_job(
        &self,
        request: Request<pb::StartJobRequest>,
    ) -> Result<Response<pb::StartJobResponse>, Status> {
        let req = request.into_inner();
        let kind = match pb::JobKind::try_from(req.kind) {
            Ok(pb::JobKind::Recognition) => JobKind::Recognition,
            Ok(pb::JobKind::Detection) => JobKind::Detection,
            _ => return Err(Status::invalid_argument("kind: recognition or detection")),
        };
        let scope = match pb::JobScope::try_from(req.scope) {
            Ok(pb::JobScope::Missing) => JobScope::Missing,
            Ok(pb::JobScope::All) => JobScope::All,
            _ => return Err(Status::invalid_argument("scope: missing or all")),
        };
        let (job, created) = self
            .people
            .roster()
            .store()
            .start_job(kind, scope)
            .await
            .map_err(|e| facewire_server::store_status(&e))?;
        Ok(Response::new(pb::StartJobResponse {
            job: Some(job_to_pb(&job)),
            created,
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let limit = match request.into_inner().page_size {
            0 => 50,
            n => page_size(n)?,
        };
        let jobs = self
            .people
            .roster()
            .store()
            .jobs(limit)
            .await
            .map_err(|e| facewire_server::store_status(&e))?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(job_to_pb).collect(),
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let id = request.into_inner().id;
        let job = self
            .people
            .roster()
            .store()
            .job(id)
            .await
            .map_err(|e| facewire_server::store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no job with id {id}")))?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_to_pb(&job)),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let id = request.into_inner().id;
        let job = self
            .people
            .roster()
            .store()
            .cancel_job(id)
            .await
            .map_err(|e| facewire_server::store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no job with id {id}")))?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(job_to_pb(&job)),
        }))
    }

    type WatchJobStream = JobStream;

    async fn watch_job(
        &self,
        request: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().id;
        let store = self.people.roster().store().clone();
        let first = store
            .job(id)
            .await
            .map_err(|e| facewire_server::store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no job with id {id}")))?;
        // Polls the record (a single-row read) and sends each change; ends after the
        // job is finished.
        let stream = futures::stream::unfold(
            (store, Some(first), None::<pb::Job>, false),
            move |(store, mut fresh, last, ended)| async move {
                if ended {
                    return None;
                }
                loop {
                    let job = match fresh.take() {
                        Some(job) => job,
                        None => {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            match store.job(id).await {
                                Ok(Some(job)) => job,
                                Ok(None) => return None,
                                Err(e) => {
                                    let status = facewire_server::store_status(&e);
                                    return Some((Err(status), (store, None, last, true)));
                                }
                            }
                        }
                    };
                    let wire = job_to_pb(&job);
                    if last.as_ref() == Some(&wire) {
                        continue;
                    }
                    let finished = job.state.is_finished();
                    let item = pb::WatchJobResponse {
                        job: Some(wire.clone()),
                    };
                    return Some((Ok(item), (store, None, Some(wire), finished)));
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn search_faces(
        &self,
        request: Request<pb::SearchFacesRequest>,
    ) -> Result<Response<pb::SearchFacesResponse>, Status> {
        let req = request.into_inner();
        let query = match req.query {
            Some(pb::search_faces_request::Query::Image(bytes)) if !bytes.is_empty() => {
                SearchQuery::Image(bytes)
            }
            Some(pb::search_faces_request::Query::FaceId(id)) if id > 0 => SearchQuery::Face(id),
            _ => {
                return Err(Status::invalid_argument(
                    "give an image or a face id to search with",
                ))
            }
        };
        let limit = match req.limit {
            0 => 20,
            n if (1..=200).contains(&n) => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit is {n}; it must be between 1 and 200"
                )))
            }
        };
        let min_similarity = if req.min_similarity == 0.0 {
            0.3
        } else if (-1.0..=1.0).contains(&req.min_similarity) {
            req.min_similarity
        } else {
            return Err(Status::invalid_argument(
                "min_similarity must be a cosine similarity in [-1, 1]",
            ));
        };
        let (found, query_face) = self
            .people
            .search_faces(query, limit, min_similarity)
            .await?;
        Ok(Response::new(pb::SearchFacesResponse {
            matches: found
                .into_iter()
                .map(|f| pb::FaceMatch {
                    face_id: f.face.face_id,
                    similarity: f.face.similarity.clamp(-1.0, 1.0),
                    person_id: f.face.meta.person_id.unwrap_or_default(),
                    person_name: f.person_name.unwrap_or_default(),
                    image_id: f.face.meta.image_id.unwrap_or_default(),
                    image_path: f.image_path.unwrap_or_default(),
                })
                .collect(),
            query_box: query_face.map(|d| bbox_to_pb(d.bbox)),
        }))
    }

    async fn list_merge_suggestions(
        &self,
        request: Request<pb::ListMergeSuggestionsRequest>,
    ) -> Result<Response<pb::ListMergeSuggestionsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 5,
            n if (1..=100).contains(&n) => n as usize,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit is {n}; it must be between 1 and 100"
                )))
            }
        };
        let suggestions = self.people.merge_suggestions(req.person_id, limit).await?;
        Ok(Response::new(pb::ListMergeSuggestionsResponse {
            suggestions: suggestions
                .iter()
                .map(|s| pb::MergeSuggestion {
                    person: Some(person_to_pb(&s.person)),
                    similarity: s.similarity,
                    votes: s.votes as i32,
                })
                .collect(),
        }))
    }

    async fn decline_merge_suggestion(
        &self,
        request: Request<pb::DeclineMergeSuggestionRequest>,
    ) -> Result<Response<pb::DeclineMergeSuggestionResponse>, Status> {
        let req = request.into_inner();
        self.people
            .decline_merge(req.person_id, req.other_person_id)
            .await?;
        Ok(Response::new(pb::DeclineMergeSuggestionResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_similarities_leave_as_cosines() {
        let face = |similarity| FaceRecord {
            id: 1,
            image_id: Some(2),
            image_path: None,
            person_id: Some(3),
            person_name: None,
            assigned: Some(facewire_storage::Assigned::Auto),
            similarity: Some(similarity),
            bbox: None,
            landmarks: Vec::new(),
            detection_score: None,
            quality: None,
            source: FaceSource::Detected,
            has_crop: false,
        };
        assert_eq!(face_to_pb(&face(1.000_000_1)).similarity, 1.0);
        assert_eq!(face_to_pb(&face(-1.000_000_1)).similarity, -1.0);
        assert_eq!(face_to_pb(&face(0.75)).similarity, 0.75);
    }
}
