//! Warm readiness. A new member of a group that holds data must not report ready before it holds
//! that data: the kubelet would start the app against an empty state, and a rollout would move on
//! and take the next old pod down. At start the agent copies the whole state of one member that
//! answers, bucket by bucket (bounded requests however large the state), and reports ready only
//! then. Pushes that arrive meanwhile are merged as usual, so it ends holding the group's state as
//! of its start.
//!
//! Only a warm member is copied: one still copying (two pods added at once) would pass on part of
//! a state. A member alone in its group (an empty peer list) is ready at once, and so is one
//! whose peers all refuse the connection (no agent runs there) or are warming up too (a group
//! whose pods start together), or whose warm peer holds nothing. A peer that does not answer at
//! all (paused, cut off) may hold data: the warm-up keeps trying. Nothing waits forever: when no peer
//! list arrives, or no member answers, for `warmup_timeout`, the agent reports ready with what it
//! holds, and says so in `/readyz`, a warning and `c19_warmup_timed_out`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::api::DigestReport;
use super::client::ClientError;
use super::sync::apply_counted;
use crate::node::Node;
use crate::state::{Share, Spread};

/// Records per copied bucket, about: what one request of the copy moves (~1 MB of small values,
/// within the default 1 s `timeout` on any link faster than ~10 MB/s). The responder scans its
/// map once per bucket: 1M keys copied in 3.8–5.1 s with 16,384, in 12.9 s with 4,096.
pub const BUCKET_RECORDS: usize = 16_384;
/// How long the warm-up waits between two rounds of tries.
const RETRY: Duration = Duration::from_millis(200);

/// Where the start of an agent stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// No peer list yet: the provider has not delivered one.
    WaitingForPeers,
    /// Copying the state of `peer`, bucket by bucket.
    Copying {
        peer: String,
        buckets_done: usize,
        buckets: usize,
        records: usize,
    },
    /// Holds the group's state as of its start (or gave up waiting for it).
    Warm(Warmed),
}

/// How an agent became warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warmed {
    /// Its peer list was empty: the first member of a group.
    Alone,
    /// Every listed peer refused the connection or is warming up too: no warm member runs (a
    /// group starting together, or from a static list), so none holds a state to copy.
    NoneRunning,
    /// It copied the state of `peer`: `records` records.
    Copied { peer: String, records: usize },
    /// No member answered within `warmup_timeout`: it serves what it holds.
    TimedOut,
}

/// The warm-up of one agent: its phase and when it started and ended.
#[derive(Debug, Clone)]
pub struct Warmup {
    pub phase: Phase,
    pub started: Instant,
    pub took: Option<Duration>,
}

impl Default for Warmup {
    fn default() -> Warmup {
        Warmup {
            phase: Phase::WaitingForPeers,
            started: Instant::now(),
            took: None,
        }
    }
}

impl Warmup {
    pub fn is_warm(&self) -> bool {
        matches!(self.phase, Phase::Warm(_))
    }

    /// `/readyz`'s body: the phase and its progress.
    pub fn report(&self, ready: bool) -> serde_json::Value {
        let ms = self
            .took
            .unwrap_or_else(|| self.started.elapsed())
            .as_millis() as u64;
        let mut v = match &self.phase {
            Phase::WaitingForPeers => serde_json::json!({"phase": "waiting_for_peers"}),
            Phase::Copying {
                peer,
                buckets_done,
                buckets,
                records,
            } => {
                serde_json::json!({"phase": "copying", "peer": peer, "buckets_done": buckets_done, "buckets": buckets, "records": records})
            }
            Phase::Warm(Warmed::Alone) => serde_json::json!({"phase": "warm", "how": "alone"}),
            Phase::Warm(Warmed::NoneRunning) => {
                serde_json::json!({"phase": "warm", "how": "none_running"})
            }
            Phase::Warm(Warmed::Copied { peer, records }) => {
                serde_json::json!({"phase": "warm", "how": "copied", "peer": peer, "records": records})
            }
            Phase::Warm(Warmed::TimedOut) => {
                serde_json::json!({"phase": "warm", "how": "timed_out"})
            }
        };
        v["ready"] = ready.into();
        v["ms"] = ms.into();
        v
    }
}

/// What the warm-up does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Wait,
    Alone,
    Copy,
    GiveUp,
}

/// The next step, from whether a peer list arrived, how many peers it names and how long the
/// warm-up has run.
pub fn next_step(fed: bool, peers: usize, elapsed: Duration, timeout: Duration) -> Step {
    if elapsed >= timeout {
        Step::GiveUp
    } else if !fed {
        Step::Wait
    } else if peers == 0 {
        Step::Alone
    } else {
        Step::Copy
    }
}

/// Buckets (a power of two) for copying `records` records about `BUCKET_RECORDS` at a time; at
/// most the finest resolution agents keep (beyond 16M records, buckets grow instead).
pub fn buckets_for(records: usize) -> usize {
    records
        .div_ceil(BUCKET_RECORDS)
        .next_power_of_two()
        .clamp(1, crate::state::digest::FINE_BUCKETS)
}

/// One bucket of a state, as `POST /c19/sync/bucket` asks for it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BucketRequest {
    pub bucket: usize,
    /// A power of two.
    pub count: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum WarmupError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{peer}: {message}")]
    Protocol { peer: String, message: String },
    /// The peer is warming up itself: a member that started with this one, or one still
    /// copying (copied, it would pass on part of a state).
    #[error("{0}: warming up too")]
    Starting(String),
}

/// Runs the warm-up until the agent is warm or `stop` fires.
pub async fn run(node: Arc<Node>, timeout: Duration, stop: CancellationToken) {
    let mut rng = fastrand::Rng::new();
    let started = crate::state::now_ms();
    loop {
        let (fed, peers) = (node.peers.fed(), node.peers.list());
        let elapsed = node.warmup().started.elapsed();
        match next_step(fed, peers.len(), elapsed, timeout) {
            Step::Alone => {
                node.set_warm(Warmed::Alone, started);
                tracing::info!("warm: no other member to copy from");
                return;
            }
            Step::GiveUp => {
                // It cannot tell what it missed: its view starts now.
                node.set_warm(Warmed::TimedOut, crate::state::now_ms());
                tracing::warn!(
                    timeout_ms = timeout.as_millis() as u64,
                    peers = peers.len(),
                    "warm-up timed out: no member answered; serving what this agent holds"
                );
                return;
            }
            Step::Wait => {}
            Step::Copy => {
                let mut order = peers.to_vec();
                rng.shuffle(&mut order);
                let mut refused = 0;
                for peer in &order {
                    match copy_from(&node, peer, None).await {
                        Ok(Copied { records, since }) => {
                            tracing::info!(%peer, records, "warm: copied the group's state");
                            let peer = peer.clone();
                            let since = since.unwrap_or_else(crate::state::now_ms);
                            node.set_warm(Warmed::Copied { peer, records }, since);
                            return;
                        }
                        Err(
                            WarmupError::Client(ClientError::Refused { .. })
                            | WarmupError::Starting(_),
                        ) => refused += 1,
                        Err(e) => {
                            tracing::info!(error = %e, "warm-up: copy failed; trying another member")
                        }
                    }
                    if stop.is_cancelled() || node.warmup().started.elapsed() >= timeout {
                        break;
                    }
                }
                if refused == order.len() {
                    node.set_warm(Warmed::NoneRunning, started);
                    tracing::info!(peers = refused, "warm: no other member runs yet");
                    return;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

/// What a copy brought.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub records: usize,
    /// The peer's `since` (see [`DigestReport`]); `None` from agents that do not report it.
    pub since: Option<u64>,
}

/// Copies the whole state of `peer` (deletes included), bucket by bucket, and returns how many
/// records it received. A member without `/c19/sync/bucket` (C19 0.1) gives its full dump.
/// With `seen`, collects the keys received (a resync) instead of showing the warm-up's progress.
pub async fn copy_from(
    node: &Node,
    peer: &str,
    mut seen: Option<&mut HashSet<Box<str>>>,
) -> Result<Copied, WarmupError> {
    let protocol = |message: String| WarmupError::Protocol {
        peer: peer.to_string(),
        message,
    };
    let traffic = &node.metrics.traffic;
    let reply = match node
        .client
        .call(Method::GET, peer, "/c19/digest", None, traffic)
        .await
    {
        Err(ClientError::Status {
            status: StatusCode::NOT_FOUND,
            ..
        }) => {
            let dump = node
                .client
                .call(Method::GET, peer, "/", None, traffic)
                .await?;
            let (records, _) =
                apply_counted(node, &dump.body, Spread::Quiet, &Share::default(), seen)
                    .map_err(|e| protocol(e.to_string()))?;
            node.metrics.warmup_records.add(records as u64);
            return Ok(Copied {
                records,
                since: None,
            });
        }
        other => other?,
    };
    let report: DigestReport =
        serde_json::from_slice(&reply.body).map_err(|e| protocol(e.to_string()))?;
    // A c19 agent says `since` once it is warm; one that is not is starting too.
    if report.agent.is_some() && report.since.is_none() {
        return Err(WarmupError::Starting(peer.to_string()));
    }
    let buckets = buckets_for(report.keys + report.tombstones);
    let mut received = 0;
    for bucket in 0..buckets {
        if seen.is_none() {
            node.set_copying(peer, bucket, buckets, received);
        }
        let request = serde_json::to_vec(&BucketRequest {
            bucket,
            count: buckets,
        })
        .expect("a bucket request serializes");
        let reply = node
            .client
            .call(
                Method::POST,
                peer,
                "/c19/sync/bucket",
                Some(request.into()),
                traffic,
            )
            .await?;
        let (records, _) = apply_counted(
            node,
            &reply.body,
            Spread::Quiet,
            &Share::default(),
            seen.as_deref_mut(),
        )
        .map_err(|e| protocol(e.to_string()))?;
        received += records;
        node.metrics.warmup_records.add(records as u64);
    }
    if seen.is_none() {
        node.set_copying(peer, buckets, buckets, received);
    }
    Ok(Copied {
        records: received,
        since: report.since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_member_waits_for_its_peer_list_then_copies_or_starts_alone() {
        let timeout = 300 * S;
        assert_eq!(next_step(false, 0, S, timeout), Step::Wait);
        assert_eq!(next_step(true, 0, S, timeout), Step::Alone);
        assert_eq!(next_step(true, 2, S, timeout), Step::Copy);
    }

    #[test]
    fn nothing_waits_forever() {
        let timeout = 30 * S;
        assert_eq!(next_step(false, 0, 30 * S, timeout), Step::GiveUp);
        assert_eq!(next_step(true, 3, 31 * S, timeout), Step::GiveUp);
    }

    #[test]
    fn buckets_hold_about_bucket_records_each() {
        assert_eq!(buckets_for(0), 1);
        assert_eq!(buckets_for(BUCKET_RECORDS), 1);
        assert_eq!(buckets_for(BUCKET_RECORDS + 1), 2);
        assert_eq!(buckets_for(1_000_000), 64);
        assert!(1_000_000 / buckets_for(1_000_000) <= BUCKET_RECORDS);
        assert_eq!(
            buckets_for(100_000_000),
            crate::state::digest::FINE_BUCKETS,
            "no finer than the agents' buckets"
        );
    }

    #[test]
    fn the_report_shows_the_progress() {
        let mut w = Warmup {
            phase: Phase::Copying {
                peer: "10.0.0.2:4097".into(),
                buckets_done: 3,
                buckets: 8,
                records: 12000,
            },
            ..Warmup::default()
        };
        let r = w.report(false);
        assert_eq!(r["phase"], "copying");
        assert_eq!(
            (r["buckets_done"].as_u64(), r["buckets"].as_u64()),
            (Some(3), Some(8))
        );
        assert_eq!(r["ready"], false);
        w.phase = Phase::Warm(Warmed::TimedOut);
        assert_eq!(w.report(true)["how"], "timed_out");
    }
}
