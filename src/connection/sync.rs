//! Anti-entropy: two agents compare a digest, then bucket digests, then the fingerprints of the
//! differing buckets, and move only the records one side lacks. Equal states cost one tiny
//! request; a single differing key costs a bucket's fingerprints plus that key.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::ClientError;
use crate::node::Node;
use crate::state::digest::{bucket_count, valid_count};
use crate::state::{BodyError, Origin, Spread, Store, body::parse_batch, now_ms};

/// First step: "my digest is this; here are my buckets at `count` if we differ".
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    pub digest: u64,
    pub count: usize,
    /// Sync even if the responder's state is changing (the periodic pull); otherwise a busy
    /// responder declines, since pushes are still moving its state.
    #[serde(default)]
    pub force: bool,
    /// The requester's state changes only slowly: a responder whose state does too takes part
    /// even though it is not quiet; one in the middle of a bulk load declines.
    #[serde(default)]
    pub calm: bool,
}

/// Why an agent starts a sync, which decides whether a busy peer may decline it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Its state has been quiet for a while.
    Quiet,
    /// Its state changes, but slowly (every few rounds).
    Calm,
    /// The periodic pull: never declined.
    Forced,
}

/// Why a responder declined an offer.
pub const BUSY: &str = "state changing; sync later";

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buckets {
    pub buckets: Vec<u64>,
}

/// Second step: the fingerprints of the requester's records in the buckets that differ.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffRequest {
    pub count: usize,
    pub fingerprints: HashMap<usize, Vec<u64>>,
}

/// The responder's records the requester lacks, and the fingerprints it wants in return.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffReply {
    pub entries: Box<RawValue>,
    pub want: Vec<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{peer}: unreadable answer: {message}")]
    Protocol { peer: String, message: String },
    #[error("bucket count {0} is not a power of two up to 4096")]
    BadCount(usize),
    #[error("bucket {0} is out of range")]
    BadBucket(usize),
}

/// The responder's side of an offer: `None` when the states are equal.
pub fn answer_offer(store: &Store, offer: &Offer) -> Result<Option<Buckets>, SyncError> {
    if !valid_count(offer.count) {
        return Err(SyncError::BadCount(offer.count));
    }
    if offer.digest == store.sync_digest() {
        return Ok(None);
    }
    Ok(Some(Buckets {
        buckets: store.buckets(offer.count),
    }))
}

/// The responder's side of a diff: send what the requester lacks, ask for what it has.
pub fn answer_diff(store: &Store, req: &DiffRequest) -> Result<DiffReply, SyncError> {
    if !valid_count(req.count) {
        return Err(SyncError::BadCount(req.count));
    }
    if let Some(b) = req.fingerprints.keys().find(|b| **b >= req.count) {
        return Err(SyncError::BadBucket(*b));
    }
    let ids: HashSet<usize> = req.fingerprints.keys().copied().collect();
    let theirs: HashSet<u64> = req.fingerprints.values().flatten().copied().collect();
    let ours: HashSet<u64> = store
        .fingerprints_in(req.count, &ids)
        .into_values()
        .flatten()
        .collect();
    let entries = store.render(store.keys_unknown_to(req.count, &ids, &theirs));
    let entries =
        RawValue::from_string(String::from_utf8(entries).expect("rendered JSON is UTF-8"))
            .expect("rendered JSON is valid");
    let want = theirs.difference(&ours).copied().collect();
    Ok(DiffReply { entries, want })
}

/// Buckets whose digests differ.
pub fn differing(ours: &[u64], theirs: &[u64]) -> HashSet<usize> {
    ours.iter()
        .zip(theirs)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect()
}

/// Merges a body map received from a peer; returns how many records changed the state.
pub fn apply(node: &Node, body: &[u8], spread: Spread) -> Result<usize, BodyError> {
    let entries = parse_batch(body, Origin::Peer, node.settings.peer_limits)?;
    let now = now_ms();
    let mut store = node.write();
    let applied = entries
        .into_iter()
        .map(|(k, e)| store.merge_incoming(&k, e, now, spread))
        .filter(|changed| *changed)
        .count();
    drop(store);
    node.metrics.records_applied.add(applied as u64);
    Ok(applied)
}

/// What one sync achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Equal,
    /// The peer's state was changing; no records moved.
    Busy,
    Exchanged {
        received: usize,
        sent: usize,
    },
}

/// Runs one anti-entropy exchange with `peer`.
pub async fn sync_with(node: &Node, peer: &str, mode: SyncMode) -> Result<Outcome, SyncError> {
    let protocol = |message: String| SyncError::Protocol {
        peer: peer.to_string(),
        message,
    };
    let traffic = &node.metrics.traffic;
    let (digest, count) = {
        let store = node.read();
        (store.sync_digest(), bucket_count(store.len()))
    };
    let offer = serde_json::to_vec(&Offer {
        digest,
        count,
        force: mode == SyncMode::Forced,
        calm: mode == SyncMode::Calm,
    })
    .expect("offer serializes");
    let sent = node
        .client
        .call(Method::POST, peer, "/c19/sync", Some(offer.into()), traffic)
        .await;
    let (status, body) = match sent {
        Err(ClientError::Status {
            status: hyper::StatusCode::CONFLICT,
            ..
        }) => return Ok(Outcome::Busy),
        other => other?,
    };
    if status == hyper::StatusCode::NO_CONTENT {
        return Ok(Outcome::Equal);
    }
    let theirs: Buckets = serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
    if theirs.buckets.len() != count {
        return Err(protocol(format!(
            "{} buckets, expected {count}",
            theirs.buckets.len()
        )));
    }
    let (request, empty) = {
        let store = node.read();
        let (empty, compare) = split_empty(
            differing(&store.buckets(count), &theirs.buckets),
            &theirs.buckets,
        );
        let request = DiffRequest {
            count,
            fingerprints: store.fingerprints_in(count, &compare),
        };
        (request, empty)
    };
    if request.fingerprints.is_empty() && empty.is_empty() {
        return Ok(Outcome::Equal);
    }
    let (mut received, mut want) = (0, HashSet::new());
    if !request.fingerprints.is_empty() {
        let request = serde_json::to_vec(&request).expect("diff serializes");
        let (_, body) = node
            .client
            .call(
                Method::POST,
                peer,
                "/c19/sync/diff",
                Some(request.into()),
                traffic,
            )
            .await?;
        let reply: DiffReply =
            serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
        received = apply(node, reply.entries.get().as_bytes(), Spread::Quiet)
            .map_err(|e| protocol(e.to_string()))?;
        want = reply.want.into_iter().collect();
    }
    let (body, sent) = {
        let store = node.read();
        let mut keys = store.keys_with_fingerprints(&want);
        keys.extend(store.keys_unknown_to(count, &empty, &HashSet::new()));
        (store.render(keys.iter().copied()), keys.len())
    };
    if sent > 0 {
        node.client
            .call(
                Method::POST,
                peer,
                "/c19/sync/entries",
                Some(Bytes::from(body)),
                traffic,
            )
            .await?;
    }
    Ok(Outcome::Exchanged { received, sent })
}

/// Splits differing buckets into those the peer holds nothing in (digest 0: the XOR of no
/// fingerprints), whose records are simply sent, and those whose fingerprints must be compared.
/// Sending fingerprints for a bucket the peer lacks entirely would cost a third of the records'
/// size again, twice (ours there, theirs back as `want`). A non-empty bucket whose fingerprints
/// XOR to 0 (odds 2^-64) only means sending records it may hold: merging is idempotent.
pub fn split_empty(ids: HashSet<usize>, theirs: &[u64]) -> (HashSet<usize>, HashSet<usize>) {
    ids.into_iter().partition(|b| theirs[*b] == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Incoming, StoreConfig};

    fn store(pairs: &[(&str, &str, u64)]) -> Store {
        let mut s = Store::new(StoreConfig {
            default_ttl: None,
            tombstone_lifetime: 1000,
        });
        for (k, v, ts) in pairs {
            let value = Some(RawValue::from_string(v.to_string()).unwrap());
            s.write_local(
                k,
                Incoming {
                    value,
                    ts: Some(*ts),
                    ttl: None,
                },
                *ts,
            );
        }
        s
    }

    /// Runs the protocol between two stores without I/O and returns both afterwards.
    /// Runs the protocol as `sync_with` does; also returns how many fingerprints `a` sent.
    fn exchange_counting(mut a: Store, mut b: Store) -> (Store, Store, usize, usize) {
        let count = bucket_count(a.len());
        let Some(theirs) = answer_offer(
            &b,
            &Offer {
                digest: a.sync_digest(),
                count,
                force: true,
                calm: false,
            },
        )
        .unwrap() else {
            return (a, b, 0, 0);
        };
        let (empty, compare) = split_empty(
            differing(&a.buckets(count), &theirs.buckets),
            &theirs.buckets,
        );
        let req = DiffRequest {
            count,
            fingerprints: a.fingerprints_in(count, &compare),
        };
        let fingerprints = req.fingerprints.values().map(Vec::len).sum();
        let reply = answer_diff(&b, &req).unwrap();
        let got = parse_batch(
            reply.entries.get().as_bytes(),
            Origin::Peer,
            crate::state::Limits {
                max_key_bytes: 99,
                max_entries: 99,
            },
        )
        .unwrap();
        let moved = got.len();
        for (k, e) in got {
            a.merge_incoming(&k, e, 10, Spread::Quiet);
        }
        let want: HashSet<u64> = reply.want.into_iter().collect();
        let keys: Vec<String> = a
            .keys_with_fingerprints(&want)
            .into_iter()
            .chain(a.keys_unknown_to(count, &empty, &HashSet::new()))
            .map(String::from)
            .collect();
        let body = a.render(keys.iter().map(|k| k.as_str()));
        let sent = parse_batch(
            &body,
            Origin::Peer,
            crate::state::Limits {
                max_key_bytes: 99,
                max_entries: 99,
            },
        )
        .unwrap();
        let moved = moved + sent.len();
        for (k, e) in sent {
            b.merge_incoming(&k, e, 10, Spread::Quiet);
        }
        (a, b, moved, fingerprints)
    }

    fn exchange(a: Store, b: Store) -> (Store, Store, usize) {
        let (a, b, moved, _) = exchange_counting(a, b);
        (a, b, moved)
    }

    #[test]
    fn a_peer_lacking_whole_buckets_gets_their_records_without_fingerprints() {
        let pairs: Vec<(String, String, u64)> = (0..64)
            .map(|i| (format!("k{i}"), format!("{i}"), 1 + i as u64))
            .collect();
        let pairs: Vec<(&str, &str, u64)> = pairs
            .iter()
            .map(|(k, v, ts)| (k.as_str(), v.as_str(), *ts))
            .collect();
        let (a, b, moved, fingerprints) = exchange_counting(store(&pairs), store(&[]));
        assert_eq!((moved, fingerprints), (64, 0));
        assert_eq!(a.sync_digest(), b.sync_digest());
        // A peer holding part of the state still compares fingerprints, and ends equal.
        let (a, b, moved, fingerprints) = exchange_counting(store(&pairs), store(&pairs[..60]));
        assert_eq!(moved, 4);
        assert!(fingerprints > 0 && fingerprints < 64, "{fingerprints}");
        assert_eq!(a.sync_digest(), b.sync_digest());
    }

    #[test]
    fn equal_states_move_nothing() {
        let (a, b, moved) = exchange(store(&[("x", "1", 1)]), store(&[("x", "1", 1)]));
        assert_eq!(moved, 0);
        assert_eq!(a.sync_digest(), b.sync_digest());
    }

    #[test]
    fn only_differing_records_move_both_ways() {
        let common: Vec<(String, &str, u64)> =
            (0..200).map(|i| (format!("k{i}"), "1", 1)).collect();
        let mut a_pairs: Vec<(&str, &str, u64)> = common
            .iter()
            .map(|(k, v, t)| (k.as_str(), *v, *t))
            .collect();
        let mut b_pairs = a_pairs.clone();
        a_pairs.push(("only-a", "1", 2));
        b_pairs.push(("only-b", "2", 2));
        b_pairs.push(("k5", "\"newer\"", 3));
        let (a, b, moved) = exchange(store(&a_pairs), store(&b_pairs));
        assert_eq!(a.sync_digest(), b.sync_digest());
        // only-a to b; only-b and k5 to a; plus k5's old version, which a offers but b ignores.
        assert!(moved <= 4, "moved {moved}");
        assert_eq!(
            a.get("k5", 10).unwrap().value.as_ref().unwrap().get(),
            "\"newer\""
        );
    }

    #[test]
    fn bad_counts_and_buckets_are_refused() {
        let s = store(&[]);
        assert!(
            answer_offer(
                &s,
                &Offer {
                    digest: 1,
                    count: 3,
                    force: false,
                    calm: false,
                }
            )
            .is_err()
        );
        let req = DiffRequest {
            count: 4,
            fingerprints: [(9, vec![])].into(),
        };
        assert!(matches!(
            answer_diff(&s, &req),
            Err(SyncError::BadBucket(9))
        ));
    }
}
