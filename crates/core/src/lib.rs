//! Domain types shared by every paygate crate: ids, plans, money, usage events,
//! API-key format, billing periods, customer and key records, the limits of a
//! call and the balance view. This crate does no I/O: no async runtime, no
//! network, no database (the architecture test checks its dependencies).

pub mod amount;
pub mod apikey;
pub mod balance;
pub mod error;
pub mod ids;
pub mod metering;
pub mod money;
pub mod period;
pub mod plan;
pub mod records;
pub mod usage;

pub use error::{ErrorCode, ValidationError};
pub use ids::{CustomerId, KeyId, PlanId, RouteId};
pub use money::Micros;
pub use plan::{Overage, Per, Plan, Quota, QuotaPeriod, RateLimit};
pub use usage::{Payment, PaymentState, UsageEvent};
