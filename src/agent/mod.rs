//! The app API (3097): what the application next to the agent reads and writes.
//!
//! Writes are applied before the reply, so an app always reads its own acknowledged writes;
//! invalid bodies are refused whole with a 400 that names the entry and field. Besides C19 0.1's
//! reads and writes: prefix pages ([`list`]), watch streams ([`watch`]) and conditional writes
//! on single keys ([`conditional`]).

pub mod conditional;
pub mod list;
pub mod query;
pub mod watch;

use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};

use conditional::{Failed, PreconditionError, Preconditions, etag, etag_bytes};
use query::Query;

use crate::http::{self, Request, Response};
use crate::node::Node;
use crate::state::{Store, body, now_ms};

pub async fn handle(node: Arc<Node>, req: Request) -> Response {
    let key = match req.key() {
        Ok(k) => k,
        Err(response) => return *response,
    };
    let query = match Query::parse(&req.query) {
        Ok(q) => q,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, e),
    };
    let pre = match Preconditions::parse(req.if_match.as_deref(), req.if_none_match.as_deref()) {
        Ok(p) => p,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, e),
    };
    let single = !key.is_empty();
    if !single && !pre.is_empty() {
        return http::error(StatusCode::BAD_REQUEST, PreconditionError::Batch);
    }
    let watching = query.has("watch");
    if !query.is_empty() && !(req.method == Method::GET && (watching || !single)) {
        return http::error(
            StatusCode::BAD_REQUEST,
            "query parameters apply to GET / (listing, watch) and GET /<key>?watch only",
        );
    }
    match (&req.method, single) {
        (&Method::GET, _) if watching => {
            watch::watch(&node, single.then(|| key.into_owned()), &query)
        }
        (&Method::GET, false) if query.is_empty() => {
            http::json(StatusCode::OK, node.read().dump(now_ms(), false))
        }
        (&Method::GET, false) => list::list(&node, &query),
        (&Method::GET, true) => get(&node, &key, &pre),
        (&Method::PUT, false) => put_batch(&node, &req.body),
        (&Method::PUT, true) => put_one(&node, &key, &req.body, &pre),
        (&Method::DELETE, true) => delete(&node, &key, &pre),
        (_, false) => http::method_not_allowed("GET, PUT"),
        (_, true) => http::method_not_allowed("GET, PUT, DELETE"),
    }
}

fn with_etag(mut r: Response, tag: Option<u64>) -> Response {
    if let Some(tag) = tag {
        let value = HeaderValue::from_bytes(&etag_bytes(tag)).expect("hex is a header value");
        r.headers_mut().insert(header::ETAG, value);
    }
    r
}

fn failed(how: Failed, key: &str, current: Option<u64>) -> Response {
    let r = match how {
        Failed::NotModified => http::empty(StatusCode::NOT_MODIFIED),
        Failed::Precondition => http::error(
            StatusCode::PRECONDITION_FAILED,
            match current {
                Some(tag) => format!("precondition failed: {key:?} is at {}", etag(tag)),
                None => format!("precondition failed: {key:?} has no value"),
            },
        ),
    };
    with_etag(r, current)
}

/// The answer refusing a write whose preconditions fail, checked under the lock the write is
/// then made under, so that nothing on this agent changes the key in between.
fn refusal(store: &Store, key: &str, pre: &Preconditions, now: u64) -> Option<Response> {
    if pre.is_empty() {
        return None;
    }
    let current = store.etag(key, now);
    pre.check(current, false)
        .err()
        .map(|how| failed(how, key, current))
}

fn get(node: &Node, key: &str, pre: &Preconditions) -> Response {
    let now = now_ms();
    let store = node.read();
    let found = store.get_tagged(key, now);
    let current = found.map(|(_, tag)| tag);
    if let Err(how) = pre.check(current, true) {
        return failed(how, key, current);
    }
    match found {
        Some((record, tag)) => {
            let mut out = Vec::with_capacity(64);
            record.write_json(&mut out);
            drop(store);
            with_etag(http::json(StatusCode::OK, out), Some(tag))
        }
        None => http::error(StatusCode::NOT_FOUND, "key not found"),
    }
}

fn put_batch(node: &Node, body: &[u8]) -> Response {
    let entries = match body::parse_batch(body, body::Origin::App, node.settings.app_limits) {
        Ok(e) => e,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, e),
    };
    let now = now_ms();
    node.metrics.writes.add(entries.len() as u64);
    let mut store = node.write();
    for (key, entry) in entries {
        store.write_local(&key, entry, now);
    }
    http::empty(StatusCode::NO_CONTENT)
}

fn put_one(node: &Node, key: &str, body: &[u8], pre: &Preconditions) -> Response {
    let entry = match body::parse_entry(body, key, node.settings.app_limits) {
        Ok(entry) => entry,
        Err(e) => return http::error(StatusCode::BAD_REQUEST, e),
    };
    let now = now_ms();
    let mut store = node.write();
    if let Some(refused) = refusal(&store, key, pre, now) {
        return refused;
    }
    node.metrics.writes.inc();
    store.write_local(key, entry, now);
    let tag = store.etag(key, now);
    drop(store);
    with_etag(http::empty(StatusCode::NO_CONTENT), tag)
}

fn delete(node: &Node, key: &str, pre: &Preconditions) -> Response {
    let max = node.settings.app_limits.max_key_bytes;
    if key.len() > max {
        return http::error(
            StatusCode::BAD_REQUEST,
            format!("key is longer than {max} bytes"),
        );
    }
    let now = now_ms();
    let mut store = node.write();
    if let Some(refused) = refusal(&store, key, pre, now) {
        return refused;
    }
    node.metrics.writes.inc();
    store.delete_local(key, now);
    http::empty(StatusCode::NO_CONTENT)
}
