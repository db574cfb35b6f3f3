//! Operations end to end (docs/operations.md): the access log, CORS, the
//! response cache and SIGHUP reload, against a real paygate process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// The access lines (JSON) paygate wrote to standard output so far.
fn access_lines(pg: &Paygate) -> Vec<Value> {
    std::fs::read_to_string(&pg.stdout_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "paygate::access")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_names_each_call_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let extra = format!("[log]\nformat = \"json\"\n{}", routes_for(mock.addr));
    let pg = Paygate::start(dir.path(), &extra).await;
    let key = pg.customer_with_plan("acme", json!({})).await;

    let ok = pg
        .get(
            &format!("/v1/prices?symbol=AAPL&api_key={key}&token=t0p"),
            &key,
        )
        .await;
    assert_eq!(ok.status(), 200);
    let ok_id = header(&ok, "x-request-id").unwrap();
    let bad_key = format!("{}Zzzz", &key[..key.len() - 4]);
    let refused = pg.get("/v1/prices", &bad_key).await;
    assert_eq!(refused.status(), 401);
    let refused_id = header(&refused, "x-request-id").unwrap();

    // (The harness's own readiness probe has a line too.)
    let lines = eventually("both calls' access lines", Duration::from_secs(10), || {
        let lines = access_lines(&pg);
        let both = [&ok_id, &refused_id]
            .iter()
            .all(|id| lines.iter().any(|l| l["request_id"] == id.as_str()));
        async move { both.then_some(lines) }
    })
    .await;
    let line = |id: &str| {
        lines
            .iter()
            .find(|l| l["request_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id} in {lines:?}"))
            .clone()
    };
    let ok_line = line(&ok_id);
    assert_eq!(ok_line["method"], "GET");
    assert_eq!(ok_line["route"], "api");
    assert_eq!(ok_line["status"], 200);
    assert_eq!(ok_line["decision"], "admitted");
    assert_eq!(ok_line["customer"], "acme");
    assert_eq!(ok_line["key_prefix"], &key[..12]);
    assert_eq!(
        ok_line["path"],
        "/v1/prices?symbol=AAPL&api_key=[redacted]&token=[redacted]"
    );
    assert!(ok_line["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert!(ok_line["total_ms"].as_f64().unwrap() >= ok_line["upstream_ms"].as_f64().unwrap());
    assert_eq!(ok_line["level"], "INFO");
    assert!(ok_line["timestamp"].is_string());

    let refused_line = line(&refused_id);
    assert_eq!(refused_line["status"], 401);
    assert_eq!(refused_line["decision"], "invalid_credentials");
    assert_eq!(refused_line["customer"], "");
    assert!(refused_line["upstream_ms"].is_null());

    let log = std::fs::read_to_string(&pg.stdout_path).unwrap();
    assert!(!log.contains(&key), "a full key reached the log");
    assert!(!log.contains(&bad_key), "a full key reached the log");
    assert!(!log.contains("t0p"), "a token value reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_switched_off_writes_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let extra = format!(
        "[log]\nformat = \"json\"\naccess = false\nlevel = \"info\"\n{}",
        routes_for(mock.addr)
    );
    let mut pg = Paygate::start(dir.path(), &extra).await;
    let key = pg.customer_with_plan("acme", json!({})).await;
    assert_eq!(pg.get("/v1/a", &key).await.status(), 200);
    // SIGTERM flushes the log writer: what is in the file then is all.
    pg.stop().await;
    let log = std::fs::read_to_string(&pg.stdout_path).unwrap();
    assert!(log.contains("paygate starting"), "{log}");
    assert!(access_lines(&pg).is_empty(), "{log}");
}

fn cors_routes(mock: std::net::SocketAddr) -> String {
    format!(
        r#"
[[upstreams]]
name = "mock"
targets = ["{mock}"]

[[routes]]
id = "web"
path_prefix = "/v1"
upstream = "mock"
methods = ["GET", "POST"]
cors = {{ allow_origins = ["https://app.example.com"], allow_headers = ["authorization", "x-api-key"], max_age_seconds = 600 }}

[[routes]]
id = "plain"
path_prefix = "/v2"
upstream = "mock"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_here_and_never_billed_or_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let pg = Paygate::start(dir.path(), &cors_routes(mock.addr)).await;
    let key = pg.customer_with_plan("acme", json!({})).await;
    let preflight = |origin: &'static str| {
        pg.client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/prices", pg.gw))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
            .send()
    };

    let listed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(listed.status(), 204);
    assert_eq!(
        header(&listed, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&listed, "access-control-allow-methods").as_deref(),
        Some("GET, POST")
    );
    assert_eq!(
        header(&listed, "access-control-allow-headers").as_deref(),
        Some("authorization, x-api-key")
    );
    assert_eq!(
        header(&listed, "access-control-max-age").as_deref(),
        Some("600")
    );
    assert!(header(&listed, "x-request-id").is_some());

    let unlisted = preflight("https://evil.example").await.unwrap();
    assert_eq!(unlisted.status(), 204);
    assert_eq!(header(&unlisted, "access-control-allow-origin"), None);
    assert_eq!(header(&unlisted, "access-control-allow-methods"), None);
    assert_eq!(header(&unlisted, "vary").as_deref(), Some("Origin"));
    assert_eq!(mock.hits(), 0, "a preflight reached the upstream");

    // A real call from the listed origin: allowed and its headers exposed,
    // refusals included (a browser app must read them too).
    let call = pg
        .client
        .get(format!("{}/v1/prices", pg.gw))
        .header("origin", "https://app.example.com")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(call.status(), 200);
    assert_eq!(
        header(&call, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let exposed = header(&call, "access-control-expose-headers").unwrap();
    for h in ["x-request-id", "ratelimit-remaining", "x-quota-remaining"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    let refused = pg
        .client
        .get(format!("{}/v1/prices", pg.gw))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        header(&refused, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    let other = pg
        .client
        .get(format!("{}/v1/prices", pg.gw))
        .header("origin", "https://evil.example")
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    assert_eq!(header(&other, "access-control-allow-origin"), None);

    // A route without `cors` treats OPTIONS as any call: credentials first.
    let plain = pg
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/v2/x", pg.gw))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);

    assert_eq!(mock.hits(), 2);
    pg.expect_ledger("acme", 2, 0).await;
    let m = pg.metrics().await;
    assert!(
        m.contains(r#"paygate_decisions_total{decision="preflight"} 2"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_served_again_and_billed_like_forwarded_calls() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let extra = format!(
        r#"
[[upstreams]]
name = "mock"
targets = ["{}"]

[[routes]]
id = "cached"
path_prefix = "/v1"
upstream = "mock"
cache = {{ ttl_ms = 60000, max_entries = 100 }}
"#,
        mock.addr
    );
    let pg = Paygate::start(dir.path(), &extra).await;
    let key = pg
        .customer_with_plan("acme", json!({"quota": {"calls": 100, "period": "month"}}))
        .await;

    let first = pg.get("/v1/prices/AAPL?d=1", &key).await;
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "x-cache").as_deref(), Some("MISS"));
    let first_body = first.text().await.unwrap();
    let second = pg.get("/v1/prices/AAPL?d=1", &key).await;
    assert_eq!(second.status(), 200);
    assert_eq!(header(&second, "x-cache").as_deref(), Some("HIT"));
    assert_eq!(header(&second, "x-quota-remaining").as_deref(), Some("98"));
    assert!(header(&second, "ratelimit-remaining").is_some());
    assert_eq!(
        header(&second, "content-type").as_deref(),
        Some("application/json")
    );
    let second_id = header(&second, "x-request-id").unwrap();
    assert_eq!(second.text().await.unwrap(), first_body);
    assert_eq!(mock.hits(), 1, "the hit reached the upstream");

    // Another query is another entry.
    let other = pg.get("/v1/prices/AAPL?d=2", &key).await;
    assert_eq!(header(&other, "x-cache").as_deref(), Some("MISS"));
    assert_eq!(mock.hits(), 2);

    // What the upstream forbids is never kept.
    for directive in ["no-store", "private"] {
        for _ in 0..2 {
            let r = pg
                .get(&format!("/v1/cache-control/{directive}"), &key)
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(header(&r, "x-cache").as_deref(), Some("MISS"));
        }
    }
    assert_eq!(mock.hits(), 6);

    // Not a GET: neither looked up nor kept.
    let post = pg
        .client
        .post(format!("{}/v1/prices/AAPL?d=1", pg.gw))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 200);
    assert_eq!(header(&post, "x-cache"), None);
    assert_eq!(mock.hits(), 7);

    // Every call, the hit too, is metered and billed.
    pg.expect_ledger("acme", 8, 0).await;
    let hit_line = eventually("the hit's access line", Duration::from_secs(10), || {
        let line = std::fs::read_to_string(&pg.stdout_path)
            .unwrap_or_default()
            .lines()
            .find(|l| l.contains(&second_id))
            .map(str::to_owned);
        async move { line }
    })
    .await;
    assert!(hit_line.contains("cache=\"HIT\""), "{hit_line}");
    // Text lines to a file, not a terminal: no colour codes.
    assert!(!hit_line.contains('\u{1b}'), "{hit_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_under_load_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let first = mock_upstream().await;
    let second = mock_upstream().await;
    let routes = |with_v2: bool| {
        let mut r = routes_for(first.addr);
        if with_v2 {
            r.push_str(&format!(
                r#"
[[upstreams]]
name = "second"
targets = ["{}"]

[[routes]]
id = "v2"
path_prefix = "/v2"
upstream = "second"
"#,
                second.addr
            ));
        }
        r
    };
    let pg = Paygate::start(dir.path(), &routes(false)).await;
    let key = pg.customer_with_plan("acme", json!({})).await;
    assert_eq!(pg.get("/v2/x", &key).await.status(), 404);
    let base = std::fs::read_to_string(&pg.config_path).unwrap();

    // Load on /v1 for the whole test: no reload may fail a call.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, gw, key) = (pg.client.clone(), pg.gw.clone(), key.clone());
        let (stop, ok) = (Arc::clone(&stop), Arc::clone(&ok));
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .get(format!("{gw}/v1/load"))
                    .header("x-api-key", &key)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures.push(r.status().to_string()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    eventually("load running", Duration::from_secs(10), || {
        let n = ok.load(Ordering::SeqCst);
        async move { (n > 20).then_some(()) }
    })
    .await;

    std::fs::write(&pg.config_path, base.replace(&routes(false), &routes(true))).unwrap();
    pg.hangup();
    eventually("the new route", Duration::from_secs(10), || {
        let r = pg.get("/v2/x", &key);
        async move { (r.await.status() == 200).then_some(()) }
    })
    .await;
    assert!(second.hits() >= 1);
    assert_eq!(
        pg.metric(r#"paygate_config_reloads_total{outcome="ok"}"#)
            .await,
        1.0
    );

    // A file that fails validation is refused; the running routes stay.
    std::fs::write(
        &pg.config_path,
        base.replace(&routes(false), &routes(true))
            .replace("upstream = \"second\"", "upstream = \"nowhere\""),
    )
    .unwrap();
    pg.hangup();
    eventually("the refusal counted", Duration::from_secs(10), || {
        let m = pg.metric(r#"paygate_config_reloads_total{outcome="error"}"#);
        async move { (m.await == 1.0).then_some(()) }
    })
    .await;
    assert_eq!(pg.get("/v2/x", &key).await.status(), 200);

    // Back to the first file: /v2 is gone again.
    std::fs::write(&pg.config_path, &base).unwrap();
    pg.hangup();
    eventually("the route removed", Duration::from_secs(10), || {
        let r = pg.get("/v2/x", &key);
        async move { (r.await.status() == 404).then_some(()) }
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    for task in load {
        let failures = task.await.unwrap();
        assert!(
            failures.is_empty(),
            "calls failed during reloads: {failures:?}"
        );
    }
    // Every call is in the ledger: /v1 load, the /v2 calls that were
    // answered 200 are billable; 404s are refused before admission.
    let answered = ok.load(Ordering::SeqCst);
    let v2_ok = second.hits();
    let (billable, _) = eventually("usage written", Duration::from_secs(10), || {
        let counts = pg.ledger_counts("acme");
        async move {
            let c = counts.await;
            (c.0 >= answered + v2_ok).then_some(c)
        }
    })
    .await;
    assert_eq!(billable, answered + v2_ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_with_the_right_parents() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let collector = paygate_testkit::otlp::OtlpReceiver::start().await;
    let extra = format!(
        "[tracing]\notlp_endpoint = \"{}\"\nservice_name = \"paygate-test\"\nsample_ratio = 1.0\n{}",
        collector.endpoint(),
        routes_for(mock.addr)
    );
    let mut pg = Paygate::start(dir.path(), &extra).await;
    let key = pg.customer_with_plan("acme", json!({})).await;

    // The caller's trace continues through paygate to the upstream.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let resp = pg
        .client
        .get(format!("{}/v1/traced", pg.gw))
        .header("x-api-key", &key)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let request_id = header(&resp, "x-request-id").unwrap();
    let upstream_saw = mock.last_headers().get("traceparent").cloned().unwrap();
    // A call without one starts its own trace.
    assert_eq!(pg.get("/v1/untraced", &key).await.status(), 200);
    let fresh = mock.last_headers().get("traceparent").cloned().unwrap();

    // SIGTERM exports what is still batched.
    pg.stop().await;
    let spans = eventually("the spans", Duration::from_secs(10), || {
        let spans = collector.spans();
        async move { (spans.iter().filter(|s| s.name == "call").count() >= 2).then_some(spans) }
    })
    .await;
    let of_trace = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.trace_id == trace_id)
            .unwrap_or_else(|| panic!("no {name} span in trace {trace_id}: {spans:#?}"))
            .clone()
    };
    let call = of_trace("call");
    let admission = of_trace("admission");
    let store = of_trace("store");
    let upstream = of_trace("upstream");
    assert_eq!(call.parent_span_id, caller_span);
    assert_eq!(admission.parent_span_id, call.span_id);
    assert_eq!(store.parent_span_id, admission.span_id);
    assert_eq!(upstream.parent_span_id, call.span_id);
    assert_eq!(
        upstream_saw,
        format!("00-{trace_id}-{}-01", upstream.span_id)
    );
    assert_eq!(call.service, "paygate-test");
    assert_eq!(call.attributes["paygate.request_id"], request_id);
    assert_eq!(call.attributes["http.response.status_code"], "200");
    assert_eq!(call.attributes["http.route"], "api");
    assert_eq!(call.attributes["paygate.decision"], "admitted");
    assert_eq!(upstream.attributes["http.response.status_code"], "200");

    let fresh_trace = fresh.split('-').nth(1).unwrap();
    assert_ne!(fresh_trace, trace_id);
    let root = spans
        .iter()
        .find(|s| s.name == "call" && s.trace_id == fresh_trace)
        .expect("the untraced call's own trace");
    assert!(root.parent_span_id.is_empty(), "{root:?}");
}
