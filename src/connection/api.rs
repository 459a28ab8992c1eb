//! The peer API (4097): C19 0.1's `GET /`, `GET /<version>` and `PUT /`, and ours under `/c19/`
//! (digest, anti-entropy, the operator's peer feed) plus health and metrics.

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};

use super::peers::normalize;
use super::sync::{self, DiffRequest, Offer};
use super::warmup::{BucketRequest, Phase, Warmed};
use crate::http::{self, Request, Response};
use crate::metrics::Exposition;
use crate::node::Node;
use crate::process;
use crate::state::{Share, Spread, now_ms};

/// What the operator's health probe reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DigestReport {
    /// Digest of the live values (decimal u64): equal on two agents iff they serve the same data.
    pub digest: String,
    pub keys: usize,
    pub tombstones: usize,
    /// C19 0.1's version of the state, `""` before the first write.
    pub version: String,
    pub peers: usize,
    /// The agent's own version (c19's package version); absent from C19 0.1 agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Since when (ms) this agent's state has followed its group without a gap: it has seen every
    /// delete made since then. A resync forgets records only on the word of such a peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// The operator's peer feed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerList {
    pub peers: Vec<String>,
}

pub async fn handle(node: Arc<Node>, req: Request) -> Response {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/healthz") => http::text("ok\n".into()),
        (&Method::GET, "/readyz") => readyz(&node),
        // The kubelet runs the sidecar's preStop hook as soon as the pod starts terminating; a
        // hook carries no token, and all it does is push now what would be pushed anyway.
        (&Method::GET, "/prestop") => {
            super::gossip::flush_now(&node).await;
            node.metrics.prestop_flushes.inc();
            http::text("pushed\n".into())
        }
        (&Method::GET, "/metrics") => http::text(metrics(&node)),
        _ if !authorized(&node, &req) => unauthorized(),
        _ => handle_authorized(&node, req),
    }
}

fn handle_authorized(node: &Node, req: Request) -> Response {
    let traffic = &node.metrics.traffic;
    traffic.received.add(req.body.len() as u64);
    // Pushes and syncs come from peers (the operator's probes and feeds do not count): contact
    // after a long silence starts a resync, during which this agent offers nothing it holds.
    let from_peer = req.method == Method::PUT && req.path.as_str() == "/"
        || req.path.as_str().starts_with("/c19/sync");
    if from_peer {
        node.note_peer_contact();
        if node.resyncing() && req.path.as_str().starts_with("/c19/sync") {
            return http::error(StatusCode::CONFLICT, sync::BUSY);
        }
    }
    let mut response = match (&req.method, req.path.as_str()) {
        (&Method::GET, "/") => http::json(StatusCode::OK, node.read().dump(now_ms(), true)),
        (&Method::PUT, "/") => {
            let share = req.share.as_deref().and_then(Share::decode);
            merge(node, &req.body, &share.unwrap_or_default())
        }
        (&Method::GET, "/c19/digest") => http::json_value(StatusCode::OK, &digest_report(node)),
        (&Method::POST, "/c19/sync") => offer(node, &req.body),
        (&Method::POST, "/c19/sync/diff") => diff(node, &req.body),
        (&Method::POST, "/c19/sync/entries") => merge(node, &req.body, &Share::default()),
        (&Method::POST, "/c19/sync/bucket") => bucket(node, &req.body),
        (&Method::GET, "/c19/peers") => http::json_value(
            StatusCode::OK,
            &PeerList {
                peers: node.peers.list().to_vec(),
            },
        ),
        (&Method::PUT, "/c19/peers") => set_peers(node, &req.body),
        (_, "/c19/peers") => http::method_not_allowed("GET, PUT"),
        (_, "/c19/digest") => http::method_not_allowed("GET"),
        (_, p) if p.starts_with("/c19/sync") => http::method_not_allowed("POST"),
        (&Method::GET, p) if p.starts_with("/c19/") => {
            http::error(StatusCode::NOT_FOUND, "no such endpoint")
        }
        (&Method::GET, p) => version(node, &p[1..]),
        (_, "/") => http::method_not_allowed("GET, PUT"),
        _ => http::method_not_allowed("GET"),
    };
    if let Some(len) = response_len(&response) {
        traffic.sent.add(len);
    }
    response
        .headers_mut()
        .insert(http::AGENT, HeaderValue::from(node.id));
    response
}

fn response_len(r: &Response) -> Option<u64> {
    hyper::body::Body::size_hint(r.body()).exact()
}

/// Constant-time comparison, so the token cannot be guessed byte by byte from timings.
fn authorized(node: &Node, req: &Request) -> bool {
    let Some(token) = &node.settings.token else {
        return true;
    };
    let presented = req
        .authorization
        .as_deref()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    let mut r = http::error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

/// Merges records from a peer, passing them on to `share` (a push's) if it names anyone.
fn merge(node: &Node, body: &[u8], share: &Share) -> Response {
    let spread = if share.is_empty() {
        Spread::Quiet
    } else {
        Spread::Forward
    };
    match sync::apply(node, body, spread, share) {
        Ok(_) => http::empty(StatusCode::NO_CONTENT),
        Err(e) => http::error(StatusCode::BAD_REQUEST, e),
    }
}

/// `GET /<version>`: 204 only when the states really match, which C19 0.1's value-blind version
/// cannot tell, so the comparison is against our full digest; anything else gets the whole map.
fn version(node: &Node, version: &str) -> Response {
    let store = node.read();
    if version == store.sync_digest().to_string() {
        return http::empty(StatusCode::NO_CONTENT);
    }
    http::json(StatusCode::OK, store.dump(now_ms(), true))
}

pub fn digest_report(node: &Node) -> DigestReport {
    DigestReport {
        agent: Some(env!("CARGO_PKG_VERSION").to_string()),
        since: node.member_since(),
        ..DigestReport::of(&node.read(), now_ms(), node.peers.len())
    }
}

impl DigestReport {
    /// The report of a state at `now`.
    pub fn of(store: &crate::state::Store, now: u64, peers: usize) -> DigestReport {
        let counts = store.counts(now);
        DigestReport {
            digest: store.digest(now).to_string(),
            keys: counts.keys,
            tombstones: counts.tombstones,
            version: store
                .legacy_version()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            peers,
            agent: None,
            since: None,
        }
    }
}

fn offer(node: &Node, body: &[u8]) -> Response {
    let offer: Offer = match serde_json::from_slice(body) {
        Ok(o) => o,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, format!("sync offer: {e}")),
    };
    if !crate::state::digest::valid_count(offer.count) {
        return http::error(
            StatusCode::BAD_REQUEST,
            sync::SyncError::BadCount(offer.count),
        );
    }
    let store = node.read();
    let changing = now_ms().saturating_sub(store.last_change()) < node.settings.quiet_ms;
    // Pushes are still moving a changing state, and the next wave of a bulk load may be on its
    // way to one that just took one: only the periodic pull overrides that, and a calm offer
    // may meet a calm state that changes slowly.
    let declined = !offer.force && (!node.is_calm() || (changing && !offer.calm));
    if declined && offer.digest != store.sync_digest() {
        return http::error(StatusCode::CONFLICT, sync::BUSY);
    }
    match sync::answer_offer(&store, &offer) {
        Ok(None) => http::empty(StatusCode::NO_CONTENT),
        Ok(Some(buckets)) => http::json_value(StatusCode::OK, &buckets),
        Err(e) => http::error(StatusCode::BAD_REQUEST, e),
    }
}

fn diff(node: &Node, body: &[u8]) -> Response {
    let req: DiffRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, format!("sync diff: {e}")),
    };
    match sync::answer_diff(&node.read(), &req) {
        Ok(reply) => http::json_value(StatusCode::OK, &reply),
        Err(e) => http::error(StatusCode::BAD_REQUEST, e),
    }
}

fn set_peers(node: &Node, body: &[u8]) -> Response {
    if !node.settings.operator_fed {
        return http::error(
            StatusCode::CONFLICT,
            "this agent's peers come from its configured peer provider, not from PUT /c19/peers",
        );
    }
    let list: PeerList = match serde_json::from_slice(body) {
        Ok(l) => l,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, format!("peer list: {e}")),
    };
    let port = node.settings.target_port;
    match list
        .peers
        .iter()
        .map(|p| normalize(p, port))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(peers) => {
            node.note_operator_feed();
            if node.peers.set(peers) {
                tracing::info!(peers = node.peers.len(), "peer list set by the operator");
            }
            http::empty(StatusCode::NO_CONTENT)
        }
        Err(e) => http::error(StatusCode::BAD_REQUEST, e),
    }
}

/// The metrics port: `/metrics` and `/healthz`, nothing of the peer API.
pub async fn handle_metrics(node: Arc<Node>, req: Request) -> Response {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/metrics") => http::text(metrics(&node)),
        (&Method::GET, "/healthz") => http::text("ok\n".into()),
        (_, "/metrics" | "/healthz") => http::method_not_allowed("GET"),
        _ => http::error(
            StatusCode::NOT_FOUND,
            "this port serves /metrics and /healthz only",
        ),
    }
}

/// 200 once the agent is warm (see [`warmup`](super::warmup)), 503 before and while it shuts
/// down; the body tells the phase and the copy's progress either way.
fn readyz(node: &Node) -> Response {
    let ready = node.is_ready();
    let mut report = node.warmup().report(ready);
    if node.resyncing() {
        report["phase"] = "resyncing".into();
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    http::json_value(status, &report)
}

/// One bucket of the state (every record, deletes included), for a member copying it at start.
fn bucket(node: &Node, body: &[u8]) -> Response {
    let request: BucketRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, format!("bucket request: {e}")),
    };
    if !crate::state::digest::valid_count(request.count) || request.bucket >= request.count {
        return http::error(
            StatusCode::BAD_REQUEST,
            format!(
                "bucket request: count must be a power of two up to {} and bucket below it",
                crate::state::digest::FINE_BUCKETS
            ),
        );
    }
    let store = node.read();
    let keys = store.keys_in_buckets(request.count, &[request.bucket].into(), |_| true);
    http::json(StatusCode::OK, store.render(keys))
}

pub fn metrics(node: &Node) -> String {
    let counts = node.read().counts(now_ms());
    let m = &node.metrics;
    let (warm, progress, timed_out, took) = {
        let w = node.warmup();
        let progress = match &w.phase {
            Phase::Copying {
                buckets_done,
                buckets,
                ..
            } => *buckets_done as f64 / *buckets as f64,
            Phase::Warm(_) => 1.0,
            Phase::WaitingForPeers => 0.0,
        };
        let timed_out = matches!(w.phase, Phase::Warm(Warmed::TimedOut));
        let took = w.took.map_or(f64::NAN, |d| d.as_secs_f64());
        (w.is_warm(), progress, timed_out, took)
    };
    Exposition::default()
        .gauge("c19_keys", "Live keys in the state.", counts.keys as f64)
        .gauge(
            "c19_tombstones",
            "Deletes remembered so that they replicate.",
            counts.tombstones as f64,
        )
        .gauge(
            "c19_expired",
            "Expired values remembered until their lifetime ends.",
            counts.expired as f64,
        )
        .gauge(
            "c19_peers",
            "Peers in the current peer list.",
            node.peers.len() as f64,
        )
        .gauge(
            "c19_ready",
            "1 when the agent is ready.",
            f64::from(u8::from(node.is_ready())),
        )
        .counter(
            "c19_writes_total",
            "Entries the app wrote or deleted through the app API.",
            m.writes.get(),
        )
        .gauge(
            "c19_watchers",
            "Watch streams open on the app API.",
            node.watchers.load(std::sync::atomic::Ordering::Relaxed) as f64,
        )
        .counter(
            "c19_watch_resets_total",
            "Reset lines sent to watchers (position too old, agent restarted, fell behind).",
            m.watch_resets.get(),
        )
        .counter(
            "c19_watchers_dropped_total",
            "Watchers dropped because they did not keep up.",
            m.watchers_dropped.get(),
        )
        .counter(
            "c19_pushes_sent_total",
            "Pushes of changed entries sent to peers.",
            m.pushes_sent.get(),
        )
        .counter(
            "c19_pushes_failed_total",
            "Pushes that failed or timed out.",
            m.pushes_failed.get(),
        )
        .counter(
            "c19_pulls_sent_total",
            "Anti-entropy syncs started with a peer.",
            m.syncs_sent.get(),
        )
        .counter(
            "c19_pulls_failed_total",
            "Anti-entropy syncs that failed or timed out.",
            m.syncs_failed.get(),
        )
        .counter(
            "c19_pulls_equal_total",
            "Syncs that found the peer equal from its digest.",
            m.syncs_equal.get(),
        )
        .counter(
            "c19_records_applied_total",
            "Records from peers that changed the state.",
            m.records_applied.get(),
        )
        .counter(
            "c19_records_purged_total",
            "Deletes and expired values forgotten.",
            m.records_purged.get(),
        )
        .counter(
            "c19_bytes_sent_total",
            "Body bytes sent to peers and answered to peers.",
            m.traffic.sent.get(),
        )
        .counter(
            "c19_bytes_received_total",
            "Body bytes received from peers.",
            m.traffic.received.get(),
        )
        .counter(
            "c19_sync_bytes_total",
            "Body bytes of the syncs this agent started, both ways.",
            m.sync_bytes.get(),
        )
        .counter(
            "c19_sync_records_total",
            "Records moved by the syncs this agent started, both ways.",
            m.sync_records.get(),
        )
        .counter(
            "c19_prestop_flushes_total",
            "Pushes of everything unpushed on the preStop hook (pod terminating).",
            m.prestop_flushes.get(),
        )
        .counter(
            "c19_resyncs_total",
            "Resyncs after hearing from no peer for longer than the tombstone lifetime.",
            m.resyncs.get(),
        )
        .counter(
            "c19_records_forgotten_total",
            "Records forgotten by resyncs: held from before a long cut-off, gone at the peers.",
            m.records_forgotten.get(),
        )
        .gauge(
            "c19_resyncing",
            "1 while the agent resynchronises after a long cut-off (it is not ready meanwhile).",
            f64::from(u8::from(node.resyncing())),
        )
        .gauge(
            "c19_warm",
            "1 once the agent holds its group's state as of its start (or gave up waiting).",
            f64::from(u8::from(warm)),
        )
        .gauge(
            "c19_warmup_progress",
            "Share of the buckets copied from a member at start (0 to 1).",
            progress,
        )
        .counter(
            "c19_warmup_records_total",
            "Records received while copying a member's whole state (at start, and in resyncs).",
            m.warmup_records.get(),
        )
        .gauge(
            "c19_warmup_timed_out",
            "1 when no member answered within warmup_timeout and the agent serves what it holds.",
            f64::from(u8::from(timed_out)),
        )
        .gauge(
            "c19_warmup_seconds",
            "How long the warm-up took (NaN until it ends).",
            took,
        )
        .gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            process::resident_memory_bytes().map_or(f64::NAN, |b| b as f64),
        )
        .family(
            "c19_memory_limit_bytes",
            "The agent container's memory limit (absent when unlimited).",
            "gauge",
            &process::memory_limit_bytes()
                .map(|b| ("", b as f64))
                .into_iter()
                .collect::<Vec<_>>(),
        )
        .finish()
}
