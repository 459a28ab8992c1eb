//! One stored version of a key: a value or a tombstone, with its timestamp and TTL.
//!
//! The merge rule lives here as a total order on records: the greater record wins. Because it is a
//! total order, merging is taking a maximum, which is commutative, associative and idempotent, so
//! agents converge whatever order gossip delivers versions in, including on equal timestamps.

use std::cmp::Ordering;

use serde_json::value::RawValue;
use xxhash_rust::xxh64::xxh64;

#[derive(Debug, Clone)]
pub struct Record {
    /// The value as compact JSON text; `None` is a tombstone (the key was deleted).
    pub value: Option<Box<RawValue>>,
    /// Milliseconds since the epoch.
    pub ts: u64,
    /// Milliseconds relative to `ts`.
    pub ttl: Option<u64>,
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.merge_cmp(other) == Ordering::Equal
    }
}

impl Eq for Record {}

impl Record {
    pub fn value(value: Box<RawValue>, ts: u64, ttl: Option<u64>) -> Record {
        Record {
            value: Some(value),
            ts,
            ttl,
        }
    }

    pub fn tombstone(ts: u64) -> Record {
        Record {
            value: None,
            ts,
            ttl: None,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// When the value stops being served (`ts + ttl`, saturating); `None` when it never does.
    pub fn expires_at(&self) -> Option<u64> {
        self.value.as_ref()?;
        self.ttl.map(|ttl| self.ts.saturating_add(ttl))
    }

    /// Served to readers: a value whose expiry is not in the past (`ts + ttl < now` expires it).
    pub fn is_live(&self, now: u64) -> bool {
        self.value.is_some() && self.expires_at().is_none_or(|at| at >= now)
    }

    /// When the record may be forgotten: deletes and expired values are kept for `lifetime` ms so
    /// that an older copy held by a lagging peer cannot bring the key back.
    pub fn forget_at(&self, lifetime: u64) -> Option<u64> {
        let end = if self.is_tombstone() {
            Some(self.ts)
        } else {
            self.expires_at()
        };
        end.map(|e| e.saturating_add(lifetime))
    }

    /// The merge order: newer `ts` wins; on equal `ts` a delete wins, then the greater value bytes,
    /// then the greater TTL. Every agent compares the same bytes, so ties break the same way
    /// everywhere.
    pub fn merge_cmp(&self, other: &Record) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then_with(|| self.is_tombstone().cmp(&other.is_tombstone()))
            .then_with(|| {
                let a = self.value.as_deref().map(RawValue::get);
                let b = other.value.as_deref().map(RawValue::get);
                a.cmp(&b)
            })
            .then_with(|| self.ttl.cmp(&other.ttl))
    }

    /// Whether this record replaces `current` under the merge rule.
    pub fn supersedes(&self, current: &Record) -> bool {
        self.merge_cmp(current) == Ordering::Greater
    }

    /// A 64-bit fingerprint of key and record, covering the value so that equal digests mean
    /// equal states (up to hash collisions), unlike C19 0.1's version.
    pub fn fingerprint(&self, key: &str) -> u64 {
        // One pass over the bytes in a buffer: the same hash as feeding them to a streaming
        // hasher piece by piece, at a fraction of the cost for small records.
        let value = self.value.as_deref().map_or("", RawValue::get);
        let mut buf = Vec::with_capacity(key.len() + value.len() + 20);
        buf.extend_from_slice(key.as_bytes());
        buf.push(0xFF);
        buf.extend_from_slice(&self.ts.to_le_bytes());
        match &self.value {
            None => buf.push(0),
            Some(_) => {
                buf.push(1);
                match self.ttl {
                    None => buf.push(0),
                    Some(t) => {
                        buf.push(1);
                        buf.extend_from_slice(&t.to_le_bytes());
                    }
                }
                buf.extend_from_slice(value.as_bytes());
            }
        }
        xxh64(&buf, 0)
    }

    /// Appends the wire form `{"value":…,"ts":…,"ttl":…}`; tombstones carry `"deleted":true`
    /// and a `null` value, which C19 0.1 peers read as a null value.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        self.write(out, true)
    }

    /// The entry as it travels between agents: without `"ttl":null`, a fifth of a small record,
    /// which a missing `ttl` means just as well.
    pub fn write_wire(&self, out: &mut Vec<u8>) {
        self.write(out, false)
    }

    fn write(&self, out: &mut Vec<u8>, null_ttl: bool) {
        out.extend_from_slice(b"{\"value\":");
        match &self.value {
            Some(v) => out.extend_from_slice(v.get().as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"ts\":");
        write_u64(self.ts, out);
        match self.ttl {
            Some(t) => {
                out.extend_from_slice(b",\"ttl\":");
                write_u64(t, out);
            }
            None if null_ttl => out.extend_from_slice(b",\"ttl\":null"),
            None => {}
        }
        if self.is_tombstone() {
            out.extend_from_slice(b",\"deleted\":true");
        }
        out.push(b'}');
    }
}

fn write_u64(n: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    write!(out, "{n}").expect("writing to a Vec cannot fail");
}

/// Appends `key` as a JSON string.
pub fn write_key(key: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, key).expect("writing a string to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str, ts: u64, ttl: Option<u64>) -> Record {
        Record::value(RawValue::from_string(s.into()).unwrap(), ts, ttl)
    }

    #[test]
    fn newer_ts_wins_and_ties_break_by_content() {
        assert!(v("\"a\"", 2, None).supersedes(&v("\"b\"", 1, None)));
        assert!(!v("\"b\"", 1, None).supersedes(&v("\"a\"", 2, None)));
        assert!(v("\"b\"", 1, None).supersedes(&v("\"a\"", 1, None)));
        assert!(!v("\"a\"", 1, None).supersedes(&v("\"b\"", 1, None)));
        assert!(Record::tombstone(1).supersedes(&v("\"z\"", 1, None)));
        assert!(v("\"a\"", 1, Some(5)).supersedes(&v("\"a\"", 1, None)));
        assert!(!v("\"a\"", 1, None).supersedes(&v("\"a\"", 1, None)));
    }

    #[test]
    fn ttl_is_relative_to_ts_and_saturates() {
        let r = v("1", 1000, Some(500));
        assert!(r.is_live(1500));
        assert!(!r.is_live(1501));
        let r = v("1", u64::MAX - 1, Some(10));
        assert_eq!(r.expires_at(), Some(u64::MAX));
        assert!(r.is_live(u64::MAX));
        assert!(v("1", 0, None).is_live(u64::MAX));
        assert!(!Record::tombstone(5).is_live(0));
    }

    #[test]
    fn forget_time_covers_tombstones_and_expired_values() {
        assert_eq!(Record::tombstone(100).forget_at(50), Some(150));
        assert_eq!(v("1", 100, Some(10)).forget_at(50), Some(160));
        assert_eq!(v("1", 100, None).forget_at(50), None);
    }

    #[test]
    fn fingerprint_covers_the_value() {
        assert_ne!(
            v("1", 1, None).fingerprint("k"),
            v("2", 1, None).fingerprint("k")
        );
        assert_ne!(
            v("1", 1, None).fingerprint("k"),
            v("1", 1, None).fingerprint("j")
        );
        assert_ne!(
            v("1", 1, None).fingerprint("k"),
            v("1", 1, Some(1)).fingerprint("k")
        );
        assert_ne!(
            v("null", 1, None).fingerprint("k"),
            Record::tombstone(1).fingerprint("k")
        );
    }

    #[test]
    fn fingerprints_hash_the_fields_in_one_stream() {
        let mut h = xxhash_rust::xxh64::Xxh64::new(0);
        for part in [
            &b"k"[..],
            &[0xFF],
            &7u64.to_le_bytes(),
            &[1, 1],
            &3u64.to_le_bytes(),
            b"42",
        ] {
            h.update(part);
        }
        assert_eq!(v("42", 7, Some(3)).fingerprint("k"), h.digest());
    }

    #[test]
    fn renders_the_wire_form() {
        let mut out = Vec::new();
        v("{\"a\":1}", 7, Some(3)).write_json(&mut out);
        assert_eq!(out, br#"{"value":{"a":1},"ts":7,"ttl":3}"#);
        out.clear();
        Record::tombstone(9).write_json(&mut out);
        assert_eq!(out, br#"{"value":null,"ts":9,"ttl":null,"deleted":true}"#);
        out.clear();
        Record::tombstone(9).write_wire(&mut out);
        assert_eq!(out, br#"{"value":null,"ts":9,"deleted":true}"#);
        out.clear();
        v("1", 7, Some(3)).write_wire(&mut out);
        assert_eq!(out, br#"{"value":1,"ts":7,"ttl":3}"#);
    }
}
