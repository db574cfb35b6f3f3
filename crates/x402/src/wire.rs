//! The JSON of x402 versions 1 and 2, field for field (camelCase; amounts
//! and timestamps are decimal strings). Only the `exact` scheme on EVM
//! networks (an EIP-3009 `transferWithAuthorization`) is modelled.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `extra` of an EVM `exact` offer: the token's EIP-712 domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetDomain {
    pub name: String,
    pub version: String,
}

/// One way to pay, as version 1 offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV1 {
    pub scheme: String,
    /// A network name, e.g. `base-sepolia`.
    pub network: String,
    /// Atomic units.
    pub max_amount_required: String,
    /// The URL paid for.
    pub resource: String,
    pub description: String,
    pub mime_type: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub asset: String,
    pub extra: AssetDomain,
}

/// The body of a version 1 402 answer, with paygate's `code` and
/// `request_id` beside the protocol's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV1 {
    pub x402_version: u8,
    pub error: String,
    pub accepts: Vec<RequirementsV1>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "request_id"
    )]
    pub request_id: Option<String>,
}

/// What is paid for, in version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    pub url: String,
    pub description: String,
    pub mime_type: String,
}

/// One way to pay, as version 2 offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequirementsV2 {
    pub scheme: String,
    /// A CAIP-2 chain id, e.g. `eip155:84532`.
    pub network: String,
    /// Atomic units.
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
    pub max_timeout_seconds: u64,
    pub extra: AssetDomain,
}

/// The `PAYMENT-REQUIRED` header's JSON (version 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequiredV2 {
    pub x402_version: u8,
    pub error: String,
    pub resource: ResourceInfo,
    pub accepts: Vec<RequirementsV2>,
}

/// An EIP-3009 authorization: `from` lets `to` take `value` between
/// `validAfter` and `validBefore` (Unix seconds), once per `nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    pub from: String,
    pub to: String,
    pub value: String,
    pub valid_after: String,
    pub valid_before: String,
    pub nonce: String,
}

/// The signed part of an `exact` EVM payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExactEvmPayload {
    pub signature: String,
    pub authorization: Authorization,
}

/// `X-PAYMENT` (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV1 {
    pub x402_version: u8,
    pub scheme: String,
    pub network: String,
    pub payload: ExactEvmPayload,
}

/// `PAYMENT-SIGNATURE` (version 2): the requirements the client accepted
/// travel with the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayloadV2 {
    pub x402_version: u8,
    pub accepted: RequirementsV2,
    pub payload: ExactEvmPayload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<Value>,
}

/// A facilitator's answer to `POST /verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    pub is_valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// A facilitator's answer to `POST /settle`. Read from the body whatever the
/// HTTP status: a 200 may still say `success: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    pub success: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// `X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE`: what a settled call carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentResponse {
    pub success: bool,
    pub transaction: String,
    pub network: String,
    pub payer: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_settle_failure_reads_with_or_without_its_optional_fields() {
        let r: SettleResponse =
            serde_json::from_value(json!({"success": false, "errorReason": "insufficient_funds"}))
                .unwrap();
        assert!(!r.success);
        assert_eq!(r.error_reason.as_deref(), Some("insufficient_funds"));
        let r: SettleResponse = serde_json::from_value(json!({
            "success": true, "transaction": "0xabc", "network": "base-sepolia", "payer": "0x1"
        }))
        .unwrap();
        assert_eq!(r.transaction.as_deref(), Some("0xabc"));
        let v: VerifyResponse = serde_json::from_value(json!({"isValid": true})).unwrap();
        assert!(v.is_valid && v.payer.is_none());
    }

    #[test]
    fn payloads_read_the_wire_shapes() {
        let auth = json!({"from": "0xF", "to": "0xT", "value": "17000",
                          "validAfter": "0", "validBefore": "1999999999", "nonce": "0x01"});
        let v1: PaymentPayloadV1 = serde_json::from_value(json!({
            "x402Version": 1, "scheme": "exact", "network": "base-sepolia",
            "payload": {"signature": "0xsig", "authorization": auth}
        }))
        .unwrap();
        assert_eq!(v1.payload.authorization.valid_before, "1999999999");
        let v2: PaymentPayloadV2 = serde_json::from_value(json!({
            "x402Version": 2,
            "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "17000",
                         "asset": "0xA", "payTo": "0xT", "maxTimeoutSeconds": 60,
                         "extra": {"name": "USDC", "version": "2"}},
            "payload": {"signature": "0xsig", "authorization": auth}
        }))
        .unwrap();
        assert_eq!(v2.accepted.network, "eip155:84532");
        // Nothing optional is written as null.
        let back = serde_json::to_value(&v2).unwrap();
        assert!(back.get("resource").is_none() && back.get("extensions").is_none());
    }
}
