//! The end-to-end scenarios, run in order on one cluster: each leaves the group in a state the
//! next one starts from, the way a user's session would.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, eventually};
use crate::common::request;
use crate::sidecars::Kubelet;

const T: Duration = Duration::from_secs(90);
/// The ServiceAccount of the chart installed as release `c19`.
const OPERATOR_SA: &str = "c19-c19-operator";
/// The Lease the chart's Role lets the operator use (named after the release).
const OPERATOR_LEASE: &str = "c19-c19-operator";

pub type Scenario = fn(&Ctx);

pub const ALL: &[(&str, Scenario)] = &[
    (
        "crd_applies_and_invalid_groups_are_rejected",
        crd_applies_and_invalid_groups_are_rejected,
    ),
    (
        "the_chart_installs_with_least_privilege",
        the_chart_installs_with_least_privilege,
    ),
    (
        "a_three_replica_group_converges",
        a_three_replica_group_converges,
    ),
    (
        "scaling_feeds_new_members_and_drops_removed_ones",
        scaling_feeds_new_members_and_drops_removed_ones,
    ),
    (
        "a_paused_agent_is_reported_and_recovers",
        a_paused_agent_is_reported_and_recovers,
    ),
    (
        "an_agent_answering_garbage_is_reported_not_fatal",
        an_agent_answering_garbage_is_reported_not_fatal,
    ),
    (
        "conflicting_writes_to_owned_objects_are_restored",
        conflicting_writes_to_owned_objects_are_restored,
    ),
    (
        "an_api_server_restart_during_reconciles_is_survived",
        an_api_server_restart_during_reconciles_is_survived,
    ),
    (
        "a_restarted_operator_converges_without_duplicates",
        a_restarted_operator_converges_without_duplicates,
    ),
    (
        "leader_election_keeps_one_active_replica",
        leader_election_keeps_one_active_replica,
    ),
    (
        "deleting_the_group_collects_everything",
        deleting_the_group_collects_everything,
    ),
];

pub struct Ctx {
    pub cluster: Cluster,
    pub kubelet: Kubelet,
    operator: Mutex<Option<Child>>,
    dir: PathBuf,
}

impl Ctx {
    pub fn new(cluster: Cluster, dir: &Path) -> Ctx {
        let kubelet = Kubelet::start(
            crate::c19_bin(),
            cluster.kubeconfig.clone(),
            dir.join("pods"),
        );
        Ctx {
            cluster,
            kubelet,
            operator: Mutex::new(None),
            dir: dir.to_owned(),
        }
    }

    /// The admin kubeconfig, impersonating the ServiceAccount the Helm chart creates.
    fn operator_kubeconfig(&self) -> PathBuf {
        let admin = std::fs::read_to_string(&self.cluster.kubeconfig).unwrap();
        let impersonating = admin.replace(
            "    token: ",
            &format!("    as: system:serviceaccount:c19-system:{OPERATOR_SA}\n    token: "),
        );
        let path = self.dir.join("kubeconfig-operator");
        std::fs::write(&path, impersonating).unwrap();
        path
    }

    /// Starts an operator process (with the chart's permissions) serving metrics on `port`.
    fn spawn_operator(&self, port: u16, extra: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("operator.log"))
            .unwrap();
        Command::new(crate::c19_bin())
            .args([
                "operator",
                "--probe-interval",
                "1000",
                "--agent-timeout",
                "500",
            ])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args([
                "--operator-namespace",
                "c19-system",
                "--agent-image",
                "c19:e2e",
            ])
            .args(extra)
            // Exactly the chart's permissions: the operator impersonates its ServiceAccount.
            .env("KUBECONFIG", self.operator_kubeconfig())
            .env("RUST_LOG", "c19=debug,kube=info,kube_client=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn start_operator(&self) {
        *self.operator.lock().unwrap() = Some(self.spawn_operator(18080, &[]));
        eventually("the operator to be ready", T, || {
            (request("127.0.0.1:18080", "GET", "/readyz", None, &[]).0 == 200).then_some(())
        });
    }

    /// Whether the operator process started last is still running (it never exited on a fault).
    fn operator_running(&self) -> bool {
        self.operator
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn kill_operator(&self) {
        if let Some(mut c) = self.operator.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn operator_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("operator.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn group_status(&self) -> Value {
        self.cluster.json(&["get", "c19g", "demo"])["status"].clone()
    }

    /// Waits until the group has exactly `n` running sidecars and returns them (pod, ip, token).
    fn sidecars(&self, n: usize) -> Vec<(String, String, String)> {
        eventually(&format!("{n} running agents"), T, || {
            let s = self.kubelet.group("demo");
            (s.len() == n).then_some(s)
        })
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.kill_operator();
    }
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

fn peers_of(ip: &str, token: &str) -> Option<Vec<String>> {
    let (status, body) = request(
        &format!("{ip}:4097"),
        "GET",
        "/c19/peers",
        None,
        &[("Authorization", &auth(token))],
    );
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    Some(
        v["peers"]
            .as_array()?
            .iter()
            .filter_map(|p| p.as_str().map(String::from))
            .collect(),
    )
}

fn value_at(ip: &str, key: &str) -> Option<Value> {
    let (status, body) = request(&format!("{ip}:3097"), "GET", &format!("/{key}"), None, &[]);
    (status == 200)
        .then(|| {
            serde_json::from_str::<Value>(&body)
                .ok()
                .map(|v| v["value"].clone())
        })
        .flatten()
}

/// Every agent lists every other member, and only them.
fn wait_for_full_peer_lists(ctx: &Ctx, agents: &[(String, String, String)]) {
    for (pod, ip, token) in agents {
        let mut want: Vec<String> = agents
            .iter()
            .filter(|a| &a.1 != ip)
            .map(|a| format!("{}:4097", a.1))
            .collect();
        want.sort();
        eventually(&format!("{pod}'s peer list {want:?}"), T, || {
            (peers_of(ip, token)? == want).then_some(())
        });
    }
    let _ = ctx;
}

/// Addresses in the group's EndpointSlices.
fn slice_addresses(c: &Cluster) -> usize {
    let slices = c.json(&["get", "endpointslices", "-l", "c19.dev/group=demo"]);
    slices["items"].as_array().map_or(0, |items| {
        items
            .iter()
            .map(|s| s["endpoints"].as_array().map_or(0, |e| e.len()))
            .sum()
    })
}

fn group_yaml(replicas: u32, push_ms: u32) -> String {
    format!(
        r#"apiVersion: c19.dev/v1alpha1
kind: C19Group
metadata:
  name: demo
  namespace: default
spec:
  replicas: {replicas}
  template:
    metadata:
      labels: {{app: demo}}
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports: [{{containerPort: 8080}}]
  agent:
    connection: {{pushInterval: {push_ms}, pullInterval: 5000, timeout: 500}}
"#
    )
}

fn crd_applies_and_invalid_groups_are_rejected(ctx: &Ctx) {
    let c = &ctx.cluster;
    // Without the CRD the operator says how to install it, and exits non-zero.
    let out = Command::new(crate::c19_bin())
        .args(["operator", "--metrics-addr", "127.0.0.1:18089"])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("CRD is not installed") && err.contains("c19 crd | kubectl apply"),
        "{err}"
    );
    let crd = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/c19group.yaml"))
        .unwrap();
    c.apply_yaml(&crd);
    c.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/c19groups.c19.dev",
        "--timeout=60s",
    ]);
    // kubectl's discovery cache may lag the new CRD for a moment.
    let explain = eventually("kubectl explain to know the CRD", T, || {
        let out = c.kubectl_output(&["explain", "c19g.spec.agent.connection.r0"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(
        explain.contains("Peers contacted per push round"),
        "{explain}"
    );

    let bad = group_yaml(3, 200)
        .replace("pushInterval: 200", "pushInterval: 1")
        .replace("replicas: 3", "replicas: -1");
    let out = c.apply_yaml_output(&bad);
    assert!(!out.status.success(), "an invalid group must be rejected");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.replicas") && err.contains("greater than or equal to 0"),
        "{err}"
    );
    assert!(err.contains("spec.agent.connection.pushInterval"), "{err}");
    assert!(c.kubectl_output(&["get", "c19g", "demo"]).status.code() != Some(0));
}

fn the_chart_installs_with_least_privilege(ctx: &Ctx) {
    let c = &ctx.cluster;
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/c19-operator");
    let out = Command::new(c.bins.join("helm"))
        .args([
            "install",
            "c19",
            chart,
            "--namespace",
            "c19-system",
            "--create-namespace",
        ])
        .args([
            "--set",
            "image.tag=e2e",
            "--set",
            "leaderElection.enabled=true",
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notes = String::from_utf8_lossy(&out.stdout);
    assert!(
        notes.contains("kubectl get c19g"),
        "NOTES tell the user what to do next: {notes}"
    );
    let sa = format!("system:serviceaccount:c19-system:{OPERATOR_SA}");
    let can = |verb: &str, resource: &str| {
        let (resource, sub) = resource.split_once('/').unwrap_or((resource, ""));
        let sub = format!("--subresource={sub}");
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &sa, "-A"];
        if sub.len() > "--subresource=".len() {
            args.push(&sub);
        }
        c.kubectl_output(&args).status.success()
    };
    for (verb, resource) in [
        ("patch", "deployments"),
        ("watch", "endpointslices"),
        ("create", "secrets"),
        ("patch", "c19groups/status"),
    ] {
        assert!(can(verb, resource), "the chart grants {verb} {resource}");
    }
    for (verb, resource) in [
        ("delete", "deployments"),
        ("list", "secrets"),
        ("get", "pods"),
        ("update", "c19groups"),
        ("create", "clusterroles"),
    ] {
        assert!(
            !can(verb, resource),
            "the chart does not grant {verb} {resource}"
        );
    }
}

fn a_three_replica_group_converges(ctx: &Ctx) {
    let c = &ctx.cluster;
    ctx.start_operator();
    c.apply_yaml(&group_yaml(3, 200));
    for (kind, name) in [
        ("deployment", "demo"),
        ("configmap", "demo-c19"),
        ("secret", "demo-c19-token"),
        ("service", "demo-c19"),
        ("networkpolicy", "demo-c19"),
        ("poddisruptionbudget", "demo-c19"),
    ] {
        eventually(&format!("{kind}/{name}"), T, || {
            c.kubectl_output(&["get", kind, name])
                .status
                .success()
                .then_some(())
        });
    }
    let deployment = c.json(&["get", "deployment", "demo"]);
    let sidecar = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "c19-agent");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    let agents = ctx.sidecars(3);
    eventually("3 addresses in the EndpointSlices", T, || {
        (slice_addresses(c) == 3).then_some(())
    });
    wait_for_full_peer_lists(ctx, &agents);

    let (writer, readers) = agents.split_first().unwrap();
    let (status, body) = request(
        &format!("{}:3097", writer.1),
        "PUT",
        "/",
        Some(br#"{"greeting": {"value": "hello"}}"#),
        &[],
    );
    assert_eq!(status, 204, "{body}");
    for (pod, ip, _) in readers {
        eventually(&format!("the value at {pod}"), T, || {
            (value_at(ip, "greeting")? == "hello").then_some(())
        });
    }
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
    let table = eventually("kubectl get c19g to show 3 ready pods and 1 key", T, || {
        let t = c.kubectl(&["get", "c19g", "demo"]);
        let row: Vec<String> = t
            .lines()
            .nth(1)?
            .split_whitespace()
            .map(String::from)
            .collect();
        (row.len() >= 6 && row[1..5] == ["3", "3", "true", "1"]).then_some(t)
    });
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "REPLICAS", "READY", "CONVERGED", "KEYS", "AGE"]
    );
    let status = ctx.group_status();
    assert_eq!(status["members"], 3);
    assert_eq!(status["reachable"], 3);
    assert_eq!(status["selector"], "c19.dev/group=demo");
    println!("{table}");
}

fn scaling_feeds_new_members_and_drops_removed_ones(ctx: &Ctx) {
    let c = &ctx.cluster;
    c.kubectl(&["scale", "c19g/demo", "--replicas=5"]);
    let agents = ctx.sidecars(5);
    wait_for_full_peer_lists(ctx, &agents);
    for (pod, ip, _) in &agents {
        eventually(&format!("the whole state at new member {pod}"), T, || {
            (value_at(ip, "greeting")? == "hello").then_some(())
        });
    }
    c.kubectl(&["scale", "c19g/demo", "--replicas=2"]);
    // How long an EndpointSlice change takes to reach the agents' peer lists (printed, not asserted).
    let slice_changed = eventually("the EndpointSlices to list 2 members", T, || {
        (slice_addresses(c) == 2).then(std::time::Instant::now)
    });
    let remaining = ctx.sidecars(2);
    wait_for_full_peer_lists(ctx, &remaining);
    println!(
        "EndpointSlice change reached every peer list in {} ms",
        slice_changed.elapsed().as_millis()
    );
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
    eventually("status.members == 2", T, || {
        (ctx.group_status()["members"] == 2).then_some(())
    });
    let scale: Value = serde_json::from_str(&c.kubectl(&[
        "get",
        "--raw",
        "/apis/c19.dev/v1alpha1/namespaces/default/c19groups/demo/scale",
    ]))
    .unwrap();
    assert_eq!(scale["status"]["replicas"], 2, "{scale}");
    assert_eq!(scale["status"]["selector"], "c19.dev/group=demo");
}

fn a_paused_agent_is_reported_and_recovers(ctx: &Ctx) {
    let c = &ctx.cluster;
    let agents = ctx.sidecars(2);
    let paused = agents[1].0.clone();
    ctx.kubelet.with(&paused, |s| s.signal("STOP"));
    c.kubectl(&[
        "wait",
        "--for=condition=Converged=False",
        "c19g/demo",
        "--timeout=60s",
    ]);
    let status = ctx.group_status();
    let unreachable: Vec<&str> = status["unreachable"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(unreachable, [paused.as_str()], "{status}");
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=C19Group",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(events.contains("MemberUnreachable"), "{events}");
    ctx.kubelet.with(&paused, |s| s.signal("CONT"));
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=60s",
    ]);
    assert!(ctx.group_status()["unreachable"].is_null());
}

/// Answers every request with a 200 whose body is not JSON, until dropped.
struct GarbageAgent {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GarbageAgent {
    fn bind(addr: &str) -> GarbageAgent {
        let listener = eventually(&format!("{addr} to be free"), T, || {
            TcpListener::bind(addr).ok()
        });
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let body = "{\"digest\": [not json";
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
        });
        GarbageAgent {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for GarbageAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn an_agent_answering_garbage_is_reported_not_fatal(ctx: &Ctx) {
    let c = &ctx.cluster;
    let agents = ctx.sidecars(2);
    let (pod, ip, _) = agents[1].clone();
    ctx.kubelet.with(&pod, |s| s.signal("KILL"));
    let garbage = GarbageAgent::bind(&format!("{ip}:4097"));
    c.kubectl(&[
        "wait",
        "--for=condition=Converged=False",
        "c19g/demo",
        "--timeout=60s",
    ]);
    let status = ctx.group_status();
    assert_eq!(status["unreachable"], serde_json::json!([pod]), "{status}");
    assert_eq!(
        status["reachable"], 1,
        "the healthy member is still probed: {status}"
    );
    assert!(ctx.operator_running(), "the operator survives garbage");
    assert_eq!(
        request("127.0.0.1:18080", "GET", "/healthz", None, &[]).0,
        200
    );
    // The pod is replaced, as a kubelet would after the failing startup probe.
    drop(garbage);
    c.kubectl(&["delete", "pod", &pod, "--wait=false"]);
    let agents = eventually("a replacement agent", T, || {
        let s = ctx.kubelet.group("demo");
        (s.len() == 2 && s.iter().all(|(p, _, _)| p != &pod)).then_some(s)
    });
    wait_for_full_peer_lists(ctx, &agents);
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
}

fn conflicting_writes_to_owned_objects_are_restored(ctx: &Ctx) {
    let c = &ctx.cluster;
    let config = || {
        c.kubectl(&[
            "get",
            "configmap",
            "demo-c19",
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])
    };
    let rendered = config();
    // Someone scales the Deployment behind the group's back, edits the agents' config and
    // deletes the NetworkPolicy.
    c.kubectl(&["scale", "deployment", "demo", "--replicas=3"]);
    c.kubectl(&[
        "patch",
        "configmap",
        "demo-c19",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"config.yaml":"tampered"}}"#,
    ]);
    c.kubectl(&["delete", "networkpolicy", "demo-c19"]);
    eventually("the operator to restore what it owns", T, || {
        let replicas = c.kubectl(&[
            "get",
            "deployment",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}",
        ]);
        let policy = c
            .kubectl_output(&["get", "networkpolicy", "demo-c19"])
            .status
            .success();
        (replicas == "2" && config() == rendered && policy).then_some(())
    });
    let agents = ctx.sidecars(2);
    wait_for_full_peer_lists(ctx, &agents);
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
}

fn an_api_server_restart_during_reconciles_is_survived(ctx: &Ctx) {
    let c = &ctx.cluster;
    let config = || {
        c.kubectl_output(&[
            "get",
            "configmap",
            "demo-c19",
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])
    };
    let has = |push: &str| {
        let out = config();
        (out.status.success() && String::from_utf8_lossy(&out.stdout).contains(push)).then_some(())
    };
    // A change the operator is working on when the API server goes down (SIGKILL) for 3 s.
    c.apply_yaml(&group_yaml(2, 250));
    std::thread::sleep(Duration::from_millis(200));
    c.restart("kube-apiserver", Duration::from_secs(3));
    eventually("the API server back", T, || {
        c.kubectl_output(&["get", "--raw", "/readyz"])
            .status
            .success()
            .then_some(())
    });
    eventually("the change reconciled after the restart", T, || {
        has("push_interval: 250")
    });
    assert!(ctx.operator_running(), "the operator rides out the outage");
    // Its watches came back: a change made after the restart is picked up too.
    c.apply_yaml(&group_yaml(2, 260));
    eventually("a change after the restart reconciled", T, || {
        has("push_interval: 260")
    });
    let agents = eventually("two agents on the new config", T, || {
        let s = ctx.kubelet.group("demo");
        let fresh = s.iter().all(|(pod, _, _)| {
            std::fs::read_to_string(ctx.dir.join("pods").join(pod).join("config.yaml"))
                .unwrap_or_default()
                .contains("push_interval: 260")
        });
        (s.len() == 2 && fresh).then_some(s)
    });
    wait_for_full_peer_lists(ctx, &agents);
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
    assert!(ctx.operator_running());
    assert_eq!(
        request("127.0.0.1:18080", "GET", "/readyz", None, &[]).0,
        200
    );
}

fn a_restarted_operator_converges_without_duplicates(ctx: &Ctx) {
    let c = &ctx.cluster;
    // Change the agent config (the pods roll) and kill the operator while it works on it.
    c.apply_yaml(&group_yaml(2, 300));
    std::thread::sleep(Duration::from_millis(300));
    ctx.kill_operator();
    ctx.start_operator();
    eventually("the new config in the ConfigMap", T, || {
        c.kubectl(&[
            "get",
            "configmap",
            "demo-c19",
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])
        .contains("push_interval: 300")
        .then_some(())
    });
    let agents = eventually("two agents on the new config", T, || {
        let s = ctx.kubelet.group("demo");
        let fresh = s.iter().all(|(pod, _, _)| {
            let cfg = std::fs::read_to_string(ctx.dir.join("pods").join(pod).join("config.yaml"))
                .unwrap_or_default();
            cfg.contains("push_interval: 300")
        });
        (s.len() == 2 && fresh).then_some(s)
    });
    wait_for_full_peer_lists(ctx, &agents);
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
    for kind in [
        "deployment",
        "configmap",
        "secret",
        "service",
        "networkpolicy",
        "poddisruptionbudget",
    ] {
        let items = c.json(&["get", kind, "-l", "c19.dev/group=demo"]);
        assert_eq!(
            items["items"].as_array().unwrap().len(),
            1,
            "exactly one {kind}"
        );
        let owners = &items["items"][0]["metadata"]["ownerReferences"];
        assert_eq!(
            owners.as_array().unwrap().len(),
            1,
            "{kind} has one owner: {owners}"
        );
    }
    let metrics = request("127.0.0.1:18080", "GET", "/metrics", None, &[]).1;
    assert!(
        metrics.contains("c19_operator_groups_converged 1"),
        "{metrics}"
    );
    // A settled group costs the API server no writes: probes keep running, nothing changes.
    let writes = || {
        let text = request("127.0.0.1:18080", "GET", "/metrics", None, &[]).1;
        text.lines().find_map(|l| {
            l.strip_prefix("c19_operator_writes_total ")
                .map(String::from)
        })
    };
    eventually(
        "the operator to write nothing for 3 s of probing",
        T,
        || {
            let before = writes()?;
            std::thread::sleep(Duration::from_secs(3));
            (writes()? == before).then_some(())
        },
    );
}

fn lease_holder(c: &Cluster) -> String {
    let out = c.kubectl_output(&[
        "get",
        "lease",
        "-n",
        "c19-system",
        OPERATOR_LEASE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn leader_election_keeps_one_active_replica(ctx: &Ctx) {
    let c = &ctx.cluster;
    ctx.kill_operator();
    let lease = ["--leader-elect", "--lease-name", OPERATOR_LEASE];
    let mut a = ctx.spawn_operator(18081, &[&lease[..], &["--pod-name", "operator-a"]].concat());
    eventually("operator-a to lead", T, || {
        (lease_holder(c) == "operator-a").then_some(())
    });
    let mut b = ctx.spawn_operator(18082, &[&lease[..], &["--pod-name", "operator-b"]].concat());
    eventually("both replicas to be ready", T, || {
        (request("127.0.0.1:18081", "GET", "/readyz", None, &[]).0 == 200
            && request("127.0.0.1:18082", "GET", "/readyz", None, &[]).0 == 200)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lease_holder(c),
        "operator-a",
        "the standby does not take the Lease"
    );
    let standby = request("127.0.0.1:18082", "GET", "/metrics", None, &[]).1;
    assert!(
        standby.contains("c19_operator_reconciles_total 0"),
        "the standby does not reconcile: {standby}"
    );

    // The leader steps down on SIGTERM; the standby takes over and reconciles.
    assert!(
        Command::new("kill")
            .args(["-TERM", &a.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(a.wait().unwrap().success(), "a graceful shutdown exits 0");
    eventually("operator-b to lead", Duration::from_secs(30), || {
        (lease_holder(c) == "operator-b").then_some(())
    });
    c.kubectl(&["scale", "c19g/demo", "--replicas=3"]);
    ctx.sidecars(3);
    c.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/demo",
        "--timeout=90s",
    ]);
    eventually("the new leader to report 3 members", T, || {
        (ctx.group_status()["members"] == 3).then_some(())
    });
    let _ = b.kill();
    let _ = b.wait();
    ctx.start_operator();
}

fn deleting_the_group_collects_everything(ctx: &Ctx) {
    let c = &ctx.cluster;
    c.kubectl(&["delete", "c19g", "demo", "--wait=true", "--timeout=60s"]);
    for kind in [
        "deployment",
        "replicaset",
        "pod",
        "configmap",
        "secret",
        "service",
        "networkpolicy",
        "poddisruptionbudget",
    ] {
        eventually(
            &format!("every {kind} of the group to be collected"),
            T,
            || {
                let items = c.json(&["get", kind, "-l", "c19.dev/group=demo"]);
                items["items"].as_array()?.is_empty().then_some(())
            },
        );
    }
    ctx.sidecars(0);
}
