//! The replicated map and the bookkeeping that makes gossip cheap: digests kept up to date on
//! every change, an index of expiries, and the set of keys changed since the last push.
//!
//! Pure data structure: the caller passes the clock (`now`, ms since the epoch) and does the I/O.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::body::Incoming;
use super::digest::{FINE_BUCKETS, fine_bucket};
use super::feed::{ChangeKind, Feed};
use super::record::{Record, write_key};
use super::share::Share;

mod pages;
mod watch;

/// What the store's tests share: a store with a short tombstone lifetime, and app writes.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Store, StoreConfig};
    use crate::state::Incoming;
    use serde_json::value::RawValue;

    pub fn store() -> Store {
        Store::new(StoreConfig {
            default_ttl: None,
            tombstone_lifetime: 10_000,
        })
    }

    /// An app write of the JSON value `v`.
    pub fn write(s: &mut Store, key: &str, v: &str, ttl: Option<u64>, now: u64) {
        let value = Some(RawValue::from_string(v.into()).unwrap());
        s.write_local(
            key,
            Incoming {
                value,
                ts: None,
                ttl,
            },
            now,
        );
    }
}

/// Changes the feed keeps for watchers that reconnect, by default.
pub const DEFAULT_WATCH_HISTORY: usize = 16_384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// TTL given to values written without one.
    pub default_ttl: Option<u64>,
    /// How long deletes and expired values are remembered (ms).
    pub tombstone_lifetime: u64,
}

/// Maps and sets keyed by record keys. Keys come from the local app and from peers holding the
/// group's token; foldhash's per-process random seed is enough against them, and hashing every
/// key several times per merge with SipHash cost a fifth of a bulk load's CPU.
type KeyMap<V> = foldhash::HashMap<Box<str>, V>;
type KeySet = foldhash::HashSet<Box<str>>;

#[derive(Debug, Clone)]
struct Slot {
    record: Record,
    fingerprint: u64,
    bucket: u16,
}

/// What a slot adds to the digests and indexes.
#[derive(Debug, Clone, Copy)]
struct Footprint {
    fingerprint: u64,
    bucket: u16,
    tombstone: bool,
    ts: u64,
    expires_at: Option<u64>,
}

impl Slot {
    fn footprint(&self) -> Footprint {
        Footprint {
            fingerprint: self.fingerprint,
            bucket: self.bucket,
            tombstone: self.record.is_tombstone(),
            ts: self.record.ts,
            expires_at: self.record.expires_at(),
        }
    }
}

/// Whether a change should be pushed on to other peers by this agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// A local write: pushed at the next round down a tree over every peer (see
    /// [`Share`](super::Share)).
    Push,
    /// News received by a push with a share: passed on at the next round to the peers of that
    /// share.
    Forward,
    /// Not pushed: records pulled during anti-entropy (the peers that sent them already have
    /// them), and pushes with an empty share (the leaves of the tree).
    Quiet,
}

/// What a push round has to send, before it takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub local: bool,
    pub forwarded: bool,
    /// The peers the news is to be passed on to.
    pub share: Share,
}

/// Keys changed since the last push, newest versions to be read at push time.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub local: Vec<Box<str>>,
    pub forwarded: Vec<Box<str>>,
    /// The peers `forwarded` is to be passed on to.
    pub share: Share,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Values readers can see.
    pub keys: usize,
    pub tombstones: usize,
    /// Expired values kept to shadow older copies until they are forgotten.
    pub expired: usize,
}

#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    entries: KeyMap<Slot>,
    fine: Vec<u64>,
    sync_total: u64,
    values_xor: u64,
    legacy_xor: u64,
    expiries: BTreeSet<(u64, Box<str>)>,
    tombstones: usize,
    changed: KeySet,
    forwarded: KeySet,
    /// The peers `forwarded` is to be passed on to: the union of the shares that brought it.
    forward_share: Share,
    /// When the state last changed (ms): anti-entropy waits for a quiet state.
    last_change: u64,
    /// The changes watchers read (recording from the first watch on).
    feed: Feed,
    /// Every stored key in order, built at the first listing and kept from then on: a hash map
    /// serves reads and writes, this serves prefix pages.
    ordered: Option<BTreeSet<Box<str>>>,
    /// How many records have changed the state so far: how fast it is changing.
    changes: u64,
}

impl Store {
    pub fn new(config: StoreConfig) -> Store {
        Store {
            config,
            entries: KeyMap::default(),
            fine: vec![0; FINE_BUCKETS],
            sync_total: 0,
            values_xor: 0,
            legacy_xor: 0,
            expiries: BTreeSet::new(),
            tombstones: 0,
            changed: KeySet::default(),
            forwarded: KeySet::default(),
            forward_share: Share::default(),
            last_change: 0,
            changes: 0,
            feed: Feed::new(fastrand::u64(..), DEFAULT_WATCH_HISTORY),
            ordered: None,
        }
    }

    /// How many changes the feed keeps for watchers that reconnect.
    pub fn set_watch_history(&mut self, changes: usize) {
        self.feed = Feed::new(self.feed.position().epoch, changes);
    }

    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// The live record of `key`: a value that has not expired.
    pub fn get(&self, key: &str, now: u64) -> Option<&Record> {
        self.entries
            .get(key)
            .map(|s| &s.record)
            .filter(|r| r.is_live(now))
    }

    /// The stored record of `key`, whatever its kind.
    pub fn record(&self, key: &str) -> Option<&Record> {
        self.entries.get(key).map(|s| &s.record)
    }

    /// Applies an app write. Without `ts` the write is stamped `now`, or just after the current
    /// version when a peer with a faster clock wrote it, so an app always reads its own write.
    pub fn write_local(&mut self, key: &str, entry: Incoming, now: u64) -> bool {
        let ts = entry.ts.unwrap_or_else(|| self.next_ts(key, now));
        let record = match entry.value {
            Some(value) => Record::value(value, ts, entry.ttl.or(self.config.default_ttl)),
            None => Record::tombstone(ts),
        };
        self.merge(key, record, now, Spread::Push)
    }

    /// Deletes `key` with a tombstone that wins over every version this agent has seen.
    pub fn delete_local(&mut self, key: &str, now: u64) -> bool {
        let ts = self.next_ts(key, now);
        self.merge(key, Record::tombstone(ts), now, Spread::Push)
    }

    /// Applies an entry received from a peer.
    pub fn merge_incoming(&mut self, key: &str, entry: Incoming, now: u64, spread: Spread) -> bool {
        let ts = entry.ts.unwrap_or(now);
        let record = match entry.value {
            Some(value) => Record::value(value, ts, entry.ttl),
            None => Record::tombstone(ts),
        };
        self.merge(key, record, now, spread)
    }

    fn next_ts(&self, key: &str, now: u64) -> u64 {
        match self.entries.get(key) {
            Some(s) if s.record.ts >= now => s.record.ts.saturating_add(1),
            _ => now,
        }
    }

    /// The merge rule: keep the greater record. Records already past their forget time are
    /// refused, so a forgotten delete is not brought back by a lagging peer.
    pub fn merge(&mut self, key: &str, record: Record, now: u64, spread: Spread) -> bool {
        if record
            .forget_at(self.config.tombstone_lifetime)
            .is_some_and(|t| t < now)
        {
            return false;
        }
        if let Some(slot) = self.entries.get(key) {
            if !record.supersedes(&slot.record) {
                // Held already (a sync or a duplicate push brought it first): the push's share
                // still counts on this agent to pass it on.
                if spread == Spread::Forward && !self.changed.contains(key) {
                    self.forwarded.insert(key.into());
                }
                return false;
            }
        }
        let watched = self.feed.is_active();
        if watched {
            self.announce_expiries(now);
        }
        let fingerprint = record.fingerprint(key);
        let slot = Slot {
            record,
            fingerprint,
            bucket: fine_bucket(key) as u16,
        };
        let added = slot.footprint();
        // An overwrite replaces the slot in place: no new key allocation.
        let old = match self.entries.get_mut(key) {
            Some(current) => Some(std::mem::replace(current, slot)),
            None => {
                if let Some(ordered) = &mut self.ordered {
                    ordered.insert(key.into());
                }
                self.entries.insert(key.into(), slot)
            }
        };
        if watched {
            let was_live = old.as_ref().is_some_and(|o| o.record.is_live(now));
            self.announce(key, was_live, now);
        }
        // The old record's share goes first: when both expire at the same moment, their
        // expiry entries are equal, and removing the old one after adding the new one would
        // drop the new one's (an expired value would then count as live in the digest).
        if let Some(old) = old {
            self.account(key, old.footprint(), false);
        }
        self.account(key, added, true);
        self.last_change = now;
        self.changes += 1;
        match spread {
            Spread::Push => {
                self.forwarded.remove(key);
                self.changed.insert(key.into());
            }
            Spread::Forward if !self.changed.contains(key) => {
                self.forwarded.insert(key.into());
            }
            _ => {}
        }
        true
    }

    /// Adds (`added`) or removes a slot's share of every digest and index.
    fn account(&mut self, key: &str, slot: Footprint, added: bool) {
        let fp = slot.fingerprint;
        self.fine[slot.bucket as usize] ^= fp;
        self.sync_total ^= fp;
        if slot.tombstone {
            if added {
                self.tombstones += 1;
            } else {
                self.tombstones -= 1;
            }
            return;
        }
        self.values_xor ^= fp;
        self.legacy_xor ^=
            super::digest::legacy_version(std::iter::once((key, slot.ts))).unwrap_or(0);
        if let Some(at) = slot.expires_at {
            let entry = (at, Box::<str>::from(key));
            if added {
                self.expiries.insert(entry);
            } else {
                self.expiries.remove(&entry);
            }
        }
    }

    /// Keys whose record was written before `ts` (ms since the epoch).
    pub fn keys_written_before(&self, ts: u64) -> Vec<Box<str>> {
        self.entries
            .iter()
            .filter(|(_, s)| s.record.ts < ts)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forgets records outright, leaving no tombstone: for an agent back from a cut-off longer
    /// than the tombstone lifetime, whose peers no longer remember what they deleted (see
    /// `connection::resync`). Returns how many it held.
    pub fn forget<'a>(&mut self, keys: impl IntoIterator<Item = &'a str>, now: u64) -> usize {
        self.announce_expiries(now);
        let mut forgotten = 0;
        for key in keys {
            if let Some(slot) = self.entries.remove(key) {
                self.account(key, slot.footprint(), false);
                self.unindex(key);
                if slot.record.is_live(now) {
                    self.feed
                        .publish(ChangeKind::Delete, key, &Record::tombstone(slot.record.ts));
                }
                forgotten += 1;
            }
            self.changed.remove(key);
            self.forwarded.remove(key);
        }
        forgotten
    }

    /// Forgets deletes and expired values whose lifetime has passed. Returns how many.
    pub fn purge(&mut self, now: u64) -> usize {
        let lifetime = self.config.tombstone_lifetime;
        let dead: Vec<Box<str>> = self
            .entries
            .iter()
            .filter(|(_, s)| s.record.forget_at(lifetime).is_some_and(|t| t < now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in &dead {
            if let Some(slot) = self.entries.remove(key) {
                self.account(key, slot.footprint(), false);
                self.unindex(key);
            }
            self.changed.remove(key);
            self.forwarded.remove(key);
        }
        if self.entries.capacity() > 2 * self.entries.len() + 1024 {
            self.entries.shrink_to_fit();
        }
        dead.len()
    }

    fn expired(&self, now: u64) -> impl Iterator<Item = &str> {
        self.expiries
            .range(..(now, Box::<str>::from("")))
            .map(|(_, k)| &**k)
    }

    /// Digest of what readers see (live values only): equal on two agents exactly when they
    /// serve the same data. This is what the operator compares across a group.
    pub fn digest(&self, now: u64) -> u64 {
        self.expired(now)
            .fold(self.values_xor, |acc, k| acc ^ self.entries[k].fingerprint)
    }

    /// Digest of every stored record, tombstones included: what anti-entropy compares.
    pub fn sync_digest(&self) -> u64 {
        self.sync_total
    }

    /// C19 0.1's version of this state (values stored, ignoring whether they expired).
    pub fn legacy_version(&self) -> Option<u64> {
        (self.entries.len() > self.tombstones).then_some(self.legacy_xor)
    }

    pub fn counts(&self, now: u64) -> Counts {
        let expired = self.expired(now).count();
        Counts {
            keys: self.entries.len() - self.tombstones - expired,
            tombstones: self.tombstones,
            expired,
        }
    }

    /// Number of stored records; sizes the anti-entropy buckets.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bucket digests at `count` buckets (a power of two).
    pub fn buckets(&self, count: usize) -> Vec<u64> {
        super::digest::fold(&self.fine, count)
    }

    /// The fingerprints of the records in the given buckets (at `count` buckets).
    pub fn fingerprints_in(
        &self,
        count: usize,
        buckets: &HashSet<usize>,
    ) -> HashMap<usize, Vec<u64>> {
        let mut out: HashMap<usize, Vec<u64>> = buckets.iter().map(|b| (*b, Vec::new())).collect();
        for slot in self.entries.values() {
            if let Some(v) = out.get_mut(&(slot.bucket as usize & (count - 1))) {
                v.push(slot.fingerprint);
            }
        }
        out
    }

    /// Keys in the given buckets (at `count` buckets) whose record's fingerprint passes `keep`.
    pub fn keys_in_buckets(
        &self,
        count: usize,
        buckets: &HashSet<usize>,
        keep: impl Fn(u64) -> bool,
    ) -> Vec<&str> {
        if buckets.is_empty() {
            return Vec::new();
        }
        self.entries
            .iter()
            .filter(|(_, s)| buckets.contains(&(s.bucket as usize & (count - 1))))
            .filter(|(_, s)| keep(s.fingerprint))
            .map(|(k, _)| &**k)
            .collect()
    }

    /// Takes the keys changed since the last call, for the next push.
    pub fn take_changed(&mut self) -> Changes {
        let (forwarded, share) = self.take_forwarded();
        Changes {
            local: self.take_local(),
            forwarded,
            share,
        }
    }

    /// Takes the keys written locally since the last call.
    pub fn take_local(&mut self) -> Vec<Box<str>> {
        self.changed.drain().collect()
    }

    /// Takes the news received by push since the last call, and the peers to pass it on to.
    pub fn take_forwarded(&mut self) -> (Vec<Box<str>>, Share) {
        let keys = self.forwarded.drain().collect();
        (keys, std::mem::take(&mut self.forward_share))
    }

    /// What the next push round has to send: local writes, news, and where the news goes.
    pub fn pending(&self) -> Pending {
        Pending {
            local: !self.changed.is_empty(),
            forwarded: !self.forwarded.is_empty(),
            share: self.forward_share.clone(),
        }
    }

    /// Notes the share of the push that just brought news (kept with the news, under the same
    /// lock, so a forward never leaves out a peer one of its records was meant for).
    pub fn note_forward_share(&mut self, share: &Share) {
        self.forward_share = self.forward_share.union(share);
    }

    pub fn has_changes(&self) -> bool {
        !self.changed.is_empty() || !self.forwarded.is_empty()
    }

    /// How many records have changed the state since it was created.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// When the state last changed (ms since the epoch).
    pub fn last_change(&self) -> u64 {
        self.last_change
    }

    /// Renders the current records of `keys` as a body map; keys no longer stored are skipped,
    /// so a push always carries the newest version of each entry.
    pub fn render<'a>(&self, keys: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(b'{');
        for key in keys {
            if let Some(slot) = self.entries.get(key) {
                push_entry(&mut out, key, &slot.record, Form::Wire);
            }
        }
        finish_map(out)
    }

    /// The whole map as a body: live values, plus tombstones and expired values when
    /// `all` (peers need those so that deletes replicate).
    pub fn dump(&self, now: u64, all: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.entries.len() * 48);
        out.push(b'{');
        for (key, slot) in &self.entries {
            if all || slot.record.is_live(now) {
                push_entry(&mut out, key, &slot.record, Form::Answer);
            }
        }
        finish_map(out)
    }

    /// Live keys with the given prefix, sorted, at most `limit`.
    pub fn keys(&self, prefix: &str, now: u64, limit: usize) -> Vec<&str> {
        let mut keys: Vec<&str> = self
            .entries
            .iter()
            .filter(|(k, s)| k.starts_with(prefix) && s.record.is_live(now))
            .map(|(k, _)| &**k)
            .collect();
        keys.sort_unstable();
        keys.truncate(limit);
        keys
    }
}

/// How an entry is written: as answers show it, or as it travels between agents.
#[derive(Debug, Clone, Copy)]
enum Form {
    Answer,
    Wire,
}

fn push_entry(out: &mut Vec<u8>, key: &str, record: &Record, form: Form) {
    write_key(key, out);
    out.push(b':');
    match form {
        Form::Answer => record.write_json(out),
        Form::Wire => record.write_wire(out),
    }
    out.push(b',');
}

fn finish_map(mut out: Vec<u8>) -> Vec<u8> {
    if out.last() == Some(&b',') {
        out.pop();
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    const CFG: StoreConfig = StoreConfig {
        default_ttl: None,
        tombstone_lifetime: 1000,
    };

    fn val(s: &str) -> Option<Box<RawValue>> {
        Some(RawValue::from_string(s.into()).unwrap())
    }

    fn inc(v: &str, ts: Option<u64>, ttl: Option<u64>) -> Incoming {
        Incoming {
            value: val(v),
            ts,
            ttl,
        }
    }

    #[test]
    fn local_writes_are_read_back_and_marked_for_push() {
        let mut s = Store::new(CFG);
        assert!(s.write_local("cat", inc("\"garfield\"", None, None), 100));
        assert_eq!(s.get("cat", 100).unwrap().ts, 100);
        assert_eq!(s.take_changed().local, vec![Box::<str>::from("cat")]);
        assert!(!s.has_changes());
        assert_eq!(s.last_change(), 100);
    }

    #[test]
    fn news_from_a_push_is_forwarded_and_pulled_records_are_not() {
        let mut s = Store::new(CFG);
        s.merge_incoming("pushed", inc("1", Some(1), None), 5, Spread::Forward);
        s.merge_incoming("pulled", inc("1", Some(1), None), 6, Spread::Quiet);
        s.write_local("mine", inc("1", None, None), 7);
        s.merge_incoming("mine", inc("2", Some(8), None), 8, Spread::Forward);
        let c = s.take_changed();
        assert_eq!(
            c.local,
            vec![Box::<str>::from("mine")],
            "a local change stays a local push"
        );
        assert_eq!(c.forwarded, vec![Box::<str>::from("pushed")]);
        assert_eq!(s.last_change(), 8);
    }

    #[test]
    fn a_pushed_record_held_already_is_still_passed_on() {
        let mut s = Store::new(CFG);
        s.merge_incoming("k", inc("1", Some(1), None), 5, Spread::Quiet);
        assert!(!s.merge_incoming("k", inc("1", Some(1), None), 6, Spread::Forward));
        assert_eq!(s.take_changed().forwarded, vec![Box::<str>::from("k")]);
        assert_eq!(s.last_change(), 5, "no change, so no new quiet period");
    }

    #[test]
    fn a_local_write_wins_over_a_peer_clock_ahead() {
        let mut s = Store::new(CFG);
        s.merge_incoming("k", inc("1", Some(5000), None), 100, Spread::Quiet);
        s.write_local("k", inc("2", None, None), 100);
        assert_eq!(s.get("k", 100).unwrap().value.as_ref().unwrap().get(), "2");
        assert_eq!(s.get("k", 100).unwrap().ts, 5001);
    }

    #[test]
    fn default_ttl_applies_to_values_without_one() {
        let mut s = Store::new(StoreConfig {
            default_ttl: Some(10),
            ..CFG
        });
        s.write_local("a", inc("1", Some(100), None), 100);
        s.write_local("b", inc("1", Some(100), Some(50)), 100);
        assert!(s.get("a", 110).is_some() && s.get("a", 111).is_none());
        assert!(s.get("b", 150).is_some() && s.get("b", 151).is_none());
    }

    #[test]
    fn deletes_are_tombstones_that_win_and_are_forgotten_later() {
        let mut s = Store::new(CFG);
        s.write_local("k", inc("1", Some(10), None), 10);
        assert!(s.delete_local("k", 20));
        assert!(s.get("k", 20).is_none());
        assert_eq!(
            s.counts(20),
            Counts {
                keys: 0,
                tombstones: 1,
                expired: 0
            }
        );
        assert!(!s.merge_incoming("k", inc("1", Some(10), None), 30, Spread::Push));
        assert_eq!(s.purge(1020), 0);
        assert_eq!(s.purge(1021), 1);
        assert!(s.is_empty());
        // Once forgotten everywhere, an old delete arriving late is refused too.
        assert!(!s.merge("k", Record::tombstone(20), 1021, Spread::Push));
    }

    #[test]
    fn expired_values_leave_the_digest_and_are_forgotten_after_the_lifetime() {
        let mut s = Store::new(CFG);
        s.write_local("k", inc("1", Some(100), Some(10)), 100);
        let empty = Store::new(CFG);
        assert_ne!(s.digest(110), empty.digest(110));
        assert_eq!(s.digest(111), empty.digest(111));
        assert_eq!(
            s.counts(111),
            Counts {
                keys: 0,
                tombstones: 0,
                expired: 1
            }
        );
        assert_eq!(s.purge(1110), 0);
        assert_eq!(s.purge(1111), 1);
        assert_eq!(s.counts(1111), Counts::default());
    }

    #[test]
    fn digest_covers_values_and_sync_digest_covers_tombstones() {
        let mut a = Store::new(CFG);
        let mut b = Store::new(CFG);
        a.write_local("k", inc("1", Some(5), None), 5);
        b.write_local("k", inc("2", Some(5), None), 5);
        assert_ne!(a.digest(5), b.digest(5));
        assert_eq!(a.legacy_version(), b.legacy_version());
        b.merge_incoming("k", inc("1", Some(5), None), 5, Spread::Quiet);
        a.merge_incoming("k", inc("2", Some(5), None), 5, Spread::Quiet);
        assert_eq!(a.digest(5), b.digest(5));
        assert_eq!(a.sync_digest(), b.sync_digest());
        a.delete_local("x", 6);
        assert_eq!(a.digest(6), b.digest(6));
        assert_ne!(a.sync_digest(), b.sync_digest());
    }

    #[test]
    fn legacy_version_follows_the_original_definition() {
        let mut s = Store::new(CFG);
        assert_eq!(s.legacy_version(), None);
        s.write_local("cat", inc("1", Some(1601241450390), None), 0);
        assert_eq!(s.legacy_version(), Some(883365185692908898));
        s.write_local("dog", inc("1", Some(1601241450391), None), 0);
        assert_eq!(s.legacy_version(), Some(483569675125791900));
    }

    #[test]
    fn render_and_dump_produce_body_maps() {
        let mut s = Store::new(CFG);
        s.write_local("a", inc("1", Some(1), None), 1);
        s.delete_local("b", 2);
        let live: serde_json::Value = serde_json::from_slice(&s.dump(2, false)).unwrap();
        assert_eq!(
            live,
            serde_json::json!({"a": {"value": 1, "ts": 1, "ttl": null}})
        );
        let all: serde_json::Value = serde_json::from_slice(&s.dump(2, true)).unwrap();
        assert_eq!(all["b"]["deleted"], true);
        assert_eq!(s.render(["missing"]), b"{}");
        assert_eq!(s.keys("", 2, 10), vec!["a"]);
    }

    #[test]
    fn bucket_views_find_what_differs() {
        let mut a = Store::new(CFG);
        let mut b = Store::new(CFG);
        for i in 0..100 {
            let k = format!("k{i}");
            a.write_local(&k, inc("1", Some(1), None), 1);
            b.write_local(&k, inc("1", Some(1), None), 1);
        }
        b.write_local("k7", inc("2", Some(2), None), 2);
        let count = 16;
        let (ba, bb) = (a.buckets(count), b.buckets(count));
        let differ: HashSet<usize> = (0..count).filter(|i| ba[*i] != bb[*i]).collect();
        assert_eq!(differ.len(), 1);
        let fa = a.fingerprints_in(count, &differ);
        let known: HashSet<u64> = fa.values().flatten().copied().collect();
        assert_eq!(
            b.keys_in_buckets(count, &differ, |fp| !known.contains(&fp)),
            vec!["k7"]
        );
    }
}
