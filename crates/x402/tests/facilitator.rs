//! The facilitator client against the test kit's mock facilitator on
//! loopback: answers read from the body whatever the status, timeouts,
//! nonsense, and settle retried with the same request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use paygate_testkit::x402::{MockFacilitator, Mode};
use paygate_x402::facilitator::{Facilitator, FacilitatorError, Request};
use serde_json::{json, Value};

fn payment(value: &str) -> (Value, Value) {
    let payload = json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
        "payload": {"signature": "0xs", "authorization": {"from": "0xPAYER", "to": "0xT",
        "value": value, "validAfter": "0", "validBefore": "1999999999", "nonce": "0x01"}}});
    let reqs = json!({"scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "17000",
        "resource": "http://gw/x", "description": "d", "mimeType": "application/json",
        "payTo": "0xT", "maxTimeoutSeconds": 60, "asset": "0xA",
        "extra": {"name": "USDC", "version": "2"}});
    (payload, reqs)
}

fn request<'a>(p: &'a (Value, Value)) -> Request<'a> {
    Request {
        x402_version: 1,
        payment_payload: &p.0,
        payment_requirements: &p.1,
    }
}

#[tokio::test]
async fn verify_and_settle_an_honest_payment() {
    let mock = MockFacilitator::start(Mode::Honest).await;
    let f = Facilitator::new(&mock.url(), Duration::from_secs(2));
    let p = payment("17000");
    let v = f.verify(&request(&p)).await.unwrap();
    assert!(v.is_valid);
    assert_eq!(v.payer.as_deref(), Some("0xPAYER"));
    let s = f.settle(&request(&p)).await.unwrap();
    assert!(s.success);
    assert_eq!(s.network.as_deref(), Some("base-sepolia"));
    assert!(s.transaction.unwrap().starts_with("0x"));
    assert_eq!(mock.last_settle().unwrap()["paymentPayload"], p.0);
}

#[tokio::test]
async fn refusals_come_with_the_facilitators_reason() {
    let mock = MockFacilitator::start(Mode::Honest).await;
    let f = Facilitator::new(&mock.url(), Duration::from_secs(2));
    let short = payment("16999");
    let v = f.verify(&request(&short)).await.unwrap();
    assert!(!v.is_valid);
    assert_eq!(
        v.invalid_reason.as_deref(),
        Some("invalid_exact_evm_payload_authorization_value")
    );
    mock.set_mode(Mode::SettleFails("insufficient_funds".into()));
    // HTTP 200 with success: false is a failure.
    let s = f.settle(&request(&payment("17000"))).await.unwrap();
    assert!(!s.success);
    assert_eq!(s.error_reason.as_deref(), Some("insufficient_funds"));
}

#[tokio::test]
async fn a_silent_or_garbled_facilitator_is_an_error_not_an_answer() {
    let mock = MockFacilitator::start(Mode::Hang).await;
    let f = Facilitator::new(&mock.url(), Duration::from_millis(200));
    let p = payment("17000");
    let started = Instant::now();
    assert_eq!(
        f.verify(&request(&p)).await,
        Err(FacilitatorError::Timeout(Duration::from_millis(200)))
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    mock.set_mode(Mode::Garbage);
    let e = f.verify(&request(&p)).await.unwrap_err();
    assert!(
        matches!(e, FacilitatorError::BadAnswer { status: 502, .. }),
        "{e}"
    );
    assert!(!e.is_transient());
    let nobody = Facilitator::new("http://127.0.0.1:1", Duration::from_millis(200));
    assert!(matches!(
        nobody.verify(&request(&p)).await,
        Err(FacilitatorError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_settle_whose_answer_is_lost_is_sent_again_until_the_deadline() {
    // Two settles never answer; the third does.
    let mock = MockFacilitator::start(Mode::SettleHangs(2)).await;
    let f = Facilitator::new(&mock.url(), Duration::from_millis(200));
    let p = payment("17000");
    let s = f
        .settle_until(&request(&p), Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert!(s.success);
    assert_eq!(mock.settles(), 3);
    // With a deadline too near, the error stays: settlement unknown.
    let mock = MockFacilitator::start(Mode::Hang).await;
    let f = Facilitator::new(&mock.url(), Duration::from_millis(100));
    let e = f
        .settle_until(&request(&p), Instant::now() + Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(mock.settles() >= 2, "retried: {}", mock.settles());
}
