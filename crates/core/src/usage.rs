//! The usage event: one per admitted call, keyed by `request_id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Micros;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    /// UUIDv7 minted on admission; the ledger holds each once.
    pub request_id: String,
    pub ts: DateTime<Utc>,
    pub customer_id: String,
    pub key_id: String,
    pub plan_id: String,
    pub route: String,
    pub method: String,
    /// HTTP status sent to the client (0 when the client went away first).
    pub status: u16,
    pub billable: bool,
    /// Quota units counted (the route's cost); 0 when not billable.
    pub units: u64,
    /// Of `units`, those past the quota, billed at the plan's overage price.
    #[serde(default)]
    pub overage_units: u64,
    /// Money charged for this call (pay-per-call or overage); 0 when not billable.
    pub amount_micros: Micros,
    /// The part of `amount_micros` paid from prepaid credits.
    pub credits_micros: Micros,
    /// `YYYY-MM` billing period of the customer in which the call was admitted.
    pub period: String,
    pub latency_us: u64,
    /// The x402 payment that paid for this call instead of quota or
    /// credits (its units and amount above are then 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
}

/// An x402 payment as the ledger keeps it: who paid, how much, where, and
/// how its settlement ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The payer's address, lower case.
    pub payer: String,
    /// The route's price: what the call cost.
    pub amount_micros: Micros,
    /// Atomic units of the asset the payer signed for (a decimal string:
    /// it may exceed 64 bits).
    pub amount_units: String,
    pub asset: String,
    /// CAIP-2 network id, e.g. `eip155:84532`.
    pub network: String,
    /// The EIP-3009 nonce, lower case: with `network` and `payer`, the
    /// payment's identity, held once by the ledger.
    pub nonce: String,
    /// The authorization is good until then (Unix seconds).
    pub valid_before: i64,
    /// The on-chain transaction, once settled.
    pub transaction: Option<String>,
    pub state: PaymentState,
    /// Why it failed or is unknown, as the facilitator (or paygate) said.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentState {
    /// The facilitator moved the money; the answer was served.
    Settled,
    /// The facilitator said the settlement failed; nothing was served.
    Failed,
    /// Settle did not answer before the payment's deadline: the money may
    /// or may not have moved. `paygate billing reconcile` lists these.
    SettlementUnknown,
}

impl PaymentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Settled => "settled",
            Self::Failed => "failed",
            Self::SettlementUnknown => "settlement_unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "settled" => Some(Self::Settled),
            "failed" => Some(Self::Failed),
            "settlement_unknown" => Some(Self::SettlementUnknown),
            _ => None,
        }
    }
}
