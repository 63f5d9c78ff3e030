//! The gRPC `RecognitionService`: a thin translation between protobuf and [`Roster`].

use std::sync::Arc;

use facewire_proto::v1 as pb;
use facewire_server::wire::bbox_to_pb;
use pb::recognition_service_server::RecognitionService;
use tonic::{Request, Response, Status};

use crate::{
    image::AdmissionError,
    roster::{EnrolledFace, Roster, RosterError},
    Detection, ImageError, RecognizedFace,
};

/// The service: holds the roster and the batch limit; every method delegates.
#[derive(Debug, Clone)]
pub struct RecognitionApi {
    roster: Arc<Roster>,
    max_batch: usize,
}

impl RecognitionApi {
    /// A service over `roster` accepting at most `max_batch` images per request.
    pub fn new(roster: Arc<Roster>, max_batch: usize) -> Self {
        Self { roster, max_batch }
    }

    fn check_batch(&self, n: usize) -> Result<(), Status> {
        if n > self.max_batch {
            return Err(Status::invalid_argument(format!(
                "{n} images in one request; at most {} are accepted",
                self.max_batch
            )));
        }
        Ok(())
    }

    /// Waits for `image`'s share of the decode budget, then recognises it. The share is
    /// taken before decoding, so images over the budget queue as encoded bytes.
    async fn recognize_within_budget(
        &self,
        image: Vec<u8>,
    ) -> Result<Vec<RecognizedFace>, AdmissionError> {
        let permit = self
            .roster
            .recognizer()
            .decode_budget()
            .admit(&image)
            .await?;
        let faces = self.roster.recognize(image).await;
        drop(permit);
        Ok(faces?)
    }
}

impl From<AdmissionError> for Status {
    fn from(e: AdmissionError) -> Self {
        match e {
            AdmissionError::NeverFits { .. } | AdmissionError::Busy { .. } => {
                Status::resource_exhausted(e.to_string())
            }
            AdmissionError::Image(e) => image_status(e),
        }
    }
}

/// The status of a Recognize call whose image failed: the client's fault unless the
/// analysis itself failed, whose details (OpenCV's text) stay in the log.
pub(crate) fn image_status(e: ImageError) -> Status {
    match e {
        ImageError::Analysis(detail) => {
            tracing::warn!("face analysis failed: {detail}");
            Status::internal("face analysis failed inside the recognition service")
        }
        e => Status::invalid_argument(e.to_string()),
    }
}

/// The per-image form of an admission failure inside a batch.
fn admission_error_to_proto(e: &AdmissionError) -> pb::ImageError {
    let code = match e {
        AdmissionError::NeverFits { .. } => pb::ImageErrorCode::TooLarge,
        // Transient: the budget frees as other images finish.
        AdmissionError::Busy { .. } => pb::ImageErrorCode::Busy,
        AdmissionError::Image(e) => return image_error_to_proto(e),
    };
    pb::ImageError {
        code: code as i32,
        message: e.to_string(),
    }
}

impl From<RosterError> for Status {
    fn from(e: RosterError) -> Self {
        match e {
            RosterError::InvalidName { .. } => Status::invalid_argument(e.to_string()),
            RosterError::UnknownPerson(_) => Status::not_found(e.to_string()),
            RosterError::Store(e) => facewire_server::store_status(&e),
            RosterError::Internal(_) => Status::internal(e.to_string()),
        }
    }
}

fn landmarks(d: &Detection) -> Vec<pb::Point> {
    d.landmarks
        .iter()
        .map(|p| pb::Point { x: p[0], y: p[1] })
        .collect()
}

/// The protobuf form of a recognised face.
pub fn face_to_proto(face: &RecognizedFace) -> pb::Face {
    pb::Face {
        r#box: Some(bbox_to_pb(face.detection.bbox)),
        landmarks: landmarks(&face.detection),
        detection_score: face.detection.score,
        r#match: face.person.as_ref().map(|person| pb::Match {
            person: person.clone(),
            similarity: face.best_similarity,
            person_id: face.person_id.unwrap_or_default(),
        }),
        best_similarity: face.best_similarity,
        embedding: face.embedding.to_vec(),
        crop_jpeg: face.crop_jpeg.clone(),
    }
}

/// The protobuf form of a per-image error. An analysis failure's detail (OpenCV's
/// text) is logged, not sent.
pub fn image_error_to_proto(e: &ImageError) -> pb::ImageError {
    let code = match e {
        ImageError::Empty => pb::ImageErrorCode::Empty,
        ImageError::Undecodable(_) => pb::ImageErrorCode::Undecodable,
        ImageError::TooLarge(_) => pb::ImageErrorCode::TooLarge,
        ImageError::FaceCount(_) => pb::ImageErrorCode::FaceCount,
        ImageError::Analysis(_) => pb::ImageErrorCode::AnalysisFailed,
        ImageError::Drawn(_) => pb::ImageErrorCode::Unspecified,
    };
    let message = match e {
        ImageError::Analysis(detail) => {
            tracing::warn!("face analysis failed: {detail}");
            "face analysis failed inside the recognition service (retrying may help)".into()
        }
        e => e.to_string(),
    };
    pb::ImageError {
        code: code as i32,
        message,
    }
}

fn enrolled_to_proto(f: &EnrolledFace) -> pb::EnrolledFace {
    pb::EnrolledFace {
        id: f.id,
        content_hash: f.content_hash.clone(),
        r#box: Some(bbox_to_pb(f.bbox)),
        created: f.created,
    }
}

fn faces_response(faces: &[RecognizedFace]) -> pb::RecognizeResponse {
    pb::RecognizeResponse {
        faces: faces.iter().map(face_to_proto).collect(),
    }
}

#[tonic::async_trait]
impl RecognitionService for RecognitionApi {
    async fn recognize(
        &self,
        request: Request<pb::RecognizeRequest>,
    ) -> Result<Response<pb::RecognizeResponse>, Status> {
        let image = request.into_inner().image;
        let faces = self.recognize_within_budget(image).await?;
        Ok(Response::new(faces_response(&faces)))
    }

    async fn recognize_batch(
        &self,
        request: Request<pb::RecognizeBatchRequest>,
    ) -> Result<Response<pb::RecognizeBatchResponse>, Status> {
        let images = request.into_inner().images;
        self.check_batch(images.len())?;
        // All at once: the decode budget bounds how many are decoded, the recognizer's
        // worker pool how many are analysed, in parallel.
        let results = futures::future::join_all(images.into_iter().map(|item| async move {
            let outcome = match self.recognize_within_budget(item.image).await {
                Ok(faces) => pb::batch_result::Outcome::Faces(faces_response(&faces)),
                Err(e) => pb::batch_result::Outcome::Error(admission_error_to_proto(&e)),
            };
            pb::BatchResult {
                key: item.key,
                outcome: Some(outcome),
            }
        }))
        .await;
        Ok(Response::new(pb::RecognizeBatchResponse { results }))
    }

    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let req = request.into_inner();
        self.check_batch(req.images.len())?;
        if req.images.is_empty() {
            return Err(Status::invalid_argument("no images to enrol"));
        }
        let results = self.roster.enroll(&req.name, req.images).await?;
        if results.iter().any(|r| r.as_ref().is_ok_and(|f| f.created)) {
            // A new person (or photo) may name faces already stored.
            let people = crate::People::new(self.roster.clone(), None);
            if let Err(e) = people.rematch(false, |_, _| async { true }).await {
                tracing::warn!("re-match after enrolment failed: {e}");
            }
        }
        let results = results
            .iter()
            .enumerate()
            .map(|(index, r)| pb::EnrollResult {
                index: index as i32,
                outcome: Some(match r {
                    Ok(face) => pb::enroll_result::Outcome::Face(enrolled_to_proto(face)),
                    Err(e) => pb::enroll_result::Outcome::Error(image_error_to_proto(e)),
                }),
            })
            .collect();
        Ok(Response::new(pb::EnrollResponse { results }))
    }

    async fn list_people(
        &self,
        _request: Request<pb::ListPeopleRequest>,
    ) -> Result<Response<pb::ListPeopleResponse>, Status> {
        let people = self
            .roster
            .people()
            .await?
            .into_iter()
            .map(|p| pb::PersonSummary {
                name: p.name,
                face_count: p.face_count.try_into().unwrap_or(i32::MAX),
            })
            .collect();
        Ok(Response::new(pb::ListPeopleResponse { people }))
    }

    async fn list_faces(
        &self,
        request: Request<pb::ListFacesRequest>,
    ) -> Result<Response<pb::ListFacesResponse>, Status> {
        let faces = self
            .roster
            .faces(&request.into_inner().person)
            .await?
            .into_iter()
            .map(|f| pb::EnrolledFaceCrop {
                id: f.id,
                crop_jpeg: f.crop.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(pb::ListFacesResponse { faces }))
    }

    async fn remove_person(
        &self,
        request: Request<pb::RemovePersonRequest>,
    ) -> Result<Response<pb::RemovePersonResponse>, Status> {
        let removed = self.roster.forget(&request.into_inner().name).await?;
        Ok(Response::new(pb::RemovePersonResponse {
            faces_removed: removed.try_into().unwrap_or(i32::MAX),
        }))
    }
}
