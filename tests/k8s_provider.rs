//! The `K8s` peer provider against a mock API server: the initial list, then watches that end
//! (as the API server ends every watch after a few minutes) and must be resumed, which C19 0.1
//! never did, so its peer list froze.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use c19::connection::client::PeerClient;
use c19::connection::peer_provider::{SelfIdentity, k8s};
use c19::connection::peers::Peers;
use c19::node::{Node, NodeSettings};
use c19::state::{Limits, Store, StoreConfig};
use http::{Request, Response};
use kube::client::Body;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn pod(name: &str, ip: &str, rv: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "resourceVersion": rv, "labels": {"c19": "g"}},
        "status": {"phase": "Running", "podIP": ip}
    })
}

fn node() -> Arc<Node> {
    let limits = Limits {
        max_key_bytes: 1024,
        max_entries: 1000,
    };
    Arc::new(Node::new(
        Store::new(StoreConfig {
            default_ttl: None,
            tombstone_lifetime: 1000,
        }),
        Peers::new(Default::default()),
        PeerClient::new(None, Duration::from_secs(1)),
        NodeSettings {
            app_limits: limits,
            peer_limits: limits,
            token: None,
            operator_fed: false,
            target_port: 4097,
            quiet_ms: 1000,
            r0: 3,
            max_watchers: 1,
        },
    ))
}

async fn wait_peers(node: &Node, want: &[&str]) {
    for _ in 0..200 {
        if *node.peers.list() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("peers {:?}, expected {want:?}", node.peers.list());
}

#[tokio::test]
async fn pods_are_listed_then_watched_and_the_watch_is_resumed() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let node = node();
    let stop = CancellationToken::new();
    let me = SelfIdentity {
        pod_name: Some("me".into()),
        pod_ip: None,
    };
    let selector: BTreeMap<String, String> = [("c19".to_string(), "g".to_string())].into();
    let task = {
        let (node, stop) = (node.clone(), stop.clone());
        tokio::spawn(async move { k8s::run(client, &selector, "default", &me, &node, stop).await })
    };

    let (req, send) = handle.next_request().await.expect("list request");
    let uri = req.uri().to_string();
    assert!(uri.starts_with("/api/v1/namespaces/default/pods?"), "{uri}");
    assert!(
        uri.contains("labelSelector=c19%3Dg") && !uri.contains("watch=true"),
        "{uri}"
    );
    let list = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "10"},
        "items": [pod("a", "10.0.0.1", "5"), pod("me", "10.0.0.9", "6")]});
    send.send_response(Response::new(Body::from(
        serde_json::to_vec(&list).unwrap(),
    )));
    wait_peers(&node, &["10.0.0.1:4097"]).await;

    // First watch: one pod added, then the API server ends the watch.
    let (req, send) = handle.next_request().await.expect("watch request");
    let uri = req.uri().to_string();
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=10"),
        "{uri}"
    );
    let event = json!({"type": "ADDED", "object": pod("b", "10.0.0.2", "11")});
    send.send_response(Response::new(Body::from(format!("{event}\n").into_bytes())));
    wait_peers(&node, &["10.0.0.1:4097", "10.0.0.2:4097"]).await;

    // The watch is resumed from the last resource version, and later changes still arrive.
    let (req, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .expect("the watch is resumed")
        .expect("resumed watch request");
    let uri = req.uri().to_string();
    assert!(
        uri.contains("watch=true") && uri.contains("resourceVersion=11"),
        "{uri}"
    );
    let event = json!({"type": "DELETED", "object": pod("a", "10.0.0.1", "12")});
    send.send_response(Response::new(Body::from(format!("{event}\n").into_bytes())));
    wait_peers(&node, &["10.0.0.2:4097"]).await;

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("provider stops")
        .unwrap();
}
