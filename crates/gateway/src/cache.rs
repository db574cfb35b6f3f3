//! The response cache of a route (`cache = { ttl_ms, max_entries }`): GET
//! answers of 200, kept per path, query and the caller's plan, served again
//! until they are `ttl_ms` old (or younger, when the upstream's
//! `Cache-Control` says so). A hit is still admitted, limited, metered and
//! billed like a forwarded call: the cache saves the upstream the work, not
//! the caller the price.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use paygate_config::CacheConfig;
use pingora::http::{RequestHeader, ResponseHeader};

/// Answers larger than this are passed through and not kept.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What one route's cache holds at most, in body and header bytes: past
/// it, answers are passed through until older ones expire or are evicted.
pub const MAX_ROUTE_BYTES: u64 = 64 << 20;

/// Headers that describe a connection or a length, not the answer: never
/// stored; a hit gets its own.
const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "date",
];

/// One kept answer.
#[derive(Debug)]
pub struct Cached {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    expires: Instant,
    /// Body and header bytes, counted against [`MAX_ROUTE_BYTES`].
    size: u64,
}

/// What a call on a cached route found.
#[derive(Debug, Default)]
pub enum Lookup {
    /// Not a cached route, or not a GET.
    #[default]
    Bypass,
    Hit(Arc<Cached>),
    /// Forwarded; its answer may be kept under this key.
    Miss(String),
}

impl Lookup {
    /// As `X-Cache` and the access log say it; empty when bypassed.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Bypass => "",
            Self::Hit(_) => "HIT",
            Self::Miss(_) => "MISS",
        }
    }
}

/// A miss whose answer is being kept, chunk by chunk.
#[derive(Debug)]
pub struct Fill {
    key: String,
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: BytesMut,
    lifetime: Duration,
}

pub struct ResponseCache {
    entries: moka::sync::Cache<String, Arc<Cached>>,
    ttl: Duration,
    /// Bytes held now (entries leave through the eviction listener).
    bytes: Arc<AtomicU64>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("ttl", &self.ttl)
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl ResponseCache {
    pub fn new(c: &CacheConfig) -> Self {
        let ttl = Duration::from_millis(c.ttl_ms);
        let bytes = Arc::new(AtomicU64::new(0));
        let held = Arc::clone(&bytes);
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(c.max_entries as u64)
                .time_to_live(ttl)
                .eviction_listener(move |_, gone: Arc<Cached>, _| {
                    held.fetch_sub(gone.size, Ordering::Relaxed);
                })
                .build(),
            ttl,
            bytes,
        }
    }

    /// Looks the call up: GET only, keyed on path and query, the caller's
    /// plan (plans may see different answers) and the encodings it accepts
    /// (a gzip answer must not reach a client that cannot read it).
    pub fn lookup(&self, req: &RequestHeader, plan: &str) -> Lookup {
        if req.method != Method::GET {
            return Lookup::Bypass;
        }
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let encodings = req
            .headers
            .get(http::header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let key = format!("{plan}\n{target}\n{encodings}");
        match self.entries.get(&key) {
            Some(hit) if hit.expires > Instant::now() => Lookup::Hit(hit),
            _ => Lookup::Miss(key),
        }
    }

    /// Starts keeping a missed call's answer, if it may be kept.
    pub fn fill(&self, key: String, resp: &ResponseHeader) -> Option<Fill> {
        if resp.status.as_u16() != 200 {
            return None;
        }
        let lifetime = self.lifetime(resp)?;
        let too_long = resp
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
            .is_some_and(|n| n > MAX_BODY_BYTES);
        if too_long {
            return None;
        }
        let headers = resp
            .headers
            .iter()
            .filter(|(name, _)| !NOT_STORED.contains(&name.as_str()))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        Some(Fill {
            key,
            status: 200,
            headers,
            body: BytesMut::new(),
            lifetime,
        })
    }

    /// How long an answer may be kept: the route's `ttl_ms`, shortened by
    /// the upstream's `s-maxage` (a gateway is a shared cache) or
    /// `max-age`; `None` when it must not be kept at all.
    fn lifetime(&self, resp: &ResponseHeader) -> Option<Duration> {
        if resp.headers.contains_key(http::header::SET_COOKIE) {
            return None;
        }
        // The key holds the encodings accepted, nothing else a `Vary` may
        // name (another request header, or `*`): such answers are not kept.
        let varies = resp.headers.get_all(http::header::VARY).iter().any(|v| {
            v.to_str().map_or(true, |v| {
                v.split(',')
                    .map(str::trim)
                    .any(|h| !h.is_empty() && !h.eq_ignore_ascii_case("accept-encoding"))
            })
        });
        if varies {
            return None;
        }
        let mut max_age = None;
        let mut s_maxage = None;
        for value in resp.headers.get_all(http::header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else {
                return None;
            };
            for directive in value.split(',') {
                let directive = directive.trim().to_ascii_lowercase();
                let (name, arg) = directive
                    .split_once('=')
                    .map_or((directive.as_str(), None), |(n, a)| {
                        (n.trim(), Some(a.trim().trim_matches('"')))
                    });
                match name {
                    "no-store" | "private" | "no-cache" => return None,
                    "max-age" => max_age = arg.and_then(|a| a.parse::<u64>().ok()),
                    "s-maxage" => s_maxage = arg.and_then(|a| a.parse::<u64>().ok()),
                    _ => {}
                }
            }
        }
        let ttl = match s_maxage.or(max_age) {
            Some(0) => return None,
            Some(secs) => self.ttl.min(Duration::from_secs(secs)),
            None => self.ttl,
        };
        Some(ttl)
    }

    /// Keeps a filled answer, unless the route's cache is full.
    pub fn store(&self, fill: Fill) {
        let size = fill.body.len() as u64
            + fill
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().len() + v.len()) as u64)
                .sum::<u64>();
        if self.bytes.load(Ordering::Relaxed) + size > MAX_ROUTE_BYTES {
            return;
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let entry = Cached {
            status: fill.status,
            headers: fill.headers,
            body: fill.body.freeze(),
            expires: Instant::now() + fill.lifetime,
            size,
        };
        self.entries.insert(fill.key, Arc::new(entry));
    }
}

impl Fill {
    /// Adds a chunk; `false` once the answer is too large to keep.
    pub fn push(&mut self, chunk: &[u8]) -> bool {
        if self.body.len() + chunk.len() > MAX_BODY_BYTES {
            return false;
        }
        self.body.extend_from_slice(chunk);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64) -> ResponseCache {
        ResponseCache::new(&CacheConfig {
            ttl_ms,
            max_entries: 100,
        })
    }

    fn get(target: &str) -> RequestHeader {
        RequestHeader::build("GET", target.as_bytes(), None).unwrap()
    }

    fn answer(status: u16, headers: &[(&'static str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.append_header(*n, *v).unwrap();
        }
        r
    }

    fn keep(c: &ResponseCache, target: &str, plan: &str, resp: &ResponseHeader, body: &[u8]) {
        let Lookup::Miss(key) = c.lookup(&get(target), plan) else {
            panic!("expected a miss");
        };
        let mut fill = c.fill(key, resp).expect("storable");
        assert!(fill.push(body));
        c.store(fill);
    }

    #[test]
    fn a_kept_answer_is_found_by_path_query_and_plan() {
        let c = cache(60_000);
        let resp = answer(
            200,
            &[
                ("content-type", "application/json"),
                ("content-length", "2"),
            ],
        );
        keep(&c, "/v1/prices/AAPL?x=1", "free", &resp, b"{}");
        let Lookup::Hit(hit) = c.lookup(&get("/v1/prices/AAPL?x=1"), "free") else {
            panic!("expected a hit");
        };
        assert_eq!(hit.body.as_ref(), b"{}");
        assert!(hit.headers.iter().any(|(n, _)| n == "content-type"));
        assert!(!hit.headers.iter().any(|(n, _)| n == "content-length"));
        assert!(matches!(
            c.lookup(&get("/v1/prices/AAPL?x=2"), "free"),
            Lookup::Miss(_)
        ));
        assert!(matches!(
            c.lookup(&get("/v1/prices/AAPL?x=1"), "pro"),
            Lookup::Miss(_)
        ));
        let head = RequestHeader::build("HEAD", b"/v1/prices/AAPL?x=1", None).unwrap();
        assert!(matches!(c.lookup(&head, "free"), Lookup::Bypass));
    }

    #[test]
    fn upstream_cache_control_is_respected() {
        let c = cache(60_000);
        let key = || "k".to_string();
        for refused in [
            "no-store",
            "private",
            "no-cache",
            "max-age=0",
            "public, no-store",
        ] {
            assert!(
                c.fill(key(), &answer(200, &[("cache-control", refused)]))
                    .is_none(),
                "{refused}"
            );
        }
        assert!(c
            .fill(key(), &answer(200, &[("set-cookie", "a=b")]))
            .is_none());
        assert!(c.fill(key(), &answer(200, &[("vary", "*")])).is_none());
        assert!(c
            .fill(key(), &answer(200, &[("vary", "Accept, Accept-Encoding")]))
            .is_none());
        assert!(c
            .fill(key(), &answer(200, &[("vary", "x-paygate-customer")]))
            .is_none());
        assert!(c
            .fill(key(), &answer(200, &[("vary", "Accept-Encoding")]))
            .is_some());
        assert!(c.fill(key(), &answer(500, &[])).is_none());
        let short = c
            .fill(key(), &answer(200, &[("cache-control", "max-age=5")]))
            .unwrap();
        assert_eq!(short.lifetime, Duration::from_secs(5));
        let shared = c
            .fill(
                key(),
                &answer(200, &[("cache-control", "max-age=5, s-maxage=7")]),
            )
            .unwrap();
        assert_eq!(shared.lifetime, Duration::from_secs(7));
        let long = c
            .fill(key(), &answer(200, &[("cache-control", "max-age=3600")]))
            .unwrap();
        assert_eq!(long.lifetime, Duration::from_secs(60));
    }

    #[test]
    fn stale_and_oversized_answers_are_not_served() {
        let c = cache(60_000);
        let resp = answer(200, &[("cache-control", "max-age=1")]);
        let Lookup::Miss(key) = c.lookup(&get("/a"), "p") else {
            panic!()
        };
        let mut fill = c.fill(key, &resp).unwrap();
        fill.lifetime = Duration::ZERO;
        c.store(fill);
        assert!(matches!(c.lookup(&get("/a"), "p"), Lookup::Miss(_)));

        let big = answer(200, &[("content-length", "2000000")]);
        assert!(c.fill("k".into(), &big).is_none());
        let mut fill = c.fill("k".into(), &answer(200, &[])).unwrap();
        assert!(!fill.push(&vec![0u8; MAX_BODY_BYTES + 1]));
    }

    #[test]
    fn a_route_holds_at_most_its_byte_budget() {
        let c = cache(60_000);
        let per = MAX_BODY_BYTES as u64;
        let fits = MAX_ROUTE_BYTES / per;
        for i in 0..fits + 5 {
            let target = format!("/big/{i}");
            let Lookup::Miss(key) = c.lookup(&get(&target), "p") else {
                panic!()
            };
            let mut fill = c.fill(key, &answer(200, &[])).unwrap();
            assert!(fill.push(&vec![0u8; MAX_BODY_BYTES - 64]));
            c.store(fill);
        }
        c.entries.run_pending_tasks();
        assert!(c.bytes.load(Ordering::Relaxed) <= MAX_ROUTE_BYTES);
        assert!(c.entries.entry_count() <= fits);
        assert!(matches!(c.lookup(&get("/big/0"), "p"), Lookup::Hit(_)));
        assert!(matches!(
            c.lookup(&get(&format!("/big/{}", fits + 2)), "p"),
            Lookup::Miss(_)
        ));
    }
}
