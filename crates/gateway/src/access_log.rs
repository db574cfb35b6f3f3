//! The access log: one `tracing` event per call (target `paygate::access`),
//! written by the process's log writer off the proxy threads. It names the
//! caller by customer id and key prefix only; a credential, a query value
//! that may be one (`api_key`, `token`, `key`) or a payment never appears.

use std::borrow::Cow;
use std::time::Duration;

use http::HeaderMap;
use paygate_core::apikey;

use crate::auth::{self, Credential};

/// The target access lines are logged under, so a filter can pick them.
pub const TARGET: &str = "paygate::access";

/// Query parameters whose values are never written.
const SECRET_PARAMS: &[&str] = &["api_key", "token", "key"];

/// One call, as logged.
pub struct Line<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    pub target: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub decision: &'a str,
    pub customer: &'a str,
    pub headers: &'a HeaderMap,
    pub cache: &'a str,
    pub upstream: Option<Duration>,
    pub total: Duration,
}

pub fn write(l: &Line<'_>) {
    let key_prefix = key_prefix(l.headers);
    let path = redacted(l.target);
    let upstream_ms = l.upstream.map(|d| d.as_secs_f64() * 1000.0);
    tracing::info!(
        target: TARGET,
        request_id = l.request_id,
        method = l.method,
        path = path.as_ref(),
        route = l.route,
        status = l.status,
        decision = l.decision,
        customer = l.customer,
        key_prefix = key_prefix,
        cache = l.cache,
        upstream_ms = upstream_ms,
        total_ms = l.total.as_secs_f64() * 1000.0,
        "access"
    );
}

/// The display prefix of a well-formed API key the caller sent; nothing
/// for a JWT or anything else.
fn key_prefix(headers: &HeaderMap) -> &str {
    match auth::credential(headers) {
        Credential::ApiKey(k) if apikey::is_well_formed(k) => apikey::display_prefix(k),
        _ => "",
    }
}

/// The request target with the values of secret-bearing query parameters
/// replaced.
pub fn redacted(target: &str) -> Cow<'_, str> {
    let Some((path, query)) = target.split_once('?') else {
        return Cow::Borrowed(target);
    };
    let secret = |pair: &str| {
        let name = percent_decoded(pair.split_once('=').map_or(pair, |(n, _)| n));
        SECRET_PARAMS.iter().any(|s| s.eq_ignore_ascii_case(&name))
    };
    if !query.split('&').any(secret) {
        return Cow::Borrowed(target);
    }
    let query: Vec<Cow<'_, str>> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(pair) => Cow::Owned(format!("{name}=[redacted]")),
            _ => Cow::Borrowed(pair),
        })
        .collect();
    Cow::Owned(format!("{path}?{}", query.join("&")))
}

/// A query parameter's name as the upstream reads it (`api%5Fkey` is
/// `api_key`); `+` and invalid escapes are left as they are.
fn percent_decoded(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'%'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_query_values_are_redacted() {
        assert_eq!(redacted("/v1/prices/AAPL"), "/v1/prices/AAPL");
        assert_eq!(redacted("/v1/p?symbol=AAPL"), "/v1/p?symbol=AAPL");
        assert_eq!(
            redacted("/v1/p?api_key=pg_live_secret&symbol=AAPL&TOKEN=abc&key=k"),
            "/v1/p?api_key=[redacted]&symbol=AAPL&TOKEN=[redacted]&key=[redacted]"
        );
        assert_eq!(redacted("/v1/p?keys=1&monkey=2"), "/v1/p?keys=1&monkey=2");
        assert_eq!(
            redacted("/v1/p?api%5Fkey=s3cret&%74oken=t&k%65y"),
            "/v1/p?api%5Fkey=[redacted]&%74oken=[redacted]&k%65y"
        );
    }

    #[test]
    fn only_a_well_formed_keys_prefix_is_named() {
        let mut h = HeaderMap::new();
        let key = "pg_live_0123456789abcdefghijABCDEFGHIJKL";
        h.insert("x-api-key", key.parse().unwrap());
        assert_eq!(key_prefix(&h), "pg_live_0123");
        h.insert("x-api-key", "not-a-key-at-all".parse().unwrap());
        assert_eq!(key_prefix(&h), "");
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer a.b.c".parse().unwrap());
        assert_eq!(key_prefix(&h), "");
    }
}
