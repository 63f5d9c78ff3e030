//! The one mapping from facewire errors to `tonic::Status`.
//!
//! Every whole-call error carries `google.rpc` error details in `grpc-status-details-bin`,
//! so grpcurl and clients in any language can read them, not only ours:
//! - an `ErrorInfo` with a stable `reason` (`[A-Z0-9_]+`), the domain [`ERROR_DOMAIN`] and
//!   metadata naming what the error is about (never internal text);
//! - for INVALID_ARGUMENT, a `BadRequest` with the offending field.
//!
//! A refused legacy submission also keeps the `facewire-submit-error-code` metadata key
//! that older clients read.

use std::collections::HashMap;

use facewire_config::PathError;
use facewire_proto::v1 as pb;
use tonic::{Code, Status};
use tonic_types::{BadRequest, ErrorDetails, ErrorInfo, StatusExt};

/// The `ErrorInfo.domain` of every facewire error.
pub const ERROR_DOMAIN: &str = "facewire.dev";

/// `ErrorInfo.reason` values facewire sends.
pub mod reason {
    /// A request field is not acceptable; `BadRequest` names it.
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    /// The database cannot be reached: retry later.
    pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
    /// The database failed in a way retrying will not fix.
    pub const DATABASE_ERROR: &str = "DATABASE_ERROR";
    /// The request names a record that does not exist.
    pub const NOT_FOUND: &str = "NOT_FOUND";
}

/// A status with an `ErrorInfo` of `reason` in [`ERROR_DOMAIN`] and `metadata`.
pub fn error_status<K, V>(
    code: Code,
    message: impl Into<String>,
    reason: &str,
    metadata: impl IntoIterator<Item = (K, V)>,
) -> Status
where
    K: Into<String>,
    V: Into<String>,
{
    Status::with_error_details(code, message, details(reason, metadata))
}

fn details<K, V>(reason: &str, metadata: impl IntoIterator<Item = (K, V)>) -> ErrorDetails
where
    K: Into<String>,
    V: Into<String>,
{
    let metadata: HashMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    details
}

/// INVALID_ARGUMENT for the request field `field` (its proto name, e.g. `page_size`):
/// a `BadRequest` field violation with `description`, and an `ErrorInfo` whose
/// metadata names the field. The message is `description`.
pub fn invalid_argument(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = details(reason::INVALID_ARGUMENT, [("field", field)]);
    details.add_bad_request_violation(field, description.clone());
    Status::with_error_details(Code::InvalidArgument, description, details)
}

/// NOT_FOUND for a missing record of `kind` (`image`, `person`, ...), with its ids in
/// the `ErrorInfo` metadata.
pub fn not_found(kind: &str, ids: &str, message: impl Into<String>) -> Status {
    error_status(
        Code::NotFound,
        message,
        reason::NOT_FOUND,
        [("kind", kind), ("ids", ids)],
    )
}

/// The one mapping of a storage error to a gRPC status, for every service: an
/// unreachable database is UNAVAILABLE (retry later), anything else INTERNAL. Messages
/// and details are generic; the error itself goes to the log, never to clients.
pub fn store_status(e: &facewire_storage::StoreError) -> Status {
    let none: [(&str, &str); 0] = [];
    match e {
        facewire_storage::StoreError::Unavailable(_) => {
            tracing::warn!(error = %e, "database unavailable");
            error_status(
                Code::Unavailable,
                "the database is unavailable; try again",
                reason::DATABASE_UNAVAILABLE,
                none,
            )
        }
        _ => {
            tracing::error!(error = %e, "database error");
            error_status(
                Code::Internal,
                "a database error occurred",
                reason::DATABASE_ERROR,
                none,
            )
        }
    }
}

/// The wire code for a refused path.
pub fn path_error_code(e: &PathError) -> pb::SubmitErrorCode {
    match e {
        PathError::Invalid(_) => pb::SubmitErrorCode::InvalidPath,
        PathError::OutsideRoot(_) => pb::SubmitErrorCode::OutsideRoot,
        PathError::NotFound(_) => pb::SubmitErrorCode::NotFound,
        PathError::NotAFile(_) => pb::SubmitErrorCode::NotAFile,
        PathError::Empty(_) => pb::SubmitErrorCode::EmptyFile,
        PathError::TooLarge { .. } => pb::SubmitErrorCode::TooLarge,
        PathError::Unreadable { .. } => pb::SubmitErrorCode::Unreadable,
    }
}

/// The status for a refused path on the legacy single-image RPC: an `ErrorInfo` whose
/// reason is the [`pb::SubmitErrorCode`] name (`BadRequest` on field `path` when the
/// path itself is unacceptable), and, for clients older than the details, the same name
/// under [`facewire_proto::SUBMIT_ERROR_CODE_METADATA`].
pub fn path_error_status(e: &PathError) -> Status {
    let code = path_error_code(e);
    let grpc = match e {
        PathError::NotFound(_) => Code::NotFound,
        PathError::OutsideRoot(_) => Code::PermissionDenied,
        PathError::Unreadable { .. } => Code::FailedPrecondition,
        _ => Code::InvalidArgument,
    };
    let message = e.to_string();
    let mut details = details(code.as_str_name(), [("field", "path")]);
    if grpc == Code::InvalidArgument {
        details.add_bad_request_violation("path", message.clone());
    }
    let mut metadata = tonic::metadata::MetadataMap::new();
    if let Ok(v) = code.as_str_name().parse() {
        metadata.insert(facewire_proto::SUBMIT_ERROR_CODE_METADATA, v);
    }
    Status::with_error_details_and_metadata(grpc, message, details, metadata)
}

/// The `BadRequest` of `status`, if it carries one (for clients and tests).
pub fn bad_request(status: &Status) -> Option<BadRequest> {
    status.get_details_bad_request()
}

/// The `ErrorInfo` of `status`, if it carries one (for clients and tests).
pub fn error_info(status: &Status) -> Option<ErrorInfo> {
    status.get_details_error_info()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status as a client sees it: through the wire headers and back.
    fn over_the_wire(status: &Status) -> Status {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).unwrap();
        Status::from_header_map(&headers).unwrap()
    }

    #[test]
    fn invalid_arguments_name_the_field() {
        let st = over_the_wire(&invalid_argument("page_size", "page_size is -1"));
        assert_eq!(st.code(), Code::InvalidArgument);
        let bad = bad_request(&st).expect("BadRequest details");
        assert_eq!(bad.field_violations.len(), 1);
        assert_eq!(bad.field_violations[0].field, "page_size");
        assert_eq!(bad.field_violations[0].description, "page_size is -1");
        let info = error_info(&st).expect("ErrorInfo details");
        assert_eq!(info.reason, reason::INVALID_ARGUMENT);
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(
            info.metadata.get("field").map(String::as_str),
            Some("page_size")
        );
    }

    #[test]
    fn storage_errors_carry_a_reason_and_no_internal_text() {
        let secret = "relation \"images\" does not exist at postgres://admin:hunter2@db";
        let e = facewire_storage::StoreError::Corrupt(secret.into());
        let st = over_the_wire(&store_status(&e));
        assert_eq!(st.code(), Code::Internal);
        let info = error_info(&st).expect("ErrorInfo details");
        assert_eq!(info.reason, reason::DATABASE_ERROR);
        assert_eq!(info.domain, ERROR_DOMAIN);
        let everything = format!(
            "{} {:?} {}",
            st.message(),
            info.metadata,
            String::from_utf8_lossy(st.details())
        );
        assert!(!everything.contains("hunter2"), "{everything}");
        assert!(!everything.contains("relation"), "{everything}");
        assert!(bad_request(&st).is_none());

        let down = facewire_storage::StoreError::Unavailable(secret.into());
        let st = over_the_wire(&store_status(&down));
        assert_eq!(st.code(), Code::Unavailable);
        assert_eq!(
            error_info(&st).map(|i| i.reason),
            Some(reason::DATABASE_UNAVAILABLE.to_string())
        );
        assert!(!st.message().contains("hunter2"));
    }

    #[test]
    fn refused_paths_keep_the_legacy_metadata_and_gain_details() {
        let st = over_the_wire(&path_error_status(&PathError::Empty("x.jpg".into())));
        assert_eq!(st.code(), Code::InvalidArgument);
        assert_eq!(
            facewire_proto::submit_error_code_from_status(&st),
            pb::SubmitErrorCode::EmptyFile
        );
        let info = error_info(&st).expect("ErrorInfo details");
        assert_eq!(info.reason, "SUBMIT_ERROR_CODE_EMPTY_FILE");
        let bad = bad_request(&st).expect("BadRequest details");
        assert_eq!(bad.field_violations[0].field, "path");

        let st = over_the_wire(&path_error_status(&PathError::NotFound("y.jpg".into())));
        assert_eq!(st.code(), Code::NotFound);
        assert!(bad_request(&st).is_none());
        assert_eq!(
            error_info(&st).map(|i| i.reason),
            Some("SUBMIT_ERROR_CODE_NOT_FOUND".to_string())
        );
    }
}
