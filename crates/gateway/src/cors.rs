//! CORS per route (`cors = {...}`): browsers' preflights are answered here,
//! never authenticated, billed or forwarded; answers to a listed origin
//! carry `Access-Control-Allow-Origin` and expose the headers a browser app
//! needs to see where it stands.

use http::Method;
use paygate_config::CorsConfig;
use pingora::http::RequestHeader;

/// Response headers a browser script may read: the ids and where-you-stand
/// headers paygate adds, and the x402 headers of a paid call.
const EXPOSED: &str = "x-request-id, x-cache, retry-after, ratelimit-limit, ratelimit-remaining, \
ratelimit-reset, x-quota-limit, x-quota-remaining, x-quota-reset, x-credits-remaining, \
payment-required, payment-response, x-payment-response";

/// Methods offered to a preflight on a route that takes every method.
const ALL_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

#[derive(Debug, Clone)]
pub struct Cors {
    /// `None`: any origin (`"*"`).
    origins: Option<Vec<String>>,
    allow_headers: String,
    allow_methods: String,
    max_age: String,
}

impl Cors {
    pub fn new(c: &CorsConfig, methods: Option<&[Method]>) -> Self {
        Self {
            origins: (!c.allow_origins.iter().any(|o| o == "*")).then(|| c.allow_origins.clone()),
            allow_headers: c.allow_headers.join(", "),
            allow_methods: methods.map_or_else(
                || ALL_METHODS.to_string(),
                |ms| ms.iter().map(Method::as_str).collect::<Vec<_>>().join(", "),
            ),
            max_age: c.max_age_seconds.to_string(),
        }
    }

    /// The request's `Origin`, when it is one this route lists.
    pub fn allowed_origin(&self, req: &RequestHeader) -> Option<String> {
        let origin = req.headers.get(http::header::ORIGIN)?.to_str().ok()?;
        let listed = match &self.origins {
            None => true,
            Some(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        };
        listed.then(|| origin.to_string())
    }

    /// A preflight's answer headers: the allow headers only for a listed
    /// origin; `Vary: Origin` always, so a shared cache keeps them apart.
    pub fn preflight_headers(&self, origin: Option<String>) -> Vec<(&'static str, String)> {
        let mut out = vec![("vary", "Origin".to_string())];
        if let Some(origin) = origin {
            out.push(("access-control-allow-origin", origin));
            out.push(("access-control-allow-methods", self.allow_methods.clone()));
            out.push(("access-control-allow-headers", self.allow_headers.clone()));
            out.push(("access-control-max-age", self.max_age.clone()));
        }
        out
    }
}

/// Headers on any other answer to a listed origin (besides `Vary:
/// Origin`, which every answer of the route carries).
pub fn answer_headers(origin: &str) -> [(&'static str, &str); 2] {
    [
        ("access-control-allow-origin", origin),
        ("access-control-expose-headers", EXPOSED),
    ]
}

/// `OPTIONS` with `Access-Control-Request-Method`: a browser asking, not
/// calling.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS && req.headers.contains_key("access-control-request-method")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(origins: &[&str]) -> CorsConfig {
        CorsConfig {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_headers: vec!["authorization".into(), "x-api-key".into()],
            max_age_seconds: 600,
        }
    }

    fn req(method: &str, origin: Option<&str>, acrm: bool) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/v1/prices", None).unwrap();
        if let Some(o) = origin {
            r.insert_header("origin", o).unwrap();
        }
        if acrm {
            r.insert_header("access-control-request-method", "GET")
                .unwrap();
        }
        r
    }

    #[test]
    fn only_listed_origins_get_allow_headers() {
        let cors = Cors::new(&cfg(&["https://app.example.com"]), Some(&[Method::GET]));
        let listed = req("OPTIONS", Some("https://app.example.com"), true);
        let origin = cors.allowed_origin(&listed);
        assert_eq!(origin.as_deref(), Some("https://app.example.com"));
        let h = cors.preflight_headers(origin);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("access-control-allow-methods"), Some("GET"));
        assert_eq!(
            get("access-control-allow-headers"),
            Some("authorization, x-api-key")
        );
        assert_eq!(get("access-control-max-age"), Some("600"));

        let other = req("OPTIONS", Some("https://evil.example"), true);
        assert_eq!(cors.allowed_origin(&other), None);
        assert_eq!(
            cors.preflight_headers(None),
            [("vary", "Origin".to_string())]
        );
        assert_eq!(cors.allowed_origin(&req("GET", None, false)), None);
    }

    #[test]
    fn star_allows_any_origin_and_every_method() {
        let cors = Cors::new(&cfg(&["*"]), None);
        let r = req("OPTIONS", Some("https://x.example"), true);
        assert_eq!(
            cors.allowed_origin(&r).as_deref(),
            Some("https://x.example")
        );
        let h = cors.preflight_headers(Some("https://x.example".into()));
        assert!(h
            .iter()
            .any(|(k, v)| *k == "access-control-allow-methods" && v.contains("DELETE")));
    }

    #[test]
    fn a_preflight_is_options_with_a_requested_method() {
        assert!(is_preflight(&req("OPTIONS", Some("https://a.b"), true)));
        assert!(!is_preflight(&req("OPTIONS", Some("https://a.b"), false)));
        assert!(!is_preflight(&req("GET", Some("https://a.b"), true)));
    }
}
