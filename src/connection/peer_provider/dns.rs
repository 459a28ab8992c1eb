//! The `Dns` provider: every address a name resolves to, e.g. a headless Service's pods.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::OPERATOR_SILENCE_MS;
use crate::node::Node;
use crate::state::now_ms;

pub async fn run(name: &str, interval: Duration, node: &Node, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        resolve(name, node).await;
    }
}

async fn resolve(name: &str, node: &Node) {
    match tokio::net::lookup_host((name, node.settings.target_port)).await {
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

/// Whether an agent fed by the operator should look its peers up itself: `after` ms from its
/// start without a list, or [`OPERATOR_SILENCE_MS`] since the last one.
pub fn operator_silent(started: u64, last_feed: Option<u64>, now: u64, after: u64) -> bool {
    match last_feed {
        None => now.saturating_sub(started) >= after,
        Some(fed) => now.saturating_sub(fed) >= OPERATOR_SILENCE_MS,
    }
}

/// The `Operator` provider's fallback: while the operator is silent (down, or cut off from this
/// pod), peers come from `name`, the group's headless Service, re-resolved every `after` ms; the
/// operator's next list takes over again. A group forms, scales and heals without it.
pub async fn fallback(name: &str, after: Duration, node: &Node, stop: CancellationToken) {
    let started = now_ms();
    let after_ms = after.as_millis() as u64;
    let mut tick = tokio::time::interval(after.min(Duration::from_secs(5)));
    let mut silent = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now_silent = operator_silent(started, node.operator_fed_at(), now_ms(), after_ms);
        if now_silent != silent {
            silent = now_silent;
            if silent {
                tracing::warn!(
                    name,
                    "no peer list from the operator: finding peers through DNS"
                );
            } else {
                tracing::info!("the operator feeds peer lists again");
            }
        }
        if silent {
            resolve(name, node).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_takes_over_while_the_operator_is_silent() {
        assert!(!operator_silent(0, None, 4_999, 5_000));
        assert!(
            operator_silent(0, None, 5_000, 5_000),
            "no list since the start"
        );
        assert!(
            !operator_silent(0, Some(10_000), 20_000, 5_000),
            "fed recently"
        );
        assert!(operator_silent(
            0,
            Some(10_000),
            10_000 + OPERATOR_SILENCE_MS,
            5_000
        ));
    }
}
