//! How a refused path travels inside a `tonic::Status` on the legacy single-image RPC.

use crate::v1::SubmitErrorCode;

/// Metadata key carrying the [`SubmitErrorCode`] name on a refused legacy submission, so a
/// client falling back to the legacy RPC can rebuild the precise per-item error.
pub const SUBMIT_ERROR_CODE_METADATA: &str = "facewire-submit-error-code";

/// The precise submit error code a server attached to `status`, or one inferred from the
/// gRPC code when the server attached none (an old server).
pub fn submit_error_code_from_status(status: &tonic::Status) -> SubmitErrorCode {
    if let Some(code) = status
        .metadata()
        .get(SUBMIT_ERROR_CODE_METADATA)
        .and_then(|v| v.to_str().ok())
        .and_then(SubmitErrorCode::from_str_name)
    {
        return code;
    }
    match status.code() {
        tonic::Code::NotFound => SubmitErrorCode::NotFound,
        tonic::Code::InvalidArgument => SubmitErrorCode::InvalidPath,
        tonic::Code::PermissionDenied => SubmitErrorCode::OutsideRoot,
        tonic::Code::OutOfRange => SubmitErrorCode::TooLarge,
        _ => SubmitErrorCode::Unspecified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_wins_over_grpc_code() {
        let mut status = tonic::Status::invalid_argument("too big");
        status.metadata_mut().insert(
            SUBMIT_ERROR_CODE_METADATA,
            SubmitErrorCode::TooLarge.as_str_name().parse().unwrap(),
        );
        assert_eq!(
            submit_error_code_from_status(&status),
            SubmitErrorCode::TooLarge
        );
    }

    #[test]
    fn old_servers_map_by_grpc_code() {
        let status = tonic::Status::not_found("nope");
        assert_eq!(
            submit_error_code_from_status(&status),
            SubmitErrorCode::NotFound
        );
        let status = tonic::Status::internal("boom");
        assert_eq!(
            submit_error_code_from_status(&status),
            SubmitErrorCode::Unspecified
        );
    }
}
