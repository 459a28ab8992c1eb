//! What both HTTP servers share: one request shape, JSON replies, bounded body reading, serving
//! on an already bound listener (so a port that cannot be bound is an error at start, not a
//! panic or a silent agent without replication).

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub type Response = hyper::Response<Full<Bytes>>;

/// The header in which a push names the peers its receiver is to pass the news on to.
pub const SHARE: &str = "c19-share";

/// The header in which an agent's answers to its peers carry its id (see
/// [`Share`](crate::state::Share)).
pub const AGENT: &str = "c19-agent";

/// A request with its body already read within the server's limit.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// The raw (still percent-encoded) path, starting with `/`.
    pub path: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The `c19-share` header of a push between agents.
    pub share: Option<String>,
    pub body: Bytes,
}

impl Request {
    /// The path without its leading `/`, percent-decoded.
    pub fn key(&self) -> Result<String, Box<Response>> {
        decode_path(&self.path).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "key is not valid UTF-8 after percent-decoding",
            ))
        })
    }
}

/// Percent-decodes a path into a key; `None` when the result is not UTF-8.
pub fn decode_path(path: &str) -> Option<String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(|k| k.into_owned())
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

/// Reads a body, refusing with 413 as soon as it is known to exceed `limit` bytes.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Response>
where
    B: Body,
    B::Error: std::fmt::Display,
{
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body larger than {limit} bytes"),
        )
    };
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| error(StatusCode::BAD_REQUEST, format!("reading body: {e}")))?;
        let Ok(mut chunk) = frame.into_data() else {
            continue; // trailers carry nothing c19 reads
        };
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
fn header_text(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, &'static str> {
    headers
        .get(name)
        .map(|v| v.to_str().map(str::to_owned).map_err(|_| name))
        .transpose()
}

/// Turns a hyper request into a [`Request`] (body read within `limit`) and answers it. Only the
/// headers c19 uses are copied, rather than every header of every request.
async fn answer<H, Fut>(req: hyper::Request<Incoming>, limit: usize, handler: H) -> Response
where
    H: Fn(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let (parts, body) = req.into_parts();
    let headers = (
        header_text(&parts.headers, "authorization"),
        header_text(&parts.headers, SHARE),
    );
    let (authorization, share) = match headers {
        (Ok(authorization), Ok(share)) => (authorization, share),
        (Err(name), _) | (_, Err(name)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("header {name} is not visible ASCII"),
            );
        }
    };
    match read_body(body, limit).await {
        Ok(body) => {
            handler(Request {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                authorization,
                share,
                body,
            })
            .await
        }
        Err(response) => response,
    }
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
    let graceful = GracefulShutdown::new();
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
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(answer(req, limit, handler).await) }
        });
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
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let chunks = || {
            StreamBody::new(futures::stream::iter((0..3).map(|_| {
                Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"12345")))
            })))
        };
        assert_eq!(read_body(chunks(), 15).await.unwrap().len(), 15);
        let r = read_body(chunks(), 14).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let declared = Full::new(Bytes::from(vec![0u8; 100]));
        let r = read_body(declared, 14).await;
        assert_eq!(r.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
