//! Any bytes as a PUT body, from an app or a peer: parsing never panics, and what parses applies
//! to a store and survives a render/parse round trip.
#![no_main]

use c19::state::body::{Limits, Origin, parse_batch};
use c19::state::{Spread, Store, StoreConfig};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_key_bytes: 1024,
    max_entries: 10_000,
};

fuzz_target!(|data: &[u8]| {
    for origin in [Origin::App, Origin::Peer] {
        let Ok(entries) = parse_batch(data, origin, LIMITS) else {
            continue;
        };
        let mut store = Store::new(StoreConfig {
            default_ttl: Some(1000),
            tombstone_lifetime: 1000,
        });
        for (key, entry) in entries {
            store.merge_incoming(&key, entry, 5_000, Spread::Push);
        }
        let dump = store.dump(5_000, true);
        let again = parse_batch(&dump, Origin::Peer, LIMITS).expect("a rendered state parses");
        let mut copy = Store::new(StoreConfig {
            default_ttl: Some(1000),
            tombstone_lifetime: 1000,
        });
        for (key, entry) in again {
            copy.merge_incoming(&key, entry, 5_000, Spread::Quiet);
        }
        assert_eq!(
            store.sync_digest(),
            copy.sync_digest(),
            "the round trip keeps every record"
        );
    }
});
