//! Where the writer delivers batches.

use paygate_core::UsageEvent;

use crate::DeliveryError;

/// What a delivered batch became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Inserted into the ledger: this many were new, the rest duplicates.
    Ledger(u64),
    /// Handed to the usage stream; the billing consumer puts them in the ledger.
    Streamed(u64),
}

/// A place that keeps usage: the ledger (embedded) or the Redis usage stream
/// (production). Writing the same event twice must keep it once: the writer
/// sends a batch again after an error that may have hidden a success.
#[async_trait::async_trait]
pub trait BatchTarget: Send + Sync + 'static {
    async fn write(&self, batch: &[UsageEvent]) -> Result<Written, DeliveryError>;
}
