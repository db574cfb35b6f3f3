//! Why a batch was not delivered, and what to do about it.

/// Any error a target reports, kept as the cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed delivery, classified by the target that knows its own errors
/// (the ledger by SQLSTATE or SQLite code, the stream by Redis error code).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The target is unreachable, busy or slow: the same batch may succeed
    /// later. Retried, or spilled to the spill file meanwhile.
    #[error("usage target unavailable: {0}")]
    Transient(#[source] BoxError),
    /// The target refuses this batch and will refuse it again (an event it
    /// cannot store, a key of the wrong type, a missing table): retrying
    /// would block the pipeline for ever. Dead-lettered.
    #[error("usage target refused the batch: {0}")]
    Permanent(#[source] BoxError),
}

impl DeliveryError {
    pub fn transient(e: impl Into<BoxError>) -> Self {
        Self::Transient(e.into())
    }

    pub fn permanent(e: impl Into<BoxError>) -> Self {
        Self::Permanent(e.into())
    }

    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}
