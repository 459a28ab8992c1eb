//! The connection layer: the peer API (4097), the gossip loops, anti-entropy and peer providers.

pub mod api;
pub mod client;
pub mod fingerprints;
pub mod gossip;
pub mod peer_provider;
pub mod peers;
pub mod resync;
pub mod sync;
pub mod warmup;
