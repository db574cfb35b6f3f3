//! The demo's x402 facilitator: a SIMULATION. It moves no money and checks
//! no signature. It checks what a real facilitator checks of the payment's
//! shape (the amount covers the requirements, the payee is the one
//! required, the authorization is valid now, its nonce was not used) and
//! answers `/verify` and `/settle` in the protocol's JSON, with a made-up
//! transaction hash. It lets `serve --demo` show the whole x402 flow with
//! curl; a real deployment points `[x402] facilitator_url` at a real
//! facilitator.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Where the demo serves it, under the demo upstream's address.
pub const PATH: &str = "/simulated-x402-facilitator";

#[derive(Default)]
struct Ledger {
    /// Nonces settled so far (payer:nonce): a nonce is spent once, as on chain.
    used: parking_lot::Mutex<HashSet<String>>,
}

pub fn router() -> Router {
    Router::new()
        .route(&format!("{PATH}/verify"), post(verify))
        .route(&format!("{PATH}/settle"), post(settle))
        .with_state(Arc::new(Ledger::default()))
}

fn field<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn number(s: Option<&str>) -> Option<u128> {
    s.filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// The payer and `payer:nonce`, or why the payment is not good.
fn check(req: &Value, used: &HashSet<String>) -> Result<(String, String), &'static str> {
    let auth = ["paymentPayload", "payload", "authorization"];
    let get = |k: &str| {
        let mut p = auth.to_vec();
        p.push(k);
        field(req, &p)
    };
    let reqs = req.get("paymentRequirements").ok_or("invalid_payload")?;
    let required = number(
        reqs.get("maxAmountRequired")
            .or_else(|| reqs.get("amount"))
            .and_then(Value::as_str),
    )
    .ok_or("invalid_payment_requirements")?;
    let value = number(get("value")).ok_or("invalid_payload")?;
    if value < required {
        return Err("invalid_exact_evm_payload_authorization_value");
    }
    let pay_to = reqs
        .get("payTo")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !get("to").is_some_and(|to| to.eq_ignore_ascii_case(pay_to)) {
        return Err("invalid_exact_evm_payload_recipient_mismatch");
    }
    let now = u128::from(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0));
    if number(get("validBefore")).is_none_or(|t| t <= now) {
        return Err("invalid_exact_evm_payload_authorization_valid_before");
    }
    if number(get("validAfter")).is_none_or(|t| t > now) {
        return Err("invalid_exact_evm_payload_authorization_valid_after");
    }
    let payer = get("from").ok_or("invalid_payload")?.to_ascii_lowercase();
    let nonce = get("nonce").ok_or("invalid_payload")?.to_ascii_lowercase();
    let key = format!("{payer}:{nonce}");
    if used.contains(&key) {
        return Err("invalid_exact_evm_payload_authorization_nonce_used");
    }
    Ok((payer, key))
}

async fn verify(State(l): State<Arc<Ledger>>, Json(req): Json<Value>) -> Json<Value> {
    let used = l.used.lock().clone();
    Json(match check(&req, &used) {
        Ok((payer, _)) => json!({"isValid": true, "payer": payer, "simulated": true}),
        Err(reason) => json!({"isValid": false, "invalidReason": reason, "simulated": true}),
    })
}

async fn settle(State(l): State<Arc<Ledger>>, Json(req): Json<Value>) -> Json<Value> {
    let network = field(&req, &["paymentRequirements", "network"]).unwrap_or_default();
    let mut used = l.used.lock();
    Json(match check(&req, &used) {
        Ok((payer, key)) => {
            // Not a real transaction: the nonce's hash stands in for one.
            let tx = format!("0x{:064x}", fxhash(&key));
            used.insert(key);
            json!({"success": true, "transaction": tx, "network": network, "payer": payer,
                   "simulated": true})
        }
        Err(reason) => json!({"success": false, "errorReason": reason, "network": network,
                              "simulated": true}),
    })
}

fn fxhash(s: &str) -> u128 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325_u128, |h, b| {
        (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: &str, valid_before: i64, nonce: &str) -> Value {
        json!({"x402Version": 1,
               "paymentPayload": {"payload": {"authorization": {
                   "from": "0xAB", "to": "0xPAY", "value": value, "validAfter": "0",
                   "validBefore": valid_before.to_string(), "nonce": nonce}}},
               "paymentRequirements": {"maxAmountRequired": "17000", "payTo": "0xpay",
                                       "network": "base-sepolia"}})
    }

    #[test]
    fn it_checks_amount_payee_expiry_and_nonce_reuse() {
        let later = chrono::Utc::now().timestamp() + 600;
        let mut used = HashSet::new();
        let (payer, key) = check(&request("17000", later, "0x01"), &used).unwrap();
        assert_eq!(payer, "0xab");
        used.insert(key);
        assert_eq!(
            check(&request("17000", later, "0x01"), &used).unwrap_err(),
            "invalid_exact_evm_payload_authorization_nonce_used"
        );
        assert!(check(&request("16999", later, "0x02"), &used).is_err());
        assert!(check(&request("17000", 1, "0x03"), &used).is_err());
    }
}
