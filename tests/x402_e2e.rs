//! SPEC §8 end to end: x402 pay-per-call through real paygate processes, a
//! mock facilitator and a mock upstream on loopback. Every refusal of the
//! contract, the order verify → serve → settle, and the ledger, payments
//! list, usage report and invoice agreeing to the micro.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use paygate_testkit::x402::{decode_header, MockFacilitator, Mode, PaymentSpec, ASSET, PAY_TO};
use serde_json::{json, Value};

const PRICE: u64 = 17_000;

/// `[x402]` against `fac`, and one paid route `paid` over the whole mock
/// upstream (`/v1/...`). `x402` and `route` add keys to either.
fn config(fac: &MockFacilitator, upstream: SocketAddr, x402: &str, route: &str) -> String {
    format!(
        r#"
[x402]
facilitator_url = "{fac}"
pay_to = "{PAY_TO}"
asset = "{ASSET}"
facilitator_timeout_ms = 400
max_timeout_seconds = 2
{x402}

[[upstreams]]
name = "mock"
targets = ["{upstream}"]
read_timeout_ms = 2000

[[routes]]
id = "paid"
path_prefix = "/v1"
upstream = "mock"
x402_price_micros = {PRICE}
{route}
"#,
        fac = fac.url()
    )
}

async fn setup(
    mode: Mode,
    x402: &str,
    route: &str,
) -> (tempfile::TempDir, Mock, MockFacilitator, Paygate) {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let fac = MockFacilitator::start(mode).await;
    let pg = Paygate::start(dir.path(), &config(&fac, mock.addr, x402, route)).await;
    (dir, mock, fac, pg)
}

fn payer(n: u8) -> String {
    format!("0x{}", format!("{n:02x}").repeat(20))
}

async fn send(pg: &Paygate, path: &str, headers: &[(&str, String)]) -> reqwest::Response {
    let mut req = pg.client.get(format!("{}{path}", pg.gw));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.unwrap()
}

async fn pay_v1(pg: &Paygate, path: &str, p: &PaymentSpec) -> reqwest::Response {
    send(pg, path, &[("x-payment", p.x_payment())]).await
}

async fn pay_v2(pg: &Paygate, path: &str, p: &PaymentSpec) -> reqwest::Response {
    send(pg, path, &[("payment-signature", p.payment_signature())]).await
}

/// The error body's code and reason.
async fn refusal(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    (
        status,
        v["error"]["code"].as_str().unwrap_or_default().to_owned(),
        v["error"]["reason"].as_str().unwrap_or_default().to_owned(),
    )
}

async fn payments(pg: &Paygate, query: &str) -> Vec<Value> {
    let (s, b) = pg
        .admin("GET", &format!("/admin/v1/payments{query}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"].as_array().unwrap().clone()
}

/// Waits for the ledger to hold `n` payments.
async fn expect_payments(pg: &Paygate, n: usize) -> Vec<Value> {
    eventually(
        "payments in the ledger",
        Duration::from_secs(10),
        || async {
            let list = payments(pg, "?limit=1000").await;
            (list.len() == n).then_some(list)
        },
    )
    .await
}

#[tokio::test]
async fn a_caller_without_credentials_is_offered_both_versions() {
    let (_d, mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let resp = send(&pg, "/v1/signals/BTC", &[]).await;
    assert_eq!(resp.status().as_u16(), 402);
    let v2 = decode_header(&header(&resp, "payment-required").unwrap());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["code"], "payment_required");
    assert!(body["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
    let a = &body["accepts"][0];
    assert_eq!(a["scheme"], "exact");
    assert_eq!(a["network"], "base-sepolia");
    assert_eq!(a["maxAmountRequired"], "17000");
    assert_eq!(a["payTo"], PAY_TO);
    assert_eq!(a["asset"], ASSET);
    assert_eq!(a["maxTimeoutSeconds"], 2);
    assert_eq!(a["extra"], json!({"name": "USDC", "version": "2"}));
    assert!(a["resource"].as_str().unwrap().ends_with("/v1/signals/BTC"));
    assert_eq!(a["mimeType"], "application/json");

    assert_eq!(v2["x402Version"], 2);
    assert!(v2["resource"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/v1/signals/BTC"));
    let r = &v2["accepts"][0];
    assert_eq!(r["network"], "eip155:84532");
    assert_eq!(r["amount"], "17000");
    assert_eq!(r["payTo"], PAY_TO);
    assert_eq!(mock.hits(), 0);
    assert_eq!(fac.verifies(), 0);
}

#[tokio::test]
async fn a_v1_payment_is_verified_served_settled_and_recorded() {
    let (_d, mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let p = PaymentSpec::new(&payer(1), PRICE);
    let resp = pay_v1(&pg, "/v1/signals/BTC", &p).await;
    assert_eq!(resp.status().as_u16(), 200);
    let settled = decode_header(&header(&resp, "x-payment-response").unwrap());
    assert!(header(&resp, "payment-response").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["path"], "/v1/signals/BTC", "the upstream's own answer");
    assert_eq!(settled["success"], true);
    assert_eq!(settled["payer"], payer(1));
    assert_eq!(settled["network"], "base-sepolia");
    let tx = settled["transaction"].as_str().unwrap().to_owned();
    assert!(tx.starts_with("0x"));
    assert_eq!((mock.hits(), fac.verifies(), fac.settles()), (1, 1, 1));
    // The facilitator was sent the client's payload and the v1 requirements.
    let sent = fac.last_settle().unwrap();
    assert_eq!(sent["x402Version"], 1);
    assert_eq!(sent["paymentPayload"], p.v1());
    assert_eq!(sent["paymentRequirements"]["maxAmountRequired"], "17000");
    // The upstream is not shown the payment.
    assert!(!mock.last_headers().contains_key("x-payment"));

    let list = expect_payments(&pg, 1).await;
    let row = &list[0];
    assert_eq!(row["state"], "settled");
    assert_eq!(row["payer"], payer(1));
    assert_eq!(row["amount_micros"], 17_000);
    assert_eq!(row["amount_units"], "17000");
    assert_eq!(row["network"], "eip155:84532");
    assert_eq!(row["asset"], ASSET);
    assert_eq!(row["transaction"], tx.as_str());
    assert_eq!(row["customer_id"], format!("x402:{}", payer(1)));
    pg.expect_ledger(&format!("x402:{}", payer(1)), 1, 0).await;
}

#[tokio::test]
async fn a_v2_payment_answers_with_payment_response() {
    let (_d, _mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let p = PaymentSpec::new(&payer(2), PRICE + 5);
    let resp = pay_v2(&pg, "/v1/signals/ETH", &p).await;
    assert_eq!(resp.status().as_u16(), 200);
    let settled = decode_header(&header(&resp, "payment-response").unwrap());
    assert!(header(&resp, "x-payment-response").is_none());
    assert_eq!(settled["success"], true);
    assert_eq!(settled["network"], "eip155:84532");
    let sent = fac.last_settle().unwrap();
    assert_eq!(sent["x402Version"], 2);
    assert_eq!(sent["paymentRequirements"]["amount"], "17000");
    let list = expect_payments(&pg, 1).await;
    // The route's price is what the call cost; the payer signed for more.
    assert_eq!(list[0]["amount_micros"], 17_000);
    assert_eq!(list[0]["amount_units"], "17005");
}

#[tokio::test]
async fn payments_that_do_not_match_are_refused_without_the_facilitator() {
    let (_d, mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let resp = send(&pg, "/v1/x", &[("x-payment", "%%% not base64".into())]).await;
    assert_eq!(refusal(resp).await.0, 400);
    let resp = send(
        &pg,
        "/v1/x",
        &[(
            "payment-signature",
            PaymentSpec::encode(&json!({"hello": 1})),
        )],
    )
    .await;
    let (s, code, _) = refusal(resp).await;
    assert_eq!((s, code.as_str()), (400, "invalid_payment"));

    let base = PaymentSpec::new(&payer(3), PRICE);
    let mut cases: Vec<(&str, PaymentSpec, bool)> = Vec::new();
    let mut p = base.clone();
    p.network = "base".into();
    cases.push(("invalid_network", p, false));
    let mut p = base.clone();
    p.network_id = "eip155:8453".into();
    cases.push(("invalid_network", p, true));
    let mut p = base.clone();
    p.asset = "0x0000000000000000000000000000000000000001".into();
    cases.push(("invalid_asset", p, true));
    let mut p = base.clone();
    p.to = "0x1111111111111111111111111111111111111111".into();
    cases.push(("invalid_pay_to", p, false));
    let mut p = base.clone();
    p.value = (PRICE - 1).to_string();
    cases.push(("insufficient_amount", p, false));
    let mut p = base.clone();
    p.valid_before = 1_000_000;
    cases.push(("expired", p, true));
    for (reason, p, v2) in cases {
        let resp = if v2 {
            pay_v2(&pg, "/v1/x", &p).await
        } else {
            pay_v1(&pg, "/v1/x", &p).await
        };
        assert!(
            header(&resp, "payment-required").is_some(),
            "{reason}: the offer comes back"
        );
        assert_eq!(
            refusal(resp).await,
            (402, "payment_invalid".into(), reason.into()),
            "{reason}"
        );
    }
    assert_eq!((mock.hits(), fac.verifies(), fac.settles()), (0, 0, 0));
    assert!(payments(&pg, "").await.is_empty());
}

#[tokio::test]
async fn a_payment_is_served_once_and_its_replay_refused() {
    let (_d, mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let p = PaymentSpec::new(&payer(4), PRICE);
    assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 200);
    // The same authorization again, in either version.
    let replay = refusal(pay_v1(&pg, "/v1/a", &p).await).await;
    assert_eq!(replay, (402, "payment_invalid".into(), "replayed".into()));
    let replay = refusal(pay_v2(&pg, "/v1/b", &p).await).await;
    assert_eq!(replay.2, "replayed");
    assert_eq!((mock.hits(), fac.verifies(), fac.settles()), (1, 1, 1));
}

#[tokio::test]
async fn invalid_at_verify_is_refused_with_its_reason_and_may_be_sent_again() {
    let (_d, mock, fac, pg) = setup(Mode::Invalid("insufficient_funds".into()), "", "").await;
    let p = PaymentSpec::new(&payer(5), PRICE);
    let r = refusal(pay_v1(&pg, "/v1/a", &p).await).await;
    assert_eq!(
        r,
        (402, "payment_invalid".into(), "insufficient_funds".into())
    );
    assert_eq!((mock.hits(), fac.settles()), (0, 0));
    // The payer topped up: the same payment is good now (it was never used).
    fac.set_mode(Mode::Honest);
    assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 200);
    assert_eq!(fac.settles(), 1);
}

#[tokio::test]
async fn a_failed_settlement_never_serves_the_held_answer() {
    for mode in [
        Mode::SettleFails("insufficient_funds".into()),
        Mode::SettleRefused("invalid_transaction_state".into()),
    ] {
        let (_d, mock, fac, pg) = setup(mode.clone(), "", "").await;
        let p = PaymentSpec::new(&payer(6), PRICE);
        let resp = pay_v2(&pg, "/v1/secret", &p).await;
        assert!(header(&resp, "payment-response").is_none());
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 402, "{mode:?}: {text}");
        assert!(
            !text.contains("/v1/secret"),
            "the upstream's answer leaked: {text}"
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "payment_failed");
        let want = match &mode {
            Mode::SettleFails(r) | Mode::SettleRefused(r) => r.clone(),
            _ => unreachable!(),
        };
        assert_eq!(v["error"]["reason"], want.as_str());
        assert_eq!((mock.hits(), fac.settles()), (1, 1));
        let list = expect_payments(&pg, 1).await;
        assert_eq!(list[0]["state"], "failed");
        assert_eq!(list[0]["reason"], want.as_str());
        pg.expect_ledger(&format!("x402:{}", payer(6)), 0, 1).await;
    }
}

#[tokio::test]
async fn a_facilitator_that_hangs_at_verify_is_a_504_and_nothing_is_served() {
    let (_d, mock, fac, pg) = setup(Mode::Hang, "", "").await;
    let p = PaymentSpec::new(&payer(7), PRICE);
    let started = std::time::Instant::now();
    let r = refusal(pay_v1(&pg, "/v1/a", &p).await).await;
    assert_eq!((r.0, r.1.as_str()), (504, "facilitator_timeout"));
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!((mock.hits(), fac.verifies()), (0, 1));
    // Not used: the same payment goes through once the facilitator is back.
    fac.set_mode(Mode::Honest);
    assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 200);
}

#[tokio::test]
async fn settle_is_retried_with_the_same_payload_then_recorded_unknown() {
    // The first settle hangs, the second answers: served, settled once.
    let (_d, _mock, fac, pg) = setup(Mode::SettleHangs(1), "", "").await;
    let p = PaymentSpec::new(&payer(8), PRICE);
    let resp = pay_v1(&pg, "/v1/a", &p).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "x-payment-response").is_some());
    assert_eq!(fac.settles(), 2);
    assert_eq!(fac.last_settle().unwrap()["paymentPayload"], p.v1());

    // Never answers within max_timeout_seconds: 504, recorded unknown, and
    // the payment is not accepted again (its money may have moved).
    fac.set_mode(Mode::SettleHangs(u64::MAX));
    let p = PaymentSpec::new(&payer(9), PRICE);
    let started = std::time::Instant::now();
    let resp = pay_v1(&pg, "/v1/b", &p).await;
    assert!(header(&resp, "x-payment-response").is_none());
    let r = refusal(resp).await;
    assert_eq!(
        r,
        (
            504,
            "facilitator_timeout".into(),
            "settlement_unknown".into()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let list = expect_payments(&pg, 2).await;
    let unknown: Vec<&Value> = list
        .iter()
        .filter(|r| r["state"] == "settlement_unknown")
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0]["payer"], payer(9));
    assert_eq!(payments(&pg, "?state=settlement_unknown").await.len(), 1);
    let metrics = pg.metrics().await;
    for line in [
        "paygate_x402_payments_total{state=\"settled\"} 1",
        "paygate_x402_payments_total{state=\"settlement_unknown\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
    fac.set_mode(Mode::Honest);
    assert_eq!(refusal(pay_v1(&pg, "/v1/b", &p).await).await.2, "replayed");
}

#[tokio::test]
async fn upstream_errors_pass_through_unsettled_and_unbilled() {
    let (_d, mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let p = PaymentSpec::new(&payer(10), PRICE);
    for code in [404u16, 500] {
        let resp = pay_v1(&pg, &format!("/v1/status/{code}"), &p).await;
        assert_eq!(resp.status().as_u16(), code);
        assert!(header(&resp, "x-payment-response").is_none());
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["status"], code, "the upstream's own answer");
    }
    assert_eq!((mock.hits(), fac.settles()), (2, 0));
    // Never used, so it still pays for a call that succeeds.
    assert_eq!(pay_v1(&pg, "/v1/ok", &p).await.status().as_u16(), 200);
    assert_eq!(fac.settles(), 1);
    pg.expect_ledger(&format!("x402:{}", payer(10)), 1, 2).await;
    assert_eq!(expect_payments(&pg, 1).await[0]["state"], "settled");
}

#[tokio::test]
async fn an_answer_too_large_to_hold_is_a_502_and_not_settled() {
    let (_d, mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let p = PaymentSpec::new(&payer(11), PRICE);
    // The test gateway holds at most gateway.max_body_bytes = 1024.
    let r = refusal(pay_v1(&pg, "/v1/big/5000", &p).await).await;
    assert_eq!((r.0, r.1.as_str()), (502, "upstream_unavailable"));
    assert_eq!((mock.hits(), fac.settles()), (1, 0));
    let resp = pay_v1(&pg, "/v1/big/1000", &p).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap().len(), 1000);
}

#[tokio::test]
async fn anonymous_payers_are_rate_limited_by_address() {
    let (_d, _mock, _fac, pg) = setup(
        Mode::Honest,
        "",
        "x402_rate_limit = { requests = 1, per = \"minute\", burst = 1 }",
    )
    .await;
    let a = payer(12);
    assert_eq!(
        pay_v1(&pg, "/v1/a", &PaymentSpec::new(&a, PRICE))
            .await
            .status()
            .as_u16(),
        200
    );
    let second = PaymentSpec::new(&a, PRICE);
    let resp = pay_v1(&pg, "/v1/a", &second).await;
    assert!(header(&resp, "retry-after").is_some());
    assert_eq!(refusal(resp).await.1, "rate_limited");
    // Another payer has its own allowance.
    assert_eq!(
        pay_v1(&pg, "/v1/a", &PaymentSpec::new(&payer(13), PRICE))
            .await
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn a_customer_out_of_quota_may_pay_and_finance_sees_it_all() {
    let (_d, _mock, fac, pg) = setup(Mode::Honest, "", "").await;
    let key = pg
        .customer_with_plan("acme", json!({"quota": {"calls": 1, "period": "month"}}))
        .await;
    assert_eq!(pg.get("/v1/a", &key).await.status().as_u16(), 200);
    let resp = pg.get("/v1/a", &key).await;
    assert_eq!(resp.status().as_u16(), 402);
    let offer = decode_header(&header(&resp, "payment-required").unwrap());
    assert_eq!(offer["accepts"][0]["amount"], "17000");
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("0"));
    assert_eq!(error_code(resp).await, "quota_exhausted");

    // The customer pays for the call with its key and a payment.
    let p = PaymentSpec::new(&payer(14), PRICE);
    let resp = pg
        .client
        .get(format!("{}/v1/a", pg.gw))
        .header("x-api-key", &key)
        .header("x-payment", p.x_payment())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(header(&resp, "x-payment-response").is_some());
    assert_eq!(header(&resp, "x-quota-remaining").as_deref(), Some("0"));
    assert_eq!(fac.settles(), 1);
    pg.expect_ledger("acme", 2, 0).await;

    // Payments list, usage report and invoice agree to the micro.
    let list = expect_payments(&pg, 1).await;
    assert_eq!(list[0]["customer_id"], "acme");
    let (s, report) = pg
        .admin(
            "GET",
            "/admin/v1/usage?customer_id=acme&group_by=route",
            None,
        )
        .await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["totals"]["calls"], 2);
    assert_eq!(
        report["totals"]["units"], 1,
        "the paid call spends no quota"
    );
    assert_eq!(report["totals"]["x402_calls"], 1);
    assert_eq!(report["totals"]["x402_amount_micros"], 17_000);
    assert_eq!(report["totals"]["amount_micros"], 0);
    let (s, invoices) = pg
        .admin("GET", "/admin/v1/invoices?customer_id=acme", None)
        .await;
    assert_eq!(s, 200, "{invoices}");
    let inv = &invoices["data"][0];
    let x402: Vec<&Value> = inv["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "x402")
        .collect();
    assert_eq!(x402.len(), 1, "{inv}");
    assert_eq!(x402[0]["quantity"], 1);
    assert_eq!(x402[0]["amount_micros"], 17_000);
    assert_eq!(x402[0]["route"], "paid");
    assert_eq!(inv["total_micros"], 0, "paid already: never due");
    assert_eq!(inv["amount_due_micros"], 0);

    let (s, csv) = pg.admin("GET", "/admin/v1/payments?format=csv", None).await;
    assert_eq!(s, 200);
    let csv = csv.as_str().unwrap().to_owned();
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("request_id,ts,customer_id,key_id,route"));
    assert!(lines.next().unwrap().contains(",acme,"));
    // Anonymous payers are grouped by address in the report.
    let p = PaymentSpec::new(&payer(15), PRICE);
    assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 200);
    pg.expect_ledger(&format!("x402:{}", payer(15)), 1, 0).await;
    let (_, anon) = pg
        .admin(
            "GET",
            &format!("/admin/v1/usage?customer_id=x402:{}", payer(15)),
            None,
        )
        .await;
    assert_eq!(anon["totals"]["x402_amount_micros"], 17_000, "{anon}");
}

#[tokio::test]
async fn the_payments_list_is_filtered_and_paged() {
    let (_d, _mock, fac, pg) = setup(Mode::Honest, "", "").await;
    for i in 0..3 {
        let p = PaymentSpec::new(&payer(20 + i), PRICE);
        assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 200);
    }
    fac.set_mode(Mode::SettleFails("nope".into()));
    let p = PaymentSpec::new(&payer(23), PRICE);
    assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 402);
    let all = expect_payments(&pg, 4).await;
    let (s, page) = pg.admin("GET", "/admin/v1/payments?limit=2", None).await;
    assert_eq!(s, 200);
    assert_eq!(page["has_more"], true);
    let after = page["data"][1]["request_id"].as_str().unwrap();
    let (_, rest) = pg
        .admin(
            "GET",
            &format!("/admin/v1/payments?limit=2&starting_after={after}"),
            None,
        )
        .await;
    assert_eq!(rest["has_more"], false);
    let ids: Vec<&Value> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["data"].as_array().unwrap())
        .map(|r| &r["request_id"])
        .collect();
    let want: Vec<&Value> = all.iter().map(|r| &r["request_id"]).collect();
    assert_eq!(ids, want);
    assert_eq!(payments(&pg, "?state=settled").await.len(), 3);
    assert_eq!(payments(&pg, "?state=failed").await.len(), 1);
    assert_eq!(
        payments(&pg, &format!("?payer={}", payer(21))).await.len(),
        1
    );
    assert_eq!(
        payments(&pg, "?from=2000-01-01&to=2000-01-02").await.len(),
        0
    );
    for bad in ["?state=paid", "?format=xml", "?from=yesterday"] {
        let (s, b) = pg
            .admin("GET", &format!("/admin/v1/payments{bad}"), None)
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
        assert_eq!(b["error"]["code"], "bad_request");
    }
}

#[tokio::test]
async fn a_replay_is_refused_after_a_restart() {
    let (_d, mock, fac, mut pg) = setup(Mode::Honest, "", "").await;
    let p = PaymentSpec::new(&payer(30), PRICE);
    assert_eq!(pay_v1(&pg, "/v1/a", &p).await.status().as_u16(), 200);
    expect_payments(&pg, 1).await;
    // The memory store forgets its claims; the ledger does not.
    pg.restart().await;
    assert_eq!(refusal(pay_v1(&pg, "/v1/a", &p).await).await.2, "replayed");
    assert_eq!((mock.hits(), fac.settles()), (1, 1));
}

#[tokio::test]
async fn fifty_concurrent_copies_on_two_gateways_are_served_and_settled_once() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let fac = MockFacilitator::start(Mode::Honest).await;
    let prefix = format!("x402-{}", uuid::Uuid::now_v7().simple());
    let store = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 500\n",
        redis_url()
    );
    let cfg = format!("{store}{}", config(&fac, mock.addr, "", ""));
    let a = Paygate::start_named(dir.path(), "a", &cfg, Wait::Ready).await;
    let b = Paygate::start_named(dir.path(), "b", &cfg, Wait::Ready).await;
    let p = PaymentSpec::new(&payer(40), PRICE);
    let mut calls = Vec::new();
    for i in 0..50 {
        let (client, gw, value) = (
            a.client.clone(),
            if i % 2 == 0 {
                a.gw.clone()
            } else {
                b.gw.clone()
            },
            p.x_payment(),
        );
        calls.push(tokio::spawn(async move {
            let resp = client
                .get(format!("{gw}/v1/a"))
                .header("x-payment", value)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let why = match v["error"]["reason"].as_str() {
                Some(r) => r.to_owned(),
                None => v.to_string(),
            };
            (status, why)
        }));
    }
    let mut served = 0;
    for c in calls {
        match c.await.unwrap() {
            (200, _) => served += 1,
            (402, reason) => assert_eq!(reason, "replayed"),
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(served, 1);
    assert_eq!((mock.hits(), fac.verifies(), fac.settles()), (1, 1, 1));
    expect_payments(&a, 1).await;
    // Another gateway, started after: the claim lives in Redis.
    drop(a);
    let c = Paygate::start_named(dir.path(), "c", &cfg, Wait::Ready).await;
    assert_eq!(refusal(pay_v1(&c, "/v1/a", &p).await).await.2, "replayed");
    drop(b);
}

#[tokio::test]
async fn reconcile_lists_payments_whose_settlement_is_unknown() {
    let ledger = Ledger::new(paygate_testkit::DbKind::Postgres);
    let mock = mock_upstream().await;
    let fac = MockFacilitator::start(Mode::SettleHangs(u64::MAX)).await;
    let prefix = format!("x402r-{}", uuid::Uuid::now_v7().simple());
    let cfg = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"\ntimeout_ms = 1000\n{}",
        redis_url(),
        config(&fac, mock.addr, "", "")
    );
    let pg = Paygate::start_named(ledger.path(), "a", &cfg, Wait::Ready).await;
    let p = PaymentSpec::new(&payer(50), PRICE);
    assert_eq!(refusal(pay_v1(&pg, "/v1/a", &p).await).await.0, 504);
    let list = expect_payments(&pg, 1).await;
    let period = chrono::Utc::now().format("%Y-%m").to_string();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_paygate"))
        .args(["billing", "reconcile", "--config"])
        .arg(&pg.config_path)
        .args(["--period", &period])
        .env("PAYGATE_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("x402 payments with unknown settlement: 1"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with(list[0]["request_id"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("no line for the payment: {stdout}"));
    assert!(
        line.contains(&payer(50)) && line.contains(&p.nonce),
        "{line}"
    );
}

/// Runs the official x402 Python SDK (`tests/x402_sdk_client.py`, needs
/// `pip install 'x402[evm]'`): (exit code, stdout, stderr).
fn sdk(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/x402_sdk_client.py"
        ))
        .args(args)
        .output()
        .expect("python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_official_x402_sdk_reads_our_offers_pays_and_reads_the_settlement() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_upstream().await;
    let fac = MockFacilitator::start(Mode::Honest).await;
    // The SDK signs for maxTimeoutSeconds: give it the production default.
    let cfg = config(&fac, mock.addr, "", "").replace("max_timeout_seconds = 2", "");
    let pg = Paygate::start(dir.path(), &cfg).await;
    // A test key (never a real one): its address is the payer.
    let key = "0x0000000000000000000000000000000000000000000000000000000000000001";
    for version in ["1", "2"] {
        let offer = send(&pg, "/v1/signals/BTC", &[]).await;
        assert_eq!(offer.status().as_u16(), 402);
        let header_v2 = header(&offer, "payment-required").unwrap();
        let body = offer.text().await.unwrap();
        let (offer_header, offer_body) = if version == "1" {
            ("", body.as_str())
        } else {
            (header_v2.as_str(), "")
        };
        let (code, out, err) = sdk(&[
            "pay",
            "--version",
            version,
            "--offer-header",
            offer_header,
            "--offer-body",
            offer_body,
            "--private-key",
            key,
        ]);
        assert_eq!(code, 0, "the SDK refused our v{version} offer: {err}");
        let (name, value) = out.split_once(' ').unwrap();
        let want = if version == "1" {
            "X-PAYMENT"
        } else {
            "PAYMENT-SIGNATURE"
        };
        assert_eq!(name, want);
        let resp = send(&pg, "/v1/signals/BTC", &[(name, value.to_owned())]).await;
        assert_eq!(resp.status().as_u16(), 200, "v{version}");
        let settled_name = if version == "1" {
            "x-payment-response"
        } else {
            "payment-response"
        };
        let settled = header(&resp, settled_name).unwrap();
        let (code, out, err) = sdk(&["settled", "--version", version, "--header", &settled]);
        assert_eq!(
            code, 0,
            "the SDK cannot read our v{version} settlement: {err}"
        );
        let read: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(read["success"], true);
        assert_eq!(
            read["payer"].as_str().unwrap().to_ascii_lowercase(),
            "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf"
        );
    }
    assert_eq!(fac.settles(), 2);
    let list = expect_payments(&pg, 2).await;
    assert!(list.iter().all(|p| p["state"] == "settled"));
}
