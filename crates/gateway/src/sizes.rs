//! The first step: requests too large to look at, or whose length is
//! ambiguous, are refused before anything else is read.

use pingora::http::RequestHeader;

use crate::refusal::Refusal;
use paygate_core::ErrorCode;

/// `gateway.max_uri_bytes`, `max_header_bytes`, `max_body_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeLimits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
}

/// 414 / 431 / 413, and 400 for a request a proxy and an upstream could
/// read differently (two `Content-Length`s, or one beside
/// `Transfer-Encoding`: request smuggling).
pub fn check(req: &RequestHeader, limits: &SizeLimits) -> Result<(), Refusal> {
    if req.raw_path().len() > limits.max_uri_bytes {
        return Err(Refusal::new(
            ErrorCode::UriTooLong,
            "the request target is too long",
        ));
    }
    let header_bytes: usize = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes {
        return Err(Refusal::new(
            ErrorCode::HeadersTooLarge,
            "the request headers are too large",
        ));
    }
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    let (first, second) = (lengths.next(), lengths.next());
    if second.is_some() {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "more than one Content-Length",
        ));
    }
    let Some(len) = first else {
        return Ok(());
    };
    if req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Err(Refusal::new(
            ErrorCode::BadRequest,
            "Content-Length and Transfer-Encoding together",
        ));
    }
    match len.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
        Some(n) if n > limits.max_body_bytes => Err(Refusal::new(
            ErrorCode::BodyTooLarge,
            "the request body is too large",
        )),
        Some(_) => Ok(()),
        None => Err(Refusal::new(
            ErrorCode::BadRequest,
            "invalid Content-Length",
        )),
    }
}

/// Whether the request carries a body the client will send after its
/// headers (which must be read, or the connection closed, before reuse).
pub fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SizeLimits = SizeLimits {
        max_uri_bytes: 32,
        max_header_bytes: 200,
        max_body_bytes: 100,
    };

    fn check_request(path: &str, headers: &[(&str, &str)], expected: Option<ErrorCode>) {
        let mut req = RequestHeader::build("POST", path.as_bytes(), None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        assert_eq!(
            check(&req, &LIMITS).err().map(|r| r.code),
            expected,
            "{path} {headers:?}"
        );
    }

    #[test]
    fn limits_and_ambiguous_lengths() {
        check_request("/v1/x", &[("content-length", "100")], None);
        check_request("/v1/x", &[], None);
        check_request(
            &format!("/{}", "a".repeat(40)),
            &[],
            Some(ErrorCode::UriTooLong),
        );
        check_request(
            "/v1/x",
            &[("x-big", &"b".repeat(300))],
            Some(ErrorCode::HeadersTooLarge),
        );
        check_request(
            "/v1/x",
            &[("content-length", "101")],
            Some(ErrorCode::BodyTooLarge),
        );
        check_request(
            "/v1/x",
            &[("content-length", "1"), ("content-length", "1")],
            Some(ErrorCode::BadRequest),
        );
        check_request(
            "/v1/x",
            &[("content-length", "1"), ("transfer-encoding", "chunked")],
            Some(ErrorCode::BadRequest),
        );
        check_request(
            "/v1/x",
            &[("content-length", "ten")],
            Some(ErrorCode::BadRequest),
        );
    }
}
