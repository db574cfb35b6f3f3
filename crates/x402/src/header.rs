//! x402 headers carry JSON encoded in (standard, padded) base64.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::wire::{PaymentPayloadV1, PaymentPayloadV2};

/// v1: the paying client's header.
pub const X_PAYMENT: &str = "x-payment";
/// v1: the settlement, on the answer.
pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";
/// v2: the offer, on a 402.
pub const PAYMENT_REQUIRED: &str = "payment-required";
/// v2: the paying client's header.
pub const PAYMENT_SIGNATURE: &str = "payment-signature";
/// v2: the settlement, on the answer.
pub const PAYMENT_RESPONSE: &str = "payment-response";

/// A header that is not base64 of the expected JSON: 400 `invalid_payment`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the {header} header is not base64")]
    NotBase64 { header: &'static str },
    #[error("the {header} header is not a payment of x402 version {version}: {reason}")]
    NotAPayment {
        header: &'static str,
        version: u8,
        reason: String,
    },
}

pub fn encode<T: Serialize>(value: &T) -> String {
    // Serializing our own plain structs cannot fail.
    STANDARD.encode(serde_json::to_vec(value).unwrap_or_default())
}

fn decode<T: DeserializeOwned>(
    header: &'static str,
    version: u8,
    raw: &str,
) -> Result<T, DecodeError> {
    let bytes = STANDARD
        .decode(raw.trim())
        .map_err(|_| DecodeError::NotBase64 { header })?;
    serde_json::from_slice(&bytes).map_err(|e| DecodeError::NotAPayment {
        header,
        version,
        reason: e.to_string(),
    })
}

/// The JSON document as sent, and the typed payment read from it.
fn decode_both<T: DeserializeOwned>(
    header: &'static str,
    version: u8,
    raw: &str,
) -> Result<(T, Value), DecodeError> {
    let value: Value = decode(header, version, raw)?;
    let typed = T::deserialize(&value).map_err(|e| DecodeError::NotAPayment {
        header,
        version,
        reason: e.to_string(),
    })?;
    Ok((typed, value))
}

/// A payment as a client sent it, in either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payment {
    V1(Box<PaymentPayloadV1>),
    V2(Box<PaymentPayloadV2>),
}

impl Payment {
    /// The payment in `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2); `None`
    /// when the call carries neither. With both, the v2 header wins.
    pub fn from_headers(
        x_payment: Option<&str>,
        payment_signature: Option<&str>,
    ) -> Result<Option<Self>, DecodeError> {
        Ok(Sent::from_headers(x_payment, payment_signature)?.map(|s| s.payment))
    }

    pub fn version(&self) -> u8 {
        match self {
            Self::V1(_) => 1,
            Self::V2(_) => 2,
        }
    }
}

/// A payment and the JSON document it came in: the facilitator is sent
/// the document exactly as the client signed it, not our re-encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub payment: Payment,
    pub document: Value,
}

impl Sent {
    /// See [`Payment::from_headers`].
    pub fn from_headers(
        x_payment: Option<&str>,
        payment_signature: Option<&str>,
    ) -> Result<Option<Self>, DecodeError> {
        if let Some(raw) = payment_signature {
            let (p, document) = decode_both::<PaymentPayloadV2>(PAYMENT_SIGNATURE, 2, raw)?;
            return Ok(Some(Self {
                payment: Payment::V2(Box::new(p)),
                document,
            }));
        }
        if let Some(raw) = x_payment {
            let (p, document) = decode_both::<PaymentPayloadV1>(X_PAYMENT, 1, raw)?;
            return Ok(Some(Self {
                payment: Payment::V1(Box::new(p)),
                document,
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: serde_json::Value) -> String {
        STANDARD.encode(v.to_string())
    }

    fn auth() -> serde_json::Value {
        json!({"from": "0xF", "to": "0xT", "value": "17000",
               "validAfter": "0", "validBefore": "1999999999", "nonce": "0x01"})
    }

    #[test]
    fn each_version_comes_from_its_header() {
        let v1 = b64(
            json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
                            "payload": {"signature": "0xs", "authorization": auth()}}),
        );
        assert!(matches!(
            Payment::from_headers(Some(&v1), None),
            Ok(Some(Payment::V1(_)))
        ));
        let v2 = b64(json!({"x402Version": 2,
            "accepted": {"scheme": "exact", "network": "eip155:84532", "amount": "17000",
                         "asset": "0xA", "payTo": "0xT", "maxTimeoutSeconds": 60,
                         "extra": {"name": "USDC", "version": "2"}},
            "payload": {"signature": "0xs", "authorization": auth()}}));
        let p = Payment::from_headers(Some(&v1), Some(&v2))
            .unwrap()
            .unwrap();
        assert_eq!(p.version(), 2);
        assert_eq!(Payment::from_headers(None, None), Ok(None));
    }

    #[test]
    fn undecodable_headers_say_why() {
        assert_eq!(
            Payment::from_headers(Some("%%%"), None),
            Err(DecodeError::NotBase64 { header: X_PAYMENT })
        );
        let not_a_payment = b64(json!({"hello": "world"}));
        let e = Payment::from_headers(None, Some(&not_a_payment)).unwrap_err();
        assert!(
            matches!(
                e,
                DecodeError::NotAPayment {
                    header: PAYMENT_SIGNATURE,
                    version: 2,
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn encode_is_what_decode_reads() {
        let r = crate::wire::PaymentResponse {
            success: true,
            transaction: "0xabc".into(),
            network: "base-sepolia".into(),
            payer: "0xF".into(),
        };
        let back: crate::wire::PaymentResponse = decode(PAYMENT_RESPONSE, 2, &encode(&r)).unwrap();
        assert_eq!(back, r);
    }
}
