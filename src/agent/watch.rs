//! Watch streams on the app API: `GET /?watch[&prefix=…]` or `GET /<key>?watch`, answered with
//! one JSON line (NDJSON) per change this agent applies to what the watcher watches.
//!
//! A stream starts where the watcher asks (`since`, a position from an earlier event), else
//! now; `snapshot` sends the live values first when there is no position to resume from. Then
//! `synced`: everything up to its position has been sent. A position that cannot be resumed
//! (too old, or from before the agent restarted) gets an explicit `reset` line, never a silent
//! gap. A watcher that does not keep up is sent a `reset` and dropped; it resumes from the
//! position of the last line it read. Watchers never slow writes or gossip: changes reach them
//! through a bounded broadcast that nobody waits on.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use warp::Reply;

use super::query::{Query, QueryError};
use crate::http::{self, Response};
use crate::node::Node;
use crate::state::feed::{Change, Position, ResetReason, Start};
use crate::state::now_ms;
use crate::state::record::write_key;

/// How often due expiries are announced to watchers (they reach them at most this late).
const EXPIRY_TICK: Duration = Duration::from_millis(50);
/// Changes gathered into one write to a watcher, at most.
const BATCH: usize = 256;
/// How long a watcher that does not read may hold its stream before it is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What a watcher watches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Key(String),
    Prefix(String),
}

impl Scope {
    fn matches(&self, key: &str) -> bool {
        match self {
            Scope::Key(k) => k == key,
            Scope::Prefix(p) => key.starts_with(p.as_str()),
        }
    }
}

/// Announces expiries to watchers as they happen (only once somebody watches).
pub async fn expiry_loop(node: Arc<Node>, stop: CancellationToken) {
    loop {
        // Until somebody watches there is nothing to announce: check rarely, so that an agent
        // nobody watches is not woken 20 times a second.
        let pause = if node.read().is_watched() {
            EXPIRY_TICK
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        let now = now_ms();
        if node.read().expiries_due(now) {
            node.write().announce_expiries(now);
        }
    }
}

/// Counts a watch stream while it lasts.
struct Slot(Arc<Node>);

impl Slot {
    fn take(node: &Arc<Node>) -> Option<Slot> {
        let open = node.watchers.fetch_add(1, Ordering::Relaxed);
        if open >= node.settings.max_watchers {
            node.watchers.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Slot(node.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::Relaxed);
    }
}

pub fn watch(node: &Arc<Node>, key: Option<String>, query: &Query) -> Response {
    let request = match parse(key, query) {
        Ok(r) => r,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, e),
    };
    let Some(slot) = Slot::take(node) else {
        let mut r = http::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "too many watchers: this agent serves {} at once (agent.max_watchers)",
                node.settings.max_watchers
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    };
    let Request {
        scope,
        since,
        snapshot,
    } = request;
    let now = now_ms();
    if !node.read().is_watched() {
        node.write().start_watching(now);
    }
    let mut first = Vec::new();
    // A read lock: readers go on while the watcher subscribes and copies its snapshot, writers
    // wait, so nothing changes between the two.
    let (rx, position) = {
        let store = node.read();
        let (rx, start, position) = store.watch(since).expect("started above, never stopped");
        let fresh = match start {
            Start::Resume(changes) => {
                for c in changes.iter().filter(|c| scope.matches(&c.key)) {
                    first.extend_from_slice(c.line());
                }
                since.is_none()
            }
            Start::Reset(reason) => {
                node.metrics.watch_resets.inc();
                first.extend_from_slice(&reset_line(reason, position));
                true
            }
        };
        if snapshot && fresh {
            store.write_snapshot(&mut first, |k| scope.matches(k), now);
        }
        (rx, position)
    };
    first.extend_from_slice(&synced_line(position));
    let (tx, lines) = mpsc::channel(2);
    tokio::spawn(pump(
        first,
        rx,
        scope,
        tx,
        node.closing.clone(),
        slot,
        position,
    ));
    let mut r = warp::reply::stream(Lines(lines)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

struct Request {
    scope: Scope,
    since: Option<Position>,
    snapshot: bool,
}

fn parse(key: Option<String>, query: &Query) -> Result<Request, QueryError> {
    let scope = match key {
        Some(key) => {
            query.only(&["watch", "since", "snapshot"])?;
            Scope::Key(key)
        }
        None => {
            query.only(&["watch", "prefix", "since", "snapshot"])?;
            Scope::Prefix(query.text("prefix").unwrap_or("").to_string())
        }
    };
    Ok(Request {
        scope,
        since: query.parsed("since")?,
        snapshot: query.flag("snapshot")?,
    })
}

fn reset_line(reason: ResetReason, position: Position) -> Vec<u8> {
    let mut out = b"{\"type\":\"reset\",\"reason\":".to_vec();
    write_key(reason.as_str(), &mut out);
    out.extend_from_slice(format!(",\"pos\":\"{position}\"}}\n").as_bytes());
    out
}

fn synced_line(position: Position) -> Vec<u8> {
    format!("{{\"type\":\"synced\",\"pos\":\"{position}\"}}\n").into_bytes()
}

/// Moves changes from the feed to one watcher's connection, a batch per write, until the
/// watcher goes, falls behind, or the agent shuts down.
async fn pump(
    first: Vec<u8>,
    mut rx: broadcast::Receiver<Arc<Change>>,
    scope: Scope,
    tx: mpsc::Sender<Bytes>,
    closing: CancellationToken,
    slot: Slot,
    mut last: Position,
) {
    if send(&tx, first, &closing).await.is_err() {
        return;
    }
    loop {
        let received = tokio::select! {
            _ = closing.cancelled() => return,
            // The connection dropped the body: the watcher is gone.
            _ = tx.closed() => return,
            r = rx.recv() => r,
        };
        let mut buf = Vec::new();
        let mut next = Some(received);
        let mut taken = 0;
        while let Some(received) = next.take() {
            match received {
                Ok(change) => {
                    last = change.position();
                    if scope.matches(&change.key) {
                        buf.extend_from_slice(change.line());
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    slot.0.metrics.watch_resets.inc();
                    slot.0.metrics.watchers_dropped.inc();
                    buf.extend_from_slice(&reset_line(ResetReason::FellBehind, last));
                    let _ = send(&tx, buf, &closing).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            }
            taken += 1;
            if taken < BATCH && buf.len() < 64 * 1024 {
                next = match rx.try_recv() {
                    Ok(c) => Some(Ok(c)),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                    Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                };
            }
        }
        if !buf.is_empty() && send(&tx, buf, &closing).await.is_err() {
            return;
        }
    }
}

/// Hands a batch to the connection; fails when the watcher is gone, has not read for
/// [`SEND_TIMEOUT`], or the agent shuts down.
async fn send(
    tx: &mpsc::Sender<Bytes>,
    buf: Vec<u8>,
    closing: &CancellationToken,
) -> Result<(), ()> {
    tokio::select! {
        _ = closing.cancelled() => Err(()),
        sent = tokio::time::timeout(SEND_TIMEOUT, tx.send(Bytes::from(buf))) => match sent {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        },
    }
}

/// The response body: the batches `pump` sends.
struct Lines(mpsc::Receiver<Bytes>);

impl Stream for Lines {
    type Item = Result<Bytes, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|b| b.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_watch_takes_no_prefix() {
        let q = Query::parse("watch&prefix=a").unwrap();
        assert!(parse(Some("k".into()), &q).is_err());
        let r = parse(None, &q).unwrap();
        assert_eq!(r.scope, Scope::Prefix("a".into()));
        assert!(r.scope.matches("ab") && !r.scope.matches("b"));
        let q = Query::parse("watch&since=nope").unwrap();
        let e = parse(None, &q).err().unwrap().to_string();
        assert!(e.contains("\"since\"") && e.contains("\"nope\""), "{e}");
    }

    #[test]
    fn control_lines_are_json() {
        let p = Position { epoch: 1, seq: 2 };
        let reset: serde_json::Value =
            serde_json::from_slice(&reset_line(ResetReason::TooOld, p)).unwrap();
        assert_eq!(reset["type"], "reset");
        assert_eq!(reset["pos"], "0000000000000001-2");
        let synced: serde_json::Value = serde_json::from_slice(&synced_line(p)).unwrap();
        assert_eq!(synced["type"], "synced");
    }
}
