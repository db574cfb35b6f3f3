//! A route's offer (what one call costs, to whom, in which asset, on which
//! network) in both protocol versions, and the check of a payment against
//! it that needs no facilitator: scheme, network, asset, payee, amount and
//! the authorization's validity window.

use crate::amount::{self, AmountError};
use crate::header::Payment;
use crate::wire::{
    AssetDomain, ExactEvmPayload, PaymentRequiredV1, PaymentRequiredV2, RequirementsV1,
    RequirementsV2, ResourceInfo,
};

pub const SCHEME: &str = "exact";

/// Where payments go and in what: the `[x402]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub pay_to: String,
    /// v1 network name, e.g. `base-sepolia`.
    pub network: String,
    /// v2 CAIP-2 id, e.g. `eip155:84532`.
    pub network_id: String,
    pub asset: String,
    pub asset_decimals: u32,
    pub asset_name: String,
    pub asset_version: String,
    pub max_timeout_seconds: u64,
}

/// One route's price under `Terms`, for one resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    terms: Terms,
    price_micros: i64,
    /// The price in the asset's atomic units.
    units: u128,
    resource: String,
    description: String,
    mime_type: String,
}

/// What a payment that passed the local check commits to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The payment's identity: claimed once, across gateways, so it is
    /// never served twice.
    pub identity: PaymentIdentity,
    /// The authorization is good until then (Unix seconds): the claim must
    /// outlive it.
    pub valid_before: u64,
    /// Atomic units the client signed for (at least the price).
    pub units: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentIdentity {
    /// The CAIP-2 id of the network, whichever version the client spoke.
    pub network: String,
    /// The payer's address, lower case.
    pub payer: String,
    /// The EIP-3009 nonce, lower case.
    pub nonce: String,
}

/// Why a payment does not match the offer: 402 `payment_invalid`, without
/// asking the facilitator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("unsupported scheme {0:?} (this route takes \"exact\")")]
    Scheme(String),
    #[error("wrong network {got:?} (this route takes {want:?})")]
    Network { got: String, want: String },
    #[error("wrong asset {got:?}")]
    Asset { got: String },
    #[error("payment made out to {got:?}, not to this route's payee")]
    PayTo { got: String },
    #[error("amount {got} is below the price of {want} atomic units")]
    AmountTooLow { got: String, want: u128 },
    #[error("the authorization expired (validBefore {0})")]
    Expired(u64),
    #[error("the authorization is not valid yet (validAfter {0})")]
    NotYetValid(u64),
    #[error("the authorization's {0} is not a decimal number")]
    Malformed(&'static str),
}

impl Mismatch {
    /// The machine-readable reason in the 402's error body.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Scheme(_) => "unsupported_scheme",
            Self::Network { .. } => "invalid_network",
            Self::Asset { .. } => "invalid_asset",
            Self::PayTo { .. } => "invalid_pay_to",
            Self::AmountTooLow { .. } => "insufficient_amount",
            Self::Expired(_) => "expired",
            Self::NotYetValid(_) => "not_yet_valid",
            Self::Malformed(_) => "invalid_payload",
        }
    }
}

/// EVM addresses compare without their checksum case.
fn same_address(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn seconds(field: &'static str, s: &str) -> Result<u64, Mismatch> {
    amount::parse_units(s)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or(Mismatch::Malformed(field))
}

impl Offer {
    /// Refuses a price the asset cannot carry exactly.
    pub fn new(
        terms: Terms,
        price_micros: i64,
        resource: impl Into<String>,
        description: impl Into<String>,
    ) -> Result<Self, AmountError> {
        let units = amount::atomic_units(price_micros, terms.asset_decimals)?;
        Ok(Self {
            terms,
            price_micros,
            units,
            resource: resource.into(),
            description: description.into(),
            mime_type: "application/json".into(),
        })
    }

    pub fn price_micros(&self) -> i64 {
        self.price_micros
    }

    pub fn terms(&self) -> &Terms {
        &self.terms
    }

    fn domain(&self) -> AssetDomain {
        AssetDomain {
            name: self.terms.asset_name.clone(),
            version: self.terms.asset_version.clone(),
        }
    }

    pub fn requirements_v1(&self) -> RequirementsV1 {
        RequirementsV1 {
            scheme: SCHEME.into(),
            network: self.terms.network.clone(),
            max_amount_required: self.units.to_string(),
            resource: self.resource.clone(),
            description: self.description.clone(),
            mime_type: self.mime_type.clone(),
            pay_to: self.terms.pay_to.clone(),
            max_timeout_seconds: self.terms.max_timeout_seconds,
            asset: self.terms.asset.clone(),
            extra: self.domain(),
        }
    }

    pub fn requirements_v2(&self) -> RequirementsV2 {
        RequirementsV2 {
            scheme: SCHEME.into(),
            network: self.terms.network_id.clone(),
            amount: self.units.to_string(),
            asset: self.terms.asset.clone(),
            pay_to: self.terms.pay_to.clone(),
            max_timeout_seconds: self.terms.max_timeout_seconds,
            extra: self.domain(),
        }
    }

    /// The body of the 402 to an anonymous caller (version 1, with
    /// paygate's `code` and `request_id`).
    pub fn body_v1(&self, error: &str, code: &str, request_id: &str) -> PaymentRequiredV1 {
        PaymentRequiredV1 {
            x402_version: 1,
            error: error.into(),
            accepts: vec![self.requirements_v1()],
            code: Some(code.into()),
            request_id: Some(request_id.into()),
        }
    }

    /// The `PAYMENT-REQUIRED` header's JSON (version 2).
    pub fn required_v2(&self, error: &str) -> PaymentRequiredV2 {
        PaymentRequiredV2 {
            x402_version: 2,
            error: error.into(),
            resource: ResourceInfo {
                url: self.resource.clone(),
                description: self.description.clone(),
                mime_type: self.mime_type.clone(),
            },
            accepts: vec![self.requirements_v2()],
        }
    }

    /// Checks `payment` against this offer at `now` (Unix seconds).
    pub fn check(&self, payment: &Payment, now: u64) -> Result<Accepted, Mismatch> {
        let payload: &ExactEvmPayload = match payment {
            Payment::V1(p) => {
                if p.scheme != SCHEME {
                    return Err(Mismatch::Scheme(p.scheme.clone()));
                }
                if p.network != self.terms.network {
                    return Err(Mismatch::Network {
                        got: p.network.clone(),
                        want: self.terms.network.clone(),
                    });
                }
                &p.payload
            }
            Payment::V2(p) => {
                let a = &p.accepted;
                if a.scheme != SCHEME {
                    return Err(Mismatch::Scheme(a.scheme.clone()));
                }
                if a.network != self.terms.network_id {
                    return Err(Mismatch::Network {
                        got: a.network.clone(),
                        want: self.terms.network_id.clone(),
                    });
                }
                if !same_address(&a.asset, &self.terms.asset) {
                    return Err(Mismatch::Asset {
                        got: a.asset.clone(),
                    });
                }
                if !same_address(&a.pay_to, &self.terms.pay_to) {
                    return Err(Mismatch::PayTo {
                        got: a.pay_to.clone(),
                    });
                }
                &p.payload
            }
        };
        let auth = &payload.authorization;
        // The signed transfer is what moves the money: its payee and value
        // are the ones that count, whatever the client says it accepted.
        if !same_address(&auth.to, &self.terms.pay_to) {
            return Err(Mismatch::PayTo {
                got: auth.to.clone(),
            });
        }
        let units = amount::parse_units(&auth.value).ok_or(Mismatch::Malformed("value"))?;
        if units < self.units {
            return Err(Mismatch::AmountTooLow {
                got: auth.value.clone(),
                want: self.units,
            });
        }
        let valid_after = seconds("validAfter", &auth.valid_after)?;
        let valid_before = seconds("validBefore", &auth.valid_before)?;
        if valid_before <= now {
            return Err(Mismatch::Expired(valid_before));
        }
        if valid_after > now {
            return Err(Mismatch::NotYetValid(valid_after));
        }
        Ok(Accepted {
            identity: PaymentIdentity {
                network: self.terms.network_id.clone(),
                payer: auth.from.to_ascii_lowercase(),
                nonce: auth.nonce.to_ascii_lowercase(),
            },
            valid_before,
            units,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Authorization, PaymentPayloadV1, PaymentPayloadV2};

    const PAYEE: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
    const USDC: &str = "0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    const NOW: u64 = 1_800_000_000;

    fn terms() -> Terms {
        Terms {
            pay_to: PAYEE.into(),
            network: "base-sepolia".into(),
            network_id: "eip155:84532".into(),
            asset: USDC.into(),
            asset_decimals: 6,
            asset_name: "USDC".into(),
            asset_version: "2".into(),
            max_timeout_seconds: 60,
        }
    }

    fn offer() -> Offer {
        Offer::new(terms(), 17_000, "http://gw/v1/signals/AAPL", "signals").unwrap()
    }

    fn auth() -> Authorization {
        Authorization {
            from: "0xABCDEF0000000000000000000000000000000001".into(),
            to: PAYEE.to_ascii_lowercase(),
            value: "17000".into(),
            valid_after: (NOW - 10).to_string(),
            valid_before: (NOW + 60).to_string(),
            nonce: "0xAA01".into(),
        }
    }

    fn v1(auth: Authorization) -> Payment {
        Payment::V1(Box::new(PaymentPayloadV1 {
            x402_version: 1,
            scheme: "exact".into(),
            network: "base-sepolia".into(),
            payload: ExactEvmPayload {
                signature: "0xsig".into(),
                authorization: auth,
            },
        }))
    }

    fn v2(accepted: RequirementsV2, auth: Authorization) -> Payment {
        Payment::V2(Box::new(PaymentPayloadV2 {
            x402_version: 2,
            accepted,
            payload: ExactEvmPayload {
                signature: "0xsig".into(),
                authorization: auth,
            },
            resource: None,
            extensions: None,
        }))
    }

    #[test]
    fn the_offer_in_both_versions() {
        let body = serde_json::to_value(offer().body_v1("pay", "payment_required", "r1")).unwrap();
        assert_eq!(body["x402Version"], 1);
        assert_eq!(body["code"], "payment_required");
        assert_eq!(body["request_id"], "r1");
        let a = &body["accepts"][0];
        assert_eq!(a["maxAmountRequired"], "17000");
        assert_eq!(a["network"], "base-sepolia");
        assert_eq!(a["payTo"], PAYEE);
        assert_eq!(
            a["extra"],
            serde_json::json!({"name": "USDC", "version": "2"})
        );
        let req = serde_json::to_value(offer().required_v2("pay")).unwrap();
        assert_eq!(req["x402Version"], 2);
        assert_eq!(req["resource"]["url"], "http://gw/v1/signals/AAPL");
        assert_eq!(req["accepts"][0]["amount"], "17000");
        assert_eq!(req["accepts"][0]["network"], "eip155:84532");
        // 18 decimals: the same price, scaled exactly.
        let wei = Offer::new(
            Terms {
                asset_decimals: 18,
                ..terms()
            },
            17_000,
            "r",
            "d",
        )
        .unwrap();
        assert_eq!(wei.requirements_v2().amount, "17000000000000000");
        // A price the asset cannot hold is refused at start.
        assert!(Offer::new(
            Terms {
                asset_decimals: 2,
                ..terms()
            },
            17_000,
            "r",
            "d"
        )
        .is_err());
    }

    #[test]
    fn a_matching_payment_is_accepted_with_its_identity() {
        let a = offer().check(&v1(auth()), NOW).unwrap();
        assert_eq!(a.identity.network, "eip155:84532");
        assert_eq!(
            a.identity.payer,
            "0xabcdef0000000000000000000000000000000001"
        );
        assert_eq!(a.identity.nonce, "0xaa01");
        assert_eq!((a.valid_before, a.units), (NOW + 60, 17_000));
        // v2 names the same payment by the same identity.
        let b = offer()
            .check(&v2(offer().requirements_v2(), auth()), NOW)
            .unwrap();
        assert_eq!(a.identity, b.identity);
        // Paying more than the price is accepted (and is what is recorded).
        let more = Authorization {
            value: "20000".into(),
            ..auth()
        };
        assert_eq!(offer().check(&v1(more), NOW).unwrap().units, 20_000);
    }

    #[test]
    fn every_mismatch_is_refused_with_its_reason() {
        let o = offer();
        let reqs = o.requirements_v2();
        let mut bad_scheme = v1(auth());
        if let Payment::V1(p) = &mut bad_scheme {
            p.scheme = "upto".into();
        }
        let mut bad_network = v1(auth());
        if let Payment::V1(p) = &mut bad_network {
            p.network = "base".into();
        }
        let cases: Vec<(Payment, Mismatch)> = vec![
            (bad_scheme, Mismatch::Scheme("upto".into())),
            (
                bad_network,
                Mismatch::Network {
                    got: "base".into(),
                    want: "base-sepolia".into(),
                },
            ),
            (
                v2(
                    RequirementsV2 {
                        network: "eip155:8453".into(),
                        ..reqs.clone()
                    },
                    auth(),
                ),
                Mismatch::Network {
                    got: "eip155:8453".into(),
                    want: "eip155:84532".into(),
                },
            ),
            (
                v2(
                    RequirementsV2 {
                        asset: "0xdead".into(),
                        ..reqs.clone()
                    },
                    auth(),
                ),
                Mismatch::Asset {
                    got: "0xdead".into(),
                },
            ),
            (
                v2(
                    RequirementsV2 {
                        pay_to: "0xdead".into(),
                        ..reqs.clone()
                    },
                    auth(),
                ),
                Mismatch::PayTo {
                    got: "0xdead".into(),
                },
            ),
            (
                v1(Authorization {
                    to: "0xdead".into(),
                    ..auth()
                }),
                Mismatch::PayTo {
                    got: "0xdead".into(),
                },
            ),
            (
                v1(Authorization {
                    value: "16999".into(),
                    ..auth()
                }),
                Mismatch::AmountTooLow {
                    got: "16999".into(),
                    want: 17_000,
                },
            ),
            (
                v1(Authorization {
                    value: "1.7e4".into(),
                    ..auth()
                }),
                Mismatch::Malformed("value"),
            ),
            (
                v1(Authorization {
                    valid_before: NOW.to_string(),
                    ..auth()
                }),
                Mismatch::Expired(NOW),
            ),
            (
                v1(Authorization {
                    valid_after: (NOW + 5).to_string(),
                    ..auth()
                }),
                Mismatch::NotYetValid(NOW + 5),
            ),
            (
                v1(Authorization {
                    valid_before: "soon".into(),
                    ..auth()
                }),
                Mismatch::Malformed("validBefore"),
            ),
        ];
        for (payment, want) in cases {
            assert_eq!(o.check(&payment, NOW), Err(want));
        }
    }
}
