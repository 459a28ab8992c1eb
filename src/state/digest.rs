//! Digests of a state: C19 0.1's version string, and the bucketed fingerprints that let two agents
//! find what differs between them without sending their whole state.

use xxhash_rust::xxh64::xxh64;

/// Fingerprints are kept per bucket at this resolution; coarser views fold it (power of two).
pub const FINE_BUCKETS: usize = 4096;

/// The bucket a key falls in at the finest resolution.
pub fn fine_bucket(key: &str) -> usize {
    (xxh64(key.as_bytes(), 0x0c19) as usize) & (FINE_BUCKETS - 1)
}

/// How many buckets two agents compare for a state of `len` records: about the square root, so
/// the bucket list and the fingerprints of one differing bucket cost about the same.
pub fn bucket_count(len: usize) -> usize {
    let root = (len as f64).sqrt() as usize;
    root.next_power_of_two().clamp(1, FINE_BUCKETS)
}

/// Folds the fine buckets into `count` buckets (a power of two dividing `FINE_BUCKETS`).
pub fn fold(fine: &[u64], count: usize) -> Vec<u64> {
    let mut out = vec![0u64; count];
    for (i, d) in fine.iter().enumerate() {
        out[i & (count - 1)] ^= d;
    }
    out
}

/// Whether `count` is a resolution agents may ask for.
pub fn valid_count(count: usize) -> bool {
    count.is_power_of_two() && count <= FINE_BUCKETS
}

/// C19 0.1's state version: XOR over entries of XXH64(key ‖ 0xFF ‖ ts as u64 LE). It ignores
/// values, so it only serves `GET /<version>` compatibility and diagnostics.
pub fn legacy_version<'a>(entries: impl Iterator<Item = (&'a str, u64)>) -> Option<u64> {
    let mut any = false;
    let mut acc = 0u64;
    for (key, ts) in entries {
        any = true;
        let mut buf = Vec::with_capacity(key.len() + 9);
        buf.extend_from_slice(key.as_bytes());
        buf.push(0xFF);
        buf.extend_from_slice(&ts.to_le_bytes());
        acc ^= xxh64(&buf, 0);
    }
    any.then_some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_version_matches_the_reference_vectors() {
        assert_eq!(
            legacy_version([("cat", 1601241450390)].into_iter()),
            Some(883365185692908898)
        );
        assert_eq!(
            legacy_version([("cat", 1601241450390), ("dog", 1601241450391)].into_iter()),
            Some(483569675125791900)
        );
        assert_eq!(legacy_version(std::iter::empty()), None);
    }

    #[test]
    fn folding_preserves_the_total() {
        let fine: Vec<u64> = (0..FINE_BUCKETS as u64)
            .map(|i| i.wrapping_mul(0x9E3779B97F4A7C15))
            .collect();
        let total = fine.iter().fold(0, |a, b| a ^ b);
        for count in [1, 2, 64, FINE_BUCKETS] {
            assert_eq!(fold(&fine, count).iter().fold(0, |a, b| a ^ b), total);
        }
        assert_eq!(fold(&fine, 1), vec![total]);
    }

    #[test]
    fn bucket_count_grows_with_the_state() {
        assert_eq!(bucket_count(0), 1);
        assert_eq!(bucket_count(100), 16);
        assert_eq!(bucket_count(100_000), 512);
        assert_eq!(bucket_count(usize::MAX >> 8), FINE_BUCKETS);
        assert!(valid_count(64) && !valid_count(3) && !valid_count(8192));
    }
}
