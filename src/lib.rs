//! c19: the C19 gossip state agent and its Kubernetes operator.
//!
//! The agent keeps a replicated key/value state next to an application: the app reads and
//! writes it on `localhost:3097` ([`agent`]), agents gossip on port 4097 ([`connection`]), and
//! the merge rule in [`state`] makes every agent converge to the same state.

pub mod agent;
pub mod config;
pub mod connection;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod operator;
pub mod process;
pub mod runtime;
pub mod state;
