//! No resurrection. A delete is remembered as a tombstone for `tombstone_lifetime`, then
//! forgotten. An agent cut off (or paused) for longer than that may still hold values its group
//! deleted and has since forgotten: offered in a sync, they would come back. So an agent that has
//! heard from no peer for longer than the tombstone lifetime takes part in no anti-entropy, and
//! reports not ready, until it has resynchronised: it copies a peer's whole state, and forgets its
//! own records written before its last contact that the peer does not hold (deleted and forgotten
//! there). Only a peer that has followed the group since before that contact can vouch for what
//! it lacks; when none has (the whole group was cut off, or replaced), nothing is forgotten.
//! What was written to it during the cut-off is newer than its last contact: kept, and spread as
//! usual afterwards.

use std::collections::HashSet;
use std::sync::Arc;

use crate::node::Node;
use crate::state::now_ms;

/// Whether an agent whose last contact with a peer was at `last` (ms) is cut off at `now` for
/// longer than `lifetime`. An agent with no peers is cut off from nobody.
pub fn cut_off(last: u64, now: u64, lifetime: u64, has_peers: bool) -> bool {
    has_peers && now.saturating_sub(last) > lifetime
}

/// The records to forget after copying a peer's state: written before the `horizon` (the last
/// contact before the cut-off) and absent from the peer.
pub fn to_forget(older: Vec<Box<str>>, at_peer: &HashSet<Box<str>>) -> Vec<Box<str>> {
    older.into_iter().filter(|k| !at_peer.contains(k)).collect()
}

/// Resynchronises with the first peer that gives its whole state; ends the resync.
pub async fn run(node: Arc<Node>) {
    let Some(horizon) = node.resync_horizon() else {
        return;
    };
    let mut peers = node.peers.list().to_vec();
    fastrand::shuffle(&mut peers);
    let mut answered = 0;
    for peer in &peers {
        let mut seen = HashSet::new();
        match super::warmup::copy_from(&node, peer, Some(&mut seen)).await {
            Ok(copied) if vouches(copied.since, horizon) => {
                let older = node.read().keys_written_before(horizon);
                let stale = to_forget(older, &seen);
                let forgotten = node.write().forget(stale.iter().map(|k| &**k), now_ms());
                node.metrics.records_forgotten.add(forgotten as u64);
                node.metrics.resyncs.inc();
                tracing::warn!(
                    %peer,
                    records = copied.records,
                    forgotten,
                    "resynchronised after a cut-off longer than the tombstone lifetime"
                );
                node.finish_resync(copied.since);
                return;
            }
            // Merged, but the peer joined after this agent's last contact: what it lacks may
            // never have reached it, so it cannot say what was deleted.
            Ok(_) => answered += 1,
            Err(e) => tracing::info!(error = %e, "resync: copy failed; trying another peer"),
        }
    }
    if answered == peers.len() && answered > 0 {
        // Every peer answered, none has followed the group since before the cut-off (the whole
        // group was cut off, or replaced): no one can tell a delete from a write that never
        // spread. Losing writes is worse than a resurrection: forget nothing.
        tracing::warn!(
            peers = answered,
            "resync: no peer has followed the group since before the cut-off; nothing forgotten"
        );
        node.metrics.resyncs.inc();
        node.finish_resync(None);
    }
}

/// Whether a peer whose state has followed the group since `since` can tell what was deleted
/// after `horizon`, this agent's last contact.
pub fn vouches(since: Option<u64>, horizon: u64) -> bool {
    since.is_some_and(|s| s <= horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_is_cut_off_after_a_tombstone_lifetime_without_peers_answering() {
        assert!(!cut_off(1_000, 2_000, 1_000, true), "exactly a lifetime");
        assert!(cut_off(1_000, 2_001, 1_000, true));
        assert!(
            !cut_off(1_000, 9_000, 1_000, false),
            "alone: cut off from nobody"
        );
    }

    #[test]
    fn only_a_peer_that_followed_the_group_through_the_cut_off_vouches() {
        assert!(vouches(Some(500), 1_000));
        assert!(
            !vouches(Some(1_500), 1_000),
            "joined after the last contact"
        );
        assert!(!vouches(None, 1_000), "an agent that does not say");
    }

    #[test]
    fn only_old_records_the_peer_lacks_are_forgotten() {
        let at_peer: HashSet<Box<str>> = ["kept".into()].into();
        let older = vec!["kept".into(), "deleted-there".into()];
        assert_eq!(
            to_forget(older, &at_peer),
            vec![Box::<str>::from("deleted-there")]
        );
    }
}
