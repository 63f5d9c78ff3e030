//! Turns tonic's "decoded message length too large" (OUT_OF_RANGE) into the
//! INVALID_ARGUMENT our API promises, with a message naming the limit and the setting
//! that raises it. The setting's name is handed over by the service that configured the
//! limit ([`crate::GrpcServer::message_limit_setting`]), read off its typed config with
//! [`facewire_config::env_var`], so the message cannot name a variable the service does
//! not read (recognition's limit is `FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES`, the
//! receiver's `FACEWIRE_MAX_MESSAGE_BYTES`).

use std::sync::Arc;

/// Rewrites an oversized-request status in a (trailers-only) response's headers; other
/// responses pass through untouched. `setting` is the environment variable that sets the
/// limit, when there is one. Used as a `tower::util::MapResponseLayer`.
pub fn rewrite_response<B>(
    setting: Option<Arc<str>>,
) -> impl Fn(http::Response<B>) -> http::Response<B> + Clone {
    move |mut resp| {
        if let Some(status) = tonic::Status::from_header_map(resp.headers()) {
            if let Some(rewritten) = rewrite(&status, setting.as_deref()) {
                let _ = rewritten.add_header(resp.headers_mut());
            }
        }
        resp
    }
}

fn rewrite(status: &tonic::Status, setting: Option<&str>) -> Option<tonic::Status> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let msg = status.message();
    let rest = msg.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    let mut text = format!("request message is {found} bytes; the limit is {limit} bytes");
    if let Some(setting) = setting {
        text.push_str(&format!(" ({setting})"));
    }
    Some(tonic::Status::invalid_argument(text))
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn rewrites_only_the_decode_limit() {
        let s = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 6010 bytes, the limit is: 4096 bytes",
        );
        let r = rewrite(&s, None).unwrap();
        assert_eq!(r.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            r.message(),
            "request message is 6010 bytes; the limit is 4096 bytes"
        );
        assert!(rewrite(&tonic::Status::out_of_range("page 9 of 3"), None).is_none());
        assert!(rewrite(&tonic::Status::internal("x"), None).is_none());
    }

    #[test]
    fn names_the_setting_the_service_reads() {
        let s = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 6010 bytes, the limit is: 4096 bytes",
        );
        let r = rewrite(&s, Some("FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES")).unwrap();
        assert!(
            r.message()
                .ends_with("the limit is 4096 bytes (FACEWIRE_RECOGNITION_MAX_MESSAGE_BYTES)"),
            "{}",
            r.message()
        );
    }
}
