//! Short fingerprints for the diff step of anti-entropy. A sync whose differences are spread over
//! every bucket sends the fingerprints of a whole state, so their size decides what a sync costs:
//! 64-bit fingerprints as JSON numbers took ~20 bytes each, a third of a small record. Here each is
//! folded to 32 bits under a salt the requester draws per sync, and packed as base64: ~5.3 bytes.
//!
//! Two different records may share a short fingerprint in one sync (odds about n / 2^32); the
//! record is then not sent that time, the full digests still differ, and the next sync, under
//! another salt, moves it. In the other direction a collision only sends a record twice.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// `fingerprint` folded to 32 bits under `salt`.
pub fn short(fingerprint: u64, salt: u64) -> u32 {
    // Multiplying by an odd constant spreads the salted bits; the high half mixes all of them.
    ((fingerprint ^ salt).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
}

/// Short fingerprints as base64 of their little-endian bytes.
pub fn encode(shorts: impl IntoIterator<Item = u32>) -> String {
    let bytes: Vec<u8> = shorts.into_iter().flat_map(u32::to_le_bytes).collect();
    STANDARD.encode(bytes)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FingerprintError {
    #[error("fingerprints are not base64: {0}")]
    Base64(String),
    #[error("fingerprints are {0} bytes, not a multiple of 4")]
    Length(usize),
}

pub fn decode(text: &str) -> Result<Vec<u32>, FingerprintError> {
    let bytes = STANDARD
        .decode(text)
        .map_err(|e| FingerprintError::Base64(e.to_string()))?;
    if bytes.len() % 4 != 0 {
        return Err(FingerprintError::Length(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let shorts = vec![0, 1, u32::MAX, 0xdead_beef];
        assert_eq!(decode(&encode(shorts.clone())).unwrap(), shorts);
        assert_eq!(decode("").unwrap(), Vec::<u32>::new());
        assert!(matches!(
            decode("not base64!"),
            Err(FingerprintError::Base64(_))
        ));
        assert_eq!(decode("AAA="), Err(FingerprintError::Length(2)));
    }

    #[test]
    fn a_collision_under_one_salt_is_gone_under_another() {
        // Find two fingerprints that collide under salt 0, then check other salts separate them.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0u64..)
            .map(|i| i.wrapping_mul(0x2545_F491_4F6C_DD1D))
            .find_map(|fp| seen.insert(short(fp, 0) >> 12, fp).map(|other| (other, fp)))
            .unwrap();
        assert_eq!(short(a, 0) >> 12, short(b, 0) >> 12);
        assert!((1..20).any(|salt| short(a, salt) >> 12 != short(b, salt) >> 12));
    }
}
