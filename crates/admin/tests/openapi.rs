//! The served OpenAPI document (`GET /admin/v1/openapi.json`):
//!
//! - every `$ref` in it resolves, and every schema it defines is used;
//! - it is a valid OpenAPI document, as Python's `openapi-spec-validator`
//!   (the reference validator of the OpenAPI ecosystem) checks it;
//! - the JSON the API really answers, and the bodies it accepts, match the
//!   schemas the document gives for that operation and status (checked with
//!   `openapi-schema-validator`, which `openapi-spec-validator` installs).
//!
//! The Python checks are skipped, saying so, only where that module is not
//! installed (`pip install openapi-spec-validator`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::Utc;
use http_body_util::BodyExt;
use paygate_admin::{router, AdminState};
use paygate_billing::Database;
use paygate_core::period::PeriodName;
use paygate_metrics::Metrics;
use paygate_store::{Catalog, MemoryStore};
use paygate_testkit::{DbKind, TestDb};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "t0k";

struct App {
    router: Router,
    db: Database,
    _db: TestDb,
}

async fn app() -> App {
    let test_db = TestDb::new(DbKind::Sqlite);
    let db = Database::connect(&test_db.url).await.unwrap();
    let state = Arc::new(AdminState {
        db: db.clone(),
        catalog: Arc::new(Catalog::new(b"secret".to_vec())),
        store: Arc::new(MemoryStore::new()),
        metrics: Metrics::new().unwrap(),
        token: TOKEN.to_string(),
        changes: paygate_store::ChangeBus::Local,
    });
    App {
        router: router(state),
        db,
        _db: test_db,
    }
}

/// One request or response the API took or gave, for the schema check.
#[derive(Debug)]
struct Sample {
    /// `request` or `response`.
    kind: &'static str,
    method: String,
    /// The documented path (`/admin/v1/plans/{id}`).
    path: String,
    status: u16,
    content_type: String,
    body: Value,
}

impl Sample {
    fn to_json(&self) -> Value {
        json!({
            "kind": self.kind, "method": self.method, "path": self.path,
            "status": self.status, "content_type": self.content_type, "body": self.body,
        })
    }
}

#[derive(Default)]
struct Recorder {
    samples: Vec<Sample>,
}

impl Recorder {
    /// Calls `concrete` (documented as `path`) with the token and records
    /// the request body and the response. Returns the status and body.
    async fn call(
        &mut self,
        app: &App,
        method: Method,
        path: &str,
        concrete: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(concrete)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req_body = match &body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = app
            .router
            .clone()
            .oneshot(req.body(req_body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let parsed = if content_type.starts_with("application/json") {
            serde_json::from_slice(&bytes).unwrap()
        } else {
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        };
        let method = method.as_str().to_lowercase();
        if let Some(b) = body.filter(|_| status.is_success()) {
            self.samples.push(Sample {
                kind: "request",
                method: method.clone(),
                path: path.to_owned(),
                status: 0,
                content_type: "application/json".into(),
                body: b,
            });
        }
        self.samples.push(Sample {
            kind: "response",
            method,
            path: path.to_owned(),
            status: status.as_u16(),
            content_type,
            body: parsed.clone(),
        });
        (status, parsed)
    }

    async fn get(&mut self, app: &App, path: &str, concrete: &str) -> (StatusCode, Value) {
        self.call(app, Method::GET, path, concrete, None, &[]).await
    }
}

async fn served_document(app: &App) -> Value {
    let mut r = Recorder::default();
    let (s, doc) = r
        .get(app, "/admin/v1/openapi.json", "/admin/v1/openapi.json")
        .await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    doc
}

// ------------------------------------------------------------ $ref checks

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// `#/a/b` → the value at `/a/b`, `~1` and `~0` unescaped (RFC 6901).
fn resolve<'a>(doc: &'a Value, r: &str) -> Option<&'a Value> {
    doc.pointer(r.strip_prefix('#')?)
}

#[tokio::test]
async fn every_ref_resolves_and_every_schema_is_used() {
    let app = app().await;
    let doc = served_document(&app).await;
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        assert!(r.starts_with("#/components/"), "an external $ref: {r}");
        assert!(resolve(&doc, r).is_some(), "$ref {r} resolves to nothing");
    }
    // Every schema is reachable from an operation (none left over).
    let mut reached = BTreeSet::new();
    let mut todo = Vec::new();
    refs(&doc["paths"], &mut todo);
    while let Some(r) = todo.pop() {
        if reached.insert(r.to_owned()) {
            refs(resolve(&doc, r).unwrap(), &mut todo);
        }
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        let r = format!("#/components/schemas/{name}");
        assert!(
            reached.contains(&r),
            "schema {name} is used by no operation"
        );
    }
    // The security the document asks for is defined.
    for req in doc["security"].as_array().unwrap() {
        for scheme in req.as_object().unwrap().keys() {
            assert!(
                doc["components"]["securitySchemes"][scheme].is_object(),
                "security scheme {scheme} is not defined"
            );
        }
    }
}

#[test]
fn the_resolver_follows_json_pointers() {
    let doc = json!({"components": {"schemas": {"A/B": {"type": "string"}}}});
    assert!(resolve(&doc, "#/components/schemas/A~1B").is_some());
    assert!(resolve(&doc, "#/components/schemas/C").is_none());
    let nested = json!({"x": [{"$ref": "#/a"}, {"y": {"$ref": "#/b"}}]});
    let mut found = Vec::new();
    refs(&nested, &mut found);
    assert_eq!(found, ["#/a", "#/b"]);
}

// ------------------------------------------------------------ Python validators

/// Whether `python3` can import `module`; says so on stderr when not.
fn python_has(module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "SKIPPED: the Python module {module} is not installed \
             (pip install openapi-spec-validator); the document was not validated"
        );
    }
    ok
}

fn run_python(args: &[&str]) -> (bool, String) {
    let out = Command::new("python3").args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn write_json(dir: &Path, name: &str, v: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_served_document_is_valid_openapi() {
    if !python_has("openapi_spec_validator") {
        return;
    }
    let app = app().await;
    let doc = served_document(&app).await;
    let dir = tempfile::tempdir().unwrap();
    let file = write_json(dir.path(), "openapi.json", &doc);
    let (ok, out) = run_python(&["-m", "openapi_spec_validator", &file]);
    assert!(ok, "openapi-spec-validator refuses the document:\n{out}");
    assert!(out.contains("OK"), "{out}");

    // And it would notice a broken one: a `$ref` to nothing, a path
    // parameter the path does not have.
    let mut broken = doc.clone();
    broken["paths"]["/admin/v1/plans"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"] = json!({"$ref": "#/components/schemas/NoSuchSchema"});
    let file = write_json(dir.path(), "broken.json", &broken);
    let (ok, out) = run_python(&["-m", "openapi_spec_validator", &file]);
    assert!(!ok, "a dangling $ref passed:\n{out}");
    let mut broken = doc;
    broken["paths"]["/admin/v1/plans"]["get"]["parameters"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"name": "nope", "in": "path", "required": true, "schema": {"type": "string"}}),
        );
    let file = write_json(dir.path(), "broken2.json", &broken);
    let (ok, out) = run_python(&["-m", "openapi_spec_validator", &file]);
    assert!(!ok, "an undeclared path parameter passed:\n{out}");
}

/// Checks each sample against the document: its operation and status are
/// documented with its content type, and a JSON body matches the schema.
const CHECK_SAMPLES: &str = r#"
import json, sys
from openapi_schema_validator import OAS31Validator

doc = json.load(open(sys.argv[1]))
samples = json.load(open(sys.argv[2]))

def strict(v):
    """No field the document does not name: objects with properties allow no others."""
    if isinstance(v, dict):
        if "properties" in v and "additionalProperties" not in v:
            v["additionalProperties"] = False
        for x in v.values():
            strict(x)
    elif isinstance(v, list):
        for x in v:
            strict(x)

strict(doc["components"])
failures = []
for s in samples:
    where = "%s %s %s %s" % (s["kind"], s["method"].upper(), s["path"], s["status"] or "")
    op = doc["paths"].get(s["path"], {}).get(s["method"])
    if op is None:
        failures.append(where + ": operation not documented")
        continue
    if s["kind"] == "request":
        content = op.get("requestBody", {}).get("content", {})
    else:
        response = op["responses"].get(str(s["status"]))
        if response is None:
            failures.append(where + ": status not documented")
            continue
        content = response.get("content", {})
    media = s["content_type"].split(";")[0].strip()
    if media not in content:
        failures.append("%s: %s not documented (only %s)" % (where, media, sorted(content)))
        continue
    if media != "application/json":
        continue
    schema = dict(content[media]["schema"])
    schema["components"] = doc["components"]
    validator = OAS31Validator(schema, format_checker=OAS31Validator.FORMAT_CHECKER)
    for e in validator.iter_errors(s["body"]):
        failures.append("%s: %s at %s in %s" % (where, e.message, list(e.absolute_path), json.dumps(s["body"])[:400]))
for f in failures:
    print(f)
print("%d samples checked, %d failures" % (len(samples), len(failures)))
sys.exit(1 if failures else 0)
"#;

/// Every operation, with the bodies it accepts and the answers it gives:
/// success and error, JSON and CSV, first calls and replays.
async fn exercise(app: &App) -> Recorder {
    let mut r = Recorder::default();
    let now = Utc::now();
    let period = PeriodName::of(now).to_string();

    // Plans: one with a quota and an overage price, one pay-per-call, one to delete.
    let metered = json!({"id": "metered", "name": "Metered",
        "rate_limit": {"requests": 10, "per": "second", "burst": 20},
        "quota": {"calls": 2, "period": "month"}, "overage": {"price_micros": 300},
        "monthly_fee_micros": 9_000_000, "routes": ["r", "s"], "max_websockets": 2});
    let payg = json!({"id": "payg", "name": "PAYG", "rate_limit": {"requests": 5, "per": "minute"},
        "price_per_call_micros": 17_000});
    let spare =
        json!({"id": "spare", "name": "Spare", "rate_limit": {"requests": 1, "per": "hour"}});
    for plan in [&metered, &payg, &spare] {
        let (s, b) = r
            .call(
                app,
                Method::POST,
                "/admin/v1/plans",
                "/admin/v1/plans",
                Some(plan.clone()),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
    r.get(app, "/admin/v1/plans", "/admin/v1/plans?limit=2")
        .await;
    r.get(app, "/admin/v1/plans/{id}", "/admin/v1/plans/metered")
        .await;
    let mut renamed = payg.clone();
    renamed.as_object_mut().unwrap().remove("id");
    renamed["name"] = json!("Pay as you go");
    let (s, b) = r
        .call(
            app,
            Method::PUT,
            "/admin/v1/plans/{id}",
            "/admin/v1/plans/payg",
            Some(renamed),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = r
        .call(
            app,
            Method::DELETE,
            "/admin/v1/plans/{id}",
            "/admin/v1/plans/spare",
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Customers: with and without an id; changed.
    let (s, b) = r
        .call(
            app,
            Method::POST,
            "/admin/v1/customers",
            "/admin/v1/customers",
            Some(
                json!({"id": "c1", "name": "Acme", "email": "ops@acme.test", "plan_id": "metered"}),
            ),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = r
        .call(
            app,
            Method::POST,
            "/admin/v1/customers",
            "/admin/v1/customers",
            Some(json!({"name": "Beta", "email": "b@beta.test", "plan_id": "payg"})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let beta = b["id"].as_str().unwrap().to_owned();
    r.get(app, "/admin/v1/customers", "/admin/v1/customers")
        .await;
    r.get(app, "/admin/v1/customers/{id}", "/admin/v1/customers/c1")
        .await;
    let (s, b) = r
        .call(
            app,
            Method::PATCH,
            "/admin/v1/customers/{id}",
            "/admin/v1/customers/c1",
            Some(json!({"name": "Acme Ltd", "email": null})),
            &[("x-paygate-actor", "alice")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Keys: created (and replayed: the key is null then), listed, revoked.
    let keys = "/admin/v1/customers/{id}/keys";
    let (s, key) = r
        .call(
            app,
            Method::POST,
            keys,
            "/admin/v1/customers/c1/keys",
            None,
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{key}");
    let (s, replay) = r
        .call(
            app,
            Method::POST,
            keys,
            "/admin/v1/customers/c1/keys",
            None,
            &[("idempotency-key", "k-1")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{replay}");
    assert_eq!(replay["key"], Value::Null);
    let (s, other) = r
        .call(
            app,
            Method::POST,
            keys,
            "/admin/v1/customers/c1/keys",
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    r.get(app, keys, "/admin/v1/customers/c1/keys").await;
    let (s, b) = r
        .call(
            app,
            Method::DELETE,
            "/admin/v1/keys/{key_id}",
            &format!("/admin/v1/keys/{}", other["id"].as_str().unwrap()),
            None,
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");

    // Credits: granted, then the same reference again; balances with and
    // without a quota.
    let credits = "/admin/v1/customers/{id}/credits";
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let (s, b) = r
            .call(
                app,
                Method::POST,
                credits,
                &format!("/admin/v1/customers/{beta}/credits"),
                Some(json!({"amount_micros": 1_000_000, "reference": "pay-1"})),
                &[],
            )
            .await;
        assert_eq!(s, expected, "{b}");
    }
    r.get(
        app,
        "/admin/v1/customers/{id}/balance",
        "/admin/v1/customers/c1/balance",
    )
    .await;
    r.get(
        app,
        "/admin/v1/customers/{id}/balance",
        &format!("/admin/v1/customers/{beta}/balance"),
    )
    .await;

    // Usage in the ledger: quota, overage and pay-per-call calls.
    let key_id = key["id"].as_str().unwrap().to_owned();
    let events: Vec<_> = (0..4)
        .map(|i| {
            let mut e = paygate_testkit::usage_event(i);
            e.customer_id = if i < 3 { "c1".into() } else { beta.clone() };
            e.plan_id = if i < 3 { "metered" } else { "payg" }.into();
            e.key_id = key_id.clone();
            e.route = if i % 2 == 0 { "r" } else { "s" }.into();
            e.period = period.clone();
            e.overage_units = u64::from(i == 2);
            e.amount_micros = match i {
                2 => 300,
                3 => 17_000,
                _ => 0,
            };
            e.credits_micros = if i == 3 { 17_000 } else { 0 };
            e
        })
        .collect();
    app.db.insert_events(&events).await.unwrap();
    // Calls paid with x402: one settled (a customer's), one unknown (anonymous).
    let paid: Vec<_> = (4..6)
        .map(|i| {
            let mut e = paygate_testkit::usage_event(i);
            let settled = i == 4;
            e.customer_id = if settled {
                "c1".into()
            } else {
                "x402:0xab".into()
            };
            e.key_id = if settled {
                key_id.clone()
            } else {
                "x402".into()
            };
            e.period = period.clone();
            e.units = 0;
            e.billable = settled;
            e.payment = Some(paygate_core::Payment {
                payer: "0xab".into(),
                amount_micros: 17_000,
                amount_units: "17000".into(),
                asset: "0x036cbd53842c5426634e7929541ec2318f3dcf7e".into(),
                network: "eip155:84532".into(),
                nonce: format!("0x{i:064x}"),
                valid_before: 4_000_000_000,
                transaction: settled.then(|| "0xfeed".into()),
                state: if settled {
                    paygate_core::PaymentState::Settled
                } else {
                    paygate_core::PaymentState::SettlementUnknown
                },
                reason: (!settled).then(|| "timeout".into()),
            });
            e
        })
        .collect();
    app.db.insert_events(&paid).await.unwrap();
    for q in [
        "/admin/v1/payments",
        "/admin/v1/payments?state=settled&limit=1",
        "/admin/v1/payments?from=2020-01-01&customer_id=x402:0xab&format=csv",
    ] {
        let (s, b) = r.get(app, "/admin/v1/payments", q).await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
    }
    for q in [
        "/admin/v1/usage",
        "/admin/v1/usage?group_by=day,route,key&customer_id=c1",
        &format!("/admin/v1/usage?group_by=&period={period}"),
        "/admin/v1/usage?group_by=route&format=csv",
    ] {
        let (s, b) = r.get(app, "/admin/v1/usage", q).await;
        assert_eq!(s, StatusCode::OK, "{q}: {b}");
    }

    // Invoices: drafts, closed, finalized; JSON and CSV.
    r.get(app, "/admin/v1/invoices", "/admin/v1/invoices").await;
    r.get(app, "/admin/v1/invoices", "/admin/v1/invoices?format=csv")
        .await;
    let one = format!("/admin/v1/invoices/inv_{period}_c1");
    r.get(app, "/admin/v1/invoices/{id}", &one).await;
    r.get(app, "/admin/v1/invoices/{id}", &format!("{one}?format=csv"))
        .await;
    let (s, b) = r
        .call(
            app,
            Method::POST,
            "/admin/v1/invoices/close",
            "/admin/v1/invoices/close",
            Some(json!({"period": period})),
            &[],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(!b["data"].as_array().unwrap().is_empty(), "{b}");
    r.get(
        app,
        "/admin/v1/invoices",
        &format!("/admin/v1/invoices?period={period}&limit=1"),
    )
    .await;
    r.get(app, "/admin/v1/invoices/{id}", &one).await;

    // The audit log, its filters.
    r.get(app, "/admin/v1/audit", "/admin/v1/audit").await;
    r.get(
        app,
        "/admin/v1/audit",
        "/admin/v1/audit?resource=customer&resource_id=c1",
    )
    .await;

    // Errors: 400, 404, 409, 422, and 401 without the token.
    for (method, path, concrete, body, status) in [
        (
            Method::GET,
            "/admin/v1/plans",
            "/admin/v1/plans?limit=0",
            None,
            400,
        ),
        (
            Method::GET,
            "/admin/v1/usage",
            "/admin/v1/usage?format=xml",
            None,
            400,
        ),
        (
            Method::GET,
            "/admin/v1/customers/{id}",
            "/admin/v1/customers/nobody",
            None,
            404,
        ),
        (
            Method::POST,
            "/admin/v1/plans",
            "/admin/v1/plans",
            Some(payg.clone()),
            409,
        ),
        (
            Method::POST,
            "/admin/v1/customers/{id}/credits",
            "/admin/v1/customers/c1/credits",
            Some(json!({"amount_micros": 0, "reference": "x"})),
            422,
        ),
    ] {
        let (s, b) = r.call(app, method, path, concrete, body, &[]).await;
        assert_eq!(s.as_u16(), status, "{concrete}: {b}");
    }
    let resp = app
        .router
        .clone()
        .oneshot(
            Request::get("/admin/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    r.samples.push(Sample {
        kind: "response",
        method: "get".into(),
        path: "/admin/v1/openapi.json".into(),
        status: 401,
        content_type: "application/json".into(),
        body: serde_json::from_slice(&bytes).unwrap(),
    });
    r.get(app, "/admin/v1/openapi.json", "/admin/v1/openapi.json")
        .await;
    r
}

#[tokio::test]
async fn what_the_api_answers_matches_the_document() {
    let app = app().await;
    let recorded = exercise(&app).await;
    // Every documented operation was called.
    let doc = served_document(&app).await;
    let called: BTreeSet<(String, String)> = recorded
        .samples
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                called.contains(&(method.clone(), path.clone())),
                "{method} {path} is not exercised"
            );
        }
    }
    if !python_has("openapi_schema_validator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let doc_file = write_json(dir.path(), "openapi.json", &doc);
    let samples: Vec<Value> = recorded.samples.iter().map(Sample::to_json).collect();
    let samples_file = write_json(dir.path(), "samples.json", &Value::Array(samples));
    let (ok, out) = run_python(&["-c", CHECK_SAMPLES, &doc_file, &samples_file]);
    assert!(ok, "answers that do not match the document:\n{out}");

    // The check fails where it should: a field the document does not name
    // (in a list's items too), a null where none may be, an undocumented status.
    let sample = |path: &str, status: u16| {
        recorded
            .samples
            .iter()
            .find(|s| s.kind == "response" && s.path == path && s.status == status)
            .map(Sample::to_json)
            .unwrap()
    };
    let mut extra = sample("/admin/v1/customers", 200);
    extra["body"]["data"][0]["surprise"] = json!(1);
    let mut null = sample("/admin/v1/customers/{id}/balance", 200);
    null["body"]["rate_limit"] = Value::Null;
    let mut status = sample("/admin/v1/plans/{id}", 200);
    status["status"] = json!(201);
    for (wrong, says) in [
        (extra, "'surprise' was unexpected"),
        (null, "None is not of type 'object'"),
        (status, "status not documented"),
    ] {
        let file = write_json(dir.path(), "wrong.json", &Value::Array(vec![wrong]));
        let (ok, out) = run_python(&["-c", CHECK_SAMPLES, &doc_file, &file]);
        assert!(!ok && out.contains(says), "expected {says:?}:\n{out}");
    }
}
