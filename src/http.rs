//! What both HTTP servers share: one request shape, JSON replies, bounded body reading, serving
//! on an already bound listener (so a port that cannot be bound is an error at start, not a
//! panic or a silent agent without replication).

use std::convert::Infallible;
use std::future::Future;

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};

pub type Response = warp::reply::Response;

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
async fn read_body<S, B>(declared: Option<u64>, stream: S, limit: usize) -> Result<Bytes, Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
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
    let mut stream = std::pin::pin!(stream);
    while let Some(chunk) = stream.next().await {
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

/// A warp filter that hands every request, body read within `limit`, to `handler`. It extracts
/// only the headers that are used, rather than cloning every header of every request.
pub fn route<H, Fut>(
    limit: usize,
    handler: H,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static
where
    H: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    warp::method()
        .and(warp::path::full())
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>(SHARE))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  authorization: Option<String>,
                  share: Option<String>,
                  declared: Option<u64>,
                  body| {
                let handler = handler.clone();
                async move {
                    match read_body(declared, body, limit).await {
                        Ok(body) => {
                            let path = path.as_str().to_owned();
                            handler(Request {
                                method,
                                path,
                                authorization,
                                share,
                                body,
                            })
                            .await
                        }
                        Err(response) => response,
                    }
                }
            },
        )
}

/// Serves `filter` on a bound listener until `shutdown` resolves, then drains connections.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    filter: F,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    F: Filter<Extract = (Response,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
{
    let filter = filter
        .recover(|_| async { Ok::<_, Infallible>(error(StatusCode::BAD_REQUEST, "bad request")) });
    warp::serve(filter)
        .incoming(listener)
        .graceful(shutdown)
        .run()
        .await
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
                (0..3).map(|_| Ok::<_, warp::Error>(Bytes::from_static(b"12345"))),
            )
        };
        assert_eq!(read_body(None, chunks(), 15).await.unwrap().len(), 15);
        let r = read_body(None, chunks(), 14).await.unwrap_err();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let r = read_body(
            Some(100),
            futures::stream::empty::<Result<Bytes, warp::Error>>(),
            14,
        )
        .await;
        assert_eq!(r.unwrap_err().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
