//! The peers a push's receiver is to pass its news on to (header `c19-share`). A write spreads
//! down a tree: the writer deals its peers into `r0` groups and pushes to the first of each,
//! handing it the rest of its group as its share; every receiver deals its share the same way.
//! Each agent then receives a write once, and the whole group holds it after about
//! log_(r0+1)(N) rounds, where random forwards needed more rounds and left ~11% of the group
//! (ten agents, r0 3) to anti-entropy because of forwards that met an agent that already held
//! the news.
//!
//! A share names each peer by a 32-bit hash of its address and, once learned, by the id the
//! peer answers with (header `c19-agent`), sent as base64 (~5.3 bytes a name): agents that
//! spell a peer differently (a host name here, an IP there, a proxy in between) still agree on
//! its id, and before they have learned it the address hashes agree wherever the spelling does
//! (the operator and the DNS provider hand every agent the same addresses).
//! A Bloom filter was tried first: every receiver tests each of its N peers against the share,
//! so false positives must stay well below 1/N, and at 100 agents a 2-bit-per-name filter made
//! 30% of the pushes duplicates. Two addresses whose hashes collide (odds about N²/2^33) only
//! put a peer in two shares: a duplicate push, never a lost record. No header, or a bad one, is
//! the empty share: the news is not passed on (C19 0.1 agents forward themselves).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use xxhash_rust::xxh64::xxh64;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Share {
    /// Sorted, without repeats.
    hashes: Vec<u32>,
}

impl Share {
    /// The share of these ids (see [`address_id`]).
    pub fn of(ids: impl IntoIterator<Item = u32>) -> Share {
        let mut hashes: Vec<u32> = ids.into_iter().collect();
        hashes.sort_unstable();
        hashes.dedup();
        Share { hashes }
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    pub fn contains(&self, id: u32) -> bool {
        self.hashes.binary_search(&id).is_ok()
    }

    /// Both shares: news merged from two pushes goes on to the peers either was to reach.
    pub fn union(&self, other: &Share) -> Share {
        let mut hashes = [&self.hashes[..], &other.hashes[..]].concat();
        hashes.sort_unstable();
        hashes.dedup();
        Share { hashes }
    }

    /// Base64 of the hashes' little-endian bytes; the empty string for the empty share.
    pub fn encode(&self) -> String {
        let bytes: Vec<u8> = self.hashes.iter().flat_map(|h| h.to_le_bytes()).collect();
        STANDARD.encode(bytes)
    }

    /// `None` for anything but base64 of a whole number of hashes.
    pub fn decode(text: &str) -> Option<Share> {
        let bytes = STANDARD.decode(text).ok()?;
        if bytes.len() % 4 != 0 {
            return None;
        }
        let mut hashes: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        Some(Share { hashes })
    }
}

/// The id of a peer known only by its address.
pub fn address_id(address: &str) -> u32 {
    xxh64(address.as_bytes(), 0x6331_3968) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
        range
            .map(|i| format!("10.0.{}.{}:4097", i / 250, i % 250))
            .collect()
    }

    fn share(names: &[String]) -> Share {
        Share::of(names.iter().map(|s| address_id(s)))
    }

    fn holds(share: &Share, name: &str) -> bool {
        share.contains(address_id(name))
    }

    #[test]
    fn names_in_a_share_are_contained_and_survive_the_wire() {
        for n in [1, 2, 10, 33, 100] {
            let inside = names(1..=n);
            let s = share(&inside);
            assert!(inside.iter().all(|n| holds(&s, n)));
            assert_eq!(Share::decode(&s.encode()), Some(s.clone()));
            assert!(names(1000..=9999).iter().all(|n| !holds(&s, n)));
        }
        assert_eq!(share(&names(1..=3)).encode().len(), 16);
    }

    #[test]
    fn a_union_holds_both_shares() {
        let (a, b) = (names(1..=2), names(2..=40));
        let both = share(&a).union(&share(&b));
        assert!(a.iter().chain(&b).all(|n| holds(&both, n)));
        assert_eq!(both, share(&names(1..=40)));
        assert_eq!(Share::default().union(&share(&b)), share(&b));
    }

    #[test]
    fn the_empty_share_holds_no_one_and_is_not_sent() {
        let empty = Share::of(std::iter::empty());
        assert!(empty.is_empty() && !holds(&empty, "10.0.0.1:4097"));
        assert_eq!(empty.encode(), "");
        assert_eq!(Share::decode(""), Some(empty));
    }

    #[test]
    fn a_bad_header_is_refused() {
        for bad in ["xyz!", "AAA=", "AAAAAAA="] {
            assert_eq!(Share::decode(bad), None, "{bad}");
        }
    }
}
