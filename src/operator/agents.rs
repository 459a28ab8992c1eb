//! Talking to a group's agents: the health probe (digest, or the full dump for agents without a
//! digest endpoint) and the peer-list feed, with timeouts, bounded concurrency and retries.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hyper::{Method, StatusCode};

use super::context::OperatorMetrics;
use super::health::{Member, Probe};
use crate::connection::api::{DigestReport, PeerList};
use crate::connection::client::{ClientError, PeerClient, Traffic};
use crate::state::{Limits, Origin, Spread, Store, StoreConfig, body::parse_batch, now_ms};

/// The peer count of an agent that does not report one (C19 0.1): never re-fed for it.
pub const UNKNOWN_PEERS: usize = usize::MAX;

/// Requests in flight per round, across a group.
pub const CONCURRENCY: usize = 32;

/// Probes every member; the answer order follows `members`. Counts the probes, the members that
/// did not answer, the bytes and each probe's latency in `metrics`.
pub async fn probe_all(
    client: &PeerClient,
    token: Option<&str>,
    members: &[Member],
    metrics: &OperatorMetrics,
) -> Vec<(Member, Probe)> {
    futures::stream::iter(members.iter().cloned())
        .map(|m| async move {
            let started = Instant::now();
            let p = probe(client, token, &m.address, &metrics.traffic).await;
            metrics.probe_latency.observe(started.elapsed());
            metrics.probes.inc();
            if matches!(p, Probe::Unreachable(_)) {
                metrics.probes_failed.inc();
            }
            (m, p)
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

async fn probe(
    client: &PeerClient,
    token: Option<&str>,
    address: &str,
    traffic: &Traffic,
) -> Probe {
    match client
        .call_as(token, Method::GET, address, "/c19/digest", None, traffic)
        .await
    {
        Ok((_, body)) => match serde_json::from_slice::<DigestReport>(&body) {
            Ok(report) => Probe::Answered(report),
            Err(e) => Probe::Unreachable(format!("unreadable digest: {e}")),
        },
        Err(ClientError::Status {
            status: StatusCode::NOT_FOUND,
            ..
        }) => probe_dump(client, token, address, traffic).await,
        Err(e) => Probe::Unreachable(e.to_string()),
    }
}

/// For agents that lack `/c19/digest` (C19 0.1): fetch the full map and digest it here, the same
/// way an agent digests its own state.
async fn probe_dump(
    client: &PeerClient,
    token: Option<&str>,
    address: &str,
    traffic: &Traffic,
) -> Probe {
    let body = match client
        .call_as(token, Method::GET, address, "/", None, traffic)
        .await
    {
        Ok((_, body)) => body,
        Err(e) => return Probe::Unreachable(e.to_string()),
    };
    let limits = Limits {
        max_key_bytes: usize::MAX,
        max_entries: usize::MAX,
    };
    let entries = match parse_batch(&body, Origin::Peer, limits) {
        Ok(e) => e,
        Err(e) => return Probe::Unreachable(format!("unreadable state: {e}")),
    };
    let now = now_ms();
    let mut store = Store::new(StoreConfig {
        default_ttl: None,
        tombstone_lifetime: u64::MAX,
    });
    for (k, e) in entries {
        store.merge_incoming(&k, e, now, Spread::Quiet);
    }
    Probe::Answered(DigestReport::of(&store, now, UNKNOWN_PEERS))
}

/// Sends every member the addresses of all members (an agent drops itself from the list).
/// Returns the members that could not be fed after the retries.
pub async fn feed_all(
    client: &PeerClient,
    token: Option<&str>,
    members: &[Member],
    targets: &[Member],
    traffic: &Traffic,
) -> Vec<Member> {
    let list = PeerList {
        peers: members.iter().map(|m| m.address.clone()).collect(),
    };
    let body = Bytes::from(serde_json::to_vec(&list).expect("peer list serializes"));
    futures::stream::iter(targets.iter().cloned())
        .map(|m| {
            let body = body.clone();
            async move {
                feed(client, token, &m.address, body, traffic)
                    .await
                    .err()
                    .map(|_| m)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await
}

async fn feed(
    client: &PeerClient,
    token: Option<&str>,
    address: &str,
    body: Bytes,
    traffic: &Traffic,
) -> Result<(), ClientError> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        match client
            .call_as(
                token,
                Method::PUT,
                address,
                "/c19/peers",
                Some(body.clone()),
                traffic,
            )
            .await
        {
            Ok(_) => return Ok(()),
            // A 4xx will not get better by retrying.
            Err(e @ ClientError::Status { status, .. }) if status.is_client_error() => {
                return Err(e);
            }
            Err(e) if attempt >= 2 => return Err(e),
            Err(e) => tracing::debug!(error = %e, "peer feed failed; retrying"),
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
}
