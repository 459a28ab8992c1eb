//! What the HTTP servers share: one request shape, JSON replies, bounded body reading, serving
//! on an already bound listener (so a port that cannot be bound is an error at start, not a
//! panic or a silent agent without replication).
//!
//! Requests are extracted and answered through a warp filter; the connections are c19's own
//! (hyper's HTTP/1.1 connection with TCP_NODELAY, a header timeout and a bounded drain at
//! shutdown), which warp's server does not let one set.

use std::borrow::Cow;
use std::future::Future;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use warp::Filter;
use warp::filters::path::FullPath;

pub type Response = warp::reply::Response;

/// The header in which a push names the peers its receiver is to pass the news on to.
pub const SHARE: &str = "c19-share";

const SHARE_HEADER: HeaderName = HeaderName::from_static(SHARE);

/// The header in which an agent's answers to its peers carry its id (see
/// [`Share`](crate::state::Share)).
pub const AGENT: &str = "c19-agent";

/// A request with its body already read within the server's limit.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The raw (still percent-encoded) path, starting with `/` (shared with the request line,
    /// not copied).
    pub path: FullPath,
    /// The raw query string (after `?`; empty without one).
    pub query: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `c19-share` header of a push between agents.
    pub share: Option<String>,
    /// The preconditions of a conditional request (`If-Match`, `If-None-Match`).
    pub if_match: Option<String>,
    pub if_none_match: Option<String>,
    pub body: Bytes,
}

impl Request {
    /// The path without its leading `/`, percent-decoded.
    pub fn key(&self) -> Result<Cow<'_, str>, Box<Response>> {
        decode_path(self.path.as_str()).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "key is not valid UTF-8 after percent-decoding",
            ))
        })
    }
}

/// Percent-decodes a path into a key (borrowed when nothing is escaped); `None` when the
/// result is not UTF-8.
pub fn decode_path(path: &str) -> Option<Cow<'_, str>> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    percent_encoding::percent_decode_str(raw).decode_utf8().ok()
}

pub fn empty(status: StatusCode) -> Response {
    let mut r = Response::new(Bytes::new().into());
    *r.status_mut() = status;
    r
}

pub fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub fn json_value(status: StatusCode, value: &impl serde::Serialize) -> Response {
    json(
        status,
        serde_json::to_vec(value).expect("serializing a reply cannot fail"),
    )
}

/// `{"error": "..."}` with the given status.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    json_value(status, &serde_json::json!({ "error": message.to_string() }))
}

pub fn method_not_allowed(allow: &'static str) -> Response {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; allowed: {allow}"),
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

pub fn text(body: String) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Reads a body, refusing with 413 as soon as it is known to exceed `limit` bytes (`declared`:
/// its Content-Length).
async fn read_body<S, B, E>(body: S, declared: Option<u64>, limit: usize) -> Result<Bytes, Response>
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
    E: std::fmt::Display,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading body: {e}")))?;
        if buf.len() + chunk.remaining() > limit {
            return Err(too_large());
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            buf.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

/// A header as text; `Err(name)` when it is not visible ASCII.
fn header_text(headers: &HeaderMap, name: HeaderName) -> Result<Option<String>, HeaderName> {
    match headers.get(&name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|t| Some(t.to_owned())).map_err(|_| name),
    }
}

/// The parts of a request warp extracts for [`answer`].
struct Parts {
    method: Method,
    path: FullPath,
    query: String,
    headers: HeaderMap,
}

/// Turns the extracted parts into a [`Request`] (body read within `limit`) and answers it. Only
/// the headers c19 uses are kept.
async fn answer<S, B, E, H, Fut>(parts: Parts, body: S, limit: usize, handler: H) -> Response
where
    S: Stream<Item = Result<B, E>>,
    B: Buf,
    E: std::fmt::Display,
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let h = &parts.headers;
    let headers = (|| {
        Ok::<_, HeaderName>((
            header_text(h, header::AUTHORIZATION)?,
            header_text(h, SHARE_HEADER)?,
            header_text(h, header::IF_MATCH)?,
            header_text(h, header::IF_NONE_MATCH)?,
        ))
    })();
    let (authorization, share, if_match, if_none_match) = match headers {
        Ok(found) => found,
        Err(name) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("header {name} is not visible ASCII"),
            );
        }
    };
    let declared = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match read_body(body, declared, limit).await {
        Ok(body) => {
            handler(Request {
                method: parts.method,
                path: parts.path,
                query: parts.query,
                authorization,
                share,
                if_match,
                if_none_match,
                body,
            })
            .await
        }
        Err(response) => response,
    }
}

/// The warp filter that extracts a request's parts and body and answers it with `handler`.
fn routes<H, Fut>(
    limit: usize,
    handler: H,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static
where
    H: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    // Each filter in the chain costs tens of nanoseconds a request: the parts are taken in as
    // few as possible, and nothing but the body (never taken twice) can reject.
    let query = warp::query::raw().or(warp::any().map(String::new)).unify();
    warp::method()
        .and(warp::path::full())
        .and(query)
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(move |method, path, query, headers, body| {
            let parts = Parts {
                method,
                path,
                query,
                headers,
            };
            answer(parts, body, limit, handler.clone())
        })
}

/// How long open connections get to finish their request at shutdown: a client that sends its
/// body slowly must not hold the process past Kubernetes' grace period, when it would be killed
/// before its last push.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on a bound listener, each request's body read within `limit` and handed to
/// `handler`, until `shutdown` resolves; then stops accepting and lets open connections finish
/// the request they are on.
pub async fn serve<H, Fut>(
    listener: TcpListener,
    limit: usize,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let mut builder = http1::Builder::new();
    // A client gets 30 s (hyper's default) to send its headers, then the connection is closed:
    // hyper enforces that only with a timer.
    builder.timer(TokioTimer::new());
    // One flat buffer per response, written with write(2): on loopback the kernel's writev path
    // for a head and a small body costs more than copying the body behind the head (measured:
    // it wins back what warp's filter chain costs a GET; `cargo bench --bench server`).
    builder.writev(false);
    let graceful = GracefulShutdown::new();
    let service = warp::service(routes(limit, handler));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole; waiting for an ACK before sending the next would only
        // add latency.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(service.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open {} s after shutdown began; closing them",
            DRAIN.as_secs()
        );
    }
}

/// A failed accept is the client's problem (it reset the connection) or the process's (out of
/// file descriptors); in the second case, back off instead of spinning on the same error.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "accepting a connection failed; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_decoded() {
        assert_eq!(decode_path("/a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(decode_path("/plain").unwrap(), "plain");
        assert_eq!(decode_path("/").unwrap(), "");
        assert_eq!(decode_path("/%FF"), None);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        let chunks = || {
            futures::stream::iter(
                (0..3).map(|_| Ok::<_, std::convert::Infallible>(Bytes::from_static(b"12345"))),
            )
        };
        assert_eq!(read_body(chunks(), None, 15).await.unwrap().len(), 15);
        let r = read_body(chunks(), None, 14).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = read_body(chunks(), Some(100), 14).await;
        assert_eq!(r.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
