//! The `K8s` provider of C19 0.1: the pods matching a label selector. Unlike the original, the
//! watch is a kube-runtime watcher, which re-lists and resumes when a watch ends or expires, so
//! the peer list does not freeze after the API server closes the first watch.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio_util::sync::CancellationToken;

use super::SelfIdentity;
use crate::node::Node;

/// The label selector string for a selector map (`a=b,c=d`).
pub fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Peers from pods: those with an IP, not terminating, not finished, and not this agent.
pub fn peers_from_pods<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    me: &SelfIdentity,
    port: u16,
) -> Vec<String> {
    pods.into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.metadata.name.is_none() || p.metadata.name != me.pod_name)
        .filter_map(|p| p.status.as_ref())
        .filter(|s| !matches!(s.phase.as_deref(), Some("Succeeded" | "Failed")))
        .filter_map(|s| s.pod_ip.as_deref())
        .filter(|ip| me.pod_ip.as_deref() != Some(*ip))
        .filter_map(|ip| ip.parse::<std::net::IpAddr>().ok())
        .map(|ip| std::net::SocketAddr::new(ip, port).to_string())
        .collect()
}

/// Watches the selected pods until `stop` fires, updating the node's peers on every change.
pub async fn run(
    client: kube::Client,
    selector: &BTreeMap<String, String>,
    namespace: &str,
    me: &SelfIdentity,
    node: &Node,
    stop: CancellationToken,
) {
    let api: Api<Pod> = match namespace {
        ":all" => Api::all(client),
        ns => Api::namespaced(client, ns),
    };
    let config = watcher::Config::default().labels(&selector_string(selector));
    let (reader, writer) = reflector::store();
    let events = watcher(api, config).default_backoff().reflect(writer);
    let mut events = std::pin::pin!(events);
    let port = node.settings.target_port;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(watcher::Event::InitApply(_) | watcher::Event::Init)) => {}
            Some(Ok(_)) => {
                let pods = reader.state();
                if node
                    .peers
                    .set(peers_from_pods(pods.iter().map(|p| &**p), me, port))
                {
                    tracing::info!(peers = node.peers.len(), "peer list updated from pods");
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "pod watch failed; retrying with backoff"),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: Option<&str>, deleting: bool, phase: &str) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
            "status": {"phase": phase}
        }))
        .unwrap();
        p.status.as_mut().unwrap().pod_ip = ip.map(String::from);
        if deleting {
            p.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
            );
        }
        p
    }

    #[test]
    fn only_running_pods_with_an_ip_other_than_self() {
        let me = SelfIdentity {
            pod_name: Some("me".into()),
            pod_ip: Some("10.0.0.9".into()),
        };
        let pods = [
            pod("a", Some("10.0.0.1"), false, "Running"),
            pod("b", None, false, "Pending"),
            pod("c", Some("10.0.0.3"), true, "Running"),
            pod("me", Some("10.0.0.4"), false, "Running"),
            pod("other", Some("10.0.0.9"), false, "Running"),
            pod("done", Some("10.0.0.5"), false, "Succeeded"),
            pod("v6", Some("fd00::1"), false, "Running"),
        ];
        assert_eq!(
            peers_from_pods(&pods, &me, 4097),
            vec!["10.0.0.1:4097", "[fd00::1]:4097"]
        );
        let sel: BTreeMap<String, String> =
            [("c19".into(), "g".into()), ("app".into(), "x".into())].into();
        assert_eq!(selector_string(&sel), "app=x,c19=g");
    }
}
