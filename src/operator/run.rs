//! Running the operator: flags, the CRD check, leader election, the controller, the observer,
//! and the health/metrics endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams};
use kube::runtime::events::Reporter;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Client, Resource};
use kube_leader_election::{LeaseLock, LeaseLockParams};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::backoff::WatchBackoff;
use super::context::Context;
use super::crd::C19Group;
use super::desired::{GROUP_LABEL, Settings};
use super::observer::{Observer, ObserverConfig};
use super::reconcile::{error_policy, reconcile};
use super::{endpoint, leader};
use crate::http;

/// `c19 operator` flags; each has an environment fallback.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// Namespace to watch; empty watches every namespace.
    #[arg(long, env = "C19_WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,
    /// Agent image for groups that name none (normally the operator's own image).
    #[arg(long, env = "C19_AGENT_IMAGE", default_value = concat!("c19:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// Milliseconds between health probes of every agent.
    #[arg(long, env = "C19_PROBE_INTERVAL", default_value_t = 5000)]
    pub probe_interval: u64,
    /// Milliseconds between re-sends of every agent's peer list.
    #[arg(long, env = "C19_PEER_RESEND_INTERVAL", default_value_t = 30000)]
    pub peer_resend_interval: u64,
    /// Timeout (ms) of one request to an agent.
    #[arg(long, env = "C19_AGENT_TIMEOUT", default_value_t = 1000)]
    pub agent_timeout: u64,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "C19_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader on a Lease, for running more than one replica.
    #[arg(long, env = "C19_LEADER_ELECT", default_value_t = false)]
    pub leader_elect: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "C19_LEASE_NAME", default_value = "c19-operator")]
    pub lease_name: String,
    /// Namespace the operator runs in: holds the Lease, and is let through the groups'
    /// NetworkPolicies to reach the agents.
    #[arg(long, env = "POD_NAMESPACE", default_value = "c19-system")]
    pub operator_namespace: String,
    /// Labels of the operator's pods (k=v,k=v), let through the groups' NetworkPolicies.
    #[arg(
        long,
        env = "C19_OPERATOR_LABELS",
        default_value = "app.kubernetes.io/name=c19-operator"
    )]
    pub operator_labels: String,
    /// The namespace whose pods may scrape the agents' metrics port (9097), for groups that
    /// name none (spec.agent.metricsNamespace). Empty: the port is open like the app's.
    #[arg(long, env = "C19_AGENT_METRICS_NAMESPACE", default_value = "")]
    pub agent_metrics_namespace: String,
    /// This replica's identity in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "c19-operator")]
    pub pod_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error("cannot load a kubeconfig or in-cluster config: {0}")]
    Config(#[source] kube::Error),
    #[error(
        "the C19Group CRD is not installed; install it with `c19 crd | kubectl apply --server-side -f -` or the Helm chart"
    )]
    CrdMissing,
    #[error("cannot list C19Groups: {}", api_message(.0))]
    Api(#[source] kube::Error),
    #[error("--operator-labels: {0:?} is not k=v[,k=v]")]
    Labels(String),
    #[error("cannot bind the metrics address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(#[from] kube_leader_election::Error),
    #[error("lost the leader Lease; exiting so that only one replica reconciles")]
    LostLease,
}

/// The API server's own message, without the debug dump of its Status.
fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        e => e.to_string(),
    }
}

impl OperatorError {
    pub fn exit_code(&self) -> u8 {
        match self {
            OperatorError::Labels(_) => 2,
            _ => 1,
        }
    }
}

fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, OperatorError> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(OperatorError::Labels(s.to_string())),
        })
        .collect()
}

fn api<K>(client: &Client, namespace: &str) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
{
    if namespace.is_empty() {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), namespace)
    }
}

/// Runs the operator until `shutdown` resolves.
pub async fn run(
    args: OperatorArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), OperatorError> {
    let operator_labels = parse_labels(&args.operator_labels)?;
    let client = Client::try_default().await.map_err(OperatorError::Config)?;
    let groups: Api<C19Group> = api(&client, &args.namespace);
    match groups.list(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(e)) if e.code == 404 => return Err(OperatorError::CrdMissing),
        Err(e) => return Err(OperatorError::Api(e)),
        Ok(_) => {}
    }

    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicBool::new(false));
    let settings = Settings {
        agent_image: args.agent_image.clone(),
        operator_namespace: args.operator_namespace.clone(),
        operator_labels,
        agent_metrics_namespace: Some(args.agent_metrics_namespace.clone())
            .filter(|ns| !ns.is_empty()),
    };
    let reporter = Reporter {
        controller: "c19-operator".into(),
        instance: Some(args.pod_name.clone()),
    };
    let ctx = Arc::new(Context::new(client.clone(), settings, reporter));

    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| OperatorError::Bind {
            addr: args.metrics_addr,
            source,
        })?;
    let server = {
        let (ctx, ready, stop) = (ctx.clone(), ready.clone(), stop.clone());
        let handler = move |req| {
            let (ctx, ready) = (ctx.clone(), ready.clone());
            async move { endpoint::handle(&ctx, &ready, req) }
        };
        tokio::spawn(http::serve(listener, 1024, handler, async move {
            stop.cancelled().await
        }))
    };

    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        stop_on_signal.cancel();
    });

    let lease_lost = CancellationToken::new();
    let mut lease_task = None;
    if args.leader_elect {
        let lock = LeaseLock::new(
            client.clone(),
            &args.operator_namespace,
            LeaseLockParams {
                lease_name: args.lease_name.clone(),
                holder_id: args.pod_name.clone(),
                lease_ttl: leader::LEASE_TTL,
            },
        );
        tracing::info!(lease = %args.lease_name, "waiting to become the leader");
        // A standby replica is healthy and ready to take over; reporting it unready would stall
        // every rollout of a Deployment with more than one replica.
        ready.store(true, Ordering::Relaxed);
        if !leader::acquire(&lock, &stop).await {
            let _ = server.await;
            return Ok(());
        }
        tracing::info!(holder = %args.pod_name, "leading");
        ready.store(false, Ordering::Relaxed);
        lease_task = Some(tokio::spawn(leader::keep(
            lock,
            stop.clone(),
            lease_lost.clone(),
        )));
    }

    let (slices_store, slices_writer) = reflector::store::<EndpointSlice>();
    let slices_changed = Arc::new(Notify::new());
    let slices_task = {
        let api: Api<EndpointSlice> = api(&client, &args.namespace);
        let events = watcher(api, watcher::Config::default().labels(GROUP_LABEL))
            .backoff(WatchBackoff::default())
            .reflect(slices_writer);
        let (changed, stop) = (slices_changed.clone(), stop.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    e = events.next() => match e {
                        Some(Ok(_)) => changed.notify_one(),
                        Some(Err(e)) => tracing::warn!(error = %e, "EndpointSlice watch failed; retrying"),
                        None => return,
                    }
                }
            }
        })
    };

    let (trigger, triggered) = mpsc::channel(1024);
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=c19-operator");
    let controller = Controller::new(groups, watcher::Config::default())
        .owns(api::<Deployment>(&client, &args.namespace), owned.clone())
        .owns(api::<ConfigMap>(&client, &args.namespace), owned.clone())
        .owns(api::<Service>(&client, &args.namespace), owned.clone())
        .owns(
            api::<NetworkPolicy>(&client, &args.namespace),
            owned.clone(),
        )
        .owns(api::<PodDisruptionBudget>(&client, &args.namespace), owned)
        .reconcile_on(tokio_stream_from(triggered))
        .trigger_backoff(WatchBackoff::default());
    let groups_store = controller.store();

    let observer = {
        let config = ObserverConfig {
            probe_interval: Duration::from_millis(args.probe_interval),
            resend_interval: Duration::from_millis(args.peer_resend_interval),
            timeout: Duration::from_millis(args.agent_timeout),
        };
        let observer = Observer::new(
            ctx.clone(),
            groups_store.clone(),
            slices_store.clone(),
            config,
            trigger,
        );
        let (changed, stop) = (slices_changed.clone(), stop.clone());
        let (groups_store, slices_store, ready) =
            (groups_store.clone(), slices_store.clone(), ready.clone());
        tokio::spawn(async move {
            // Ready once both caches hold a full list: the first sync.
            let synced = async {
                wait_ready(&groups_store).await;
                wait_ready(&slices_store).await;
            };
            tokio::select! { _ = stop.cancelled() => return, _ = synced => {} }
            ready.store(true, Ordering::Relaxed);
            tracing::info!("caches synced; operator ready");
            observer.run(changed, stop).await;
        })
    };

    let graceful = stop.clone();
    controller
        .graceful_shutdown_on(async move { graceful.cancelled().await })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    stop.cancel();
    let _ = tokio::join!(observer, slices_task, server);
    if let Some(task) = lease_task {
        let _ = task.await;
    }
    if lease_lost.is_cancelled() {
        return Err(OperatorError::LostLease);
    }
    Ok(())
}

/// Waits until a store holds a full list. kube-runtime's readiness future keeps one waker only,
/// so a second task waiting on the controller's store (the controller waits too) may never be
/// woken: poll it again every 100 ms instead of trusting a single wake-up.
async fn wait_ready<K>(store: &reflector::Store<K>)
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready())
        .await
        .is_err()
    {}
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_labels_parse() {
        assert_eq!(parse_labels("a=b,c=d").unwrap().len(), 2);
        assert!(parse_labels("nolabel").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }
}
