//! SPEC §3 end to end: every status code, error body and header, against a
//! real paygate process and a mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitted_call_carries_every_header_and_the_upstream_gets_identity() {
    let (_d, mock, pg) = started().await;
    let key = pg
        .customer_with_plan(
            "acme",
            json!({"rate_limit": {"requests": 10, "per": "second", "burst": 20},
                   "quota": {"calls": 50, "period": "month"}}),
        )
        .await;
    let resp = pg
        .client
        .get(format!("{}/v1/anything?x=1", pg.gw))
        .header("authorization", format!("Bearer {key}"))
        .header("x-paygate-customer", "someone-else")
        .header("x-paygate-evil", "1")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let rid = header(&resp, "x-request-id").unwrap();
    assert_eq!(uuid::Uuid::parse_str(&rid).unwrap().get_version_num(), 7);
    assert_eq!(header(&resp, "ratelimit-limit").as_deref(), Some("20"));
    assert_eq!(header(&resp, "ratelimit-remaining").as_deref(), Some("19"));
    assert!(
        header(&resp, "ratelimit-reset")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(header(&resp, "x-quota-limit").as_deref(), Some("50"));
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("49"));
    let reset: i64 = header(&resp, "x-quota-reset").unwrap().parse().unwrap();
    assert!(reset > 0 && reset <= 31 * 86_400, "{reset}");
    assert_eq!(
        header(&resp, "x-credits-remaining"),
        None,
        "plan spends no credits"
    );

    let up = mock.last_headers();
    assert_eq!(up.get("x-request-id"), Some(&rid));
    assert_eq!(
        up.get("x-paygate-customer").map(String::as_str),
        Some("acme")
    );
    assert_eq!(
        up.get("x-paygate-plan").map(String::as_str),
        Some("plan-acme")
    );
    for gone in ["authorization", "x-api-key", "x-paygate-evil", "x-hop"] {
        assert!(
            !up.contains_key(gone),
            "{gone} reached the upstream: {up:?}"
        );
    }
    assert_eq!(
        up.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_and_wrong_method() {
    let (_d, mock, pg) = started().await;
    let key = pg.customer_with_plan("c", json!({})).await;
    let resp = pg.get("/nowhere", &key).await;
    assert_eq!(resp.status(), 404);
    assert!(header(&resp, "x-request-id").is_some());
    assert_eq!(error_code(resp).await, "no_route");
    let resp = pg
        .client
        .post(format!("{}/v1/readonly/x", pg.gw))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(error_code(resp).await, "method_not_allowed");
    assert_eq!(mock.hits(), 0);
    pg.expect_ledger("c", 0, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_missing_invalid_revoked_and_jwt() {
    let (_d, mock, pg) = started().await;
    let key = pg.customer_with_plan("c", json!({})).await;
    let cases: Vec<(Option<(&str, String)>, &str)> = vec![
        (None, "missing_credentials"),
        (
            Some((
                "x-api-key",
                "pg_live_0000000000000000000000000000000a".into(),
            )),
            "invalid_credentials",
        ),
        (
            Some(("x-api-key", "not-a-key".into())),
            "invalid_credentials",
        ),
        (
            Some(("authorization", "Basic dXNlcjpwYXNz".into())),
            "invalid_credentials",
        ),
        (
            Some((
                "authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjIn0.c2ln".into(),
            )),
            "invalid_credentials",
        ),
    ];
    for (h, code) in cases {
        let mut req = pg.client.get(format!("{}/v1/x", pg.gw));
        if let Some((k, v)) = &h {
            req = req.header(*k, v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{h:?}");
        assert_eq!(header(&resp, "www-authenticate").as_deref(), Some("Bearer"));
        assert_eq!(error_code(resp).await, code, "{h:?}");
    }
    assert_eq!(pg.get("/v1/x", &key).await.status(), 200);

    let (_, keys) = pg.admin("GET", "/admin/v1/customers/c/keys", None).await;
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = pg
        .admin("DELETE", &format!("/admin/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(s, 200);
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(error_code(resp).await, "invalid_credentials");
    assert_eq!(mock.hits(), 1);
    pg.expect_ledger("c", 1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_not_in_plan() {
    let (_d, mock, pg) = started().await;
    let key = pg
        .customer_with_plan("c", json!({"routes": ["get-only"]}))
        .await;
    assert_eq!(pg.get("/v1/readonly/a", &key).await.status(), 200);
    let resp = pg.get("/v1/other", &key).await;
    assert_eq!(resp.status(), 403);
    assert!(
        header(&resp, "ratelimit-limit").is_some(),
        "refusals of known callers carry limits"
    );
    assert_eq!(error_code(resp).await, "route_not_in_plan");
    assert_eq!(mock.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_with_retry_after() {
    let (_d, mock, pg) = started().await;
    let key = pg
        .customer_with_plan(
            "c",
            json!({"rate_limit": {"requests": 1, "per": "minute", "burst": 3}}),
        )
        .await;
    for i in 0..3 {
        let resp = pg.get("/v1/x", &key).await;
        assert_eq!(resp.status(), 200, "call {i}");
        assert_eq!(
            header(&resp, "ratelimit-remaining").unwrap(),
            (2 - i).to_string()
        );
    }
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(resp.status(), 429);
    let retry: u64 = header(&resp, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(header(&resp, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header(&resp, "ratelimit-limit").as_deref(), Some("3"));
    assert_eq!(error_code(resp).await, "rate_limited");
    assert_eq!(mock.hits(), 3);
    pg.expect_ledger("c", 3, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_exhausted_is_402_and_overage_plans_keep_serving() {
    let (_d, _mock, pg) = started().await;
    let key = pg
        .customer_with_plan("blocked", json!({"quota": {"calls": 2, "period": "month"}}))
        .await;
    for _ in 0..2 {
        assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    }
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(resp.status(), 402);
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("0"));
    assert_eq!(error_code(resp).await, "quota_exhausted");

    let key = pg
        .customer_with_plan(
            "overage",
            json!({"quota": {"calls": 2, "period": "month"}, "overage": {"price_micros": 200}}),
        )
        .await;
    for _ in 0..4 {
        assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    }
    pg.expect_ledger("overage", 4, 0).await;
    let report = pg
        .ledger()
        .await
        .usage_report(
            &paygate_billing::aggregate::Filter {
                customer_id: Some("overage".into()),
                ..Default::default()
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        report.totals.amount_micros, 400,
        "two calls past the quota at 200 micros"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_cost_counts_units() {
    let (_d, _mock, pg) = started().await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 12, "period": "month"}}))
        .await;
    let resp = pg.get("/v1/pricey/x", &key).await;
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("7"));
    let resp = pg.get("/v1/pricey/x", &key).await;
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("2"));
    assert_eq!(pg.get("/v1/pricey/x", &key).await.status(), 402);
    assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_pay_per_call_then_402() {
    let (_d, _mock, pg) = started().await;
    let key = pg
        .customer_with_plan("c", json!({"price_per_call_micros": 17000}))
        .await;
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(resp.status(), 402);
    assert_eq!(header(&resp, "x-credits-remaining").as_deref(), Some("0"));
    assert_eq!(error_code(resp).await, "insufficient_credits");
    let (s, b) = pg
        .admin(
            "POST",
            "/admin/v1/customers/c/credits",
            Some(json!({"amount_micros": 40000, "reference": "r1"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "x-credits-remaining").as_deref(),
        Some("23000")
    );
    assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    let resp = pg.get("/v1/x", &key).await;
    assert_eq!(resp.status(), 402);
    assert_eq!(
        header(&resp, "x-credits-remaining").as_deref(),
        Some("6000")
    );
    pg.expect_ledger("c", 2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_is_not_billed_and_gives_the_quota_back() {
    let (_d, _mock, pg) = started().await;
    let key = pg
        .customer_with_plan(
            "c",
            json!({"quota": {"calls": 10, "period": "month"}, "price_per_call_micros": 1000}),
        )
        .await;
    pg.admin(
        "POST",
        "/admin/v1/customers/c/credits",
        Some(json!({"amount_micros": 5000, "reference": "r"})),
    )
    .await;
    let resp = pg.get("/v1/status/500", &key).await;
    assert_eq!(
        resp.status(),
        500,
        "the upstream's own answer is passed through"
    );
    let resp = pg.get("/v1/status/404", &key).await;
    assert_eq!(resp.status(), 404);
    pg.expect_ledger("c", 1, 1).await;
    let resp = pg.get("/paygate/v1/me", &key).await;
    assert_eq!(resp.status(), 200);
    let me: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(me["quota"]["used"], 1, "{me}");
    assert_eq!(me["quota"]["remaining"], 9);
    assert_eq!(me["credits_micros"], 4000, "only the 404 was paid for");
    assert_eq!(me["customer_id"], "c");
    assert_eq!(me["plan_id"], "plan-c");
    assert_eq!(me["rate_limit"]["per"], "second");
    pg.expect_ledger("c", 1, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_slow_is_504_neither_billed() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let dead = free_port();
    let extra = format!(
        r#"
[[upstreams]]
name = "mock"
targets = ["{}"]
read_timeout_ms = 300

[[upstreams]]
name = "dead"
targets = ["127.0.0.1:{dead}"]
connect_timeout_ms = 200

[[routes]]
id = "api"
path_prefix = "/v1"
upstream = "mock"

[[routes]]
id = "dead"
path_prefix = "/dead"
upstream = "dead"
"#,
        mock.addr
    );
    let pg = Paygate::start(dir.path(), &extra).await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 10, "period": "month"}}))
        .await;
    let resp = pg.get("/dead/x", &key).await;
    assert_eq!(resp.status(), 502);
    assert!(header(&resp, "x-request-id").is_some());
    assert_eq!(error_code(resp).await, "upstream_unavailable");
    let resp = pg.get("/v1/slow/2000", &key).await;
    assert_eq!(resp.status(), 504);
    assert_eq!(error_code(resp).await, "upstream_timeout");
    pg.expect_ledger("c", 0, 2).await;
    let me: serde_json::Value = pg.get("/paygate/v1/me", &key).await.json().await.unwrap();
    assert_eq!(me["quota"]["used"], 0, "both reservations given back: {me}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_413_414_431() {
    let (_d, mock, pg) = started().await;
    let key = pg.customer_with_plan("c", json!({})).await;
    // max_body_bytes = 1024 in the harness config.
    let resp = pg
        .client
        .post(format!("{}/v1/x", pg.gw))
        .header("x-api-key", &key)
        .body(vec![b'a'; 2048])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(error_code(resp).await, "body_too_large");
    // A chunked body is counted as it streams.
    let stream = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 600])));
    let resp = pg
        .client
        .post(format!("{}/v1/x", pg.gw))
        .header("x-api-key", &key)
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(error_code(resp).await, "body_too_large");

    let resp = pg.get(&format!("/v1/{}", "u".repeat(9000)), &key).await;
    assert_eq!(resp.status(), 414);
    assert_eq!(error_code(resp).await, "uri_too_long");
    let resp = pg
        .client
        .get(format!("{}/v1/x", pg.gw))
        .header("x-api-key", &key)
        .header("x-big", "h".repeat(40_000))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    assert_eq!(error_code(resp).await, "headers_too_large");
    let small = pg
        .client
        .post(format!("{}/v1/x", pg.gw))
        .header("x-api-key", &key)
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    // The declared-too-large body never reached the upstream; the chunked one
    // was cut off mid-stream and is not billed.
    assert!(mock.hits() <= 2, "{}", mock.hits());
    pg.expect_ledger("c", 1, 1).await;
}

/// Sends a raw WebSocket upgrade and returns the status code of the answer
/// and the open stream.
async fn ws_upgrade(pg: &Paygate, key: &str) -> (u16, tokio::net::TcpStream) {
    let addr = pg.gw.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got);
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_are_proxied_and_counted_against_max() {
    let (_d, _mock, pg) = started().await;
    let key = pg
        .customer_with_plan("c", json!({"max_websockets": 1}))
        .await;
    let (code, first) = ws_upgrade(&pg, &key).await;
    assert_eq!(code, 101);
    let (code, _s) = ws_upgrade(&pg, &key).await;
    assert_eq!(code, 429, "second concurrent WebSocket");
    drop(first);
    let (code, _s) = eventually("the slot to be released", Duration::from_secs(10), || {
        let pg = &pg;
        let key = key.clone();
        async move {
            let (code, s) = ws_upgrade(pg, &key).await;
            (code == 101).then_some((code, s))
        }
    })
    .await;
    assert_eq!(code, 101);
    let none = pg
        .customer_with_plan("nows", json!({"max_websockets": 0}))
        .await;
    let addr = pg.gw.clone();
    let resp = pg
        .client
        .get(format!("{addr}/v1/ws"))
        .header("x-api-key", &none)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after").is_some());
    assert_eq!(error_code(resp).await, "too_many_websockets");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_is_not_billed_and_needs_credentials() {
    let (_d, mock, pg) = started().await;
    let key = pg
        .customer_with_plan("c", json!({"quota": {"calls": 5, "period": "month"}}))
        .await;
    for _ in 0..3 {
        let resp = pg.get("/paygate/v1/me", &key).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("5"));
    }
    let resp = pg
        .client
        .get(format!("{}/paygate/v1/me", pg.gw))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(mock.hits(), 0);
    assert_eq!(pg.ledger_counts("c").await, (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_exported_without_secrets() {
    let (_d, _mock, pg) = started().await;
    let key = pg.customer_with_plan("c", json!({})).await;
    assert_eq!(pg.get("/v1/x", &key).await.status(), 200);
    pg.expect_ledger("c", 1, 0).await;
    let m = pg.metrics().await;
    for needle in [
        "paygate_requests_total{plan=\"plan-c\",route=\"api\",status=\"200\"} 1",
        "paygate_decisions_total{decision=\"admitted\"} 1",
        "paygate_request_duration_seconds_count",
        "paygate_gateway_overhead_seconds_count",
        "paygate_usage_events_total{state=\"persisted\"} 1",
        "paygate_usage_backlog 0",
        "paygate_store_errors_total 0",
    ] {
        assert!(m.contains(needle), "{needle} missing from\n{m}");
    }
    assert!(
        !m.contains(&key) && !m.contains(&key[..12]),
        "a key leaked into metrics"
    );
}
