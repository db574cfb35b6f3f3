//! The admin API (SPEC §5) driven in-process: every test runs twice, on its
//! own SQLite file and on its own Postgres database, with its own catalog and
//! memory store, and calls the router with `oneshot`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use paygate_admin::{router, AdminState};
use paygate_billing::Database;
use paygate_metrics::Metrics;
use paygate_store::{Catalog, MemoryStore};
use paygate_testkit::{DbKind, TestDb};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "t0k";

struct TestApp {
    router: Router,
    catalog: Arc<Catalog>,
    _db: TestDb,
}

async fn app(kind: DbKind) -> TestApp {
    let test_db = TestDb::new(kind);
    let db = Database::connect(&test_db.url).await.unwrap();
    let catalog = Arc::new(Catalog::new(b"secret".to_vec()));
    let state = Arc::new(AdminState {
        db,
        catalog: Arc::clone(&catalog),
        store: Arc::new(MemoryStore::new()),
        metrics: Metrics::new().unwrap(),
        token: TOKEN.to_string(),
        changes: paygate_store::ChangeBus::Local,
    });
    TestApp {
        router: router(state),
        catalog,
        _db: test_db,
    }
}

type Reply = (StatusCode, Value, HeaderMap);

impl TestApp {
    /// An authenticated call with an optional JSON body.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let body = body.map(|v| v.to_string());
        self.send(method, path, Some(TOKEN), body.as_deref()).await
    }

    /// An authenticated call with a raw (possibly malformed) body.
    async fn call_raw(&self, method: Method, path: &str, body: &str) -> Reply {
        self.send(method, path, Some(TOKEN), Some(body)).await
    }

    /// `auth` is the whole `Authorization` header value, or none at all.
    async fn send_auth(&self, method: Method, path: &str, auth: Option<&str>) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        self.finish(req.body(Body::empty()).unwrap()).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        self.finish(req.body(body).unwrap()).await
    }

    async fn finish(&self, req: Request<Body>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        // SPEC §5: bad input is never a 500.
        assert!(
            !status.is_server_error(),
            "{what} answered {status}: {body}"
        );
        (status, body, headers)
    }

    async fn post(&self, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None).await
    }

    /// Creates a plan and a customer on it; returns nothing, panics on failure.
    async fn seed(&self, plan: Value, customer_id: &str) {
        let plan_id = plan["id"].as_str().unwrap().to_string();
        let (s, b, _) = self.post("/admin/v1/plans", plan).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, b, _) = self
            .post(
                "/admin/v1/customers",
                json!({"id": customer_id, "name": "Acme", "email": "ops@acme.test", "plan_id": plan_id}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
}

/// The SPEC §3 error body with the expected status and code.
#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    let (s, body, headers) = reply;
    assert_eq!(*s, status, "body: {body}");
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {body}"));
    assert_eq!(obj.len(), 1, "only `error` at the top: {body}");
    let err = body["error"]
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {body}"));
    assert_eq!(err.get("code"), Some(&json!(code)), "body: {body}");
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "message: {body}"
    );
    assert!(
        err["request_id"].as_str().is_some_and(|m| !m.is_empty()),
        "request_id: {body}"
    );
    let ct = headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
}

fn q3() -> Value {
    json!({"id":"q3","name":"Q3","rate_limit":{"requests":10,"per":"second","burst":20},
        "quota":{"calls":3,"period":"month"},"overage":"block","routes":["*"],"max_websockets":0,
        "monthly_fee_micros":0})
}

fn simple_plan(id: &str) -> Value {
    json!({"id": id, "name": id.to_uppercase(), "rate_limit": {"requests": 5, "per": "minute", "burst": 5}})
}

fn payg() -> Value {
    json!({"id":"payg","name":"Pay as you go","rate_limit":{"requests":50,"per":"second","burst":100},
        "price_per_call_micros":17000})
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no data array: {body}"))
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

// ---- auth and ops ----

async fn admin_api_requires_the_bearer_token(kind: DbKind) {
    let app = app(kind).await;
    let paths = [
        (Method::GET, "/admin/v1/plans"),
        (Method::POST, "/admin/v1/plans"),
        (Method::GET, "/admin/v1/plans/q3"),
        (Method::DELETE, "/admin/v1/plans/q3"),
        (Method::GET, "/admin/v1/customers"),
        (Method::PATCH, "/admin/v1/customers/acme"),
        (Method::POST, "/admin/v1/customers/acme/keys"),
        (Method::DELETE, "/admin/v1/keys/key_1"),
        (Method::POST, "/admin/v1/customers/acme/credits"),
        (Method::GET, "/admin/v1/customers/acme/balance"),
    ];
    let bad_auth = [
        None,
        Some("Bearer wrong"),
        Some("Bearer t0k0"),
        Some("Bearer t0"),
        Some("Bearer "),
        Some("Basic t0k"),
        Some("t0k"),
    ];
    for (method, path) in &paths {
        for auth in bad_auth {
            let reply = app.send_auth(method.clone(), path, auth).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
            assert_eq!(
                reply
                    .2
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().unwrap()),
                Some("Bearer"),
                "{method} {path} with {auth:?}"
            );
        }
    }
    // A refused write changed nothing.
    let reply = app
        .send(
            Method::POST,
            "/admin/v1/plans",
            Some("nope"),
            Some(&q3().to_string()),
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(app.catalog.plan("q3").is_none());
    let (s, body, _) = app.get("/admin/v1/plans").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body, json!({"data": [], "has_more": false}));
}

async fn healthz_readyz_and_metrics_need_no_token(kind: DbKind) {
    let app = app(kind).await;
    let (s, body, _) = app.send_auth(Method::GET, "/healthz", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["status"], "ok");

    let (s, body, _) = app.send_auth(Method::GET, "/readyz", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ready");

    let (s, body, headers) = app.send_auth(Method::GET, "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    let ct = headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
    assert!(ct.starts_with("text/plain"), "{ct}");
    let text = body.as_str().unwrap();
    assert!(text.contains("paygate_usage_backlog"), "{text}");
    assert!(
        text.contains("# TYPE paygate_usage_backlog gauge"),
        "{text}"
    );
}

async fn unknown_paths_and_wrong_methods_answer_json_errors(kind: DbKind) {
    let app = app(kind).await;
    for path in [
        "/nope",
        "/admin/v1/nope",
        "/admin/v2/plans",
        "/admin/v1/plans/a/b/c",
    ] {
        assert_error(&app.get(path).await, StatusCode::NOT_FOUND, "not_found");
    }
    assert_error(
        &app.send_auth(Method::GET, "/nope", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Under /admin/v1 nothing, not even which paths exist, is told without the token.
    for (method, path) in [
        (Method::GET, "/admin/v1/nope"),
        (Method::DELETE, "/admin/v1/plans"),
    ] {
        assert_error(
            &app.send_auth(method, path, None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }

    let wrong = [
        (Method::DELETE, "/admin/v1/plans"),
        (Method::PATCH, "/admin/v1/plans"),
        (Method::POST, "/admin/v1/plans/q3"),
        (Method::PATCH, "/admin/v1/plans/q3"),
        (Method::DELETE, "/admin/v1/customers"),
        (Method::PUT, "/admin/v1/customers/acme"),
        (Method::DELETE, "/admin/v1/customers/acme"),
        (Method::GET, "/admin/v1/keys/key_1"),
        (Method::GET, "/admin/v1/customers/acme/credits"),
        (Method::POST, "/admin/v1/customers/acme/balance"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/metrics"),
    ];
    for (method, path) in wrong {
        let reply = app.call(method.clone(), path, None).await;
        assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        assert!(
            reply.2.contains_key(header::ALLOW),
            "{method} {path}: no Allow header"
        );
    }
}

// ---- plans ----

async fn plan_create_returns_the_spec_shape(kind: DbKind) {
    let app = app(kind).await;
    let (s, body, _) = app.post("/admin/v1/plans", q3()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body, q3());
    assert_eq!(app.get("/admin/v1/plans/q3").await.1, q3());
    assert_eq!(app.catalog.plan("q3").unwrap().name, "Q3");

    // Defaults are filled in; the overage price form and price_per_call round-trip.
    let (s, body, _) = app.post("/admin/v1/plans", simple_plan("lite")).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"id":"lite","name":"LITE","rate_limit":{"requests":5,"per":"minute","burst":5},
            "quota":null,"overage":"block","routes":["*"],"max_websockets":0,"monthly_fee_micros":0})
    );
    let premium = json!({"id":"premium","name":"Premium","rate_limit":{"requests":50,"per":"second","burst":100},
        "quota":{"calls":100000,"period":"month"},"overage":{"price_micros":200},"routes":["*"],
        "max_websockets":10,"monthly_fee_micros":166665833});
    let (s, body, _) = app.post("/admin/v1/plans", premium.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body, premium);
    let (s, body, _) = app.post("/admin/v1/plans", payg()).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["price_per_call_micros"], 17000);
}

async fn plan_list_pages(kind: DbKind) {
    let app = app(kind).await;
    for id in ["c", "a", "b"] {
        assert_eq!(
            app.post("/admin/v1/plans", simple_plan(id)).await.0,
            StatusCode::CREATED
        );
    }
    let (s, body, _) = app.get("/admin/v1/plans").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(ids(&body), ["a", "b", "c"]);
    assert_eq!(body["has_more"], false);
    assert_eq!(body["data"][0], app.get("/admin/v1/plans/a").await.1);

    let (_, body, _) = app.get("/admin/v1/plans?limit=1").await;
    assert_eq!(ids(&body), ["a"]);
    assert_eq!(body["has_more"], true);
    let (_, body, _) = app.get("/admin/v1/plans?limit=1&starting_after=a").await;
    assert_eq!(ids(&body), ["b"]);
    assert_eq!(body["has_more"], true);
    let (_, body, _) = app.get("/admin/v1/plans?limit=2&starting_after=a").await;
    assert_eq!(ids(&body), ["b", "c"]);
    assert_eq!(body["has_more"], false);
    let (_, body, _) = app.get("/admin/v1/plans?starting_after=c").await;
    assert_eq!(body, json!({"data": [], "has_more": false}));
    let (_, body, _) = app.get("/admin/v1/plans?limit=1000").await;
    assert_eq!(ids(&body).len(), 3);
}

async fn bad_paging_is_400(kind: DbKind) {
    let app = app(kind).await;
    app.seed(simple_plan("p"), "acme").await;
    for base in [
        "/admin/v1/plans",
        "/admin/v1/customers",
        "/admin/v1/customers/acme/keys",
    ] {
        for q in [
            "limit=0",
            "limit=abc",
            "limit=-1",
            "limit=1001",
            "limit=1.5",
            "limit=",
        ] {
            let path = format!("{base}?{q}");
            let reply = app.get(&path).await;
            assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
        }
    }
}

async fn plan_put_replaces_and_the_catalog_follows(kind: DbKind) {
    let app = app(kind).await;
    app.post("/admin/v1/plans", q3()).await;
    let mut changed = q3();
    changed["name"] = json!("Q3 bigger");
    changed["quota"]["calls"] = json!(30);
    changed["rate_limit"] = json!({"requests": 2, "per": "hour", "burst": 4});
    let (s, body, _) = app
        .call(Method::PUT, "/admin/v1/plans/q3", Some(changed.clone()))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body, changed);
    assert_eq!(app.get("/admin/v1/plans/q3").await.1, changed);
    let plan = app.catalog.plan("q3").unwrap();
    assert_eq!(plan.name, "Q3 bigger");
    assert_eq!(plan.quota.unwrap().calls, 30);
    assert_eq!(plan.rate_limit.requests, 2);

    // PUT replaces: omitted fields fall back to their defaults; the id may come from the path.
    let (s, body, _) = app
        .call(
            Method::PUT,
            "/admin/v1/plans/q3",
            Some(json!({"name": "Q3 min", "rate_limit": {"requests": 1, "per": "second"}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["id"], "q3");
    assert_eq!(body["quota"], Value::Null);
    assert!(app.catalog.plan("q3").unwrap().quota.is_none());

    // Mismatched id: 422 and nothing changed.
    let mut other = q3();
    other["id"] = json!("other");
    let reply = app
        .call(Method::PUT, "/admin/v1/plans/q3", Some(other))
        .await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let reply = app
        .call(
            Method::PUT,
            "/admin/v1/plans/q3",
            Some(json!({"id": 7, "name": "x", "rate_limit": {"requests": 1, "per": "second"}})),
        )
        .await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(app.catalog.plan("q3").unwrap().name, "Q3 min");
    assert!(app.get("/admin/v1/plans/other").await.0 == StatusCode::NOT_FOUND);

    // Invalid replacement: 422, old plan kept.
    let mut bad = q3();
    bad["rate_limit"]["requests"] = json!(0);
    let reply = app.call(Method::PUT, "/admin/v1/plans/q3", Some(bad)).await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(app.get("/admin/v1/plans/q3").await.1["name"], "Q3 min");

    // PUT of a plan that does not exist.
    let reply = app
        .call(
            Method::PUT,
            "/admin/v1/plans/ghost",
            Some(simple_plan("ghost")),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    assert!(app.catalog.plan("ghost").is_none());
    let reply = app
        .call_raw(Method::PUT, "/admin/v1/plans/q3", "{nope")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
}

async fn plan_delete(kind: DbKind) {
    let app = app(kind).await;
    app.seed(q3(), "acme").await;
    app.post("/admin/v1/plans", simple_plan("spare")).await;

    let reply = app.call(Method::DELETE, "/admin/v1/plans/q3", None).await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");
    assert_eq!(app.get("/admin/v1/plans/q3").await.0, StatusCode::OK);
    assert!(app.catalog.plan("q3").is_some());

    let (s, body, _) = app
        .call(Method::DELETE, "/admin/v1/plans/spare", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_error(
        &app.get("/admin/v1/plans/spare").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(app.catalog.plan("spare").is_none());
    let reply = app
        .call(Method::DELETE, "/admin/v1/plans/spare", None)
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");

    // Once its customer moved away, the plan can go.
    app.post("/admin/v1/plans", simple_plan("next")).await;
    let (s, _, _) = app
        .call(
            Method::PATCH,
            "/admin/v1/customers/acme",
            Some(json!({"plan_id": "next"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.call(Method::DELETE, "/admin/v1/plans/q3", None).await.0,
        StatusCode::OK
    );
}

async fn plan_duplicate_is_409(kind: DbKind) {
    let app = app(kind).await;
    assert_eq!(
        app.post("/admin/v1/plans", q3()).await.0,
        StatusCode::CREATED
    );
    let mut again = q3();
    again["name"] = json!("Q3 again");
    assert_error(
        &app.post("/admin/v1/plans", again).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_eq!(app.catalog.plan("q3").unwrap().name, "Q3");
}

async fn plan_bad_input(kind: DbKind) {
    let app = app(kind).await;
    for raw in [
        "{",
        "not json",
        "{\"id\":\"x\",}",
        "",
        "{\"id\": \"x\"} trailing",
    ] {
        let reply = app.call_raw(Method::POST, "/admin/v1/plans", raw).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    }
    // A body over the limit is bad input too, not a fault.
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(3 << 20));
    let reply = app.call_raw(Method::POST, "/admin/v1/plans", &huge).await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    let with = |k: &str, v: Value| {
        let mut p = q3();
        p[k] = v;
        p
    };
    let without = |k: &str| {
        let mut p = q3();
        p.as_object_mut().unwrap().remove(k);
        p
    };
    let invalid = [
        json!([]),
        json!("q3"),
        json!(null),
        with("rate_limit", json!({"requests": 0, "per": "second"})),
        with("rate_limit", json!({"requests": -1, "per": "second"})),
        with(
            "rate_limit",
            json!({"requests": 5_000_000_000_u64, "per": "second"}),
        ),
        with("rate_limit", json!({"requests": 1, "per": "day"})),
        with(
            "rate_limit",
            json!({"requests": 1, "per": "second", "extra": 1}),
        ),
        with("rate_limit", json!("fast")),
        with("overage", json!("nope")),
        with("overage", json!({"price_micros": -1})),
        with("overage", json!({"price_micros": 1.5})),
        with("overage", json!({"price": 200})),
        with("quota", json!({"calls": 0, "period": "month"})),
        with("quota", json!({"calls": 3, "period": "week"})),
        with("price_per_call_micros", json!(0)),
        with("price_per_call_micros", json!("17000")),
        with("monthly_fee_micros", json!(-5)),
        with("routes", json!([])),
        with("routes", json!([""])),
        with("max_websockets", json!(-1)),
        with("name", json!("  ")),
        with("name", json!(3)),
        with("id", json!("has space")),
        with("id", json!("")),
        with("id", json!("x".repeat(65))),
        with("unknown_field", json!(1)),
        without("id"),
        without("name"),
        without("rate_limit"),
        json!({"id":"p","name":"P","rate_limit":{"requests":1,"per":"second"},"overage":{"price_micros":5}}),
    ];
    for body in invalid {
        let reply = app.post("/admin/v1/plans", body.clone()).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    assert_eq!(
        app.get("/admin/v1/plans").await.1,
        json!({"data": [], "has_more": false})
    );
    assert_error(
        &app.get("/admin/v1/plans/q3").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

// ---- customers ----

async fn customer_create_get_list(kind: DbKind) {
    let app = app(kind).await;
    app.post("/admin/v1/plans", q3()).await;
    let (s, body, _) = app
        .post(
            "/admin/v1/customers",
            json!({"id": "acme", "name": "Acme Corp", "email": "billing@acme.test", "plan_id": "q3"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "acme");
    assert_eq!(body["name"], "Acme Corp");
    assert_eq!(body["email"], "billing@acme.test");
    assert_eq!(body["plan_id"], "q3");
    assert_eq!(app.get("/admin/v1/customers/acme").await.1, body);
    let c = app.catalog.customer("acme").unwrap();
    assert_eq!(c.plan_id.as_str(), "q3");
    assert_eq!(c.email, "billing@acme.test");

    // Without an id, one is minted.
    let (s, body, _) = app
        .post(
            "/admin/v1/customers",
            json!({"name": "Beta", "email": "b@beta.test", "plan_id": "q3"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let minted = body["id"].as_str().unwrap().to_string();
    assert_eq!(
        app.get(&format!("/admin/v1/customers/{minted}")).await.1,
        body
    );
    assert!(!minted.is_empty() && minted != "acme");
    assert_eq!(
        app.get(&format!("/admin/v1/customers/{minted}")).await.1["name"],
        "Beta"
    );
    assert!(app.catalog.customer(&minted).is_some());

    let (s, body, _) = app.get("/admin/v1/customers").await;
    assert_eq!(s, StatusCode::OK);
    let mut all = ids(&body);
    all.sort();
    let mut want = vec!["acme".to_string(), minted.clone()];
    want.sort();
    assert_eq!(all, want);
    assert_eq!(body["has_more"], false);
    let (_, page1, _) = app.get("/admin/v1/customers?limit=1").await;
    assert_eq!(page1["has_more"], true);
    let first = ids(&page1).remove(0);
    let (_, page2, _) = app
        .get(&format!(
            "/admin/v1/customers?limit=1&starting_after={first}"
        ))
        .await;
    assert_eq!(page2["has_more"], false);
    assert_eq!(ids(&page2).len(), 1);
    assert_ne!(ids(&page2)[0], first);
}

async fn customer_bad_input(kind: DbKind) {
    let app = app(kind).await;
    app.seed(q3(), "acme").await;
    let ok = json!({"id": "newco", "name": "New", "email": "a@b.test", "plan_id": "q3"});
    let with = |k: &str, v: Value| {
        let mut c = ok.clone();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = ok.clone();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let invalid = [
        with("plan_id", json!("ghost")),
        with("plan_id", json!("bad plan id")),
        with("email", json!("not-an-email")),
        with("email", json!("@b.test")),
        with("email", json!("a@")),
        with("email", json!("a b@c.test")),
        with("email", json!("")),
        with("email", json!(5)),
        with("name", json!("")),
        with("name", json!("   ")),
        with("id", json!("a/b")),
        with("id", json!("")),
        with("id", json!(42)),
        with("nickname", json!("x")),
        without("name"),
        without("email"),
        without("plan_id"),
        json!([]),
    ];
    for body in invalid {
        let reply = app.post("/admin/v1/customers", body.clone()).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    assert_error(
        &app.get("/admin/v1/customers/newco").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert!(app.catalog.customer("newco").is_none());

    let reply = app
        .call_raw(Method::POST, "/admin/v1/customers", "{\"id\":")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");

    let dup = json!({"id": "acme", "name": "Other", "email": "o@o.test", "plan_id": "q3"});
    assert_error(
        &app.post("/admin/v1/customers", dup).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_eq!(app.get("/admin/v1/customers/acme").await.1["name"], "Acme");

    assert_error(
        &app.get("/admin/v1/customers/nobody").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

async fn customer_patch_changes_plan(kind: DbKind) {
    let app = app(kind).await;
    app.seed(q3(), "acme").await;
    app.post("/admin/v1/plans", payg()).await;

    let (s, body, _) = app
        .call(
            Method::PATCH,
            "/admin/v1/customers/acme",
            Some(json!({"plan_id": "payg"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["plan_id"], "payg");
    assert_eq!(body["name"], "Acme");
    assert_eq!(
        app.catalog.customer("acme").unwrap().plan_id.as_str(),
        "payg"
    );
    assert_eq!(
        app.get("/admin/v1/customers/acme").await.1["plan_id"],
        "payg"
    );

    let (s, body, _) = app
        .call(
            Method::PATCH,
            "/admin/v1/customers/acme",
            Some(json!({"name": "Acme 2", "email": "x@y.test"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "Acme 2");
    assert_eq!(body["plan_id"], "payg");
    assert_eq!(app.catalog.customer("acme").unwrap().email, "x@y.test");

    let patch = |v: Value| app.call(Method::PATCH, "/admin/v1/customers/acme", Some(v));
    for bad in [
        json!({"plan_id": "ghost"}),
        json!({"plan_id": ""}),
        json!({"email": "nope"}),
        json!({"name": ""}),
        json!({"id": "other"}),
        json!({"plan_id": 3}),
    ] {
        assert_error(
            &patch(bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        );
    }
    assert_eq!(
        app.catalog.customer("acme").unwrap().plan_id.as_str(),
        "payg"
    );
    assert_eq!(
        app.get("/admin/v1/customers/acme").await.1["plan_id"],
        "payg"
    );

    let reply = app
        .call(
            Method::PATCH,
            "/admin/v1/customers/nobody",
            Some(json!({"plan_id": "q3"})),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    let reply = app
        .call_raw(Method::PATCH, "/admin/v1/customers/acme", "plan_id=q3")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
}

// ---- keys ----

fn is_key(k: &str) -> bool {
    k.len() == 40 && k.starts_with("pg_live_") && k[8..].bytes().all(|b| b.is_ascii_alphanumeric())
}

async fn keys_create_list_revoke(kind: DbKind) {
    let app = app(kind).await;
    app.seed(q3(), "acme").await;

    let (s, body, _) = app
        .call(Method::POST, "/admin/v1/customers/acme/keys", None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    for field in ["id", "key", "prefix", "created_at"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    let key = body["key"].as_str().unwrap().to_string();
    let key_id = body["id"].as_str().unwrap().to_string();
    assert!(is_key(&key), "{key}");
    assert_eq!(body["prefix"].as_str().unwrap(), &key[..12]);
    let principal = app.catalog.authenticate(&key).unwrap();
    assert_eq!(principal.customer.id.as_str(), "acme");
    assert_eq!(principal.key_id(), key_id);
    assert_eq!(principal.plan.id.as_str(), "q3");

    // A body is ignored, not required; a second key is different.
    let (s, second, _) = app.post("/admin/v1/customers/acme/keys", json!({})).await;
    assert_eq!(s, StatusCode::CREATED, "{second}");
    let key2 = second["key"].as_str().unwrap().to_string();
    assert_ne!(key2, key);
    assert!(app.catalog.authenticate(&key2).is_some());

    let (s, list, _) = app.get("/admin/v1/customers/acme/keys").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["has_more"], false);
    let rows = list["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let text = list.to_string();
    assert!(
        !text.contains(&key) && !text.contains(&key2),
        "a secret leaked: {text}"
    );
    for row in rows {
        let mut fields: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created_at", "customer_id", "id", "prefix", "revoked_at"],
            "{row}"
        );
        assert_eq!(row["customer_id"], "acme");
        assert_eq!(row["revoked_at"], Value::Null);
    }
    let row = rows.iter().find(|r| r["id"] == key_id.as_str()).unwrap();
    assert_eq!(row["prefix"].as_str().unwrap(), &key[..12]);
    assert_eq!(
        row["created_at"], body["created_at"],
        "list and create agree on created_at"
    );
    let (_, page, _) = app.get("/admin/v1/customers/acme/keys?limit=1").await;
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);

    let (s, revoked, _) = app
        .call(Method::DELETE, &format!("/admin/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["id"], key_id.as_str());
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert!(!revoked.to_string().contains(&key));
    assert!(app.catalog.authenticate(&key).is_none());
    assert!(
        app.catalog.authenticate(&key2).is_some(),
        "only the revoked key is refused"
    );

    let (_, list, _) = app.get("/admin/v1/customers/acme/keys").await;
    let row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == key_id.as_str())
        .unwrap();
    assert_eq!(row["revoked_at"], revoked["revoked_at"]);

    // Revoking again keeps the first time.
    let (s, again, _) = app
        .call(Method::DELETE, &format!("/admin/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["revoked_at"], revoked["revoked_at"]);

    let reply = app
        .call(Method::DELETE, "/admin/v1/keys/key_doesnotexist", None)
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
}

async fn keys_of_unknown_customer_are_404(kind: DbKind) {
    let app = app(kind).await;
    let reply = app
        .call(Method::POST, "/admin/v1/customers/nobody/keys", None)
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    let reply = app.get("/admin/v1/customers/nobody/keys").await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
}

// ---- credits and balance ----

async fn credits_are_granted_once_per_reference(kind: DbKind) {
    let app = app(kind).await;
    app.seed(payg(), "acme").await;
    let credits = "/admin/v1/customers/acme/credits";

    let (s, body, _) = app
        .post(
            credits,
            json!({"amount_micros": 5_000_000, "reference": "inv-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["credits_micros"], 5_000_000);

    let (s, body, _) = app
        .post(
            credits,
            json!({"amount_micros": 5_000_000, "reference": "inv-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["credits_micros"], 5_000_000);

    let reply = app
        .post(credits, json!({"amount_micros": 7, "reference": "inv-1"}))
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");

    let (s, body, _) = app
        .post(credits, json!({"amount_micros": 250, "reference": "inv-2"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["credits_micros"], 5_000_250);

    let (s, bal, _) = app.get("/admin/v1/customers/acme/balance").await;
    assert_eq!(s, StatusCode::OK, "{bal}");
    assert_eq!(bal["credits_micros"], 5_000_250);

    // References are per customer.
    app.post(
        "/admin/v1/customers",
        json!({"id": "beta", "name": "B", "email": "b@b.test", "plan_id": "payg"}),
    )
    .await;
    let (s, body, _) = app
        .post(
            "/admin/v1/customers/beta/credits",
            json!({"amount_micros": 10, "reference": "inv-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["credits_micros"], 10);
    assert_eq!(
        app.get("/admin/v1/customers/acme/balance").await.1["credits_micros"],
        5_000_250
    );
}

async fn credits_bad_input(kind: DbKind) {
    let app = app(kind).await;
    app.seed(payg(), "acme").await;
    let credits = "/admin/v1/customers/acme/credits";
    for bad in [
        json!({"amount_micros": 0, "reference": "r"}),
        json!({"amount_micros": -5, "reference": "r"}),
        json!({"amount_micros": 1.5, "reference": "r"}),
        json!({"amount_micros": "100", "reference": "r"}),
        json!({"amount_micros": 1e20, "reference": "r"}),
        json!({"amount_micros": 100}),
        json!({"amount_micros": 100, "reference": ""}),
        json!({"amount_micros": 100, "reference": "   "}),
        json!({"amount_micros": 100, "reference": "r".repeat(201)}),
        json!({"amount_micros": 100, "reference": 5}),
        json!({"reference": "r"}),
        json!({"amount_micros": 100, "reference": "r", "currency": "usd"}),
    ] {
        let reply = app.post(credits, bad).await;
        assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
    let reply = app
        .call_raw(Method::POST, credits, "{\"amount_micros\": 5,")
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        app.get("/admin/v1/customers/acme/balance").await.1["credits_micros"],
        0
    );

    let reply = app
        .post(
            "/admin/v1/customers/nobody/credits",
            json!({"amount_micros": 100, "reference": "r"}),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
}

async fn credits_that_would_overflow_the_balance_are_refused(kind: DbKind) {
    let app = app(kind).await;
    app.seed(payg(), "acme").await;
    let credits = "/admin/v1/customers/acme/credits";
    let big = i64::MAX - 10;
    let (s, body, _) = app
        .post(credits, json!({"amount_micros": big, "reference": "a"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let reply = app
        .post(credits, json!({"amount_micros": 100, "reference": "b"}))
        .await;
    assert_error(&reply, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    assert_eq!(
        app.get("/admin/v1/customers/acme/balance").await.1["credits_micros"],
        big
    );
    // The refused grant was not recorded: the reference is still free.
    let (s, _, _) = app
        .post(credits, json!({"amount_micros": 10, "reference": "b"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

async fn balance_has_the_spec_shape(kind: DbKind) {
    let app = app(kind).await;
    app.seed(q3(), "acme").await;
    let (s, bal, _) = app.get("/admin/v1/customers/acme/balance").await;
    assert_eq!(s, StatusCode::OK, "{bal}");
    for field in [
        "customer_id",
        "plan_id",
        "credits_micros",
        "quota",
        "rate_limit",
    ] {
        assert!(bal.get(field).is_some(), "{field} missing in {bal}");
    }
    assert_eq!(bal["customer_id"], "acme");
    assert_eq!(bal["plan_id"], "q3");
    assert_eq!(bal["credits_micros"], 0);
    assert_eq!(
        bal["rate_limit"],
        json!({"requests": 10, "per": "second", "burst": 20})
    );
    let quota = bal["quota"].as_object().unwrap();
    let mut fields: Vec<&str> = quota.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["limit", "remaining", "resets_at", "used"]);
    assert_eq!(bal["quota"]["limit"], 3);
    assert_eq!(bal["quota"]["used"], 0);
    assert_eq!(bal["quota"]["remaining"], 3);
    let resets_at = bal["quota"]["resets_at"].as_str().unwrap();
    let resets_at = chrono::DateTime::parse_from_rfc3339(resets_at).unwrap();
    assert!(resets_at > chrono::Utc::now());

    // A plan without a quota: `quota` is null; burst defaults to requests.
    app.post(
        "/admin/v1/plans",
        json!({"id": "open", "name": "Open", "rate_limit": {"requests": 7, "per": "minute"}}),
    )
    .await;
    app.call(
        Method::PATCH,
        "/admin/v1/customers/acme",
        Some(json!({"plan_id": "open"})),
    )
    .await;
    let (s, bal, _) = app.get("/admin/v1/customers/acme/balance").await;
    assert_eq!(s, StatusCode::OK, "{bal}");
    assert_eq!(bal["plan_id"], "open");
    assert_eq!(bal["quota"], Value::Null);
    assert_eq!(
        bal["rate_limit"],
        json!({"requests": 7, "per": "minute", "burst": 7})
    );

    // A plan change by PUT shows at once.
    app.call(
        Method::PUT,
        "/admin/v1/plans/open",
        Some(json!({"name": "Open", "rate_limit": {"requests": 9, "per": "hour", "burst": 1}})),
    )
    .await;
    let bal = app.get("/admin/v1/customers/acme/balance").await.1;
    assert_eq!(
        bal["rate_limit"],
        json!({"requests": 9, "per": "hour", "burst": 1})
    );

    assert_error(
        &app.get("/admin/v1/customers/nobody/balance").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

fn keyed_post(path: &str, key: &str, body: &Value) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, "Bearer t0k")
        .header(header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", key)
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn an_idempotency_key_replays_the_first_response_and_refuses_a_different_request(
    kind: DbKind,
) {
    let app = app(kind).await;
    let (s, body, headers) = app
        .finish(keyed_post("/admin/v1/plans", "abc-123", &q3()))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body, q3());
    assert!(!headers.contains_key("idempotent-replayed"));
    // A retry gets the stored answer, not a 409 for the duplicate plan.
    let (s, replayed, headers) = app
        .finish(keyed_post("/admin/v1/plans", "abc-123", &q3()))
        .await;
    assert_eq!((s, &replayed), (StatusCode::CREATED, &body));
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    // The same key for another request is refused, and nothing is created.
    let mut other = q3();
    other["id"] = json!("other");
    assert_error(
        &app.finish(keyed_post("/admin/v1/plans", "abc-123", &other))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &app.get("/admin/v1/plans/other").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Errors about the request are answers too: replayed, not re-run.
    let bad = json!({"id": "bad"});
    let first = app
        .finish(keyed_post("/admin/v1/plans", "k-bad", &bad))
        .await;
    assert_error(&first, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    let again = app
        .finish(keyed_post("/admin/v1/plans", "k-bad", &bad))
        .await;
    assert_eq!((again.0, again.1), (first.0, first.1));
    // Without the token nothing is stored under the key.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/admin/v1/plans")
        .header("Idempotency-Key", "no-token")
        .body(Body::from(q3().to_string()))
        .unwrap();
    assert_error(
        &app.finish(req).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let mut fresh = q3();
    fresh["id"] = json!("fresh");
    let (s, _, _) = app
        .finish(keyed_post("/admin/v1/plans", "no-token", &fresh))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

/// A new API key is shown once: a replay of its creation answers without
/// it, and the stored response never holds it (SPEC §3: only a hash is kept).
async fn a_replayed_key_creation_does_not_show_or_store_the_key(kind: DbKind) {
    let app = app(kind).await;
    app.seed(
        json!({"id": "p", "name": "P", "rate_limit": {"requests": 5, "per": "second"}}),
        "c1",
    )
    .await;
    let path = "/admin/v1/customers/c1/keys";
    let (s, first, _) = app.finish(keyed_post(path, "key-once", &json!({}))).await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let secret = first["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("pg_live_"), "{first}");
    let (s, replayed, headers) = app.finish(keyed_post(path, "key-once", &json!({}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(replayed["key"], Value::Null, "{replayed}");
    assert_eq!(replayed["id"], first["id"]);
    assert_eq!(replayed["prefix"], first["prefix"]);

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&app._db.url).await.unwrap();
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM idempotency_keys WHERE key = 'key-once'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let stored = String::from_utf8(stored).unwrap();
    assert!(stored.contains(first["id"].as_str().unwrap()), "{stored}");
    assert!(
        !stored.contains(&secret),
        "the key is stored in clear: {stored}"
    );
}

async fn the_openapi_document_lists_every_route(kind: DbKind) {
    let app = app(kind).await;
    let (s, doc, _) = app.get("/admin/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let routes = [
        ("get", "/admin/v1/plans"),
        ("post", "/admin/v1/plans"),
        ("get", "/admin/v1/plans/{id}"),
        ("put", "/admin/v1/plans/{id}"),
        ("delete", "/admin/v1/plans/{id}"),
        ("get", "/admin/v1/customers"),
        ("post", "/admin/v1/customers"),
        ("get", "/admin/v1/customers/{id}"),
        ("patch", "/admin/v1/customers/{id}"),
        ("get", "/admin/v1/customers/{id}/keys"),
        ("post", "/admin/v1/customers/{id}/keys"),
        ("delete", "/admin/v1/keys/{key_id}"),
        ("post", "/admin/v1/customers/{id}/credits"),
        ("get", "/admin/v1/customers/{id}/balance"),
        ("get", "/admin/v1/usage"),
        ("get", "/admin/v1/invoices"),
        ("get", "/admin/v1/invoices/{id}"),
        ("post", "/admin/v1/invoices/close"),
        ("get", "/admin/v1/payments"),
        ("get", "/admin/v1/audit"),
        ("get", "/admin/v1/openapi.json"),
    ];
    for (method, path) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
        // Every documented route is served (with the token, never a 404 for the route itself).
        let concrete = path.replace("{id}", "x").replace("{key_id}", "x");
        let m: Method = method.to_uppercase().parse().unwrap();
        let (s, _, _) = app.call(m, &concrete, Some(json!({}))).await;
        assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        routes.len(),
        "a documented route the test does not know"
    );
    let (s, _, _) = app
        .send_auth(Method::GET, "/admin/v1/openapi.json", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

async fn billing_endpoints_refuse_bad_input_with_clear_errors(kind: DbKind) {
    let app = app(kind).await;
    app.seed(
        json!({"id": "p", "name": "P", "rate_limit": {"requests": 5, "per": "second"}}),
        "c1",
    )
    .await;
    for (path, status, code) in [
        (
            "/admin/v1/usage?from=yesterday",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?to=2026-02-30",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?from=2026-11-02T10:00:00",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?from=2026-11-02&to=2026-11-01",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?group_by=day,planet",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?format=xml",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        // A repeated parameter: still our JSON error body, not axum's text.
        (
            "/admin/v1/usage?format=json&format=csv",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/invoices?period=2026-10&period=2026-11",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/invoices/inv_2026-11_c1?format=csv&format=json",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/audit?resource=plan&resource=key",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?period=2026-13",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/usage?customer_id=nobody",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/invoices?period=26-01",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/invoices?customer_id=nobody",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/invoices?limit=0",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "/admin/v1/invoices/inv_garbage",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/invoices/inv_2026-11_nobody",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/invoices/inv_1999-01_c1",
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "/admin/v1/audit?limit=5000",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ] {
        assert_error(&app.get(path).await, status, code);
    }
    for (body, status, code) in [
        ("{not json", StatusCode::BAD_REQUEST, "bad_request"),
        ("{}", StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        (
            r#"{"period": 202611}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"period": "2026-13"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"period": "2026-11", "extra": 1}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            r#"{"period": "2999-01"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ] {
        let reply = app
            .call_raw(Method::POST, "/admin/v1/invoices/close", body)
            .await;
        assert_error(&reply, status, code);
    }
    // Any RFC 3339 instant is a bound (summed from the events).
    let (s, b, _) = app
        .get("/admin/v1/usage?from=2026-11-02T10:00:00Z&to=2026-11-02T11:30:00%2B01:00")
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["totals"]["calls"], 0, "{b}");
    // Nothing was finalized by any of that.
    let (s, b, _) = app.get("/admin/v1/invoices?customer_id=c1").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["status"] == "draft"),
        "{b}"
    );
    let (_, b, _) = app.get("/admin/v1/audit?resource=period").await;
    assert_eq!(b["data"], json!([]));
}

async fn a_new_customer_has_a_current_draft_invoice(kind: DbKind) {
    let app = app(kind).await;
    app.seed(
        json!({"id": "gold", "name": "Gold", "rate_limit": {"requests": 5, "per": "second"}, "monthly_fee_micros": 9_000_000}),
        "c1",
    )
    .await;
    let (s, b, _) = app.get("/admin/v1/invoices?customer_id=c1").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let list = b["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{b}");
    let inv = &list[0];
    assert_eq!(inv["status"], "draft");
    assert_eq!(inv["number"], Value::Null);
    assert_eq!(inv["currency"], "USD");
    assert_eq!(inv["total_micros"], 9_000_000);
    assert_eq!(inv["lines"][0]["kind"], "fee");
    let (s, one, _) = app
        .get(&format!(
            "/admin/v1/invoices/{}",
            inv["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(&one, inv);
    // An empty report is empty, with zero totals.
    let (s, r, _) = app
        .get("/admin/v1/usage?customer_id=c1&group_by=route")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["data"], json!([]));
    assert_eq!(
        r["totals"],
        json!({"calls": 0, "billable_calls": 0, "units": 0, "amount_micros": 0,
               "x402_calls": 0, "x402_amount_micros": 0})
    );
}

async fn every_admin_change_is_in_the_audit_log(kind: DbKind) {
    let app = app(kind).await;
    let plan = json!({"id": "p", "name": "P", "rate_limit": {"requests": 5, "per": "second"}});
    app.seed(plan.clone(), "c1").await;
    let mut changed = plan.clone();
    changed["name"] = json!("P2");
    let (s, _, _) = app
        .call(Method::PUT, "/admin/v1/plans/p", Some(changed))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = app
        .call(
            Method::PATCH,
            "/admin/v1/customers/c1",
            Some(json!({"name": "Acme Ltd"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, key, _) = app.post("/admin/v1/customers/c1/keys", json!({})).await;
    let key_id = key["id"].as_str().unwrap().to_string();
    let (s, _, _) = app
        .call(Method::DELETE, &format!("/admin/v1/keys/{key_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = app
        .send(
            Method::POST,
            "/admin/v1/customers/c1/credits",
            Some(TOKEN),
            Some(r#"{"amount_micros": 500, "reference": "r1"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // A replayed top-up changes nothing and is not audited again.
    app.post(
        "/admin/v1/customers/c1/credits",
        json!({"amount_micros": 500, "reference": "r1"}),
    )
    .await;

    let (s, log, _) = app.get("/admin/v1/audit").await;
    assert_eq!(s, StatusCode::OK);
    let entries = log["data"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "credits.grant",
            "key.revoke",
            "key.create",
            "customer.update",
            "plan.update",
            "customer.create",
            "plan.create"
        ]
    );
    let plan_update = &entries[4];
    assert_eq!(plan_update["actor"], "admin");
    assert_eq!(plan_update["resource_id"], "p");
    assert_eq!(plan_update["before"]["name"], "P");
    assert_eq!(plan_update["after"]["name"], "P2");
    assert!(plan_update["at"].as_str().unwrap().ends_with('Z'));
    let customer_update = &entries[3];
    assert_eq!(customer_update["before"]["name"], "Acme");
    assert_eq!(customer_update["after"]["name"], "Acme Ltd");
    assert!(entries[1]["after"]["revoked_at"].is_string());
    assert!(
        entries[2]["after"].get("key").is_none(),
        "the secret is never logged"
    );

    // Filters and paging, newest first.
    let (_, page1, _) = app.get("/admin/v1/audit?limit=2").await;
    assert_eq!(page1["has_more"], true);
    let last = page1["data"][1]["id"].as_str().unwrap();
    let (_, page2, _) = app
        .get(&format!("/admin/v1/audit?limit=2&starting_after={last}"))
        .await;
    assert_eq!(page2["data"][0]["action"], "key.create");
    let (_, only, _) = app.get("/admin/v1/audit?resource=plan&resource_id=p").await;
    assert_eq!(only["data"].as_array().unwrap().len(), 2);

    // The caller may name itself.
    let req = Request::builder()
        .method(Method::DELETE)
        .uri("/admin/v1/plans/unused")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header("x-paygate-actor", "alice@finance");
    app.post(
        "/admin/v1/plans",
        json!({"id": "unused", "name": "U", "rate_limit": {"requests": 1, "per": "second"}}),
    )
    .await;
    let (s, _, _) = app.finish(req.body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    let (_, log, _) = app.get("/admin/v1/audit?limit=1").await;
    assert_eq!(log["data"][0]["action"], "plan.delete");
    assert_eq!(log["data"][0]["actor"], "alice@finance");
    assert_eq!(log["data"][0]["after"], Value::Null);
}

paygate_testkit::on_both_databases!(
    billing_endpoints_refuse_bad_input_with_clear_errors,
    a_new_customer_has_a_current_draft_invoice,
    every_admin_change_is_in_the_audit_log,
    admin_api_requires_the_bearer_token,
    healthz_readyz_and_metrics_need_no_token,
    unknown_paths_and_wrong_methods_answer_json_errors,
    plan_create_returns_the_spec_shape,
    plan_list_pages,
    bad_paging_is_400,
    plan_put_replaces_and_the_catalog_follows,
    plan_delete,
    plan_duplicate_is_409,
    plan_bad_input,
    customer_create_get_list,
    customer_bad_input,
    customer_patch_changes_plan,
    keys_create_list_revoke,
    keys_of_unknown_customer_are_404,
    credits_are_granted_once_per_reference,
    credits_bad_input,
    credits_that_would_overflow_the_balance_are_refused,
    balance_has_the_spec_shape,
    an_idempotency_key_replays_the_first_response_and_refuses_a_different_request,
    a_replayed_key_creation_does_not_show_or_store_the_key,
    the_openapi_document_lists_every_route,
);
