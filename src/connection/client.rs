//! The one HTTP client an agent uses to talk to its peers: pooled connections, a timeout on the
//! whole request (C19 0.1 only bounded the connect, so a silent peer stalled gossip), the bearer
//! token, and byte accounting.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

use crate::http::{AGENT, SHARE};
use crate::metrics::Counter;
use crate::state::Share;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{peer}: no answer within {timeout:?}")]
    Timeout { peer: String, timeout: Duration },
    #[error("{peer}: {message}")]
    Transport { peer: String, message: String },
    /// Nothing serves at the peer's address: the connection was refused, or reset before any
    /// answer (a proxy in front of a port nobody listens on). No agent runs there, yet or any
    /// more.
    #[error("{peer}: connection refused or reset, no agent serves there")]
    Refused { peer: String },
    #[error("{peer}: answered {status}: {body}")]
    Status {
        peer: String,
        status: StatusCode,
        body: String,
    },
}

#[derive(Debug, Clone)]
pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    token: Option<String>,
    timeout: Duration,
}

/// A 2xx answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
    /// The id the answering agent gave (header `c19-agent`); C19 0.1 gives none.
    pub agent: Option<u32>,
}

/// Bytes moved, counted on request and response bodies.
#[derive(Debug, Default)]
pub struct Traffic {
    pub sent: Counter,
    pub received: Counter,
}

impl PeerClient {
    pub fn new(token: Option<String>, timeout: Duration) -> PeerClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(connector);
        PeerClient {
            client,
            token,
            timeout,
        }
    }

    /// What one request may last.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// How long a peer found silent is avoided: two timeouts, so a cut-off peer is retried about
    /// every third round of its would-be pushes rather than costing each of them a timeout.
    pub fn suspect_for(&self) -> Duration {
        self.timeout * 2
    }

    /// Sends one request to a peer with this client's token and returns its 2xx answer.
    pub async fn call(
        &self,
        method: Method,
        peer: &str,
        path: &str,
        body: Option<Bytes>,
        traffic: &Traffic,
    ) -> Result<Reply, ClientError> {
        let token = self.token.as_deref();
        self.send(token, method, peer, path, body, None, traffic)
            .await
    }

    /// A push: records for `PUT /`, with the peers the receiver is to pass them on to (no header
    /// for none).
    pub async fn push(
        &self,
        peer: &str,
        body: Bytes,
        share: &Share,
        traffic: &Traffic,
    ) -> Result<Reply, ClientError> {
        let share = Some(share.encode()).filter(|s| !s.is_empty());
        let token = self.token.as_deref();
        self.send(token, Method::PUT, peer, "/", Some(body), share, traffic)
            .await
    }

    /// Like [`PeerClient::call`] with another token: the operator talks to many groups.
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        peer: &str,
        path: &str,
        body: Option<Bytes>,
        traffic: &Traffic,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let reply = self
            .send(token, method, peer, path, body, None, traffic)
            .await?;
        Ok((reply.status, reply.body))
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        token: Option<&str>,
        method: Method,
        peer: &str,
        path: &str,
        body: Option<Bytes>,
        share: Option<String>,
        traffic: &Traffic,
    ) -> Result<Reply, ClientError> {
        let transport = |message: String| ClientError::Transport {
            peer: peer.to_string(),
            message,
        };
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{peer}{path}"));
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(share) = share {
            req = req.header(SHARE, share);
        }
        let body = body.unwrap_or_default();
        let sent = body.len() as u64;
        if sent > 0 {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| transport(e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| {
                if refused(&e) {
                    ClientError::Refused {
                        peer: peer.to_string(),
                    }
                } else {
                    transport(error_chain(&e))
                }
            })?;
            let status = resp.status();
            let agent = resp
                .headers()
                .get(AGENT)
                .and_then(|v| v.to_str().ok()?.parse::<u32>().ok());
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes, agent))
        };
        let (status, bytes, agent) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                peer: peer.to_string(),
                timeout: self.timeout,
            })??;
        traffic.sent.add(sent);
        traffic.received.add(bytes.len() as u64);
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(ClientError::Status {
                peer: peer.to_string(),
                status,
                body,
            });
        }
        Ok(Reply {
            status,
            body: bytes,
            agent,
        })
    }
}

/// Whether a request failed before any answer because nothing serves at the address: refused
/// (nothing listens) or reset (a proxy whose upstream refused). A paused or cut-off agent times
/// out instead.
fn refused(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::{ConnectionRefused, ConnectionReset};
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(io.kind(), ConnectionRefused | ConnectionReset);
        }
        cur = err.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}
