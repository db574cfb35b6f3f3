//! What the admin handlers answer, where no billing or core type already is
//! the body: each is both what is serialized and what the OpenAPI document
//! describes, so the two cannot differ.

use chrono::{DateTime, Utc};
use paygate_billing::audit::AuditEntry;
use paygate_billing::invoices::Invoice;
use paygate_billing::payments::PaymentRow;
use paygate_billing::records::KeyRow;
use paygate_billing::Page;
use paygate_core::records::CustomerRecord;
use paygate_core::{CustomerId, ErrorCode, KeyId, Micros, Plan, PlanId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A customer. The audit log keeps the same shape
/// (`paygate_billing::records::customer_json`; a test compares them).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    pub id: CustomerId,
    pub name: String,
    pub email: String,
    pub plan_id: PlanId,
    /// Day of month (UTC) on which the customer's billing period starts.
    #[schema(minimum = 1, maximum = 31)]
    pub billing_anchor_day: u32,
    pub created_at: DateTime<Utc>,
}

impl From<&CustomerRecord> for Customer {
    fn from(c: &CustomerRecord) -> Self {
        Self {
            id: c.id.clone(),
            name: c.name.clone(),
            email: c.email.clone(),
            plan_id: c.plan_id.clone(),
            billing_anchor_day: c.anchor_day,
            created_at: c.created_at,
        }
    }
}

/// A new API key: the only answer that ever holds the key itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NewKey {
    pub id: KeyId,
    /// The key to send as `Authorization: Bearer <key>`; shown this once
    /// (a replay of the request answers `null`).
    #[schema(nullable = true)]
    pub key: String,
    /// The key's first characters, shown in lists and logs.
    pub prefix: String,
    pub customer_id: CustomerId,
    pub created_at: DateTime<Utc>,
}

/// What a credit top-up did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreditResult {
    pub customer_id: String,
    #[schema(value_type = i64)]
    pub amount_micros: Micros,
    pub reference: String,
    /// False when this reference was already credited: nothing changed.
    pub credited: bool,
    /// The prepaid balance now.
    #[schema(value_type = i64)]
    pub credits_micros: Micros,
}

/// A deleted record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    /// Always true.
    pub deleted: bool,
}

/// A named list schema per item type: [`Page`]'s shape, `{"data": [...],
/// "has_more": bool}` (a generic `Page<T>` schema would inline its items).
macro_rules! page_of {
    ($(#[$doc:meta])* $name:ident, $item:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, ToSchema)]
        pub struct $name {
            pub data: Vec<$item>,
            /// More follow: ask again with `starting_after` set to the last one's id.
            pub has_more: bool,
        }

        impl From<Page<$item>> for $name {
            fn from(p: Page<$item>) -> Self {
                Self {
                    data: p.data,
                    has_more: p.has_more,
                }
            }
        }
    };
}

page_of!(
    /// One page of plans.
    PlanList,
    Plan
);
page_of!(
    /// One page of customers.
    CustomerList,
    Customer
);
page_of!(
    /// One page of a customer's keys, without secrets.
    KeyList,
    KeyRow
);
page_of!(
    /// One page of invoices.
    InvoiceList,
    Invoice
);
page_of!(
    /// One page of the audit log, newest first.
    AuditList,
    AuditEntry
);
page_of!(
    /// One page of x402 payments, oldest first.
    PaymentList,
    PaymentRow
);

/// The body of every error answer (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`,
    /// `not_found`, `conflict`, `invalid_request`, …
    pub code: String,
    /// For people; may change.
    pub message: String,
    /// Also in the `X-Request-Id` header.
    pub request_id: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: &str, request_id: &str) -> Self {
        Self {
            error: ErrorDetail {
                code: code.as_str().to_owned(),
                message: message.to_owned(),
                request_id: request_id.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use chrono::TimeZone;
    use paygate_billing::records::customer_json;

    #[test]
    fn the_customer_view_is_the_audit_logs_customer() {
        for created_at in [
            Utc.with_ymd_and_hms(2026, 1, 31, 23, 59, 59).unwrap(),
            Utc.timestamp_opt(1_767_225_600, 123_456_789).unwrap(),
        ] {
            let rec = CustomerRecord {
                id: CustomerId::new("cus_1").unwrap(),
                name: "Acme \"Ltd\"".into(),
                email: "a@example.com".into(),
                plan_id: PlanId::new("pro").unwrap(),
                anchor_day: 31,
                created_at,
            };
            assert_eq!(
                serde_json::to_value(Customer::from(&rec)).unwrap(),
                customer_json(&rec)
            );
        }
    }

    #[test]
    fn the_error_body_is_the_gateways() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::Unauthorized,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::InvalidRequest,
            ErrorCode::MethodNotAllowed,
            ErrorCode::LimiterUnavailable,
            ErrorCode::Internal,
        ] {
            let core: serde_json::Value =
                serde_json::from_str(&code.body("no \"such\" thing", "rid")).unwrap();
            let ours = ErrorBody::new(code, "no \"such\" thing", "rid");
            assert_eq!(serde_json::to_value(&ours).unwrap(), core);
            assert_eq!(serde_json::from_value::<ErrorBody>(core).unwrap(), ours);
        }
    }
}
