//! The app API (3097): what the application next to the agent reads and writes.
//!
//! Writes are applied before the reply, so an app always reads its own acknowledged writes;
//! invalid bodies are refused whole with a 400 that names the entry and field.

use std::sync::Arc;

use hyper::{Method, StatusCode};

use crate::http::{self, Request, Response};
use crate::node::Node;
use crate::state::{body, now_ms};

pub async fn handle(node: Arc<Node>, req: Request) -> Response {
    let key = match req.key() {
        Ok(k) => k,
        Err(response) => return *response,
    };
    match (&req.method, key.is_empty()) {
        (&Method::GET, true) => http::json(StatusCode::OK, node.read().dump(now_ms(), false)),
        (&Method::GET, false) => get(&node, &key),
        (&Method::PUT, true) => put_batch(&node, &req.body),
        (&Method::PUT, false) => put_one(&node, &key, &req.body),
        (&Method::DELETE, false) => delete(&node, &key),
        (_, true) => http::method_not_allowed("GET, PUT"),
        (_, false) => http::method_not_allowed("GET, PUT, DELETE"),
    }
}

fn get(node: &Node, key: &str) -> Response {
    let store = node.read();
    match store.get(key, now_ms()) {
        Some(record) => {
            let mut out = Vec::with_capacity(64);
            record.write_json(&mut out);
            drop(store);
            http::json(StatusCode::OK, out)
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

fn put_one(node: &Node, key: &str, body: &[u8]) -> Response {
    match body::parse_entry(body, key, node.settings.app_limits) {
        Ok(entry) => {
            node.metrics.writes.inc();
            node.write().write_local(key, entry, now_ms());
            http::empty(StatusCode::NO_CONTENT)
        }
        Err(e) => http::error(StatusCode::BAD_REQUEST, e),
    }
}

fn delete(node: &Node, key: &str) -> Response {
    let max = node.settings.app_limits.max_key_bytes;
    if key.len() > max {
        return http::error(
            StatusCode::BAD_REQUEST,
            format!("key is longer than {max} bytes"),
        );
    }
    node.metrics.writes.inc();
    node.write().delete_local(key, now_ms());
    http::empty(StatusCode::NO_CONTENT)
}
