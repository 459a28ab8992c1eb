//! The `Dns` provider: every address a name resolves to, e.g. a headless Service's pods.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::node::Node;

pub async fn run(name: &str, interval: Duration, node: &Node, stop: CancellationToken) {
    let port = node.settings.target_port;
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match tokio::net::lookup_host((name, port)).await {
            Ok(addrs) => {
                let peers = addrs.map(|a| a.to_string()).collect();
                if node.peers.set(peers) {
                    tracing::info!(name, peers = node.peers.len(), "peer list re-resolved");
                }
            }
            // Keep the last list: a resolver hiccup must not isolate the agent.
            Err(e) => {
                tracing::warn!(name, error = %e, "cannot resolve peers; keeping the last list")
            }
        }
    }
}
