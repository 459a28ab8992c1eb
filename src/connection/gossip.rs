//! The gossip loops: every `push_interval`, push local writes to `r0` random peers and news
//! received by push on to one peer, and, once the state has been quiet for a round, run one
//! anti-entropy sync with a random peer; every `pull_interval`, sync with `r0` peers.
//!
//! Each request runs in its own task and a peer with a request in flight is skipped, so a slow,
//! dead or paused peer costs at most one `timeout` and never delays rounds to the others.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::sync::{Outcome, sync_with};
use crate::node::Node;
use crate::state::now_ms;

/// Keys per push body: bounds the memory of one request and the work of one merge.
const PUSH_CHUNK: usize = 8192;

#[derive(Debug, Clone, Copy)]
pub struct GossipConfig {
    pub push_interval: Duration,
    /// How long the state must be unchanged before this agent starts an unforced sync.
    pub quiet: Duration,
    pub pull_interval: Duration,
    pub r0: usize,
}

/// Runs until `stop` fires, then pushes what has not been pushed yet.
pub async fn run(node: Arc<Node>, config: GossipConfig, stop: CancellationToken) {
    let mut rng = fastrand::Rng::new();
    let mut push = tokio::time::interval(config.push_interval);
    push.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut pull = tokio::time::interval(config.pull_interval);
    pull.set_missed_tick_behavior(MissedTickBehavior::Delay);
    pull.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = push.tick() => {
                push_round(&node, config.r0, &mut rng);
                // While the state changes, pushes are moving it and a sync would compare states
                // in flux, moving the same records twice; sync once it has been quiet a while.
                let quiet_since = node.read().last_change();
                if now_ms().saturating_sub(quiet_since) >= config.quiet.as_millis() as u64 {
                    sync_round(&node, 1, false, &mut rng);
                }
            }
            _ = pull.tick() => sync_round(&node, config.r0, true, &mut rng),
        }
    }
    flush(&node, config.r0, &mut rng).await;
}

/// Takes the changed keys and spawns one push per chosen peer with their newest versions: local
/// writes to `r0` peers, news received by push to one.
fn push_round(node: &Arc<Node>, r0: usize, rng: &mut fastrand::Rng) {
    if !node.read().has_changes() {
        return;
    }
    let (local, forwarded) = take_changes(node);
    for (bodies, fanout) in [(local, r0), (forwarded, 1)] {
        if bodies.is_empty() {
            continue;
        }
        for peer in node.peers.pick(fanout, rng) {
            let node = node.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move { push_to(&node, &peer, &bodies).await });
        }
    }
}

/// The bodies of the local and the forwarded changes.
fn take_changes(node: &Node) -> (Vec<Bytes>, Vec<Bytes>) {
    let mut store = node.write();
    let changes = store.take_changed();
    let bodies = |keys: &[Box<str>]| -> Vec<Bytes> {
        keys.chunks(PUSH_CHUNK)
            .map(|chunk| Bytes::from(store.render(chunk.iter().map(|k| &**k))))
            .collect()
    };
    (bodies(&changes.local), bodies(&changes.forwarded))
}

async fn push_to(node: &Node, peer: &str, bodies: &[Bytes]) {
    let Some(_busy) = node.peers.claim(peer) else {
        return;
    };
    for body in bodies {
        node.metrics.pushes_sent.inc();
        let result = node
            .client
            .call(
                Method::PUT,
                peer,
                "/",
                Some(body.clone()),
                &node.metrics.traffic,
            )
            .await;
        if let Err(e) = result {
            node.metrics.pushes_failed.inc();
            tracing::debug!(error = %e, "push failed");
            return;
        }
    }
}

fn sync_round(node: &Arc<Node>, n: usize, force: bool, rng: &mut fastrand::Rng) {
    for peer in node.peers.pick(n, rng) {
        let node = node.clone();
        tokio::spawn(async move {
            let Some(_busy) = node.peers.claim(&peer) else {
                return;
            };
            node.metrics.syncs_sent.inc();
            match sync_with(&node, &peer, force).await {
                Ok(Outcome::Equal) => node.metrics.syncs_equal.inc(),
                Ok(Outcome::Busy) => {}
                Ok(Outcome::Exchanged { received, sent }) => {
                    tracing::debug!(%peer, received, sent, "anti-entropy exchanged records");
                }
                Err(e) => {
                    node.metrics.syncs_failed.inc();
                    tracing::debug!(error = %e, "sync failed");
                }
            }
        });
    }
}

/// On shutdown: push what has not been pushed yet, waiting at most one timeout per peer.
async fn flush(node: &Arc<Node>, r0: usize, rng: &mut fastrand::Rng) {
    if !node.read().has_changes() {
        return;
    }
    let (mut bodies, forwarded) = take_changes(node);
    bodies.extend(forwarded);
    let pushes = node.peers.pick(r0, rng).into_iter().map(|peer| {
        let bodies = bodies.clone();
        async move { push_to(node, &peer, &bodies).await }
    });
    futures::future::join_all(pushes).await;
}

/// Forgets deletes and expired values past their lifetime, every `interval`.
pub async fn purge_loop(node: Arc<Node>, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let purged = node.write().purge(now_ms());
                node.metrics.records_purged.add(purged as u64);
            }
        }
    }
}
