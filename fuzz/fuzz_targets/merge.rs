//! Records decoded from bytes, merged in two orders and twice: the states are equal
//! (commutative, idempotent merge), whatever the keys, timestamps, TTLs and values.
#![no_main]

use c19::state::{Record, Spread, Store, StoreConfig};
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;

const CFG: StoreConfig = StoreConfig {
    default_ttl: None,
    tombstone_lifetime: u64::MAX / 4,
};

fn records(data: &[u8]) -> Vec<(String, Record)> {
    data.chunks(6)
        .filter(|c| c.len() == 6)
        .map(|c| {
            let key = format!("k{}", c[0] % 4);
            let ts = u64::from(c[1] % 8);
            let ttl = (c[2] % 3 != 0).then(|| u64::from(c[3]));
            let record = if c[4] % 5 == 0 {
                Record::tombstone(ts)
            } else {
                Record::value(
                    RawValue::from_string(format!("{}", c[5] % 7)).unwrap(),
                    ts,
                    ttl,
                )
            };
            (key, record)
        })
        .collect()
}

fn state(records: &[(String, Record)]) -> (u64, Vec<u8>) {
    let mut s = Store::new(CFG);
    for (k, r) in records {
        s.merge(k, r.clone(), 100, Spread::Quiet);
    }
    (
        s.sync_digest(),
        s.dump(100, true).len().to_le_bytes().to_vec(),
    )
}

fuzz_target!(|data: &[u8]| {
    let forward = records(data);
    let mut backward = forward.clone();
    backward.reverse();
    let twice: Vec<_> = forward.iter().chain(forward.iter()).cloned().collect();
    let a = state(&forward);
    assert_eq!(a, state(&backward), "merge order must not matter");
    assert_eq!(a, state(&twice), "merging twice changes nothing");
});
