//! What the app API, the peer API and the gossip loops of one agent share.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::connection::client::{PeerClient, Traffic};
use crate::connection::peers::Peers;
use crate::connection::warmup::{Phase, Warmed, Warmup};
use crate::metrics::Counter;
use crate::state::{Limits, Store};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub struct GossipMetrics {
    /// Entries the app wrote or deleted through the app API.
    pub writes: Counter,
    pub pushes_sent: Counter,
    pub pushes_failed: Counter,
    pub syncs_sent: Counter,
    pub syncs_failed: Counter,
    /// Syncs that found both states equal from the digest alone.
    pub syncs_equal: Counter,
    /// Records received from peers that changed this agent's state.
    pub records_applied: Counter,
    /// Records received while copying a member's state at start.
    pub warmup_records: Counter,
    pub prestop_flushes: Counter,
    /// Reset lines sent to watchers, and watchers dropped for falling behind.
    pub watch_resets: Counter,
    pub watchers_dropped: Counter,
    /// Resyncs after a cut-off longer than the tombstone lifetime, and the records they forgot.
    pub resyncs: Counter,
    pub records_forgotten: Counter,
    pub records_purged: Counter,
    pub traffic: Traffic,
    /// Body bytes of the syncs this agent started, both ways: what anti-entropy costs next to
    /// the pushes.
    pub sync_bytes: Counter,
    /// Records moved by those syncs, both ways: what pushes left for anti-entropy to repair.
    pub sync_records: Counter,
}

/// The fixed settings of a node, from its config.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub app_limits: Limits,
    pub peer_limits: Limits,
    /// The bearer token peers must present; `None` leaves the peer port open.
    pub token: Option<String>,
    /// Whether the operator may set the peer list (the `Operator` peer provider).
    pub operator_fed: bool,
    /// The port of peers given without one.
    pub target_port: u16,
    /// How long (ms) the state must be unchanged before this agent takes part in a sync that is
    /// not forced: one push interval.
    pub quiet_ms: u64,
    /// Peers contacted per push round (`connection.r0`): the fanout of an out-of-round flush too.
    pub r0: usize,
    /// Watch streams served at once (`agent.max_watchers`).
    pub max_watchers: usize,
}

#[derive(Debug)]
pub struct Node {
    /// Random for each run, answered to peers: how they name this agent in a share whatever
    /// address they reach it at.
    pub id: u32,
    store: RwLock<Store>,
    pub peers: Peers,
    pub client: PeerClient,
    pub metrics: GossipMetrics,
    pub settings: NodeSettings,
    warmup: Mutex<Warmup>,
    /// When a peer last pushed to, synced with, or answered this agent (ms).
    last_contact: AtomicU64,
    /// The store's tombstone lifetime (fixed): read on every peer contact without its lock.
    tombstone_lifetime: u64,
    /// Since when (ms) this agent's state has followed its group without a gap; 0 until warm.
    member_since: AtomicU64,
    /// When the operator last sent a peer list (ms); 0 before the first.
    operator_fed_at: AtomicU64,
    /// While resynchronising after a long cut-off: the last contact before it (see
    /// [`resync`](crate::connection::resync)).
    resync: Mutex<Option<u64>>,
    /// Set by the gossip loop: the state has changed only slowly over the last rounds.
    calm: AtomicBool,
    /// Watch streams open now.
    pub watchers: AtomicUsize,
    /// Cancelled at shutdown: the agent stops reporting ready, and watch streams end so that
    /// their connections can drain.
    pub closing: CancellationToken,
}

impl Node {
    pub fn new(store: Store, peers: Peers, client: PeerClient, settings: NodeSettings) -> Node {
        let tombstone_lifetime = store.config().tombstone_lifetime;
        Node {
            id: fastrand::u32(..),
            store: RwLock::new(store),
            peers,
            client,
            metrics: GossipMetrics::default(),
            settings,
            warmup: Mutex::new(Warmup::default()),
            last_contact: AtomicU64::new(crate::state::now_ms()),
            tombstone_lifetime,
            member_since: AtomicU64::new(0),
            operator_fed_at: AtomicU64::new(0),
            resync: Mutex::new(None),
            calm: AtomicBool::new(true),
            watchers: AtomicUsize::new(0),
            closing: CancellationToken::new(),
        }
    }

    pub fn is_calm(&self) -> bool {
        self.calm.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_calm(&self, calm: bool) {
        self.calm.store(calm, std::sync::atomic::Ordering::Relaxed)
    }

    /// The store; a panic while it was held does not take the agent down with it.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.store.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready: warm (holding the group's state as of its start), not resynchronising after a long
    /// cut-off, and not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.closing.is_cancelled() && self.warmup().is_warm() && !self.resyncing()
    }

    /// A peer pushed to, synced with or answered this agent. Contact after a silence longer than
    /// the tombstone lifetime starts a resync first.
    pub fn note_peer_contact(&self) {
        let now = crate::state::now_ms();
        self.check_cut_off(now);
        self.last_contact.store(now, Ordering::Relaxed);
    }

    /// Starts a resync when this agent has heard from no peer for longer than the tombstone
    /// lifetime (an agent without peers is cut off from nobody: its clock of contact runs on).
    pub fn check_cut_off(&self, now: u64) {
        let last = self.last_contact.load(Ordering::Relaxed);
        let lifetime = self.tombstone_lifetime;
        let has_peers = !self.peers.is_empty();
        if !has_peers {
            self.last_contact.store(now, Ordering::Relaxed);
        } else if crate::connection::resync::cut_off(last, now, lifetime, has_peers) {
            let mut resync = self.resync.lock().unwrap_or_else(|e| e.into_inner());
            if resync.is_none() {
                tracing::warn!(
                    silent_ms = now - last,
                    lifetime_ms = lifetime,
                    "no peer heard for longer than the tombstone lifetime: resynchronising"
                );
                *resync = Some(last);
            }
        }
    }

    pub fn resyncing(&self) -> bool {
        self.resync_horizon().is_some()
    }

    pub fn resync_horizon(&self) -> Option<u64> {
        *self.resync.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a resync; `since` is the peer's when its state replaced this agent's view.
    pub fn finish_resync(&self, since: Option<u64>) {
        if let Some(since) = since {
            self.member_since.store(since, Ordering::Relaxed);
        }
        *self.resync.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.last_contact
            .store(crate::state::now_ms(), Ordering::Relaxed);
    }

    /// Stops reporting ready, at shutdown.
    pub fn set_stopping(&self) {
        self.closing.cancel();
    }

    pub fn warmup(&self) -> MutexGuard<'_, Warmup> {
        self.warmup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the operator last sent a peer list, if it has.
    pub fn operator_fed_at(&self) -> Option<u64> {
        Some(self.operator_fed_at.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    pub fn note_operator_feed(&self) {
        self.operator_fed_at
            .store(crate::state::now_ms(), Ordering::Relaxed);
    }

    /// Since when this agent's state has followed its group without a gap, once warm.
    pub fn member_since(&self) -> Option<u64> {
        Some(self.member_since.load(Ordering::Relaxed)).filter(|t| *t > 0)
    }

    /// Ends the warm-up. `since`: since when the state it holds has followed the group (the
    /// copied peer's, or its own start when it had none to copy).
    pub fn set_warm(&self, how: Warmed, since: u64) {
        self.member_since.store(since, Ordering::Relaxed);
        let mut w = self.warmup();
        w.took = Some(w.started.elapsed());
        w.phase = Phase::Warm(how);
    }

    pub fn set_copying(&self, peer: &str, buckets_done: usize, buckets: usize, records: usize) {
        self.warmup().phase = Phase::Copying {
            peer: peer.to_string(),
            buckets_done,
            buckets,
            records,
        };
    }
}
