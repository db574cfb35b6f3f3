//! A scripted billing month (September 2026) for each of the four demo plans
//! and a mid-month plan change, on SQLite and on Postgres: every call goes
//! through the real admission (`limits_for` + the memory store, which decides
//! quota, overage and credits) into the real ledger, and the invoices, usage
//! reports and CSV exports are read through the admin API. Totals are checked
//! to the micro against numbers worked out by hand in the comments.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::BodyExt;
use paygate_admin::{router, AdminState};
use paygate_billing::audit::Actor;
use paygate_billing::records::{CustomerPatch, NewCustomer};
use paygate_billing::Database;
use paygate_core::metering::limits_for;
use paygate_core::{CustomerId, Plan, PlanId, UsageEvent};
use paygate_metrics::Metrics;
use paygate_store::{Catalog, CustomerRecord, Decision, MemoryStore, Store};
use paygate_testkit::{DbKind, TestDb};
use serde_json::{json, Value};
use tower::ServiceExt;

const TOKEN: &str = "finance";

fn at(d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 9, d, h, 0, 0).unwrap()
}

struct Month {
    db: Database,
    store: Arc<MemoryStore>,
    router: Router,
    plans: Vec<Plan>,
    events: Vec<UsageEvent>,
    _test_db: TestDb,
}

impl Month {
    async fn new(kind: DbKind) -> Self {
        let test_db = TestDb::new(kind);
        let db = Database::connect(&test_db.url).await.unwrap();
        let plans: Vec<Plan> =
            serde_json::from_str(include_str!("../config/demo-plans.json")).unwrap();
        for p in &plans {
            db.create_plan(p, &Actor::system()).await.unwrap();
        }
        let store = Arc::new(MemoryStore::new());
        let state = Arc::new(AdminState {
            db: db.clone(),
            catalog: Arc::new(Catalog::new(b"secret".to_vec())),
            store: store.clone(),
            metrics: Metrics::new().unwrap(),
            token: TOKEN.into(),
            changes: paygate_store::ChangeBus::Local,
        });
        Self {
            db,
            store,
            router: router(state),
            plans,
            events: Vec::new(),
            _test_db: test_db,
        }
    }

    fn plan(&self, id: &str) -> &Plan {
        self.plans.iter().find(|p| p.id.as_str() == id).unwrap()
    }

    /// A customer signed up on 1 September 2026 (billing anchor: the 1st).
    async fn customer(&self, id: &str, plan: &str) -> CustomerRecord {
        let new = NewCustomer {
            id: CustomerId::new(id).unwrap(),
            name: id.into(),
            email: format!("{id}@example.test"),
            plan_id: PlanId::new(plan).unwrap(),
        };
        self.db
            .create_customer(new, &Actor::system(), at(1, 8))
            .await
            .unwrap()
    }

    /// One call at `t` as the gateway makes it: admission by the store, then
    /// the usage event the proxy emits. Rate limits are lifted: a month of
    /// billing is under test, not the per-second limiter. Route entitlement
    /// is the gateway's, before admission, and is not exercised here.
    async fn call(
        &mut self,
        c: &CustomerRecord,
        route: &str,
        cost: u32,
        t: DateTime<Utc>,
        status: u16,
    ) -> bool {
        let plan = self.plan(c.plan_id.as_str()).clone();
        let (mut limits, period) = limits_for(&plan, cost, c, t);
        limits.capacity = u32::MAX;
        limits.emission_interval_ns = 1;
        let Decision::Admitted(r) = self
            .store
            .admit(c.id.as_str(), &limits)
            .await
            .unwrap()
            .decision
        else {
            return false;
        };
        let billable = status < 500;
        if !billable {
            self.store.give_back(c.id.as_str(), &r).await.unwrap();
        }
        let r = if billable { r } else { Default::default() };
        self.events.push(UsageEvent {
            request_id: uuid::Uuid::now_v7().to_string(),
            ts: t,
            customer_id: c.id.to_string(),
            key_id: format!("key_{}", c.id.as_str()),
            plan_id: plan.id.to_string(),
            route: route.into(),
            method: "GET".into(),
            status,
            billable,
            units: if billable { cost.into() } else { 0 },
            overage_units: r.overage_units,
            amount_micros: r.amount_micros(),
            credits_micros: r.credits_micros,
            period: period.name(),
            latency_us: 900,
            payment: None,
        });
        true
    }

    /// `n` calls spread evenly over `[from, to)`; returns how many were admitted.
    async fn calls(
        &mut self,
        c: &CustomerRecord,
        route: &str,
        cost: u32,
        n: u32,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> u32 {
        let step = (to - from) / n.max(1) as i32;
        let mut admitted = 0;
        for i in 0..n {
            if self.call(c, route, cost, from + step * i as i32, 200).await {
                admitted += 1;
            }
        }
        admitted
    }

    /// Delivers every event emitted so far into the ledger.
    async fn deliver(&self) -> u64 {
        let mut inserted = 0;
        for batch in self.events.chunks(500) {
            inserted += self.db.insert_events(batch).await.unwrap();
        }
        inserted
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        assert!(!status.is_server_error(), "{path}: {status}");
        (status, bytes)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(Method::GET, path, None).await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::OK, "{path}: {v}");
        v
    }

    async fn invoice(&self, customer: &str, period: &str) -> Value {
        let list = self
            .get(&format!(
                "/admin/v1/invoices?customer_id={customer}&period={period}"
            ))
            .await;
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        list["data"][0].clone()
    }

    async fn close(&self, period: &str) -> Value {
        let (status, body) = self
            .request(
                Method::POST,
                "/admin/v1/invoices/close",
                Some(json!({"period": period})),
            )
            .await;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }
}

/// (kind, route, quantity, unit price, amount) of each line.
fn lines(inv: &Value) -> Vec<(String, String, i64, i64, i64)> {
    inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap().to_owned(),
                l["route"].as_str().unwrap_or("").to_owned(),
                l["quantity"].as_i64().unwrap(),
                l["unit_price_micros"].as_i64().unwrap(),
                l["amount_micros"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn line(
    kind: &str,
    route: &str,
    q: i64,
    price: i64,
    amount: i64,
) -> (String, String, i64, i64, i64) {
    (kind.into(), route.into(), q, price, amount)
}

fn total(inv: &Value) -> i64 {
    let t = inv["total_micros"].as_i64().unwrap();
    let sum: i64 = lines(inv).iter().map(|l| l.4).sum();
    assert_eq!(t, sum, "total is the sum of the lines: {inv}");
    t
}

/// Scripts September 2026 for five customers and returns the month.
async fn september(kind: DbKind) -> Month {
    let mut m = Month::new(kind).await;
    let (start, end) = (at(1, 9), at(30, 20));

    // free: 1,000 calls/month, then blocked. Three upstream 500s are not
    // billed and give their quota back; of 1,005 calls 1,000 get through.
    let free = m.customer("c1_free", "free").await;
    for h in 0..3 {
        assert!(m.call(&free, "prices", 1, at(2, h), 500).await);
    }
    assert_eq!(m.calls(&free, "prices", 1, 1005, start, end).await, 1000);

    // advanced: 500 calls at 1 unit and 10 at 5 units, well inside 20,000.
    let adv = m.customer("c2_advanced", "advanced").await;
    assert_eq!(m.calls(&adv, "prices", 1, 500, start, end).await, 500);
    assert_eq!(m.calls(&adv, "signals", 5, 10, start, end).await, 10);

    // premium: 100,000 units included, then 200 micros a unit.
    // 999 calls of 100 units = 99,900; 10 of 5 = 99,950; one call of 100
    // straddles the quota (50 included, 50 over); 20 calls of 1 are over.
    let prem = m.customer("c3_premium", "premium").await;
    assert_eq!(
        m.calls(&prem, "bulk", 100, 999, start, at(20, 0)).await,
        999
    );
    assert_eq!(
        m.calls(&prem, "signals", 5, 10, at(20, 0), at(21, 0)).await,
        10
    );
    assert!(m.call(&prem, "bulk", 100, at(22, 0), 200).await);
    assert_eq!(m.calls(&prem, "prices", 1, 20, at(23, 0), end).await, 20);

    // payg: 17,000 micros a call from 1,000,000 of credits: 58 calls fit.
    let payg = m.customer("c4_payg", "payg").await;
    m.db.grant_credits("c4_payg", 1_000_000, "topup-1", &Actor::system())
        .await
        .unwrap();
    m.store.add_credits("c4_payg", 1_000_000).await.unwrap();
    assert_eq!(m.calls(&payg, "prices", 1, 60, start, end).await, 58);

    // A plan change: advanced until 16 September 10:00, then premium. The
    // 15,000 units used on advanced keep counting toward premium's 100,000.
    let sw = m.customer("c5_switch", "advanced").await;
    assert_eq!(m.calls(&sw, "bulk", 100, 150, start, at(16, 0)).await, 150);
    let patch = CustomerPatch {
        name: None,
        email: None,
        plan_id: Some(PlanId::new("premium").unwrap()),
    };
    let sw =
        m.db.patch_customer("c5_switch", patch, &Actor::system(), at(16, 10))
            .await
            .unwrap();
    assert_eq!(m.calls(&sw, "bulk", 100, 900, at(16, 11), end).await, 900);

    let emitted = m.events.len() as u64;
    assert_eq!(m.deliver().await, emitted);
    m
}

async fn scripted_month_invoices_are_exact(kind: DbKind) {
    let m = september(kind).await;

    let free = m.invoice("c1_free", "2026-09").await;
    assert_eq!(free["status"], "draft");
    assert_eq!(lines(&free), vec![line("usage", "prices", 1000, 0, 0)]);
    assert_eq!(total(&free), 0);

    let adv = m.invoice("c2_advanced", "2026-09").await;
    assert_eq!(
        lines(&adv),
        vec![
            line("fee", "", 1, 83_332_500, 83_332_500),
            line("usage", "prices", 500, 0, 0),
            line("usage", "signals", 50, 0, 0),
        ]
    );
    assert_eq!(total(&adv), 83_332_500);

    let prem = m.invoice("c3_premium", "2026-09").await;
    assert_eq!(
        lines(&prem),
        vec![
            line("fee", "", 1, 166_665_833, 166_665_833),
            line("usage", "bulk", 99_950, 0, 0),
            line("overage", "bulk", 50, 200, 10_000),
            line("overage", "prices", 20, 200, 4_000),
            line("usage", "signals", 50, 0, 0),
        ]
    );
    assert_eq!(total(&prem), 166_679_833);

    let payg = m.invoice("c4_payg", "2026-09").await;
    assert_eq!(
        lines(&payg),
        vec![line("payg", "prices", 58, 17_000, 986_000)]
    );
    assert_eq!(total(&payg), 986_000);
    assert_eq!(payg["credits_applied_micros"], 986_000);
    assert_eq!(payg["amount_due_micros"], 0);

    // September has 30 days; the change on the 16th bills 15 days of each
    // plan, rounded down: 83,332,500 × 15/30 = 41,666,250 and
    // 166,665,833 × 15/30 = 83,332,916.5 → 83,332,916. Usage: 105,000 units,
    // 5,000 past premium's quota at 200.
    let sw = m.invoice("c5_switch", "2026-09").await;
    assert_eq!(
        lines(&sw),
        vec![
            line("proration", "", 1, 41_666_250, 41_666_250),
            line("proration", "", 1, 83_332_916, 83_332_916),
            line("usage", "bulk", 100_000, 0, 0),
            line("overage", "bulk", 5_000, 200, 1_000_000),
        ]
    );
    assert_eq!(total(&sw), 125_999_166);
}

async fn replaying_every_event_changes_nothing(kind: DbKind) {
    let m = september(kind).await;
    let before = m.get("/admin/v1/invoices?period=2026-09").await;
    let report = m
        .get("/admin/v1/usage?period=2026-09&group_by=day,route,key")
        .await;
    assert_eq!(m.deliver().await, 0, "every replayed event is a duplicate");
    assert_eq!(m.get("/admin/v1/invoices?period=2026-09").await, before);
    assert_eq!(
        m.get("/admin/v1/usage?period=2026-09&group_by=day,route,key")
            .await,
        report
    );
}

async fn reports_and_csv_agree_with_invoices(kind: DbKind) {
    let m = september(kind).await;
    let invoices = m.get("/admin/v1/invoices?period=2026-09").await;
    for inv in invoices["data"].as_array().unwrap() {
        let c = inv["customer_id"].as_str().unwrap();
        let usage: i64 = lines(inv)
            .iter()
            .filter(|l| !matches!(l.0.as_str(), "fee" | "proration"))
            .map(|l| l.4)
            .sum();
        // The customers are anchored on the 1st: the period is the month.
        let report = m
            .get(&format!(
                "/admin/v1/usage?customer_id={c}&from=2026-09-01&to=2026-10-01&group_by=route"
            ))
            .await;
        assert_eq!(
            report["totals"]["amount_micros"].as_i64().unwrap(),
            usage,
            "{c}"
        );
        let by_period = m
            .get(&format!(
                "/admin/v1/usage?customer_id={c}&period=2026-09&group_by="
            ))
            .await;
        assert_eq!(by_period["totals"], report["totals"], "{c}");
    }

    let json = m
        .get("/admin/v1/usage?from=2026-09-01&to=2026-10-01&group_by=day,route,key")
        .await;
    let (status, csv_body) = m
        .request(
            Method::GET,
            "/admin/v1/usage?from=2026-09-01&to=2026-10-01&group_by=day,route,key&format=csv",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        csv_body.windows(2).any(|w| w == b"\r\n"),
        "RFC 4180 line ends"
    );
    let mut r = csv::Reader::from_reader(csv_body.as_slice());
    let headers: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        headers,
        [
            "day",
            "route",
            "key_id",
            "calls",
            "billable_calls",
            "units",
            "amount_micros",
            "x402_calls",
            "x402_amount_micros"
        ]
    );
    let (mut rows, mut calls, mut billable, mut units, mut amount) = (0, 0i64, 0i64, 0i64, 0i64);
    for rec in r.records() {
        let rec = rec.unwrap();
        rows += 1;
        calls += rec[3].parse::<i64>().unwrap();
        billable += rec[4].parse::<i64>().unwrap();
        units += rec[5].parse::<i64>().unwrap();
        amount += rec[6].parse::<i64>().unwrap();
    }
    let t = &json["totals"];
    assert_eq!(rows, json["data"].as_array().unwrap().len());
    assert_eq!(calls, t["calls"].as_i64().unwrap());
    assert_eq!(billable, t["billable_calls"].as_i64().unwrap());
    assert_eq!(units, t["units"].as_i64().unwrap());
    assert_eq!(amount, t["amount_micros"].as_i64().unwrap());
    // 1,003 + 510 + 1,030 + 58 + 1,050 calls, of which the three 500s are not billable.
    assert_eq!(t["calls"], 3651);
    assert_eq!(t["billable_calls"], 3648);
    let all_usage: i64 = invoices["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(lines)
        .filter(|l| !matches!(l.0.as_str(), "fee" | "proration"))
        .map(|l| l.4)
        .sum();
    assert_eq!(amount, all_usage);

    // The invoice as CSV: one row per line, summing to the JSON total.
    let prem = m.invoice("c3_premium", "2026-09").await;
    let id = prem["id"].as_str().unwrap();
    let (status, body) = m
        .request(
            Method::GET,
            &format!("/admin/v1/invoices/{id}?format=csv"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut r = csv::Reader::from_reader(body.as_slice());
    let h = r.headers().unwrap().clone();
    let amount_col = h.iter().position(|c| c == "amount_micros").unwrap();
    let recs: Vec<_> = r.records().map(Result::unwrap).collect();
    assert_eq!(recs.len(), prem["lines"].as_array().unwrap().len());
    let sum: i64 = recs
        .iter()
        .map(|r| r[amount_col].parse::<i64>().unwrap())
        .sum();
    assert_eq!(sum, total(&prem));
    // The header uses the JSON field names (SPEC §5), and each row names
    // its invoice and the invoice's total.
    for field in [
        "id",
        "number",
        "customer_id",
        "period",
        "status",
        "currency",
        "total_micros",
    ] {
        let col = h
            .iter()
            .position(|c| c == field)
            .unwrap_or_else(|| panic!("{field}: {h:?}"));
        let want = match &prem[field] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        assert!(recs.iter().all(|r| r[col] == want), "{field}");
    }
    for field in [
        "kind",
        "description",
        "route",
        "quantity",
        "unit_price_micros",
    ] {
        assert!(h.iter().any(|c| c == field), "{field}: {h:?}");
    }
}

async fn close_finalizes_and_late_usage_lands_on_the_next_invoice(kind: DbKind) {
    let m = september(kind).await;
    let closed = m.close("2026-09").await;
    let numbers: Vec<i64> = closed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["status"], "finalized");
            i["number"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    // Closing again finalizes nothing and numbers nothing.
    assert_eq!(m.close("2026-09").await["data"], json!([]));
    let prem_sept = m.invoice("c3_premium", "2026-09").await;
    assert_eq!(prem_sept["status"], "finalized");
    assert_eq!(total(&prem_sept), 166_679_833);

    // A call of 20 September reaches the ledger after the close (say, from
    // a gateway's spill file): one overage unit at 200, billed in October.
    let late = UsageEvent {
        request_id: uuid::Uuid::now_v7().to_string(),
        ts: at(20, 12),
        customer_id: "c3_premium".into(),
        key_id: "key_c3_premium".into(),
        plan_id: "premium".into(),
        route: "prices".into(),
        method: "GET".into(),
        status: 200,
        billable: true,
        units: 1,
        overage_units: 1,
        amount_micros: 200,
        credits_micros: 0,
        period: "2026-09".into(),
        latency_us: 1000,
        payment: None,
    };
    assert_eq!(
        m.db.insert_events(std::slice::from_ref(&late))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        m.db.insert_events(std::slice::from_ref(&late))
            .await
            .unwrap(),
        0
    );

    assert_eq!(
        m.invoice("c3_premium", "2026-09").await,
        prem_sept,
        "finalized is immutable"
    );
    let oct = m.invoice("c3_premium", "2026-10").await;
    assert_eq!(oct["status"], "draft");
    let adj: Vec<_> = lines(&oct)
        .into_iter()
        .filter(|l| l.0 == "adjustment")
        .collect();
    assert_eq!(adj, vec![line("adjustment", "prices", 1, 200, 200)]);
    assert_eq!(
        oct["lines"].as_array().unwrap().last().unwrap()["source_period"],
        "2026-09"
    );
    assert_eq!(total(&oct), 166_665_833 + 200);
    // The usage report shows the late call in September, where it happened.
    let sept = m
        .get("/admin/v1/usage?customer_id=c3_premium&period=2026-09&group_by=")
        .await;
    assert_eq!(sept["totals"]["amount_micros"], 14_200);

    // October closes with the adjustment; November owes nothing more for it.
    let closed = m.close("2026-10").await;
    assert_eq!(closed["data"].as_array().unwrap().len(), 5);
    let oct_final = m.invoice("c3_premium", "2026-10").await;
    assert_eq!(oct_final["status"], "finalized");
    assert_eq!(total(&oct_final), 166_665_833 + 200);
    let nov = m.invoice("c3_premium", "2026-11").await;
    assert!(lines(&nov).iter().all(|l| l.0 != "adjustment"), "{nov}");

    // The database itself refuses to change a finalized invoice.
    let pool = sqlx::AnyPool::connect(&m._test_db.url).await.unwrap();
    let err = sqlx::query("UPDATE invoices SET total_micros = 0")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    assert!(sqlx::query("DELETE FROM invoice_lines")
        .execute(&pool)
        .await
        .is_err());

    // Closing is audited.
    let audit = m.get("/admin/v1/audit?resource=period").await;
    let actions: Vec<_> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["resource_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        vec![
            ("invoices.close", "2026-10"),
            ("invoices.close", "2026-09"),
            ("invoices.close", "2026-09")
        ]
    );
}

async fn two_closes_at_once_number_each_invoice_once(kind: DbKind) {
    let m = september(kind).await;
    let (a, b) = tokio::join!(m.close("2026-09"), m.close("2026-09"));
    let mut numbers: Vec<i64> = [a, b]
        .iter()
        .flat_map(|c| c["data"].as_array().unwrap().clone())
        .map(|i| i["number"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(
        numbers,
        vec![1, 2, 3, 4, 5],
        "each invoice finalized once, no gaps"
    );
    let all = m.get("/admin/v1/invoices?period=2026-09").await;
    let mut listed: Vec<i64> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["number"].as_i64().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, numbers);
}

paygate_testkit::on_both_databases!(
    scripted_month_invoices_are_exact,
    replaying_every_event_changes_nothing,
    reports_and_csv_agree_with_invoices,
    close_finalizes_and_late_usage_lands_on_the_next_invoice,
    two_closes_at_once_number_each_invoice_once,
);
