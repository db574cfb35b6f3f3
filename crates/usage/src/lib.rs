//! The usage pipeline: how one usage event per admitted call gets from the
//! gateway's hot path to where usage is kept, without slowing the call down
//! and without losing or doubling an event.
//!
//! - [`UsageSink`] is the gateway's end: a push onto a shared buffer.
//! - [`UsageWriter`] drains the buffer in batches into a [`BatchTarget`]: the
//!   ledger itself (embedded) or the Redis usage stream (production). Both
//!   targets are idempotent on `request_id`, so a batch may be sent again.
//! - A failed batch is either [`DeliveryError::Transient`] (retried, or kept
//!   in the [`SpillFile`] until the target is back) or
//!   [`DeliveryError::Permanent`] (the target will never take it: the writer
//!   narrows it down to the events at fault and keeps those in the
//!   [`DeadLetterFile`], so they neither block the gateway nor get lost).
//!
//! This crate knows no database and no Redis: the targets implement
//! [`BatchTarget`] in their own crates.

mod dead_letter;
mod error;
mod isolate;
mod jsonl;
mod sink;
mod spill;
mod target;
mod writer;

pub use dead_letter::{keep_dead_letters, DeadLetter, DeadLetterFile, ReplayError, Replayed};
pub use error::{BoxError, DeliveryError};
pub use isolate::{send_isolating, Sent};
pub use sink::{pipeline, Batching, UsageSink};
pub use spill::SpillFile;
pub use target::{BatchTarget, Written};
pub use writer::UsageWriter;
