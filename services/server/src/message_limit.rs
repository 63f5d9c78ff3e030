//! Turns tonic's "decoded message length too large" (OUT_OF_RANGE) into the
//! INVALID_ARGUMENT our API promises, with a message naming the limit and its setting.

/// Rewrites an oversized-request status in a (trailers-only) response's headers; other
/// responses pass through untouched. Used as a `tower::util::MapResponseLayer`.
pub fn rewrite_response<B>(mut resp: http::Response<B>) -> http::Response<B> {
    if let Some(status) = tonic::Status::from_header_map(resp.headers()) {
        if let Some(rewritten) = rewrite(&status) {
            let _ = rewritten.add_header(resp.headers_mut());
        }
    }
    resp
}

fn rewrite(status: &tonic::Status) -> Option<tonic::Status> {
    if status.code() != tonic::Code::OutOfRange {
        return None;
    }
    let msg = status.message();
    let rest = msg.strip_prefix("Error, decoded message length too large: found ")?;
    let (found, rest) = rest.split_once(" bytes, the limit is: ")?;
    let limit = rest.strip_suffix(" bytes")?;
    Some(tonic::Status::invalid_argument(format!(
        "request message is {found} bytes; the limit is {limit} bytes (FACEWIRE_MAX_MESSAGE_BYTES)"
    )))
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn rewrites_only_the_decode_limit() {
        let s = tonic::Status::out_of_range(
            "Error, decoded message length too large: found 6010 bytes, the limit is: 4096 bytes",
        );
        let r = rewrite(&s).unwrap();
        assert_eq!(r.code(), tonic::Code::InvalidArgument);
        assert!(r.message().contains("the limit is 4096 bytes"));
        assert!(rewrite(&tonic::Status::out_of_range("page 9 of 3")).is_none());
        assert!(rewrite(&tonic::Status::internal("x")).is_none());
    }
}
