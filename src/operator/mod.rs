//! The c19 operator: `C19Group` resources become pods running the app plus the agent as a native
//! sidecar; the operator feeds the agents their peers and reports convergence in the status.

pub mod agents;
pub mod backoff;
pub mod context;
pub mod crd;
pub mod desired;
pub mod diff;
pub mod endpoint;
pub mod health;
pub mod install;
pub mod leader;
pub mod members;
pub mod observer;
pub mod reconcile;
pub mod render;
pub mod rollout;
pub mod run;
