//! Peer providers: where an agent learns its peers. `Static` and `K8s` as in C19 0.1, plus `Dns`
//! (a headless Service) and `Operator` (the operator sets the list over the peer API).

pub mod dns;
pub mod k8s;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::peers::normalize;
use crate::config::PeerProviderConfig;
use crate::node::Node;

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("spec.connection.peer_provider.peers: {0}")]
    Static(#[from] super::peers::PeerError),
    #[error("K8s peer provider: cannot reach the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// How this agent recognises itself in a list of pods or addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelfIdentity {
    /// `HOSTNAME`, which Kubernetes sets to the pod name.
    pub pod_name: Option<String>,
    /// `POD_IP`, set through the downward API.
    pub pod_ip: Option<String>,
}

impl SelfIdentity {
    pub fn from_env() -> SelfIdentity {
        let var = |k| std::env::var(k).ok().filter(|v: &String| !v.is_empty());
        SelfIdentity {
            pod_name: var("HOSTNAME"),
            pod_ip: var("POD_IP"),
        }
    }
}

/// Checks a provider's static settings before the agent starts.
pub fn validate(config: &PeerProviderConfig, target_port: u16) -> Result<(), ProviderError> {
    if let PeerProviderConfig::Static { peers } = config {
        for p in peers {
            normalize(p, target_port)?;
        }
    }
    Ok(())
}

/// Keeps the node's peer list up to date until `stop` fires.
pub async fn run(
    config: PeerProviderConfig,
    node: Arc<Node>,
    me: SelfIdentity,
    stop: CancellationToken,
) -> Result<(), ProviderError> {
    let port = node.settings.target_port;
    match config {
        PeerProviderConfig::Static { peers } => {
            let peers = peers
                .iter()
                .map(|p| normalize(p, port))
                .collect::<Result<_, _>>()?;
            node.peers.set(peers);
            Ok(())
        }
        PeerProviderConfig::Operator { dns: None, .. } => Ok(()),
        PeerProviderConfig::Operator {
            dns: Some(name),
            dns_after,
        } => {
            dns::fallback(
                &name,
                std::time::Duration::from_millis(dns_after),
                &node,
                stop,
            )
            .await;
            Ok(())
        }
        PeerProviderConfig::Dns { name, interval } => {
            dns::run(
                &name,
                std::time::Duration::from_millis(interval),
                &node,
                stop,
            )
            .await;
            Ok(())
        }
        PeerProviderConfig::K8s {
            selector,
            namespace,
        } => {
            let client = kube::Client::try_default().await?;
            k8s::run(client, &selector, &namespace, &me, &node, stop).await;
            Ok(())
        }
    }
}
