//! Domain types shared by every paygate crate: ids, plans, money, usage events,
//! API-key format and billing periods. This crate does no I/O.

pub mod apikey;
pub mod error;
pub mod ids;
pub mod money;
pub mod period;
pub mod plan;
pub mod usage;

pub use error::{ErrorCode, ValidationError};
pub use ids::{CustomerId, KeyId, PlanId, RouteId};
pub use money::Micros;
pub use plan::{Overage, Per, Plan, Quota, QuotaPeriod, RateLimit};
pub use usage::UsageEvent;
