//! Running one agent: seed the state, bind both ports (failing loudly when a port is taken),
//! start the gossip, purge and peer-provider tasks, and shut down cleanly on SIGTERM/SIGINT.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, DataSeederConfig, PeerProviderConfig};
use crate::connection::client::PeerClient;
use crate::connection::gossip::{self, GossipConfig};
use crate::connection::peer_provider::{self, ProviderError, SelfIdentity};
use crate::connection::peers::Peers;
use crate::connection::warmup;
use crate::node::{Node, NodeSettings};
use crate::state::{Limits, Store, StoreConfig, now_ms, seeder};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Seed(#[from] seeder::SeedError),
    #[error("spec.connection.token_file {file}: cannot read: {source}")]
    Token {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("spec.connection.token_file {0}: the file is empty")]
    EmptyToken(PathBuf),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("cannot bind the {what} port {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// Configuration mistakes exit with 2 like a bad config file; the rest with 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            RuntimeError::Bind { .. } => 1,
            _ => 2,
        }
    }
}

/// Rounds without a change before an agent takes part in an unforced sync: pushes take a few
/// rounds to spread a batch, and a sync while they do moves the same records twice.
pub const QUIET_ROUNDS: u64 = 2;

/// Peer entries are limited by the body size only: a full state may be one batch.
const PEER_MAX_ENTRIES: usize = usize::MAX;

/// Runs an agent until `shutdown` resolves, then pushes what is not yet pushed and returns.
pub async fn run_agent(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RuntimeError> {
    let spec = &config.spec;
    let target_port = config.target_port();
    peer_provider::validate(&spec.connection.peer_provider, target_port)?;
    let token = read_token(spec.connection.token_file.as_ref())?;
    let app_limits = Limits {
        max_key_bytes: spec.agent.max_key_bytes,
        max_entries: spec.agent.max_batch_entries,
    };
    let peer_limits = Limits {
        max_key_bytes: spec.agent.max_key_bytes,
        max_entries: PEER_MAX_ENTRIES,
    };

    let mut store = Store::new(StoreConfig {
        default_ttl: spec.state.ttl,
        tombstone_lifetime: spec.state.tombstone_lifetime,
    });
    store.set_watch_history(spec.agent.watch_history);
    if let Some(DataSeederConfig::File { filename }) = &spec.state.data_seeder {
        let entries = seeder::load(filename, app_limits)?;
        let now = now_ms();
        let count = entries.len();
        for (key, entry) in entries {
            store.write_local(&key, entry, now);
        }
        tracing::info!(file = %filename.display(), entries = count, "state seeded");
    }

    let app_addr = SocketAddr::new(parse_ip(&spec.agent.bind), spec.agent.port);
    let peer_ip = parse_ip(&spec.connection.bind);
    let peer_addr = SocketAddr::new(peer_ip, spec.connection.port);
    let app_listener = bind("app", app_addr).await?;
    let peer_listener = bind("peer", peer_addr).await?;
    let metrics_listener = match spec.connection.metrics_port {
        Some(port) => Some(bind("metrics", SocketAddr::new(peer_ip, port)).await?),
        None => None,
    };
    let me = SelfIdentity::from_env();

    let settings = NodeSettings {
        app_limits,
        peer_limits,
        token: token.clone(),
        operator_fed: matches!(
            spec.connection.peer_provider,
            PeerProviderConfig::Operator { .. }
        ),
        target_port,
        quiet_ms: QUIET_ROUNDS * spec.connection.push_interval,
        r0: spec.connection.r0,
        max_watchers: spec.agent.max_watchers,
    };
    let client = PeerClient::new(token, Duration::from_millis(spec.connection.timeout));
    let peers = Peers::new(own_addresses(peer_addr, &me));
    let node = Arc::new(Node::new(store, peers, client, settings));

    let stop = CancellationToken::new();
    let gossip_config = GossipConfig {
        quiet: Duration::from_millis(QUIET_ROUNDS * spec.connection.push_interval),
        push_interval: Duration::from_millis(spec.connection.push_interval),
        pull_interval: Duration::from_millis(spec.connection.pull_interval),
        r0: spec.connection.r0,
    };
    let provider = tokio::spawn(peer_provider::run(
        spec.connection.peer_provider.clone(),
        node.clone(),
        me,
        stop.clone(),
    ));
    let purge = tokio::spawn(gossip::purge_loop(
        node.clone(),
        Duration::from_millis(spec.state.purge_interval),
        stop.clone(),
    ));

    let app_stop = stop.clone();
    let peer_stop = stop.clone();
    let app = {
        let node = node.clone();
        tokio::spawn(crate::http::serve(
            app_listener,
            spec.agent.max_body_bytes,
            move |req| crate::agent::handle(node.clone(), req),
            async move { app_stop.cancelled().await },
        ))
    };
    let peer = {
        let node = node.clone();
        tokio::spawn(crate::http::serve(
            peer_listener,
            spec.connection.max_body_bytes,
            move |req| crate::connection::api::handle(node.clone(), req),
            async move { peer_stop.cancelled().await },
        ))
    };
    let metrics = metrics_listener.map(|listener| {
        let node = node.clone();
        let stop = stop.clone();
        tokio::spawn(crate::http::serve(
            listener,
            4096,
            move |req| crate::connection::api::handle_metrics(node.clone(), req),
            async move { stop.cancelled().await },
        ))
    });
    let gossip = tokio::spawn(gossip::run(node.clone(), gossip_config, stop.clone()));
    let expiries = tokio::spawn(crate::agent::watch::expiry_loop(node.clone(), stop.clone()));
    // Ready (`/readyz`) once warm: holding the group's state as of this start.
    let warmup = tokio::spawn(warmup::run(
        node.clone(),
        Duration::from_millis(spec.connection.warmup_timeout),
        stop.clone(),
    ));
    tracing::info!(app = %app_addr, peer = %peer_addr, "c19 agent serving; warming up");

    let provider_failed = async {
        match provider.await {
            Ok(Err(e)) => Some(e),
            _ => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = shutdown => Ok(()),
        e = provider_failed => Err(e.map(RuntimeError::from).expect("provider error")),
    };
    tracing::info!("shutting down: no new requests, pushing what is not yet pushed");
    node.set_stopping();
    stop.cancel();
    let _ = tokio::join!(app, peer, gossip, purge, warmup, expiries);
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    result
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::Bind { what, addr, source })
}

fn parse_ip(s: &str) -> IpAddr {
    s.parse().expect("validated by Config::parse")
}

/// The spellings under which this agent may appear in its own peer list.
fn own_addresses(peer_addr: SocketAddr, me: &SelfIdentity) -> HashSet<String> {
    let port = peer_addr.port();
    let mut own = HashSet::new();
    if !peer_addr.ip().is_unspecified() {
        own.insert(peer_addr.to_string());
    }
    if let Some(ip) = me
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    {
        own.insert(SocketAddr::new(ip, port).to_string());
    }
    if let Some(name) = &me.pod_name {
        own.insert(format!("{name}:{port}"));
    }
    own
}

fn read_token(file: Option<&PathBuf>) -> Result<Option<String>, RuntimeError> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file).map_err(|source| RuntimeError::Token {
        file: file.clone(),
        source,
    })?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(RuntimeError::EmptyToken(file.clone()));
    }
    Ok(Some(token))
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
