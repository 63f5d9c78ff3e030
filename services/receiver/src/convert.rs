//! Between storage records, ingest results and the wire types.

use facewire_proto::v1 as pb;
use facewire_server::wire::{assigned_to_pb, bbox_to_pb, timestamp};
use facewire_storage::{ImageFace, ImageRecord, ImageStatus};

use crate::ingest::{IngestError, ItemResult};

/// Storage status to wire status.
pub fn status_to_pb(s: ImageStatus) -> pb::ImageStatus {
    match s {
        ImageStatus::Pending => pb::ImageStatus::Pending,
        ImageStatus::Processing => pb::ImageStatus::Processing,
        ImageStatus::Done => pb::ImageStatus::Done,
        ImageStatus::NoFace => pb::ImageStatus::NoFace,
        ImageStatus::Failed => pb::ImageStatus::Failed,
    }
}

/// Wire status to storage status (`None` for unspecified: no filter).
pub fn status_from_pb(s: pb::ImageStatus) -> Option<ImageStatus> {
    match s {
        pb::ImageStatus::Unspecified => None,
        pb::ImageStatus::Pending => Some(ImageStatus::Pending),
        pb::ImageStatus::Processing => Some(ImageStatus::Processing),
        pb::ImageStatus::Done => Some(ImageStatus::Done),
        pb::ImageStatus::NoFace => Some(ImageStatus::NoFace),
        pb::ImageStatus::Failed => Some(ImageStatus::Failed),
    }
}

fn image_face_to_pb(f: &ImageFace) -> pb::ImageFace {
    pb::ImageFace {
        id: f.id,
        r#box: f.bbox.map(bbox_to_pb),
        person_id: f.person_id.unwrap_or_default(),
        person_name: f.person_name.clone().unwrap_or_default(),
        assigned: assigned_to_pb(f.assigned) as i32,
        similarity: f.similarity.unwrap_or_default(),
        detection_score: f.detection_score.unwrap_or_default(),
    }
}

/// A stored image on the wire.
pub fn image_to_pb(r: &ImageRecord) -> pb::Image {
    pb::Image {
        id: r.id,
        path: r.path.clone(),
        status: status_to_pb(r.status) as i32,
        content_hash: r.content_hash.clone(),
        people: r
            .people
            .iter()
            .map(|p| pb::Person {
                name: p.name.clone(),
                similarity: p.similarity,
                person_id: p.person_id.unwrap_or_default(),
            })
            .collect(),
        faces: r.faces.iter().map(image_face_to_pb).collect(),
        attempts: r.attempts,
        last_error: r.last_error.clone().unwrap_or_default(),
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

/// The wire code for a refused path, and the status of a refused legacy submission
/// (with the precise code in metadata and `google.rpc` details): one mapping, in
/// `facewire_server::status`.
pub use facewire_server::status::{path_error_code, path_error_status};

/// One batch item on the wire.
pub fn item_to_pb(path: String, item: &ItemResult) -> pb::SubmitResult {
    use pb::submit_result::Outcome;
    let outcome = match item {
        ItemResult::Accepted(rec) => Outcome::Image(image_to_pb(rec)),
        ItemResult::Refused(e) => Outcome::Error(pb::SubmitError {
            code: path_error_code(e) as i32,
            message: e.to_string(),
        }),
    };
    pb::SubmitResult {
        path,
        outcome: Some(outcome),
    }
}

/// The one mapping from storage errors to gRPC status codes.
pub use facewire_server::store_status;

impl From<IngestError> for tonic::Status {
    fn from(e: IngestError) -> Self {
        match &e {
            IngestError::EmptyBatch | IngestError::BatchTooLarge { .. } => {
                facewire_server::status::invalid_argument("paths", e.to_string())
            }
            IngestError::Store(s) => store_status(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use facewire_config::PathError;

    #[test]
    fn statuses_round_trip() {
        for s in ImageStatus::ALL {
            assert_eq!(status_from_pb(status_to_pb(s)), Some(s));
        }
        assert_eq!(status_from_pb(pb::ImageStatus::Unspecified), None);
    }

    #[test]
    fn legacy_status_carries_precise_code() {
        let e = PathError::Empty("x.jpg".into());
        let st = path_error_status(&e);
        assert_eq!(st.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            facewire_proto::submit_error_code_from_status(&st),
            pb::SubmitErrorCode::EmptyFile
        );
    }
}
