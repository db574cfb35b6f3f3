//! Response headers that tell the caller where it stands, and request header
//! hygiene for the upstream.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use paygate_core::period::Period;
use paygate_core::Plan;
use paygate_store::Snapshot;
use pingora::http::{RequestHeader, ResponseHeader};

/// Anything that carries headers, so refusals and proxied responses share one writer.
pub(crate) trait HeaderSink {
    fn set(&mut self, name: &'static str, value: String);
    /// Adds a value beside those already there (`Vary`).
    fn add(&mut self, name: &'static str, value: String);
}

impl HeaderSink for ResponseHeader {
    fn set(&mut self, name: &'static str, value: String) {
        // Values are digits or our own ids: always valid header values.
        let _ = self.insert_header(name, value);
    }

    fn add(&mut self, name: &'static str, value: String) {
        let _ = self.append_header(name, value);
    }
}

/// `RateLimit-*`, `X-Quota-*` (plans with a quota) and `X-Credits-Remaining`
/// (plans that spend credits).
pub(crate) fn limit_headers(
    out: &mut impl HeaderSink,
    plan: &Plan,
    snap: &Snapshot,
    period: &Period,
    now: DateTime<Utc>,
) {
    out.set("ratelimit-limit", plan.rate_limit.capacity().to_string());
    out.set("ratelimit-remaining", snap.rate_remaining.to_string());
    out.set(
        "ratelimit-reset",
        snap.rate_reset_ms.div_ceil(1000).to_string(),
    );
    if let Some(q) = &plan.quota {
        out.set("x-quota-limit", q.calls.to_string());
        out.set(
            "x-quota-remaining",
            q.calls.saturating_sub(snap.quota_used).to_string(),
        );
        out.set("x-quota-reset", period.seconds_left(now).to_string());
    }
    if plan.price_per_call_micros.is_some() {
        out.set("x-credits-remaining", snap.credits_micros.to_string());
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and the client's credentials never
/// reach the upstream, nor any `X-Paygate-*` header the client made up.
fn always_stripped(name: &str, is_upgrade: bool) -> bool {
    match name {
        "authorization"
        | "x-payment"
        | "payment-signature"
        | "x-api-key"
        | "proxy-authorization"
        | "proxy-connection"
        | "keep-alive"
        | "te"
        | "trailer" => true,
        // An upgrade needs both to reach the upstream.
        "upgrade" | "connection" => !is_upgrade,
        other => other.starts_with("x-paygate-"),
    }
}

/// One pass over the header names, then removal of the few that must go:
/// cheaper than probing every stripped name on every call.
pub(crate) fn sanitize_for_upstream(req: &mut RequestHeader, is_upgrade: bool) {
    // Headers named in `Connection` are hop-by-hop too. Most calls name none
    // or only `keep-alive`: skip the allocation then.
    let listed: Vec<String> = match req.headers.get("connection") {
        Some(v) if !v.as_bytes().eq_ignore_ascii_case(b"keep-alive") => req
            .headers
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !(s.is_empty() || (is_upgrade && s == "upgrade")))
            .collect(),
        _ => Vec::new(),
    };
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            always_stripped(k.as_str(), is_upgrade) || listed.iter().any(|l| l == k.as_str())
        })
        .cloned()
        .collect();
    for name in doomed {
        req.remove_header(&name);
    }
}

/// `X-Forwarded-For`: the client's own value is kept only when the peer is a
/// trusted proxy; the peer's address is always appended.
pub(crate) fn forwarded_for(req: &mut RequestHeader, peer: Option<IpAddr>, trusted: &[IpNet]) {
    let Some(peer) = peer else {
        req.remove_header("x-forwarded-for");
        return;
    };
    let believed = trusted.iter().any(|n| n.contains(&peer));
    let value = match req
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) if believed => format!("{prev}, {peer}"),
        _ => peer.to_string(),
    };
    let _ = req.insert_header("x-forwarded-for", value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hygiene_removes_credentials_hop_by_hop_and_paygate_headers() {
        let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
        for (k, v) in [
            ("authorization", "Bearer k"),
            ("x-api-key", "k"),
            ("connection", "keep-alive, x-custom"),
            ("x-custom", "1"),
            ("keep-alive", "timeout=5"),
            ("x-paygate-customer", "evil"),
            ("X-Paygate-Plan", "evil"),
            ("accept", "application/json"),
        ] {
            req.append_header(k, v).unwrap();
        }
        sanitize_for_upstream(&mut req, false);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn forwarded_for_trusts_only_configured_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "1.2.3.4").unwrap();
        forwarded_for(&mut req, Some("127.0.0.1".parse().unwrap()), &trusted);
        assert_eq!(req.headers["x-forwarded-for"], "127.0.0.1");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "1.2.3.4").unwrap();
        forwarded_for(&mut req, Some("10.1.1.1".parse().unwrap()), &trusted);
        assert_eq!(req.headers["x-forwarded-for"], "1.2.3.4, 10.1.1.1");
    }
}
