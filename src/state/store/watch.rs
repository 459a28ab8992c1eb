//! What watchers learn from the store: each change readers can see, in the order the store
//! applies it (see [`feed`](crate::state::feed)), and a snapshot consistent with it.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Store;
use crate::state::feed::{Change, ChangeKind, Position, Start};
use crate::state::record::Record;

impl Store {
    /// Tells watchers what a merge changed for readers: a value they now see, or a value gone.
    pub(super) fn announce(&mut self, key: &str, was_live: bool, now: u64) {
        let record = &self.entries[key].record;
        if record.is_live(now) {
            self.feed.publish(ChangeKind::Put, key, record);
        } else if was_live {
            let kind = if record.is_tombstone() {
                ChangeKind::Delete
            } else {
                ChangeKind::Expire
            };
            self.feed.publish(kind, key, &Record::tombstone(record.ts));
        }
    }

    /// Whether a value has expired since the last announcement (watchers are told).
    pub fn expiries_due(&self, now: u64) -> bool {
        self.feed.is_active()
            && self
                .expiries
                .range((self.feed.expiry_mark, Box::<str>::from(""))..)
                .next()
                .is_some_and(|(at, _)| *at < now)
    }

    /// Tells watchers of the values that expired since the last call.
    pub fn announce_expiries(&mut self, now: u64) {
        if !self.feed.is_active() || now <= self.feed.expiry_mark {
            return;
        }
        let from = (self.feed.expiry_mark, Box::<str>::from(""));
        let to = (now, Box::<str>::from(""));
        let due: Vec<(u64, Box<str>)> = self.expiries.range(from..to).cloned().collect();
        self.feed.expiry_mark = now;
        for (_, key) in due {
            let ts = self.entries[&*key].record.ts;
            self.feed
                .publish(ChangeKind::Expire, &key, &Record::tombstone(ts));
        }
    }

    /// A new watcher's receiver, where it starts (see [`Feed::subscribe`]) and the position
    /// it starts at. Announces due expiries first, so the position covers them.
    pub fn watch(
        &mut self,
        from: Option<Position>,
        now: u64,
    ) -> (broadcast::Receiver<Arc<Change>>, Start, Position) {
        let (rx, start) = self.feed.subscribe(from, now);
        self.announce_expiries(now);
        (rx, start, self.feed.position())
    }

    /// The live values a watcher wants, in key order, each at the current position: taken under
    /// the same lock as [`watch`](Self::watch), the snapshot and the changes after it have no
    /// gap and no overlap.
    pub fn snapshot(&self, wanted: impl Fn(&str) -> bool, now: u64) -> Vec<Arc<Change>> {
        let position = self.feed.position();
        let mut values: Vec<Arc<Change>> = self
            .entries
            .iter()
            .filter(|(k, s)| wanted(k) && s.record.is_live(now))
            .map(|(k, s)| Arc::new(Change::new(position, ChangeKind::Put, k, s.record.clone())))
            .collect();
        values.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        values
    }

    /// Whether somebody has watched (the feed records from then on).
    pub fn is_watched(&self) -> bool {
        self.feed.is_active()
    }

    /// The feed's current position.
    pub fn position(&self) -> Position {
        self.feed.position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::StoreConfig;
    use crate::state::{Incoming, Spread};
    use serde_json::value::RawValue;

    fn store() -> Store {
        Store::new(StoreConfig {
            default_ttl: None,
            tombstone_lifetime: 10_000,
        })
    }

    fn write(s: &mut Store, key: &str, v: &str, ttl: Option<u64>, now: u64) {
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

    fn drain(rx: &mut broadcast::Receiver<Arc<Change>>) -> Vec<(ChangeKind, String)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| (c.kind, c.key.to_string()))
            .collect()
    }

    #[test]
    fn watchers_see_what_readers_see_change() {
        let mut s = store();
        write(&mut s, "before", "1", None, 10);
        let (mut rx, _, _) = s.watch(None, 10);
        let snapshot = s.snapshot(|_| true, 10);
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot[0].seq, s.position().seq);

        write(&mut s, "a", "1", None, 20);
        write(&mut s, "a", "2", None, 21);
        s.delete_local("a", 22);
        // Deleting what readers do not see changes nothing they see.
        s.delete_local("never", 23);
        // A peer's older version loses the merge: no change.
        let old = Record::value(RawValue::from_string("0".into()).unwrap(), 1, None);
        s.merge("before", old, 24, Spread::Forward);
        write(&mut s, "short", "1", Some(5), 30);
        assert!(!s.expiries_due(35));
        assert!(s.expiries_due(36));
        s.announce_expiries(36);
        use ChangeKind::*;
        assert_eq!(
            drain(&mut rx),
            [
                (Put, "a".into()),
                (Put, "a".into()),
                (Delete, "a".into()),
                (Put, "short".into()),
                (Expire, "short".into())
            ]
        );
    }

    #[test]
    fn an_expiry_not_yet_announced_comes_before_the_write_after_it() {
        let mut s = store();
        let (mut rx, _, _) = s.watch(None, 0);
        write(&mut s, "k", "1", Some(5), 10);
        // Expired at 16, overwritten at 20 before any tick announced it.
        write(&mut s, "k", "2", None, 20);
        use ChangeKind::*;
        assert_eq!(
            drain(&mut rx),
            [(Put, "k".into()), (Expire, "k".into()), (Put, "k".into())]
        );
    }

    #[test]
    fn a_snapshot_and_the_changes_after_it_neither_overlap_nor_leave_a_gap() {
        let mut s = store();
        for i in 0..5 {
            write(&mut s, &format!("k{i}"), "1", None, 10);
        }
        let _ = s.watch(None, 10);
        write(&mut s, "k9", "1", None, 11);
        let at = s.position();
        let (mut rx, start, position) = s.watch(Some(at), 11);
        assert_eq!(position, at);
        assert!(matches!(start, Start::Resume(ref v) if v.is_empty()));
        let snapshot = s.snapshot(|k| k >= "k3", 11);
        let keys: Vec<&str> = snapshot.iter().map(|c| &*c.key).collect();
        assert_eq!(keys, ["k3", "k4", "k9"]);
        assert!(snapshot.iter().all(|c| c.position() == at));
        write(&mut s, "k3", "2", None, 12);
        let next = rx.try_recv().unwrap();
        assert_eq!(next.seq, at.seq + 1);
    }
}
