//! Anti-entropy: two agents compare a digest, then bucket digests, then the fingerprints of the
//! differing buckets, and move only the records one side lacks. Equal states cost one tiny
//! request; a single differing key costs a bucket's fingerprints plus that key.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::client::{ClientError, Reply};
use super::fingerprints::{FingerprintError, decode, encode, short};
use crate::node::Node;
use crate::state::digest::{bucket_count, valid_count};
use crate::state::{BodyError, Origin, Share, Spread, Store, body::parse_batch, now_ms};

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
    /// How many records the responder holds, so that the larger side can leave the fingerprint
    /// exchange to the smaller one.
    #[serde(default)]
    pub records: Option<usize>,
}

/// Second step: the short fingerprints of the requester's records in the buckets that differ.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffRequest {
    pub count: usize,
    /// Drawn per sync; see [`fingerprints`](super::fingerprints).
    pub salt: u64,
    /// Per bucket, base64 of 32-bit fingerprints.
    pub fingerprints: HashMap<usize, String>,
}

/// The responder's records the requester lacks, and the (short) fingerprints it wants in return.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffReply {
    pub entries: Box<RawValue>,
    pub want: String,
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
    #[error(transparent)]
    Fingerprints(#[from] FingerprintError),
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
        records: Some(store.len()),
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
    let mut theirs = HashSet::new();
    for text in req.fingerprints.values() {
        theirs.extend(decode(text)?);
    }
    let ours: HashSet<u32> = store
        .fingerprints_in(req.count, &ids)
        .into_values()
        .flatten()
        .map(|fp| short(fp, req.salt))
        .collect();
    let entries = store.render(
        store.keys_in_buckets(req.count, &ids, |fp| !theirs.contains(&short(fp, req.salt))),
    );
    let entries =
        RawValue::from_string(String::from_utf8(entries).expect("rendered JSON is UTF-8"))
            .expect("rendered JSON is valid");
    let want = encode(theirs.difference(&ours).copied());
    Ok(DiffReply { entries, want })
}

/// The requester's diff for the buckets to `compare`, under a fresh salt.
pub fn diff_request(store: &Store, count: usize, compare: &HashSet<usize>) -> DiffRequest {
    let salt = fastrand::u64(..);
    DiffRequest {
        count,
        salt,
        fingerprints: store
            .fingerprints_in(count, compare)
            .into_iter()
            .map(|(b, fps)| (b, encode(fps.into_iter().map(|fp| short(fp, salt)))))
            .collect(),
    }
}

/// The keys the requester sends last: those whose short fingerprint the responder wants, and
/// everything in the buckets the responder lacks entirely.
pub fn keys_to_send<'a>(
    store: &'a Store,
    request: &DiffRequest,
    want: &HashSet<u32>,
    empty: &HashSet<usize>,
) -> Vec<&'a str> {
    let compared: HashSet<usize> = request.fingerprints.keys().copied().collect();
    let mut keys = store.keys_in_buckets(request.count, &compared, |fp| {
        want.contains(&short(fp, request.salt))
    });
    keys.extend(store.keys_in_buckets(request.count, empty, |_| true));
    keys
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
/// `share` is where a push's news goes on to, kept with the news it brought.
pub fn apply(node: &Node, body: &[u8], spread: Spread, share: &Share) -> Result<usize, BodyError> {
    apply_counted(node, body, spread, share, None).map(|(_, changed)| changed)
}

/// [`apply`], returning how many records the body held as well: (received, changed); with
/// `seen`, it also collects their keys (a resync needs to know what the peer holds).
pub fn apply_counted(
    node: &Node,
    body: &[u8],
    spread: Spread,
    share: &Share,
    mut seen: Option<&mut HashSet<Box<str>>>,
) -> Result<(usize, usize), BodyError> {
    let entries = parse_batch(body, Origin::Peer, node.settings.peer_limits)?;
    let received = entries.len();
    let now = now_ms();
    let mut store = node.write();
    let applied = entries
        .into_iter()
        .map(|(k, e)| {
            let changed = store.merge_incoming(&k, e, now, spread);
            if let Some(seen) = seen.as_deref_mut() {
                seen.insert(k.into_boxed_str());
            }
            changed
        })
        .filter(|changed| *changed)
        .count();
    if spread == Spread::Forward {
        store.note_forward_share(share);
    }
    drop(store);
    node.metrics.records_applied.add(applied as u64);
    Ok((received, applied))
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
    let (digest, count, records) = {
        let store = node.read();
        (store.sync_digest(), bucket_count(store.len()), store.len())
    };
    let offer = serde_json::to_vec(&Offer {
        digest,
        count,
        force: mode == SyncMode::Forced,
        calm: mode == SyncMode::Calm,
    })
    .expect("offer serializes");
    let cost = &node.metrics.sync_bytes;
    cost.add(offer.len() as u64);
    let sent = node
        .client
        .call(Method::POST, peer, "/c19/sync", Some(offer.into()), traffic)
        .await;
    let Reply {
        status,
        body,
        agent,
    } = match sent {
        Err(ClientError::Status {
            status: hyper::StatusCode::CONFLICT,
            ..
        }) => return Ok(Outcome::Busy),
        other => other?,
    };
    if let Some(id) = agent {
        node.peers.learn(peer, id);
    }
    if status == hyper::StatusCode::NO_CONTENT {
        return Ok(Outcome::Equal);
    }
    cost.add(body.len() as u64);
    let theirs: Buckets = serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
    if theirs.buckets.len() != count {
        return Err(protocol(format!(
            "{} buckets, expected {count}",
            theirs.buckets.len()
        )));
    }
    if mode == SyncMode::Quiet && leave_to_peer(records, theirs.records) {
        return Ok(Outcome::Busy);
    }
    let (request, empty) = {
        let store = node.read();
        let (empty, compare) = split_empty(
            differing(&store.buckets(count), &theirs.buckets),
            &theirs.buckets,
        );
        (diff_request(&store, count, &compare), empty)
    };
    if request.fingerprints.is_empty() && empty.is_empty() {
        return Ok(Outcome::Equal);
    }
    let (mut received, mut want) = (0, HashSet::new());
    if !request.fingerprints.is_empty() {
        let encoded = serde_json::to_vec(&request).expect("diff serializes");
        cost.add(encoded.len() as u64);
        let body = node
            .client
            .call(
                Method::POST,
                peer,
                "/c19/sync/diff",
                Some(encoded.into()),
                traffic,
            )
            .await?
            .body;
        cost.add(body.len() as u64);
        let reply: DiffReply =
            serde_json::from_slice(&body).map_err(|e| protocol(e.to_string()))?;
        received = apply(
            node,
            reply.entries.get().as_bytes(),
            Spread::Quiet,
            &Share::default(),
        )
        .map_err(|e| protocol(e.to_string()))?;
        want = decode(&reply.want)
            .map_err(|e| protocol(e.to_string()))?
            .into_iter()
            .collect();
    }
    let (body, sent) = {
        let store = node.read();
        let keys = keys_to_send(&store, &request, &want, &empty);
        (store.render(keys.iter().copied()), keys.len())
    };
    if sent > 0 {
        cost.add(body.len() as u64);
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

/// Whether a peer holding far fewer records should run this exchange itself. The side that
/// sends fingerprints pays for every record it holds in the differing buckets, and a peer that
/// lacks many records (a bulk load still arriving, a member catching up) makes most buckets
/// differ: its own syncs send its smaller list and move the same records both ways. Only quiet
/// syncs (the tail of a bulk load) step back: after a partition both sides hold records the
/// other lacks, and calm syncs and the periodic pull run in full. A peer that holds nothing in a
/// bucket still gets it straight away from whoever syncs with it.
pub fn leave_to_peer(ours: usize, theirs: Option<usize>) -> bool {
    theirs.is_some_and(|theirs| theirs > 0 && theirs + (ours / 64).max(64) < ours)
}

/// Splits differing buckets into those the peer holds nothing in (digest 0: the XOR of no
/// fingerprints), whose records are simply sent, and those whose fingerprints must be compared.
/// Fingerprints for a bucket the peer lacks entirely would only come back as `want`, a round trip
/// for nothing. A non-empty bucket whose fingerprints XOR to 0 (odds 2^-64) only means sending
/// records the peer may hold: merging is idempotent.
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
        let req = diff_request(&a, count, &compare);
        let fingerprints = req
            .fingerprints
            .values()
            .map(|f| decode(f).unwrap().len())
            .sum();
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
        let want: HashSet<u32> = decode(&reply.want).unwrap().into_iter().collect();
        let keys: Vec<String> = keys_to_send(&a, &req, &want, &empty)
            .into_iter()
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
    fn the_larger_side_leaves_a_big_difference_to_the_smaller() {
        assert!(leave_to_peer(100_000, Some(50_000)));
        assert!(
            !leave_to_peer(100_000, Some(99_000)),
            "small differences: either side"
        );
        assert!(!leave_to_peer(100, Some(90)));
        assert!(
            !leave_to_peer(50_000, Some(100_000)),
            "the smaller side syncs"
        );
        assert!(
            !leave_to_peer(100_000, Some(0)),
            "an empty peer gets everything directly"
        );
        assert!(!leave_to_peer(100_000, None), "agents that do not say");
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
            salt: 0,
            fingerprints: [(9, String::new())].into(),
        };
        assert!(matches!(
            answer_diff(&s, &req),
            Err(SyncError::BadBucket(9))
        ));
        let req = DiffRequest {
            count: 4,
            salt: 0,
            fingerprints: [(1, "not base64!".to_string())].into(),
        };
        assert!(matches!(
            answer_diff(&s, &req),
            Err(SyncError::Fingerprints(_))
        ));
    }
}
