//! Property tests: the merge is commutative, associative and idempotent, so agents that receive
//! the same versions in any order, any number of times, hold the same state.

use proptest::prelude::*;
use serde_json::value::RawValue;

use super::record::Record;
use super::store::{Spread, Store, StoreConfig};

const CFG: StoreConfig = StoreConfig {
    default_ttl: None,
    tombstone_lifetime: u64::MAX / 4,
};
const NOW: u64 = 1_000;

fn record() -> impl Strategy<Value = (String, Record)> {
    let key = prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
    let value = prop::option::weighted(0.8, prop::sample::select(vec!["1", "2", "\"x\"", "null"]));
    let ttl = prop::option::of(0u64..2000);
    (key, value, 0u64..4, ttl).prop_map(|(k, v, ts, ttl)| {
        let r = match v {
            Some(v) => Record::value(RawValue::from_string(v.into()).unwrap(), ts, ttl),
            None => Record::tombstone(ts),
        };
        (k, r)
    })
}

fn state_of(records: &[(String, Record)]) -> Vec<u8> {
    let mut s = Store::new(CFG);
    for (k, r) in records {
        s.merge(k, r.clone(), NOW, Spread::Quiet);
    }
    canonical(&s)
}

fn canonical(s: &Store) -> Vec<u8> {
    let v: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&s.dump(NOW, true)).unwrap();
    let mut out = serde_json::to_vec(&v).unwrap();
    out.extend_from_slice(&s.sync_digest().to_le_bytes());
    out.extend_from_slice(&s.digest(NOW).to_le_bytes());
    out
}

proptest! {
    #[test]
    fn merge_is_commutative(records in prop::collection::vec(record(), 0..12), seed in any::<u64>()) {
        let mut shuffled = records.clone();
        let mut rng = fastrand::Rng::with_seed(seed);
        rng.shuffle(&mut shuffled);
        prop_assert_eq!(state_of(&records), state_of(&shuffled));
    }

    #[test]
    fn merge_is_associative(a in prop::collection::vec(record(), 0..6),
                            b in prop::collection::vec(record(), 0..6),
                            c in prop::collection::vec(record(), 0..6)) {
        // (a ⊔ b) ⊔ c, built by merging the dump of one store into another, equals a ⊔ (b ⊔ c).
        let merge_into = |dst: &mut Store, src: &[(String, Record)]| {
            for (k, r) in src { dst.merge(k, r.clone(), NOW, Spread::Quiet); }
        };
        let mut left = Store::new(CFG);
        merge_into(&mut left, &a);
        merge_into(&mut left, &b);
        let mut bc = Store::new(CFG);
        merge_into(&mut bc, &b);
        merge_into(&mut bc, &c);
        merge_into(&mut left, &c);
        let mut right = Store::new(CFG);
        merge_into(&mut right, &a);
        let dumped: Vec<(String, Record)> = bc_records(&bc);
        merge_into(&mut right, &dumped);
        prop_assert_eq!(canonical(&left), canonical(&right));
    }

    #[test]
    fn merge_is_idempotent(records in prop::collection::vec(record(), 0..12)) {
        let twice: Vec<_> = records.iter().chain(records.iter()).cloned().collect();
        prop_assert_eq!(state_of(&records), state_of(&twice));
    }
}

/// Reads a store back through its wire dump, the way a peer would receive it.
fn bc_records(s: &Store) -> Vec<(String, Record)> {
    let body = s.dump(NOW, true);
    super::body::parse_batch(
        &body,
        super::body::Origin::Peer,
        super::body::Limits {
            max_key_bytes: 64,
            max_entries: 1000,
        },
    )
    .unwrap()
    .into_iter()
    .map(|(k, e)| {
        let r = match e.value {
            Some(v) => Record::value(v, e.ts.unwrap(), e.ttl),
            None => Record::tombstone(e.ts.unwrap()),
        };
        (k, r)
    })
    .collect()
}

/// Found by `merge_is_commutative`: two values of a key that expire at the same moment. Their
/// expiry entries are equal, so the overwrite must remove the old one before adding the new
/// one, or the expired value would count as live in the digest.
#[test]
fn an_overwrite_expiring_at_the_same_moment_keeps_its_expiry() {
    let v = |ts, ttl| Record::value(RawValue::from_string("1".into()).unwrap(), ts, Some(ttl));
    let older_first = [("b".to_string(), v(2, 187)), ("b".to_string(), v(3, 186))];
    let newer_first = [older_first[1].clone(), older_first[0].clone()];
    assert_eq!(state_of(&older_first), state_of(&newer_first));
}
