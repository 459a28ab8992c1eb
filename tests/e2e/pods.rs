//! What the scenarios read off a group's real pods: their addresses, containers and readiness
//! from the API, their agents' answers over the pod network, and the app API through
//! `kubectl exec` into the app container (the app API binds to the pod's localhost only).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use c19_harness::Cluster;

use crate::common::request;

/// One running, not terminating, pod of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Pod {
    pub name: String,
    pub ip: String,
    pub ready: bool,
    /// The `c19.dev/config-hash` its template carried.
    pub config_hash: String,
    pub agent: Container,
    pub app: Container,
}

/// One container's status.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Container {
    /// `containerd://<id>` of the current run; empty while it is not running.
    pub id: String,
    pub running: bool,
    pub started: bool,
    pub ready: bool,
    pub restarts: u64,
    /// RFC 3339 time the current run started.
    pub started_at: String,
}

fn container(statuses: &Value, name: &str) -> Container {
    let Some(s) = statuses
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
    else {
        return Container::default();
    };
    let running = &s["state"]["running"];
    Container {
        id: s["containerID"].as_str().unwrap_or("").to_string(),
        running: running.is_object(),
        started: s["started"].as_bool().unwrap_or(false),
        ready: s["ready"].as_bool().unwrap_or(false),
        restarts: s["restartCount"].as_u64().unwrap_or(0),
        started_at: running["startedAt"].as_str().unwrap_or("").to_string(),
    }
}

/// `kubectl get pods -o json` of a group's pods, if kubectl answers.
pub fn group_pods(kubeconfig: &Path, group: &str) -> Option<Value> {
    let out = Command::new("kubectl")
        .args([
            "get",
            "pods",
            "-l",
            &format!("c19.dev/group={group}"),
            "-o",
            "json",
        ])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The group's pods that run (phase Running, an IP, not terminating), sorted by name.
pub fn running(c: &Cluster, group: &str) -> Vec<Pod> {
    let Some(list) = group_pods(&c.kubeconfig, group) else {
        return Vec::new();
    };
    let mut pods: Vec<Pod> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["status"]["phase"] == "Running"
                && p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["podIP"].is_string()
                && p["metadata"]["labels"]["pod-template-hash"].is_string()
        })
        .map(|p| Pod {
            name: p["metadata"]["name"].as_str().unwrap().to_string(),
            ip: p["status"]["podIP"].as_str().unwrap().to_string(),
            ready: p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            config_hash: p["metadata"]["annotations"]["c19.dev/config-hash"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            agent: container(&p["status"]["initContainerStatuses"], "c19-agent"),
            app: container(&p["status"]["containerStatuses"], "app"),
        })
        .collect();
    pods.sort_by(|a, b| a.name.cmp(&b.name));
    pods
}

/// The group's gossip token, from the Secret the operator created.
pub fn token(c: &Cluster, group: &str) -> String {
    c.kubectl(&[
        "get",
        "secret",
        &format!("{group}-c19-token"),
        "-o",
        "go-template={{.data.token | base64decode}}",
    ])
}

/// The peer list an agent holds (`GET /c19/peers` on its pod's 4097), sorted.
pub fn peers_of(ip: &str, token: &str) -> Option<Vec<String>> {
    let (status, body) = request(
        &format!("{ip}:4097"),
        "GET",
        "/c19/peers",
        None,
        &[("Authorization", &format!("Bearer {token}"))],
    );
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    let mut peers: Vec<String> = v["peers"]
        .as_array()?
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    peers.sort();
    Some(peers)
}

/// `curl` in the pod's app container against the agent's app API: (status, body).
pub fn app_api(
    c: &Cluster,
    pod: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://localhost:3097{path}");
    let mut args = vec![
        "exec",
        pod,
        "-c",
        "app",
        "--",
        "curl",
        "-sS",
        "-m",
        "5",
        "-X",
        method,
        "-w",
        "\n%{http_code}",
        &url,
    ];
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let out = c.kubectl_output(&args);
    let text = String::from_utf8_lossy(&out.stdout);
    match text.rsplit_once('\n') {
        Some((body, code)) if out.status.success() => {
            (code.trim().parse().unwrap_or(0), body.to_string())
        }
        _ => (0, String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// The value of `key` as the app in `pod` reads it, if the agent has it.
pub fn value_at(c: &Cluster, pod: &str, key: &str) -> Option<Value> {
    let (status, body) = app_api(c, pod, "GET", &format!("/{key}"), None);
    (status == 200)
        .then(|| {
            serde_json::from_str::<Value>(&body)
                .ok()
                .map(|v| v["value"].clone())
        })
        .flatten()
}

/// Endpoints of the group's EndpointSlices: (pod name, serving). `ready` is always true for
/// them: the Service publishes members that are not ready, so that a new group can form.
pub fn slice_endpoints(c: &Cluster, group: &str) -> Vec<(String, bool)> {
    let slices = c.json(&[
        "get",
        "endpointslices",
        "-l",
        &format!("c19.dev/group={group}"),
    ]);
    let mut v: Vec<(String, bool)> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["targetRef"]["name"].as_str().unwrap_or("").to_string(),
                e["conditions"]["serving"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    v.sort();
    v
}
