//! The gossip loops: every `push_interval`, push local writes down a tree over every peer and
//! news received by push down a tree over its share (see [`Share`]), and run one
//! anti-entropy sync with a random peer once the state has been quiet for a while (and no bulk
//! load arrived in the last few rounds) or, while it changes slowly, every few rounds; every
//! `pull_interval`, sync with `r0` peers.
//!
//! Each request runs in its own task, at most [`MAX_IN_FLIGHT`](super::peers::MAX_IN_FLIGHT) to
//! one peer, so a slow, dead or paused peer costs at most that many requests waiting out their
//! `timeout` and never delays rounds to the others.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::sync::{Outcome, SyncMode, sync_with};
use crate::node::Node;
use crate::state::{Share, now_ms};

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
    let mut pull = tokio::time::interval_at(
        Instant::now() + random_phase(config.pull_interval, &mut rng),
        config.pull_interval,
    );
    pull.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut recent = Recent::default();
    let mut resync: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = push.tick() => {
                if cut_off(&node, &mut resync) {
                    continue;
                }
                push_round(&node, config.r0, &mut rng);
                let (quiet_since, changes) = {
                    let store = node.read();
                    (store.last_change(), store.changes())
                };
                // While the state changes, pushes are moving it and a sync would compare states
                // in flux, moving the same records twice; sync once it has been quiet a while,
                // and not right after a bulk load (the next wave of pushes may be on its way).
                // Under a steady trickle of writes it is never quiet, so a rumour that died
                // early would wait for the pull: a calm state syncs every few rounds anyway.
                let calm = recent.record(changes);
                node.set_calm(calm);
                let quiet =
                    now_ms().saturating_sub(quiet_since) >= config.quiet.as_millis() as u64;
                if quiet && calm {
                    sync_round(&node, 1, SyncMode::Quiet, &mut rng);
                } else if calm && recent.rounds % CALM_ROUNDS == 0 {
                    sync_round(&node, 1, SyncMode::Calm, &mut rng);
                }
            }
            _ = pull.tick() => {
                if !cut_off(&node, &mut resync) {
                    sync_round(&node, config.r0, SyncMode::Forced, &mut rng);
                }
            }
        }
    }
    if let Some(task) = resync {
        task.abort();
    }
    flush(&node, config.r0, &mut rng).await;
}

/// Whether this agent is resynchronising after a cut-off longer than the tombstone lifetime
/// (see [`resync`](super::resync)); starts the resync when it is and none runs. While it runs,
/// the agent pushes and syncs nothing: what it holds from before the cut-off may have been
/// deleted and forgotten by its group.
fn cut_off(node: &Arc<Node>, task: &mut Option<tokio::task::JoinHandle<()>>) -> bool {
    node.check_cut_off(now_ms());
    if !node.resyncing() {
        return false;
    }
    if task.as_ref().is_none_or(|t| t.is_finished()) {
        *task = Some(tokio::spawn(super::resync::run(node.clone())));
    }
    true
}

/// The first tick of a periodic task, between half and one and a half `interval` from now.
/// Agents started together (a new group, a restarted deployment) would otherwise run their full
/// syncs and purges all at the same moment, every interval: in the api bench, three agents
/// pulling at once under 15k writes/s held writes back for 130 ms.
fn random_phase(interval: Duration, rng: &mut fastrand::Rng) -> Duration {
    interval.mul_f64(0.5 + rng.f64())
}

/// Rounds between the syncs of a state that changes, but slowly.
const CALM_ROUNDS: usize = 5;
/// Most records changed over `CALM_ROUNDS` rounds for a state to count as calm: a bulk load
/// (thousands of records) is left to the pushes.
const CALM_CHANGES: u64 = 1024;

/// The change counts of the last `CALM_ROUNDS` rounds.
#[derive(Debug, Default)]
struct Recent {
    counts: std::collections::VecDeque<u64>,
    rounds: usize,
}

impl Recent {
    /// Records this round's count; whether few records changed over the last rounds.
    fn record(&mut self, changes: u64) -> bool {
        if self.counts.len() == CALM_ROUNDS {
            self.counts.pop_front();
        }
        self.counts.push_back(changes);
        self.rounds += 1;
        let oldest = self.counts.front().copied().unwrap_or(changes);
        changes - oldest <= CALM_CHANGES
    }
}

/// How many peers of its group one push may find failed or silent before it gives up: a push
/// goes on to the next, so a fault keeps the fanout it would have had without it.
const PUSH_TRIES: usize = 3;

/// Spawns one push per group with the newest versions of the changed keys: local writes down a
/// tree over every peer, news received by push down a tree over the peers of its share.
///
/// Groups are dealt before the changes are taken: changes taken while every peer has a request
/// in flight (a long push still running) would never be pushed, and would wait for a sync.
fn push_round(node: &Arc<Node>, r0: usize, rng: &mut fastrand::Rng) {
    let pending = node.read().pending();
    if pending.local {
        let groups = node.peers.groups(r0, |_| true, rng);
        if !groups.is_empty() {
            let keys = node.write().take_local();
            launch(node, &keys, groups);
        }
    }
    if pending.forwarded {
        let groups = node.peers.groups_in(r0, &pending.share, rng);
        if !groups.is_empty() {
            let (keys, share) = node.write().take_forwarded();
            // More news may have arrived in between, for more peers.
            let groups = Some(share)
                .filter(|share| *share != pending.share)
                .map(|share| node.peers.groups_in(r0, &share, rng))
                .filter(|again| !again.is_empty())
                .unwrap_or(groups);
            launch(node, &keys, groups);
        } else if node.peers.named_in(&pending.share).is_empty() {
            // The share names no peer this agent knows of.
            node.write().take_forwarded();
        }
    }
}

/// Pushes `keys` to the first peer of each group, handing it the rest of its group.
fn launch(node: &Arc<Node>, keys: &[Box<str>], groups: Vec<Vec<String>>) {
    if keys.is_empty() {
        return;
    }
    let bodies = render(node, keys);
    for group in groups {
        let node = node.clone();
        let bodies = bodies.clone();
        tokio::spawn(async move { spread(&node, group, &bodies).await });
    }
}

/// Push bodies with the newest versions of `keys`.
fn render(node: &Node, keys: &[Box<str>]) -> Vec<Bytes> {
    let store = node.read();
    keys.chunks(PUSH_CHUNK)
        .map(|chunk| Bytes::from(store.render(chunk.iter().map(|k| &**k))))
        .collect()
}

/// Pushes `bodies` to the first peer of `group` with the rest as its share, and to the next
/// while the push misses, so a dead, paused or full peer never cuts its group off. A peer that
/// failed is left to anti-entropy (up to `PUSH_TRIES` failures); a full one (its slots taken by
/// syncs or pushes started since the groups were dealt) goes to the back of the group, and when
/// every peer left is full the push waits for a slot, at most one `timeout` (what a request
/// lasts).
async fn spread(node: &Node, group: Vec<String>, bodies: &[Bytes]) {
    let mut rest: VecDeque<String> = group.into();
    let (mut failures, mut busy_in_a_row) = (0, 0);
    let give_up = Instant::now() + node.client.timeout();
    while let Some(peer) = rest.pop_front() {
        let share = node.peers.share_of(rest.iter().map(String::as_str));
        match push_to(node, &peer, bodies, &share).await {
            Delivery::Taken => return,
            Delivery::Failed => {
                failures += 1;
                busy_in_a_row = 0;
                if failures == PUSH_TRIES {
                    return;
                }
            }
            Delivery::Busy => {
                rest.push_back(peer);
                busy_in_a_row += 1;
                if busy_in_a_row >= rest.len() {
                    if Instant::now() >= give_up {
                        return;
                    }
                    tokio::time::sleep(BUSY_WAIT).await;
                    busy_in_a_row = 0;
                }
            }
        }
    }
}

/// How long a push whose peers are all full waits before trying them again.
const BUSY_WAIT: Duration = Duration::from_millis(5);

/// How one push went.
enum Delivery {
    Taken,
    /// Every slot of the peer was taken (see [`MAX_IN_FLIGHT`](super::peers::MAX_IN_FLIGHT)).
    Busy,
    Failed,
}

async fn push_to(node: &Node, peer: &str, bodies: &[Bytes], share: &Share) -> Delivery {
    let Some(_busy) = node.peers.claim(peer) else {
        return Delivery::Busy;
    };
    for body in bodies {
        node.metrics.pushes_sent.inc();
        let result = node
            .client
            .push(peer, body.clone(), share, &node.metrics.traffic)
            .await;
        node.peers
            .report(peer, result.is_ok(), node.client.suspect_for());
        match result {
            Ok(reply) => {
                node.note_peer_contact();
                if let Some(id) = reply.agent {
                    node.peers.learn(peer, id);
                }
            }
            Err(e) => {
                node.metrics.pushes_failed.inc();
                tracing::debug!(error = %e, "push failed");
                return Delivery::Failed;
            }
        }
    }
    Delivery::Taken
}

fn sync_round(node: &Arc<Node>, n: usize, mode: SyncMode, rng: &mut fastrand::Rng) {
    for peer in node.peers.pick(n, rng) {
        let node = node.clone();
        tokio::spawn(async move {
            let Some(_busy) = node.peers.claim(&peer) else {
                return;
            };
            node.metrics.syncs_sent.inc();
            let outcome = sync_with(&node, &peer, mode).await;
            node.peers
                .report(&peer, outcome.is_ok(), node.client.suspect_for());
            if outcome.is_ok() {
                node.note_peer_contact();
            }
            match outcome {
                Ok(Outcome::Equal) => node.metrics.syncs_equal.inc(),
                Ok(Outcome::Busy) => {}
                Ok(Outcome::Exchanged { received, sent }) => {
                    node.metrics.sync_records.add((received + sent) as u64);
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

/// Pushes what has not been pushed yet, now, waiting at most one timeout per peer: on shutdown,
/// and when the pod starts terminating (the agent's `preStop` hook, `GET /prestop`), so that
/// writes acknowledged before the end leave the pod while the app still winds down.
pub async fn flush_now(node: &Arc<Node>) {
    flush(node, node.settings.r0, &mut fastrand::Rng::new()).await;
}

async fn flush(node: &Arc<Node>, r0: usize, rng: &mut fastrand::Rng) {
    if !node.read().has_changes() {
        return;
    }
    let changes = node.write().take_changed();
    let mut bodies = render(node, &changes.local);
    bodies.extend(render(node, &changes.forwarded));
    let pushes = node
        .peers
        .groups(r0, |_| true, rng)
        .into_iter()
        .map(|group| spread(node, group, &bodies));
    futures::future::join_all(pushes).await;
}

/// Forgets deletes and expired values past their lifetime, every `interval`.
pub async fn purge_loop(node: Arc<Node>, interval: Duration, stop: CancellationToken) {
    let first = Instant::now() + random_phase(interval, &mut fastrand::Rng::new());
    let mut tick = tokio::time::interval_at(first, interval);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays a write down the tree as `push_round` deals it (no peer busy or failed): who
    /// receives it, how often, and after how many hops. Each agent spells the others'
    /// addresses its own way (as through per-link proxies) and knows them by the ids they
    /// answered with.
    fn play_tree(n: usize, r0: usize, seed: u64) -> (Vec<usize>, usize) {
        use crate::connection::peers::Peers;
        let name = |from: usize, to: usize| format!("10.{from}.{}.{}:4097", to / 250, to % 250);
        let agent_of = |peer: &str| {
            peer.split('.').skip(2).fold(0, |n, p| {
                n * 250 + p.trim_end_matches(":4097").parse::<usize>().unwrap()
            })
        };
        let peers: Vec<Peers> = (0..n)
            .map(|from| {
                let peers = Peers::new(Default::default());
                peers.set(
                    (0..n)
                        .filter(|to| *to != from)
                        .map(|to| name(from, to))
                        .collect(),
                );
                for to in (0..n).filter(|to| *to != from) {
                    peers.learn(&name(from, to), 1000 + to as u32);
                }
                peers
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut received = vec![0; n];
        received[0] = 1;
        let mut pushes = VecDeque::from([(0, None::<Share>, 0)]);
        let mut depth = 0;
        while let Some((agent, share, hops)) = pushes.pop_front() {
            depth = usize::max(depth, hops);
            let groups = match share {
                Some(share) => peers[agent].groups_in(r0, &share, &mut rng),
                None => peers[agent].groups(r0, |_| true, &mut rng),
            };
            for group in groups {
                let head = agent_of(&group[0]);
                received[head] += 1;
                let share = peers[agent].share_of(group[1..].iter().map(String::as_str));
                pushes.push_back((head, Some(share), hops + 1));
            }
        }
        (received, depth)
    }

    #[test]
    fn a_write_reaches_every_agent_once_in_log_rounds() {
        for n in [3, 10, 30, 100] {
            for seed in 0..5 {
                let (received, depth) = play_tree(n, 3, seed);
                assert!(received.iter().all(|r| *r >= 1), "N = {n}: {received:?}");
                let duplicates: usize = received.iter().map(|r| r - 1).sum();
                assert_eq!(duplicates, 0, "N = {n}: {duplicates} duplicates");
                let rounds = (n as f64).log(4.0).ceil() as usize;
                assert_eq!(depth, rounds, "N = {n}");
            }
        }
    }

    #[test]
    fn a_calm_state_syncs_every_few_rounds_and_a_bulk_load_does_not() {
        let mut recent = Recent::default();
        assert!((0..10).all(|i| recent.record(i * 10)));
        let mut recent = Recent::default();
        let calm: Vec<bool> = (0..10).map(|i| recent.record(i * 1000)).collect();
        assert_eq!(
            calm,
            [
                true, true, false, false, false, false, false, false, false, false
            ]
        );
        assert_eq!(recent.rounds, 10);
    }
}
