//! The checker: what the history of requests says every agent must hold once the faults are over.
//! A pure function of the history, the kills and the final states, with its own model of the
//! merge order (newer `ts`, then greater value bytes), so it does not trust the code under test.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// A unique key written once (the set); `ts` stamped by the agent.
    Add {
        key: String,
        value: u64,
        ttl: Option<u64>,
    },
    /// An overwrite of a hot key (a register) with a client-chosen `ts`.
    Write { key: String, value: String, ts: u64 },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Add { key, .. } | Op::Write { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// 204: acknowledged after the agent applied it.
    Ok,
    /// Any other status: definitely not applied.
    Fail(u16),
    /// No answer: may or may not have been applied.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub op: Op,
    pub agent: usize,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
}

/// An agent killed with SIGKILL (it restarts empty).
#[derive(Debug, Clone, Copy)]
pub struct Kill {
    pub agent: usize,
    pub at_ms: u64,
}

#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: usize,
    pub unknown: usize,
    pub unknown_applied: usize,
    pub failed: usize,
    /// Acknowledged and gone, with no kill to explain it: must stay empty.
    pub lost: Vec<String>,
    /// Acknowledged by an agent killed within the window after the acknowledgement, before it
    /// could pass the write on: (key, milliseconds from acknowledgement to kill).
    pub lost_to_kill: Vec<(String, u64)>,
    /// Values whose TTL had certainly run out, as expected absent.
    pub expired: usize,
    /// Values still served although their TTL had run out.
    pub served_expired: Vec<String>,
    /// Values nobody wrote (or wrote with a definite failure).
    pub phantoms: Vec<String>,
    /// Hot keys not holding the merge-order winner of the acknowledged writes.
    pub wrong_registers: Vec<String>,
    /// Keys whose record differs between agents.
    pub divergent: Vec<String>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.served_expired.is_empty()
            && self.phantoms.is_empty()
            && self.wrong_registers.is_empty()
            && self.divergent.is_empty()
    }
}

/// `finals` are the `GET /` listings of every live agent, taken at `checked_at_ms`;
/// `kill_window_ms` is how long after acknowledging a write an agent may die and lose it.
pub fn check(
    history: &[Event],
    kills: &[Kill],
    finals: &[Map<String, Value>],
    checked_at_ms: u64,
    kill_window_ms: u64,
) -> Verdict {
    let mut v = Verdict::default();
    let empty = Map::new();
    let state = finals.first().unwrap_or(&empty);
    let mut divergent = std::collections::BTreeSet::new();
    for other in finals.iter().skip(1) {
        for key in state.keys().chain(other.keys()) {
            if state.get(key) != other.get(key) {
                divergent.insert(key.clone());
            }
        }
    }
    v.divergent = divergent.into_iter().collect();
    let killed_after = |e: &Event| {
        kills
            .iter()
            .filter(|k| k.agent == e.agent && k.at_ms >= e.end_ms)
            .map(|k| k.at_ms - e.end_ms)
            .find(|gap| *gap <= kill_window_ms)
    };

    let mut registers: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    let mut written: HashMap<&str, ()> = HashMap::new();
    for e in history {
        written.insert(e.op.key(), ());
        match e.outcome {
            Outcome::Ok => v.acked += 1,
            Outcome::Unknown => v.unknown += 1,
            Outcome::Fail(_) => v.failed += 1,
        }
        match &e.op {
            Op::Write { key, .. } => registers.entry(key).or_default().push(e),
            Op::Add { key, value, ttl } => {
                let held = state.get(key);
                let expired = ttl.is_some_and(|t| e.end_ms + t < checked_at_ms);
                match (held, e.outcome) {
                    (Some(_), _) if expired => v.served_expired.push(key.clone()),
                    (None, _) if expired => v.expired += 1,
                    (Some(r), Outcome::Ok | Outcome::Unknown) if r["value"] == *value => {
                        if e.outcome == Outcome::Unknown {
                            v.unknown_applied += 1;
                        }
                    }
                    (Some(r), _) => v.phantoms.push(format!("{key} = {}", r["value"])),
                    (None, Outcome::Ok) => match killed_after(e) {
                        Some(gap) => v.lost_to_kill.push((key.clone(), gap)),
                        None => v.lost.push(key.clone()),
                    },
                    (None, _) => {}
                }
            }
        }
    }

    for (key, writes) in registers {
        let order = |value: &str, ts: u64| (ts, format!("\"{value}\""));
        let held = state.get(key).map(|r| {
            (
                r["value"].as_str().unwrap_or("").to_string(),
                r["ts"].as_u64().unwrap_or(0),
            )
        });
        if let Some((value, ts)) = &held {
            let attempted = writes.iter().any(|e| {
                !matches!(e.outcome, Outcome::Fail(_))
                    && e.op
                        == Op::Write {
                            key: key.into(),
                            value: value.clone(),
                            ts: *ts,
                        }
            });
            if !attempted {
                v.phantoms.push(format!("{key} = {value}@{ts}"));
                continue;
            }
        }
        let held_order = held.as_ref().map(|(value, ts)| order(value, *ts));
        for e in writes.iter().filter(|e| e.outcome == Outcome::Ok) {
            let Op::Write { value, ts, .. } = &e.op else {
                continue;
            };
            if held_order.as_ref().is_some_and(|h| *h >= order(value, *ts)) {
                continue;
            }
            match killed_after(e) {
                Some(gap) => v.lost_to_kill.push((format!("{key} = {value}"), gap)),
                None => {
                    v.wrong_registers.push(format!(
                        "{key}: holds {held:?}, but {value}@{ts} was acknowledged and wins"
                    ));
                    break;
                }
            }
        }
    }
    for key in state.keys() {
        if !written.contains_key(key.as_str()) {
            v.phantoms.push(format!("{key} (never written)"));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn add(key: &str, value: u64, agent: usize, end_ms: u64, outcome: Outcome) -> Event {
        Event {
            op: Op::Add {
                key: key.into(),
                value,
                ttl: None,
            },
            agent,
            start_ms: end_ms - 1,
            end_ms,
            outcome,
        }
    }
    fn write(key: &str, value: &str, ts: u64, outcome: Outcome) -> Event {
        Event {
            op: Op::Write {
                key: key.into(),
                value: value.into(),
                ts,
            },
            agent: 0,
            start_ms: ts,
            end_ms: ts + 1,
            outcome,
        }
    }
    fn listing(entries: &[(&str, Value, u64)]) -> Map<String, Value> {
        entries
            .iter()
            .map(|(k, v, ts)| (k.to_string(), json!({"value": v, "ts": ts, "ttl": null})))
            .collect()
    }

    #[test]
    fn a_complete_history_passes() {
        let h = [
            add("s-1", 1, 0, 10, Outcome::Ok),
            add("s-2", 2, 1, 20, Outcome::Unknown),
            write("r-0", "w-1", 100, Outcome::Ok),
            write("r-0", "w-2", 200, Outcome::Unknown),
        ];
        let s = listing(&[("s-1", json!(1), 9), ("r-0", json!("w-2"), 200)]);
        let v = check(&h, &[], &[s.clone(), s], 1000, 600);
        assert!(v.ok(), "{v:?}");
        assert_eq!((v.acked, v.unknown, v.unknown_applied), (2, 2, 0));
    }

    #[test]
    fn a_missing_acknowledged_key_is_lost_unless_its_agent_died_right_after() {
        let h = [
            add("s-1", 1, 0, 10, Outcome::Ok),
            add("s-2", 2, 1, 20, Outcome::Ok),
        ];
        let v = check(&h, &[], &[listing(&[])], 1000, 600);
        assert_eq!(v.lost, ["s-1", "s-2"]);
        let kills = [Kill {
            agent: 1,
            at_ms: 120,
        }];
        let v = check(&h, &kills, &[listing(&[])], 1000, 600);
        assert_eq!(v.lost, ["s-1"]);
        assert_eq!(v.lost_to_kill, [("s-2".to_string(), 100)]);
        let late = [Kill {
            agent: 1,
            at_ms: 5000,
        }];
        assert_eq!(check(&h, &late, &[listing(&[])], 9000, 600).lost.len(), 2);
    }

    #[test]
    fn a_register_must_hold_the_winner_of_the_acknowledged_writes() {
        let h = [
            write("r-0", "w-2", 100, Outcome::Ok),
            write("r-0", "w-1", 100, Outcome::Ok),
            write("r-0", "w-3", 50, Outcome::Ok),
        ];
        // Same ts: the greater value bytes win.
        let good = listing(&[("r-0", json!("w-2"), 100)]);
        assert!(check(&h, &[], &[good], 1000, 600).ok());
        let bad = listing(&[("r-0", json!("w-1"), 100)]);
        assert_eq!(check(&h, &[], &[bad], 1000, 600).wrong_registers.len(), 1);
        let gone = listing(&[]);
        assert_eq!(check(&h, &[], &[gone], 1000, 600).wrong_registers.len(), 1);
    }

    #[test]
    fn values_nobody_wrote_are_phantoms() {
        let h = [
            add("s-1", 1, 0, 10, Outcome::Ok),
            add("s-2", 2, 0, 10, Outcome::Fail(400)),
            write("r-0", "w-1", 100, Outcome::Ok),
        ];
        let s = listing(&[
            ("s-1", json!(7), 9),
            ("s-2", json!(2), 9),
            ("r-0", json!("w-1"), 101),
            ("x", json!(0), 1),
        ]);
        let v = check(&h, &[], &[s], 1000, 600);
        assert_eq!(v.phantoms.len(), 4, "{v:?}");
    }

    #[test]
    fn agents_that_differ_and_expired_values_fail() {
        let mut ttl = add("s-1", 1, 0, 10, Outcome::Ok);
        ttl.op = Op::Add {
            key: "s-1".into(),
            value: 1,
            ttl: Some(100),
        };
        let held = listing(&[("s-1", json!(1), 9)]);
        let v = check(&[ttl.clone()], &[], &[held.clone(), listing(&[])], 50, 600);
        assert_eq!(v.divergent.len(), 1);
        let v = check(&[ttl.clone()], &[], &[held], 1000, 600);
        assert_eq!(v.served_expired, ["s-1"]);
        let v = check(&[ttl], &[], &[listing(&[])], 1000, 600);
        assert!(v.ok() && v.expired == 1, "{v:?}");
    }
}
