//! Credentials: `Authorization: Bearer <key or JWT>` or `X-API-Key: <key>`.

use http::HeaderMap;
use paygate_core::ErrorCode;
use paygate_store::{Catalog, Principal};

use crate::refusal::Refusal;

/// What the client presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    Missing,
    ApiKey(&'a str),
    /// Three base64url segments.
    Jwt(&'a str),
    /// An `Authorization` header that is not a bearer token.
    Unusable,
}

pub fn credential(headers: &HeaderMap) -> Credential<'_> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let Ok(v) = v.to_str() else {
            return Credential::Unusable;
        };
        let Some((scheme, token)) = v.split_once(' ') else {
            return Credential::Unusable;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Credential::Unusable;
        }
        let token = token.trim();
        return if is_jwt(token) {
            Credential::Jwt(token)
        } else {
            Credential::ApiKey(token)
        };
    }
    match headers.get("x-api-key").map(|v| v.to_str()) {
        Some(Ok(k)) => Credential::ApiKey(k.trim()),
        Some(Err(_)) => Credential::Unusable,
        None => Credential::Missing,
    }
}

fn is_jwt(token: &str) -> bool {
    let mut parts = 0;
    for seg in token.split('.') {
        parts += 1;
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// Resolves the caller, or the 401 to answer with.
pub fn authenticate(catalog: &Catalog, headers: &HeaderMap) -> Result<Principal, Refusal> {
    match credential(headers) {
        Credential::Missing => Err(Refusal::new(
            ErrorCode::MissingCredentials,
            "send an API key as `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        )),
        Credential::Unusable => Err(Refusal::new(
            ErrorCode::InvalidCredentials,
            "the Authorization header must be `Bearer <key>`",
        )),
        Credential::Jwt(_) => Err(Refusal::new(
            ErrorCode::InvalidCredentials,
            "JWTs are not accepted: no JWT issuer is configured",
        )),
        Credential::ApiKey(k) => catalog.authenticate(k).ok_or_else(|| {
            Refusal::new(
                ErrorCode::InvalidCredentials,
                "the API key is unknown, revoked or malformed",
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn extraction() {
        let key = "pg_live_0123456789abcdefghijABCDEFGHIJ01";
        let auth = format!("Bearer {key}");
        let mut h = HeaderMap::new();
        h.insert("authorization", auth.parse().unwrap());
        assert_eq!(credential(&h), Credential::ApiKey(key));
        assert_eq!(
            credential(&headers(&[("x-api-key", "abc")])),
            Credential::ApiKey("abc")
        );
        assert_eq!(credential(&headers(&[])), Credential::Missing);
        assert_eq!(
            credential(&headers(&[("authorization", "Basic abc")])),
            Credential::Unusable
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer aGVh.cGF5.c2ln")])),
            Credential::Jwt("aGVh.cGF5.c2ln")
        );
    }
}
