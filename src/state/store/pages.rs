//! Prefix pages over the keyspace, and entity tags for conditional writes.

use std::ops::Bound;

use super::Store;
use crate::state::record::Record;

impl Store {
    pub(super) fn unindex(&mut self, key: &str) {
        if let Some(ordered) = &mut self.ordered {
            ordered.remove(key);
        }
    }

    /// The fingerprint of `key`'s live record: its entity tag for conditional requests.
    pub fn etag(&self, key: &str, now: u64) -> Option<u64> {
        self.entries
            .get(key)
            .filter(|s| s.record.is_live(now))
            .map(|s| s.fingerprint)
    }

    /// The live record of `key` with its entity tag.
    pub fn get_tagged(&self, key: &str, now: u64) -> Option<(&Record, u64)> {
        self.entries
            .get(key)
            .filter(|s| s.record.is_live(now))
            .map(|s| (&s.record, s.fingerprint))
    }

    /// Whether prefix listings can be answered (the ordered index exists).
    pub fn is_ordered(&self) -> bool {
        self.ordered.is_some()
    }

    /// Builds the ordered index of keys prefix listings read (once; kept up to date after).
    pub fn order(&mut self) {
        if self.ordered.is_none() {
            self.ordered = Some(self.entries.keys().cloned().collect());
        }
    }

    /// A page of live entries whose key starts with `prefix`, in key order, after `after`
    /// (exclusive), at most `limit`; and whether more follow. Needs [`order`](Self::order).
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        now: u64,
    ) -> (Vec<(&str, &Record)>, bool) {
        let Some(ordered) = &self.ordered else {
            return (Vec::new(), false);
        };
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut page = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let keys = ordered
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(|k| k.starts_with(prefix));
        for key in keys {
            let record = &self.entries[&**key].record;
            if !record.is_live(now) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push((&**key, record));
        }
        (page, more)
    }
}

#[cfg(test)]
mod tests {
    use crate::state::store::testing::{store, write};

    #[test]
    fn pages_follow_key_order_and_skip_what_readers_do_not_see() {
        let mut s = store();
        for k in ["a/1", "a/3", "b/1", "a/2", "a/5", "a"] {
            write(&mut s, k, "1", None, 10);
        }
        assert_eq!(s.list("a/", None, 10, 10), (vec![], false), "unordered yet");
        s.order();
        write(&mut s, "a/4", "1", Some(1), 10); // expired at 12
        s.delete_local("a/3", 10);
        let keys = |page: Vec<(&str, &crate::state::Record)>| {
            page.into_iter()
                .map(|(k, _)| k.to_string())
                .collect::<Vec<_>>()
        };
        let (page, more) = s.list("a/", None, 2, 20);
        assert_eq!((keys(page), more), (vec!["a/1".into(), "a/2".into()], true));
        let (page, more) = s.list("a/", Some("a/2"), 2, 20);
        assert_eq!((keys(page), more), (vec!["a/5".into()], false));
        let (page, _) = s.list("", Some("a/5"), 10, 20);
        assert_eq!(keys(page), ["b/1"]);
        // A continuation before the prefix starts at the prefix.
        let (page, _) = s.list("b", Some("a"), 10, 20);
        assert_eq!(keys(page), ["b/1"]);
        s.purge(100_000);
        let (page, _) = s.list("a/", None, 10, 100_000);
        assert_eq!(keys(page), ["a/1", "a/2", "a/5"]);
    }

    #[test]
    fn the_etag_changes_with_every_version() {
        let mut s = store();
        assert_eq!(s.etag("k", 10), None);
        write(&mut s, "k", "1", None, 10);
        let first = s.etag("k", 10).unwrap();
        write(&mut s, "k", "1", None, 11);
        assert_ne!(s.etag("k", 11), Some(first));
        s.delete_local("k", 12);
        assert_eq!(s.etag("k", 12), None);
    }
}
