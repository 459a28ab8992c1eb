//! The change feed watchers read: every change readers of this agent can see (a value written
//! or merged, a delete, an expiry), numbered in the order the store applied it.
//!
//! Positions are `<epoch>-<seq>`: the epoch is drawn at each start, so a position from before a
//! restart is recognised and answered with a reset rather than a silent gap. The feed keeps the
//! last `capacity` changes so that a watcher that reconnects resumes where it stopped; it starts
//! recording at the first watch, so an agent nobody watches pays nothing.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use super::record::{Record, write_key};

/// Where in an agent's feed a watcher stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: u64,
    /// The sequence number of the last change seen (0: none).
    pub seq: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.epoch, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("position {0:?} is not <16 hex digits>-<sequence number> as a watch event gives it")]
pub struct BadPosition(pub String);

impl std::str::FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Position, BadPosition> {
        let bad = || BadPosition(s.to_string());
        let (epoch, seq) = s.split_once('-').ok_or_else(bad)?;
        if epoch.len() != 16 {
            return Err(bad());
        }
        Ok(Position {
            epoch: u64::from_str_radix(epoch, 16).map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A value readers now see (written here or merged from a peer).
    Put,
    /// The key was deleted (or forgotten after a long cut-off).
    Delete,
    /// The value's TTL ran out.
    Expire,
}

/// One change, shared by every watcher; its JSON line is rendered once, by the first watcher
/// that sends it.
#[derive(Debug)]
pub struct Change {
    pub seq: u64,
    pub epoch: u64,
    pub kind: ChangeKind,
    pub key: Box<str>,
    /// The value (for `Put`), or the timestamp of the delete or of the expired value.
    pub record: Record,
    line: OnceLock<Vec<u8>>,
}

impl Change {
    pub fn new(position: Position, kind: ChangeKind, key: &str, record: Record) -> Change {
        Change {
            seq: position.seq,
            epoch: position.epoch,
            kind,
            key: key.into(),
            record,
            line: OnceLock::new(),
        }
    }

    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The event as one JSON line (NDJSON).
    pub fn line(&self) -> &[u8] {
        self.line.get_or_init(|| {
            let mut out = Vec::with_capacity(64 + self.key.len());
            write_line(
                &mut out,
                self.kind,
                &self.key,
                &self.record,
                self.position(),
            );
            out
        })
    }
}

/// Appends one event line: `{"type":…,"key":…,("value":…,)"ts":…,("ttl":…,)"pos":…}`.
pub fn write_line(
    out: &mut Vec<u8>,
    kind: ChangeKind,
    key: &str,
    record: &Record,
    position: Position,
) {
    use std::io::Write;
    let kind_name = match kind {
        ChangeKind::Put => "put",
        ChangeKind::Delete => "delete",
        ChangeKind::Expire => "expire",
    };
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind_name.as_bytes());
    out.extend_from_slice(b"\",\"key\":");
    write_key(key, out);
    let written = match (kind, &record.value) {
        (ChangeKind::Put, Some(value)) => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(value.get().as_bytes());
            match record.ttl {
                Some(ttl) => write!(out, ",\"ts\":{},\"ttl\":{ttl}", record.ts),
                None => write!(out, ",\"ts\":{},\"ttl\":null", record.ts),
            }
        }
        _ => write!(out, ",\"ts\":{}", record.ts),
    };
    written
        .and_then(|()| writeln!(out, ",\"pos\":\"{position}\"}}"))
        .expect("writing to a Vec cannot fail");
}

/// Where a new watcher starts reading.
#[derive(Debug)]
pub enum Start {
    /// The changes after the watcher's position, still held: replay them, then follow.
    Resume(Vec<Arc<Change>>),
    /// The position is from before this agent's start, or older than what the feed holds.
    Reset(ResetReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetReason {
    /// The position names another epoch: the agent restarted since.
    Restarted,
    /// The changes after the position are no longer held.
    TooOld,
    /// The position is ahead of this feed.
    Unknown,
    /// The watcher could not keep up and was dropped.
    FellBehind,
}

impl ResetReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Restarted => "the agent restarted since that position",
            ResetReason::TooOld => "the changes since that position are no longer held",
            ResetReason::Unknown => "that position is ahead of this agent's feed",
            ResetReason::FellBehind => "the watcher fell behind and was dropped",
        }
    }
}

#[derive(Debug)]
pub struct Feed {
    epoch: u64,
    seq: u64,
    capacity: usize,
    history: VecDeque<Arc<Change>>,
    /// `Some` once somebody watched: from then on every change is recorded and sent.
    live: Option<broadcast::Sender<Arc<Change>>>,
    /// Expiries before this moment (ms) have been announced.
    pub(super) expiry_mark: u64,
}

impl Feed {
    pub fn new(epoch: u64, capacity: usize) -> Feed {
        Feed {
            epoch,
            seq: 0,
            capacity: capacity.max(1),
            history: VecDeque::new(),
            live: None,
            expiry_mark: 0,
        }
    }

    pub fn is_active(&self) -> bool {
        self.live.is_some()
    }

    /// The position of the last change.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// Records a change and sends it to the watchers. Never waits: a watcher that cannot keep
    /// up misses changes and learns it from its receiver.
    pub fn publish(&mut self, kind: ChangeKind, key: &str, record: &Record) {
        let Some(live) = &self.live else {
            return;
        };
        self.seq += 1;
        let change = Arc::new(Change::new(
            Position {
                epoch: self.epoch,
                seq: self.seq,
            },
            kind,
            key,
            record.clone(),
        ));
        if self.history.len() == self.capacity {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        let _ = live.send(change);
    }

    /// Starts recording (at the first watcher): from now on every change is kept and sent, and
    /// expiries from `now` on are announced.
    pub fn start(&mut self, now: u64) {
        if self.live.is_none() {
            self.expiry_mark = now;
            self.live = Some(broadcast::channel(self.capacity).0);
        }
    }

    /// A new watcher: its receiver, and where it starts (`None` position: now). Needs
    /// [`start`](Self::start); takes only a shared reference, so that watchers subscribe (and
    /// read a snapshot) while readers go on.
    pub fn subscribe(
        &self,
        from: Option<Position>,
    ) -> Option<(broadcast::Receiver<Arc<Change>>, Start)> {
        let rx = self.live.as_ref()?.subscribe();
        let start = match from {
            None => Start::Resume(Vec::new()),
            Some(p) => self.since(p),
        };
        Some((rx, start))
    }

    fn since(&self, p: Position) -> Start {
        if p.epoch != self.epoch {
            return Start::Reset(ResetReason::Restarted);
        }
        if p.seq > self.seq {
            return Start::Reset(ResetReason::Unknown);
        }
        let oldest = self.history.front().map_or(self.seq + 1, |c| c.seq);
        // Resuming needs every change after p.seq: the first held must be p.seq + 1 at most.
        if p.seq + 1 < oldest {
            return Start::Reset(ResetReason::TooOld);
        }
        let skip = (p.seq + 1 - oldest) as usize;
        Start::Resume(self.history.iter().skip(skip).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;

    fn value(v: &str, ts: u64) -> Record {
        Record::value(RawValue::from_string(v.into()).unwrap(), ts, None)
    }

    #[test]
    fn positions_round_trip_and_bad_ones_are_named() {
        let p = Position {
            epoch: 0xabc,
            seq: 42,
        };
        assert_eq!(p.to_string(), "0000000000000abc-42");
        assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        for bad in [
            "",
            "42",
            "abc-42",
            "000000000000zabc-1",
            "0000000000000abc-x",
        ] {
            let e = bad.parse::<Position>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn nothing_is_recorded_until_somebody_watches() {
        let mut feed = Feed::new(7, 4);
        feed.publish(ChangeKind::Put, "a", &value("1", 1));
        assert_eq!(feed.position().seq, 0);
        assert!(feed.subscribe(None).is_none(), "not started");
        feed.start(0);
        let (mut rx, start) = feed.subscribe(None).unwrap();
        assert!(matches!(start, Start::Resume(v) if v.is_empty()));
        feed.publish(ChangeKind::Put, "a", &value("2", 2));
        let c = rx.try_recv().unwrap();
        assert_eq!(c.seq, 1);
        assert_eq!(
            std::str::from_utf8(c.line()).unwrap(),
            "{\"type\":\"put\",\"key\":\"a\",\"value\":2,\"ts\":2,\"ttl\":null,\"pos\":\"0000000000000007-1\"}\n"
        );
    }

    #[test]
    fn a_watcher_resumes_within_the_history_and_is_reset_beyond_it() {
        let mut feed = Feed::new(7, 3);
        feed.start(0);
        for i in 1..=5 {
            feed.publish(ChangeKind::Put, &format!("k{i}"), &value("1", i));
        }
        // Held: changes 3, 4, 5.
        let resume = |seq| feed.since(Position { epoch: 7, seq });
        let seqs = |s: Start| match s {
            Start::Resume(v) => v.iter().map(|c| c.seq).collect::<Vec<_>>(),
            Start::Reset(r) => panic!("reset: {r:?}"),
        };
        assert_eq!(seqs(resume(2)), [3, 4, 5]);
        assert_eq!(seqs(resume(4)), [5]);
        assert_eq!(seqs(resume(5)), Vec::<u64>::new());
        assert!(matches!(resume(1), Start::Reset(ResetReason::TooOld)));
        assert!(matches!(resume(6), Start::Reset(ResetReason::Unknown)));
        assert!(matches!(
            feed.since(Position { epoch: 8, seq: 5 }),
            Start::Reset(ResetReason::Restarted)
        ));
    }

    #[test]
    fn deletes_and_expiries_carry_the_timestamp() {
        let c = Change::new(
            Position { epoch: 1, seq: 3 },
            ChangeKind::Delete,
            "a\"b",
            Record::tombstone(9),
        );
        assert_eq!(
            std::str::from_utf8(c.line()).unwrap(),
            "{\"type\":\"delete\",\"key\":\"a\\\"b\",\"ts\":9,\"pos\":\"0000000000000001-3\"}\n"
        );
    }
}
