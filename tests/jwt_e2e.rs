//! SPEC §7 end to end: JWT callers through a real paygate process, keys from
//! a JWKS served on loopback that the test changes mid-run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use paygate_testkit::jwt::{self, claims, JwksServer, Pair, SigningKey};
use paygate_testkit::DbKind;
use serde_json::{json, Value};

const ISS: &str = "https://auth.example.test/";
const AUD: &str = "market-api";

fn issuer_toml(jwks: &JwksServer, extra: &str) -> String {
    format!(
        "[[auth.jwt]]\nissuer = \"{ISS}\"\naudience = [\"{AUD}\"]\nalgorithms = [\"RS256\", \"HS256\"]\njwks_url = \"{}\"\n{extra}\n",
        jwks.url()
    )
}

async fn call(pg: &Paygate, path: &str, token: &str) -> reqwest::Response {
    pg.client
        .get(format!("{}{path}", pg.gw))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// An RS256 key `k1`, its JWKS, and a paygate trusting it with customer
/// `acme` on a permissive plan.
async fn acme_with_rs256() -> (SigningKey, JwksServer, tempfile::TempDir, Mock, Paygate) {
    let key = SigningKey::new(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let (dir, mock, pg) = with_issuer(&jwks, "").await;
    pg.customer_with_plan("acme", json!({})).await;
    (key, jwks, dir, mock, pg)
}

/// A paygate (memory store, SQLite) with the mock's routes and one issuer.
async fn with_issuer(jwks: &JwksServer, extra: &str) -> (tempfile::TempDir, Mock, Paygate) {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let cfg = format!("{}\n{}", routes_for(mock.addr), issuer_toml(jwks, extra));
    let pg = Paygate::start(dir.path(), &cfg).await;
    (dir, mock, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_callers_are_limited_metered_and_billed_like_key_callers() {
    let key = SigningKey::new(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let (_d, mock, pg) = with_issuer(&jwks, "").await;
    pg.customer_with_plan("acme", json!({"quota": {"calls": 5, "period": "month"}}))
        .await;
    let token = key.sign(&claims(ISS, AUD, "acme"));

    let mut statuses = Vec::new();
    for _ in 0..7 {
        let resp = call(&pg, "/v1/prices", &token).await;
        statuses.push(resp.status().as_u16());
        assert!(header(&resp, "ratelimit-limit").is_some());
        assert!(header(&resp, "x-quota-remaining").is_some());
        assert!(header(&resp, "x-request-id").is_some());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 402, 402]);
    // The upstream sees the customer, never the token.
    let seen = mock.last_headers();
    assert_eq!(
        seen.get("x-paygate-customer").map(String::as_str),
        Some("acme")
    );
    assert!(!seen.contains_key("authorization"), "{seen:?}");

    // /paygate/v1/me answers a JWT caller and is not billed.
    let me = call(&pg, "/paygate/v1/me", &token).await;
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["customer_id"], "acme");
    assert_eq!(me["quota"]["used"], 5);

    pg.expect_ledger("acme", 5, 0).await;
    let (s, report) = pg
        .admin("GET", "/admin/v1/usage?customer_id=acme&group_by=key", None)
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(
        report["data"][0]["key_id"],
        format!("jwt:{ISS}"),
        "{report}"
    );
    assert_eq!(report["data"][0]["billable_calls"], 5, "{report}");

    let metrics = pg.metrics().await;
    assert!(
        metrics.contains(&format!(
            "paygate_jwks_refresh_total{{issuer=\"{ISS}\",outcome=\"ok\"}}"
        )),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_jwt_is_a_clear_401_and_nothing_reaches_the_upstream() {
    let (key, _jwks, _d, mock, pg) = acme_with_rs256().await;
    let good = claims(ISS, AUD, "acme");
    let now = jwt::now();
    let with = |k: &str, v: Value| jwt::with_claim(&good, k, v);
    let without = |k: &str| jwt::without_claim(&good, k);
    let confused = jwt::hs256_with_rsa_public_key(&good, "k1");
    let signed = key.sign(&good);
    let tampered_payload = jwt::with_forged_payload(&signed, &with("sub", json!("someone-else")));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "alg none",
            format!("{}x", jwt::unsigned(&good)),
            "algorithm not allowed",
        ),
        (
            "HS/RS confusion",
            confused,
            "algorithm not allowed for this key",
        ),
        ("tampered payload", tampered_payload, "bad signature"),
        (
            "expired",
            key.sign(&with("exp", json!(now - 120))),
            "expired",
        ),
        (
            "not yet valid",
            key.sign(&with("nbf", json!(now + 120))),
            "not yet valid",
        ),
        (
            "iat in the future",
            key.sign(&with("iat", json!(now + 120))),
            "issued in the future",
        ),
        (
            "wrong iss",
            key.sign(&with("iss", json!("https://evil.test/"))),
            "unknown issuer",
        ),
        (
            "wrong aud",
            key.sign(&with("aud", json!("other"))),
            "wrong audience",
        ),
        (
            "missing exp",
            key.sign(&without("exp")),
            "missing claim `exp`",
        ),
        (
            "unknown kid",
            SigningKey::with_pair(Algorithm::RS256, "k9", Pair::Rsa2).sign(&good),
            "unknown signing key",
        ),
        (
            "no such customer",
            key.sign(&with("sub", json!("ghost"))),
            "does not exist",
        ),
        (
            "16 KB of junk",
            format!("{0}.{0}.{0}", "x".repeat(16 * 1024 / 3)),
            "larger than",
        ),
    ];
    for (what, token, message) in &cases {
        let resp = call(&pg, "/v1/prices", token).await;
        assert_eq!(resp.status(), 401, "{what}");
        assert_eq!(
            header(&resp, "www-authenticate").as_deref(),
            Some(r#"Bearer error="invalid_token""#),
            "{what}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_credentials", "{what}");
        let text = body["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{what}: {text}");
        assert!(
            !text.contains(&token[..20.min(token.len())]),
            "{what} echoes the token"
        );
    }
    assert_eq!(mock.hits(), 0);
    // The good token still works, and only it is in the ledger.
    assert_eq!(call(&pg, "/v1/prices", &signed).await.status(), 200);
    pg.expect_ledger("acme", 1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_random_kids_costs_one_jwks_fetch_and_the_gateway_stays_healthy() {
    let (key, jwks, _d, _mock, pg) = acme_with_rs256().await;
    let good = claims(ISS, AUD, "acme");
    let before = jwks.fetches();
    let tokens: Vec<String> = (0..300)
        .map(|i| SigningKey::with_pair(Algorithm::RS256, &format!("r{i}"), Pair::Rsa2).sign(&good))
        .collect();
    let calls = tokens.iter().map(|t| call(&pg, "/v1/prices", t));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    assert!(
        jwks.fetches() - before <= 1,
        "{} fetches",
        jwks.fetches() - before
    );
    assert_eq!(
        call(&pg, "/v1/prices", &key.sign(&good)).await.status(),
        200
    );
    let ready = pg
        .client
        .get(format!("{}/readyz", pg.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_never_fetched_answers_503_until_its_keys_arrive() {
    let key = SigningKey::new(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    jwks.set_failing(true);
    let (_d, _mock, pg) = with_issuer(&jwks, "").await;
    pg.customer_with_plan("acme", json!({})).await;
    let token = key.sign(&claims(ISS, AUD, "acme"));
    let resp = call(&pg, "/v1/prices", &token).await;
    assert_eq!(resp.status(), 503);
    assert!(header(&resp, "retry-after").is_some());
    assert_eq!(error_code(resp).await, "issuer_unavailable");
    let ready = pg
        .client
        .get(format!("{}/readyz", pg.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "readyz stays ready");
    assert!(pg.metrics().await.contains(&format!(
        "paygate_jwks_refresh_total{{issuer=\"{ISS}\",outcome=\"error\"}}"
    )));

    jwks.set_failing(false);
    eventually("the keys to be fetched", Duration::from_secs(20), || {
        let (pg, token) = (&pg, token.clone());
        async move { (call(pg, "/v1/prices", &token).await.status() == 200).then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_plan_creates_the_customer_and_plan_claim_moves_it_audited() {
    let key = SigningKey::new(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let (_d, _mock, pg) = with_issuer(
        &jwks,
        "default_plan = \"starter\"\nplan_claim = \"tier\"\nallowed_plans = [\"gold\"]",
    )
    .await;
    for id in ["starter", "gold", "silver"] {
        let plan = json!({"id": id, "name": id, "rate_limit": {"requests": 100, "per": "second"},
                          "routes": ["*"], "overage": "block"});
        let (s, b) = pg.admin("POST", "/admin/v1/plans", Some(plan)).await;
        assert_eq!(s, 201, "{b}");
    }
    let mut c = claims(ISS, AUD, "newbie");
    c["name"] = json!("New Bie");
    c["email"] = json!("new@example.com");
    // Many first calls at once create the customer once.
    let token = key.sign(&c);
    let first = (0..8).map(|_| call(&pg, "/v1/prices", &token));
    for r in futures::future::join_all(first).await {
        assert_eq!(r.status(), 200);
    }
    let (s, cust) = pg.admin("GET", "/admin/v1/customers/newbie", None).await;
    assert_eq!(s, 200);
    assert_eq!(cust["plan_id"], "starter");
    assert_eq!(cust["name"], "New Bie");
    assert_eq!(cust["email"], "new@example.com");

    c["tier"] = json!("gold");
    assert_eq!(call(&pg, "/v1/prices", &key.sign(&c)).await.status(), 200);
    let (_, cust) = pg.admin("GET", "/admin/v1/customers/newbie", None).await;
    assert_eq!(cust["plan_id"], "gold");
    // A plan outside allowed_plans is ignored.
    c["tier"] = json!("silver");
    assert_eq!(call(&pg, "/v1/prices", &key.sign(&c)).await.status(), 200);
    let (_, cust) = pg.admin("GET", "/admin/v1/customers/newbie", None).await;
    assert_eq!(cust["plan_id"], "gold");

    let (_, log) = pg
        .admin("GET", "/admin/v1/audit?resource=customer", None)
        .await;
    let by_jwt: Vec<&str> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == format!("jwt:{ISS}"))
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(by_jwt.len(), 2, "{log}");
    assert!(by_jwt.contains(&"customer.create") && by_jwt.contains(&"customer.update"));
    pg.expect_ledger("newbie", 10, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_rotation_under_load_drops_no_valid_call() {
    let old = SigningKey::with_pair(Algorithm::RS256, "2026-old", Pair::Rsa1);
    let new = SigningKey::with_pair(Algorithm::RS256, "2026-new", Pair::Rsa2);
    let jwks = JwksServer::start(vec![old.jwk()]).await;
    let (_d, _mock, pg) = with_issuer(&jwks, "jwks_refresh_seconds = 10").await;
    pg.customer_with_plan("acme", json!({})).await;
    let good = claims(ISS, AUD, "acme");
    let use_new = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tokens = Arc::new((old.sign(&good), new.sign(&good)));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (pg_gw, client) = (pg.gw.clone(), pg.client.clone());
            let (use_new, stop, ok, failed, tokens) = (
                Arc::clone(&use_new),
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                Arc::clone(&tokens),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let t = if use_new.load(Ordering::SeqCst) {
                        &tokens.1
                    } else {
                        &tokens.0
                    };
                    let r = client
                        .get(format!("{pg_gw}/v1/prices"))
                        .bearer_auth(t)
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 200 { &ok } else { &failed }.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let wait_calls = |n: u64| {
        let ok = Arc::clone(&ok);
        async move {
            let target = ok.load(Ordering::SeqCst) + n;
            eventually("calls to go through", Duration::from_secs(10), || {
                let ok = Arc::clone(&ok);
                async move { (ok.load(Ordering::SeqCst) >= target).then_some(()) }
            })
            .await;
        }
    };
    wait_calls(50).await;
    // The issuer publishes the new key beside the old one, then signs with it.
    jwks.set_keys(vec![old.jwk(), new.jwk()]);
    use_new.store(true, Ordering::SeqCst);
    wait_calls(50).await;
    // The old key is withdrawn; nobody uses it any more.
    jwks.set_keys(vec![new.jwk()]);
    wait_calls(50).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "valid calls refused during the rotation"
    );
    assert!(jwks.fetches() <= 4, "{} JWKS fetches", jwks.fetches());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_on_redis_share_a_jwt_customers_quota_exactly() {
    let key = SigningKey::new(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(vec![key.jwk()]).await;
    let dir = Ledger::new(DbKind::Postgres);
    let mock = mock_upstream().await;
    let prefix = format!("jwt{}", uuid::Uuid::now_v7().simple());
    let cfg = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 200\n{}\n{}",
        redis_url(),
        routes_for(mock.addr),
        issuer_toml(&jwks, "")
    );
    let a = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    a.customer_with_plan("q", json!({"quota": {"calls": 30, "period": "month"}}))
        .await;
    let b = Paygate::start_named(dir.path(), "b", &cfg, Wait::Ready).await;
    let token = key.sign(&claims(ISS, AUD, "q"));
    let calls = (0..90).map(|i| {
        let pg = if i % 2 == 0 { &a } else { &b };
        call(pg, "/v1/prices", &token)
    });
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        30,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        60,
        "{statuses:?}"
    );
    a.expect_ledger("q", 30, 0).await;
}
