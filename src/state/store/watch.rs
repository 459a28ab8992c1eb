//! What watchers learn from the store: each change readers can see, in the order the store
//! applies it (see [`feed`](crate::state::feed)), and a snapshot consistent with it.

use std::sync::Arc;

use tokio::sync::broadcast;

use super::Store;
use crate::state::feed::{Change, ChangeKind, Position, Start, write_line};
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

    /// Starts recording changes for watchers (see [`Feed::start`]); needs the write lock once.
    pub fn start_watching(&mut self, now: u64) {
        self.feed.start(now);
    }

    /// A new watcher's receiver, where it starts (see [`Feed::subscribe`]) and the position it
    /// starts at; `None` until [`start_watching`](Self::start_watching).
    pub fn watch(
        &self,
        from: Option<Position>,
    ) -> Option<(broadcast::Receiver<Arc<Change>>, Start, Position)> {
        let (rx, start) = self.feed.subscribe(from)?;
        Some((rx, start, self.feed.position()))
    }

    /// Appends a `put` line, at the current position, for every live value a watcher wants (in
    /// no particular order): taken under the same lock as [`watch`](Self::watch), the snapshot
    /// and the changes after it have no gap and no overlap.
    pub fn write_snapshot(&self, out: &mut Vec<u8>, wanted: impl Fn(&str) -> bool, now: u64) {
        let position = self.feed.position();
        for (key, slot) in &self.entries {
            if wanted(key) && slot.record.is_live(now) {
                write_line(out, ChangeKind::Put, key, &slot.record, position);
            }
        }
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
    use crate::state::Spread;
    use serde_json::value::RawValue;

    use crate::state::store::testing::{store, write};

    fn snapshot_keys(lines: &[u8]) -> Vec<String> {
        let mut keys: Vec<String> = lines
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_slice(l).unwrap();
                assert_eq!(v["type"], "put");
                v["key"].as_str().unwrap().to_string()
            })
            .collect();
        keys.sort();
        keys
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
        s.start_watching(10);
        let (mut rx, _, _) = s.watch(None).unwrap();
        let mut snapshot = Vec::new();
        s.write_snapshot(&mut snapshot, |_| true, 10);
        assert_eq!(snapshot_keys(&snapshot), ["before"]);

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
        s.start_watching(0);
        let (mut rx, _, _) = s.watch(None).unwrap();
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
        s.start_watching(10);
        write(&mut s, "k9", "1", None, 11);
        let at = s.position();
        let (mut rx, start, position) = s.watch(Some(at)).unwrap();
        assert_eq!(position, at);
        assert!(matches!(start, Start::Resume(ref v) if v.is_empty()));
        let mut snapshot = Vec::new();
        s.write_snapshot(&mut snapshot, |k| k >= "k3", 11);
        assert_eq!(snapshot_keys(&snapshot), ["k3", "k4", "k9"]);
        for line in snapshot.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["pos"], at.to_string());
        }
        write(&mut s, "k3", "2", None, 12);
        let next = rx.try_recv().unwrap();
        assert_eq!(next.seq, at.seq + 1);
    }
}
