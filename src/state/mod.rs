//! The replicated state: records, the merge rule, TTL, tombstones, digests and body parsing.

pub mod body;
pub mod digest;
pub mod feed;
pub mod record;
pub mod seeder;
pub mod share;
pub mod store;

#[cfg(test)]
mod laws;

pub use body::{BodyError, Incoming, Limits, Origin};
pub use record::Record;
pub use share::Share;
pub use store::{Changes, Counts, Pending, Spread, Store, StoreConfig};

/// Milliseconds since the epoch: the clock every `ts` is read against.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
