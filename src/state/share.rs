//! The peers a push's receiver is to pass its news on to (header `c19-share`). A write spreads
//! down a tree: the writer deals its peers into `r0` groups and pushes to the first of each,
//! handing it the rest of its group as its share; every receiver deals its share the same way.
//! Each agent then receives a write once, and the whole group holds it after about
//! log_(r0+1)(N) rounds, where random forwards needed more rounds and left ~11% of the group
//! (ten agents, r0 3) to anti-entropy because of forwards that met an agent that already held
//! the news.
//!
//! The set is a Bloom filter of 64 to 512 bits (two bits per name, about sixteen bits per name
//! while that fits): small on the wire whatever the group size. A false positive puts a peer in
//! two shares, which costs a duplicate push and never loses a record. No header, or a bad one,
//! is the empty share: the news is not passed on (C19 0.1 agents forward themselves).

use xxhash_rust::xxh64::xxh64;

/// Bits set per name.
const BITS_PER_NAME: u32 = 2;
/// Filter bits aimed for per name, for about 1.5% false positives.
const BITS_AIMED_PER_NAME: usize = 16;
/// Filter size bounds, in 64-bit words: a header of 16 to 128 hex digits.
const MIN_WORDS: usize = 1;
const MAX_WORDS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Share {
    /// A power of two of 64-bit words, `MIN_WORDS..=MAX_WORDS`; empty for the empty share.
    words: Vec<u64>,
}

impl Share {
    /// The share holding exactly `names` (plus false positives).
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Share {
        let names: Vec<&str> = names.into_iter().collect();
        if names.is_empty() {
            return Share::default();
        }
        let words = (names.len() * BITS_AIMED_PER_NAME)
            .div_ceil(64)
            .next_power_of_two()
            .clamp(MIN_WORDS, MAX_WORDS);
        let mut share = Share {
            words: vec![0; words],
        };
        for name in names {
            for bit in bits(name, words * 64) {
                share.words[bit / 64] |= 1 << (bit % 64);
            }
        }
        share
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// Whether `name` is in the share (false positives possible, no false negatives).
    pub fn contains(&self, name: &str) -> bool {
        !self.words.is_empty()
            && bits(name, self.words.len() * 64)
                .all(|bit| self.words[bit / 64] & 1 << (bit % 64) != 0)
    }

    /// Both shares: news merged from two pushes goes on to the peers either was to reach. The
    /// larger filter is folded onto the smaller (a bit's index modulo a smaller power of two is
    /// the index the smaller filter would have used).
    pub fn union(&self, other: &Share) -> Share {
        let (small, large) = if self.words.len() <= other.words.len() {
            (self, other)
        } else {
            (other, self)
        };
        if small.words.is_empty() {
            return large.clone();
        }
        let mut words = small.words.clone();
        for (i, w) in large.words.iter().enumerate() {
            words[i % small.words.len()] |= w;
        }
        Share { words }
    }

    /// Hex digits, 16 per word; the empty string for the empty share.
    pub fn encode(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        self.words.iter().map(|w| format!("{w:016x}")).collect()
    }

    /// `None` for anything but 16, 32, 64 or 128 hex digits.
    pub fn decode(text: &str) -> Option<Share> {
        let words = text.len() / 16;
        if text.len() % 16 != 0 || !words.is_power_of_two() || words > MAX_WORDS {
            return None;
        }
        let words = (0..words)
            .map(|i| u64::from_str_radix(text.get(i * 16..(i + 1) * 16)?, 16).ok())
            .collect::<Option<Vec<u64>>>()?;
        Some(Share { words })
    }
}

/// The bits of `name` in a filter of `size` bits.
fn bits(name: &str, size: usize) -> impl Iterator<Item = usize> {
    let h = xxh64(name.as_bytes(), 0x6331_3968);
    (0..BITS_PER_NAME).map(move |i| (h >> (i * 32)) as usize % size)
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
        Share::of(names.iter().map(|s| s.as_str()))
    }

    #[test]
    fn names_in_a_share_are_contained_and_survive_the_wire() {
        for n in [1, 2, 10, 33, 100] {
            let inside = names(1..=n);
            let s = share(&inside);
            assert!(inside.iter().all(|n| s.contains(n)));
            assert_eq!(Share::decode(&s.encode()), Some(s.clone()));
            let outside = names(1000..=1999);
            let false_positives = outside.iter().filter(|n| s.contains(n)).count();
            let bound = if n <= 32 { 40 } else { 200 };
            assert!(
                false_positives < bound,
                "{n} names: {false_positives} of 1000"
            );
        }
        assert_eq!(share(&names(1..=2)).encode().len(), 16);
        assert_eq!(share(&names(1..=300)).encode().len(), 128);
    }

    #[test]
    fn a_union_holds_both_shares_whatever_their_sizes() {
        let (a, b) = (names(1..=2), names(10..=40));
        let both = share(&a).union(&share(&b));
        assert!(a.iter().chain(&b).all(|n| both.contains(n)));
        assert_eq!(both, share(&b).union(&share(&a)));
        assert_eq!(Share::default().union(&share(&b)), share(&b));
    }

    #[test]
    fn the_empty_share_holds_no_one_and_is_not_sent() {
        let empty = Share::of(std::iter::empty());
        assert!(empty.is_empty() && !empty.contains("10.0.0.1:4097"));
        assert_eq!(empty.encode(), "");
    }

    #[test]
    fn a_bad_header_is_refused() {
        for bad in [
            "",
            "xyz",
            &"g".repeat(16),
            &"0".repeat(48),
            &"0".repeat(256),
        ] {
            assert_eq!(Share::decode(bad), None, "{bad}");
        }
        assert!(Share::decode(&"0".repeat(32)).is_some());
    }
}
