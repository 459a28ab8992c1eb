//! Prefix listing on the app API: `GET /?prefix=…&limit=…&after=…[&keys]`, a page of live
//! entries in key order and the key to continue after.
//!
//! Pages follow key order, so listing page after page covers every key that exists throughout
//! exactly once, whatever is written meanwhile; keys created or deleted during the listing may
//! or may not appear.

use hyper::StatusCode;

use super::query::{Query, QueryError};
use crate::http::{self, Response};
use crate::node::Node;
use crate::state::now_ms;
use crate::state::record::write_key;

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

pub fn list(node: &Node, query: &Query) -> Response {
    match page(node, query) {
        Ok(body) => http::json(StatusCode::OK, body),
        Err(e) => http::error(StatusCode::BAD_REQUEST, e),
    }
}

fn page(node: &Node, query: &Query) -> Result<Vec<u8>, QueryError> {
    query.only(&["prefix", "after", "limit", "keys"])?;
    let prefix = query.text("prefix").unwrap_or("");
    let after = query.text("after");
    let limit = query.number("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    let keys_only = query.flag("keys")?;
    if !node.read().is_ordered() {
        node.write().order();
    }
    let store = node.read();
    let (entries, more) = store.list(prefix, after, limit, now_ms());
    let mut out = Vec::with_capacity(64 + entries.len() * 48);
    out.extend_from_slice(if keys_only {
        b"{\"keys\":["
    } else {
        b"{\"entries\":["
    });
    let mut record = Vec::with_capacity(64);
    for (i, (key, r)) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if keys_only {
            write_key(key, &mut out);
            continue;
        }
        out.extend_from_slice(b"{\"key\":");
        write_key(key, &mut out);
        out.push(b',');
        record.clear();
        r.write_json(&mut record);
        out.extend_from_slice(&record[1..]);
    }
    out.extend_from_slice(b"],\"next\":");
    match entries.last() {
        Some((key, _)) if more => write_key(key, &mut out),
        _ => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(out)
}
