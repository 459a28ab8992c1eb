//! A group keeps its state through its lifecycle: rollouts from an agent setting and from an
//! image change, an operator upgrade, and pods whose app ignores SIGTERM. Each runs under a steady
//! write workload through the example app; the fault suite's checker reads the history, and a
//! reader checks that no read on a Ready pod misses a key acknowledged before that pod existed.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use c19_harness::checker::{Event, Op, Outcome, check};
use c19_harness::{eventually, node};

use crate::common::request;
use crate::pods::{self, Pod};
use crate::scenarios::{Ctx, OPERATOR_NS, T, group_yaml, helm, helm_upgrade, rollout};
use crate::workload::{Report, Workload, now_ms};

/// Keys loaded into the group before a rollout, so that a new pod has a state to copy.
const PRELOAD: usize = 100_000;

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Writes `n` keys `bulk-<i>` through one agent's peer port, in batches; returns them as
/// acknowledged adds for the checker.
fn preload(pod: &Pod, token: &str, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for start in (0..n).step_by(10_000) {
        let ts = now_ms();
        let end = (start + 10_000).min(n);
        let body: Vec<String> = (start..end)
            .map(|i| format!("\"bulk-{i}\": {{\"value\": {i}, \"ts\": {ts}}}"))
            .collect();
        let (status, text) = request(
            &format!("{}:4097", pod.ip),
            "PUT",
            "/",
            Some(format!("{{{}}}", body.join(",")).as_bytes()),
            &[("Authorization", &bearer(token))],
        );
        assert_eq!(status, 204, "{text}");
        let end_ms = now_ms();
        events.extend((start..end).map(|i| Event {
            op: Op::Add {
                key: format!("bulk-{i}"),
                value: i as u64,
                ttl: None,
            },
            agent: 0,
            start_ms: ts,
            end_ms,
            outcome: Outcome::Ok,
        }));
    }
    events
}

/// Each pod's name and its containers' restart counts: equal before and after, nothing restarted.
fn lives(pods: &[Pod]) -> Vec<(String, u64, u64)> {
    pods.iter()
        .map(|p| (p.name.clone(), p.agent.restarts, p.app.restarts))
        .collect()
}

/// Every record an agent holds (`GET /` on its peer port) whose key passes `keep`.
fn state_of(pod: &Pod, token: &str, keep: impl Fn(&str) -> bool) -> Map<String, Value> {
    let (status, body) = request(
        &format!("{}:4097", pod.ip),
        "GET",
        "/",
        None,
        &[("Authorization", &bearer(token))],
    );
    assert_eq!(status, 200, "{body}");
    let all: Map<String, Value> = serde_json::from_str(&body).unwrap();
    all.into_iter().filter(|(k, _)| keep(k)).collect()
}

/// Checks a workload's report against the final states of the group's pods: nothing
/// acknowledged lost, nothing unwritten present, every pod equal, no missed read.
fn verify(ctx: &Ctx, group: &str, report: &Report, preloaded: &[Event], n: usize) {
    let c = &ctx.cluster;
    let token = pods::token(c, group);
    let pods = eventually("the group to settle", T, || {
        let p = pods::running(c, group);
        (p.len() == n && p.iter().all(|p| p.ready)).then_some(p)
    });
    let mut history = preloaded.to_vec();
    history.extend(report.history.iter().cloned());
    let keep = |k: &str| {
        k.starts_with(&report.prefix) || (!preloaded.is_empty() && k.starts_with("bulk-"))
    };
    // Gossip settles within a few rounds once the writes stop.
    let started = Instant::now();
    let verdict = loop {
        let finals: Vec<_> = pods.iter().map(|p| state_of(p, &token, keep)).collect();
        let v = check(&history, &[], &finals, now_ms(), 0);
        if v.ok() {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "lost {:?}, phantoms {:?}, divergent {:?}",
            &v.lost[..v.lost.len().min(10)],
            &v.phantoms[..v.phantoms.len().min(10)],
            &v.divergent[..v.divergent.len().min(10)]
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let acked = report
        .history
        .iter()
        .filter(|e| e.outcome == Outcome::Ok)
        .count();
    println!(
        "  workload: {acked} writes acknowledged, {} unknown, {} failed; {} + {} preloaded keys held by all {n} pods; {} warm reads, {} missed; new pods read: {:?}",
        verdict.unknown,
        verdict.failed,
        verdict.acked - preloaded.len(),
        preloaded.len(),
        report.hits,
        report.misses.len(),
        report.new_pods_read
    );
    assert!(acked > 50, "the workload ran: {acked} writes");
    assert!(
        report.misses.is_empty(),
        "reads on Ready pods missed keys held before them: {:?}",
        &report.misses[..report.misses.len().min(10)]
    );
}

/// Changes the group with `change` while the workload runs, waits for the rollout, and checks
/// that every new pod served warm and nothing was lost; returns the rollout's duration.
fn roll_under_workload(ctx: &Ctx, prefix: &str, what: &str, change: impl FnOnce()) -> Duration {
    let c = &ctx.cluster;
    let before: Vec<String> = ctx.ready_pods(3).into_iter().map(|p| p.name).collect();
    let workload = Workload::start(c.kubeconfig.clone(), "demo", prefix, 2);
    std::thread::sleep(Duration::from_secs(2));
    let started = Instant::now();
    change();
    eventually("the rollout to start", T, || {
        let d = c.json(&["get", "deployment", "demo"]);
        (d["metadata"]["generation"] != d["status"]["observedGeneration"]
            || d["status"]["updatedReplicas"] != d["status"]["replicas"])
            .then_some(())
    });
    rollout(c);
    let took = started.elapsed();
    let after = ctx.ready_pods(3);
    assert!(
        after.iter().all(|p| !before.contains(&p.name)),
        "every pod was replaced"
    );
    // Keep reading from the new pods for a moment.
    std::thread::sleep(Duration::from_secs(3));
    let report = workload.stop();
    assert!(
        !report.new_pods_read.is_empty(),
        "the reader read from pods created by the rollout"
    );
    println!("{what}: rollout of 3 pods took {:.1} s", took.as_secs_f64());
    verify(ctx, "demo", &report, &[], 3);
    took
}

pub fn a_rollout_from_an_agent_setting_serves_warm_and_loses_nothing(ctx: &Ctx) {
    let c = &ctx.cluster;
    c.kubectl(&["scale", "c19g/demo", "--replicas=3"]);
    let pods = ctx.ready_pods(3);
    let token = pods::token(c, "demo");
    let loaded = Instant::now();
    let preloaded = preload(&pods[0], &token, PRELOAD);
    println!(
        "loaded {PRELOAD} keys through one agent in {:.1} s",
        loaded.elapsed().as_secs_f64()
    );
    eventually("every pod to hold the preload", T, || {
        pods.iter()
            .all(|p| state_of(p, &token, |k| k.starts_with("bulk-")).len() >= PRELOAD)
            .then_some(())
    });
    let took = roll_under_workload(ctx, "setting-", "agent setting (pushInterval)", || {
        c.apply_yaml(&group_yaml(3, 310));
    });
    println!(
        "a 3-pod group holding {PRELOAD} keys rolled in {:.1} s",
        took.as_secs_f64()
    );
    // The preloaded keys too, on every new pod.
    let pods = ctx.ready_pods(3);
    let finals: Vec<_> = pods
        .iter()
        .map(|p| state_of(p, &token, |k| k.starts_with("bulk-")))
        .collect();
    let verdict = check(&preloaded, &[], &finals, now_ms(), 0);
    assert!(
        verdict.lost.is_empty(),
        "{:?}",
        &verdict.lost[..verdict.lost.len().min(5)]
    );
    // Every new agent copied a member's state before it turned ready.
    for p in &pods {
        let (_, ready) = request(&format!("{}:4097", p.ip), "GET", "/readyz", None, &[]);
        let ready: Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(ready["how"], "copied", "{}: {ready}", p.name);
        assert!(
            ready["records"].as_u64().unwrap() >= PRELOAD as u64,
            "{ready}"
        );
    }
    ctx.wait_converged();
}

pub fn a_rollout_from_an_image_change_serves_warm_and_loses_nothing(ctx: &Ctx) {
    let c = &ctx.cluster;
    node::tag_image("docker.io/library/c19:dev", "docker.io/library/c19:next");
    roll_under_workload(ctx, "image-", "agent image (c19:dev -> c19:next)", || {
        c.apply_yaml(&group_yaml(3, 310).replace(
            "  agent:\n",
            "  agent:\n    image: c19:next\n    imagePullPolicy: IfNotPresent\n",
        ));
    });
    let status = ctx.group_status();
    assert_eq!(status["agentImage"], "c19:next", "{status}");
    eventually("the members to report one agent version", T, || {
        (ctx.group_status()["agentVersions"] == serde_json::json!([env!("CARGO_PKG_VERSION")]))
            .then_some(())
    });
    ctx.wait_converged();
}

pub fn an_operator_upgrade_restarts_no_group_pod(ctx: &Ctx) {
    let c = &ctx.cluster;
    // Back to an image the user did not name: the group keeps the one it runs.
    c.apply_yaml(&group_yaml(3, 310));
    rollout(c);
    let before = ctx.ready_pods(3);
    let image = ctx.group_status()["agentImage"].clone();
    assert_eq!(
        image, "c19:next",
        "an image once named stays until the user names another"
    );
    let workload = Workload::start(c.kubeconfig.clone(), "demo", "upgrade-", 2);
    let old = ctx.operator();
    node::tag_image(
        "docker.io/library/c19:dev",
        "docker.io/library/c19:upgraded",
    );
    helm_upgrade(c, "image.tag=upgraded");
    let new = eventually("the upgraded operator to run", T, || {
        let pods = ctx.operator_pods();
        (pods.len() == 1 && pods[0].name != old.name && pods[0].ready).then(|| pods[0].clone())
    });
    let env = c.kubectl(&[
        "get",
        "deployment",
        "-n",
        OPERATOR_NS,
        "c19-c19-operator",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"C19_AGENT_IMAGE\")].value}",
    ]);
    assert_eq!(
        env, "c19:upgraded",
        "the new operator's default agent image"
    );
    // The new operator reconciles the group (several probe rounds) and rolls nothing.
    std::thread::sleep(Duration::from_secs(8));
    let metrics = ctx.operator_metrics(&new);
    assert!(
        !metrics.contains("c19_operator_reconciles_total 0\n"),
        "{metrics}"
    );
    let after = ctx.ready_pods(3);
    assert_eq!(lives(&after), lives(&before), "no group pod restarted");
    assert_eq!(ctx.group_status()["agentImage"], image);
    let report = workload.stop();
    verify(ctx, "demo", &report, &[], 3);
    ctx.wait_converged();
}

/// Without the operator (its Deployment scaled to zero, as on a node that failed), new pods get
/// no peer list: their agents find the group through its headless Service in the cluster DNS,
/// copy its state and turn ready; the group scales and heals.
pub fn a_group_scales_and_heals_while_the_operator_is_down(ctx: &Ctx) {
    let c = &ctx.cluster;
    let token = pods::token(c, "demo");
    let before = ctx.ready_pods(3);
    let workload = Workload::start(c.kubeconfig.clone(), "demo", "absent-", 2);
    let scale_operator = |n: &str| {
        c.kubectl(&[
            "scale",
            "deployment",
            "-n",
            OPERATOR_NS,
            "c19-c19-operator",
            &format!("--replicas={n}"),
        ])
    };
    scale_operator("0");
    eventually("the operator to be gone", T, || {
        ctx.operator_pods().is_empty().then_some(())
    });
    // Scaled up behind the absent operator's back, then a member lost.
    c.kubectl(&["scale", "deployment", "demo", "--replicas=4"]);
    let grown = eventually("4 ready pods without the operator", T, || {
        let p = pods::running(c, "demo");
        (p.len() == 4 && p.iter().all(|p| p.ready)).then_some(p)
    });
    c.kubectl(&["delete", "pod", &before[0].name, "--wait=false"]);
    let healed = eventually("4 ready pods again, the lost one replaced", T, || {
        let p = pods::running(c, "demo");
        (p.len() == 4 && p.iter().all(|p| p.ready && p.name != before[0].name)).then_some(p)
    });
    let old: Vec<&str> = before.iter().map(|p| p.name.as_str()).collect();
    let newcomers: Vec<&Pod> = healed
        .iter()
        .filter(|p| !old.contains(&p.name.as_str()))
        .collect();
    assert_eq!(newcomers.len(), 2, "one added, one replacing: {grown:?}");
    for p in &newcomers {
        let (_, ready) = request(&format!("{}:4097", p.ip), "GET", "/readyz", None, &[]);
        let ready: Value = serde_json::from_str(&ready).unwrap();
        assert_eq!(ready["how"], "copied", "{}: {ready}", p.name);
        let peers = crate::pods::peers_of(&p.ip, &token).unwrap_or_default();
        assert!(
            peers.len() >= 3,
            "{} found its peers through DNS: {peers:?}",
            p.name
        );
        let log = c.kubectl(&["logs", &p.name, "-c", "c19-agent"]);
        assert!(log.contains("finding peers through DNS"), "{log}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = workload.stop();
    // The operator returns and puts the group back to its spec (3 replicas).
    scale_operator("1");
    ctx.operator();
    verify(ctx, "demo", &report, &[], 3);
    ctx.wait_converged();
}

/// A group whose pods also run a container that ignores SIGTERM, so that a deleted pod stays
/// terminating for its whole grace period, and agents that push only once a minute: writes
/// acknowledged just before the deletion must leave the pod through the agent's preStop hook.
fn stubborn_group_yaml() -> String {
    r#"apiVersion: c19.dev/v1alpha1
kind: C19Group
metadata:
  name: stubborn
spec:
  replicas: 2
  template:
    spec:
      terminationGracePeriodSeconds: 15
      containers:
      - name: app
        image: c19-example-app:dev
        imagePullPolicy: IfNotPresent
      - name: ignores-sigterm
        image: c19-example-app:dev
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'trap "" TERM; while true; do sleep 1; done']
  agent:
    connection: {pushInterval: 60000, pullInterval: 60000, timeout: 500}
"#
    .to_string()
}

pub fn a_terminating_pod_pushes_its_writes_before_its_app_exits(ctx: &Ctx) {
    let c = &ctx.cluster;
    c.apply_yaml(&stubborn_group_yaml());
    let pods = eventually("2 ready stubborn pods", T, || {
        let p = pods::running(c, "stubborn");
        (p.len() == 2 && p.iter().all(|p| p.ready)).then_some(p)
    });
    let (doomed, survivor) = (&pods[0], &pods[1]);
    // Let the first (immediate) push round pass: from here on, nothing is pushed for a minute.
    std::thread::sleep(Duration::from_secs(2));
    let keys: Vec<String> = (0..50).map(|i| format!("last-{i}")).collect();
    let mut history = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let start_ms = now_ms();
        let (status, body) = request(
            &format!("{}:8080", doomed.ip),
            "PUT",
            &format!("/kv/{key}"),
            Some(i.to_string().as_bytes()),
            &[],
        );
        assert_eq!(status, 204, "{body}");
        history.push(Event {
            op: Op::Add {
                key: key.clone(),
                value: i as u64,
                ttl: None,
            },
            agent: 0,
            start_ms,
            end_ms: now_ms(),
            outcome: Outcome::Ok,
        });
    }
    let missing = |p: &Pod| {
        keys.iter()
            .filter(|k| {
                request(
                    &format!("{}:8080", p.ip),
                    "GET",
                    &format!("/kv/{k}"),
                    None,
                    &[],
                )
                .0 != 200
            })
            .count()
    };
    assert_eq!(missing(survivor), 50, "not pushed yet (push interval 60 s)");
    let deleted = Instant::now();
    c.kubectl(&["delete", "pod", &doomed.name, "--wait=false"]);
    // The preStop hook runs as the pod starts terminating, long before its grace period ends.
    eventually(
        "the survivor to hold every write",
        Duration::from_secs(10),
        || (missing(survivor) == 0).then_some(()),
    );
    let pushed = deleted.elapsed();
    let terminating = c
        .kubectl_output(&["get", "pod", &doomed.name])
        .status
        .success();
    println!(
        "writes acknowledged by a terminating pod reached its peer {} ms after the delete (pod still terminating: {terminating})",
        pushed.as_millis()
    );
    assert!(terminating, "the pod was still within its grace period");
    assert!(pushed < Duration::from_secs(10));
    // Once the pod is gone, its replacement holds them too.
    eventually("the doomed pod to go", Duration::from_secs(60), || {
        (!c.kubectl_output(&["get", "pod", &doomed.name])
            .status
            .success())
        .then_some(())
    });
    let now = eventually("2 ready stubborn pods again", T, || {
        let p = pods::running(c, "stubborn");
        (p.len() == 2 && p.iter().all(|p| p.ready)).then_some(p)
    });
    for p in &now {
        assert_eq!(missing(p), 0, "{} holds every write", p.name);
    }
    let token = pods::token(c, "stubborn");
    let finals: Vec<_> = now
        .iter()
        .map(|p| state_of(p, &token, |k| k.starts_with("last-")))
        .collect();
    let verdict = check(&history, &[], &finals, now_ms(), 0);
    assert!(verdict.ok(), "{verdict:?}");
    c.kubectl(&["delete", "c19g", "stubborn", "--wait=true", "--timeout=90s"]);
}

/// A release installed from the chart as it was before this version (`fixtures/`), with the CRD
/// of that time, is upgraded to the current chart with `helm upgrade --reuse-values`: the
/// pre-upgrade hook applies the new CRD (new fields, CEL rules) with no manual step, while the
/// group runs on under the workload, no pod restarted and nothing lost.
pub fn helm_upgrade_from_the_previous_chart_upgrades_the_crd(ctx: &Ctx) {
    let c = &ctx.cluster;
    let previous = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/e2e/fixtures/c19-operator-main"
    );
    let current = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/c19-operator");
    let crd_schema = || c.kubectl(&["get", "crd", "c19groups.c19.dev", "-o", "json"]);
    // As a cluster installed from the previous chart has it: its release and its CRD.
    helm(
        c,
        &[
            "upgrade",
            "c19",
            previous,
            "--namespace",
            OPERATOR_NS,
            "--reset-values",
            "--set",
            "image.tag=upgraded",
            "--set",
            "leaderElection.enabled=true",
            "--set",
            "probeInterval=1000",
        ],
    );
    let old_crd = std::fs::read_to_string(format!("{previous}/crds/c19group.yaml")).unwrap();
    let out = c.apply_yaml_output(&old_crd);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !crd_schema().contains("metricsNamespace"),
        "the previous CRD is in place"
    );
    ctx.operator();
    let before = ctx.ready_pods(3);
    let workload = Workload::start(c.kubeconfig.clone(), "demo", "crd-", 2);
    std::thread::sleep(Duration::from_secs(2));

    let upgraded = Instant::now();
    helm(
        c,
        &[
            "upgrade",
            "c19",
            current,
            "--namespace",
            OPERATOR_NS,
            "--reuse-values",
        ],
    );
    println!(
        "helm upgrade with the CRD hook took {:.1} s",
        upgraded.elapsed().as_secs_f64()
    );
    let schema = crd_schema();
    assert!(schema.contains("metricsNamespace"), "the new CRD's fields");
    assert!(
        schema.contains("x-kubernetes-validations"),
        "the new CRD's rules"
    );
    // The hook's objects are gone once it succeeded.
    let leftovers = c.kubectl_output(&[
        "get",
        "job",
        "-n",
        OPERATOR_NS,
        "c19-c19-operator-crd-upgrade",
    ]);
    assert!(!leftovers.status.success(), "the hook Job was deleted");
    // The new rules hold at once (a server-side dry run changes nothing).
    let bad = group_yaml(3, 310).replace("- name: app\n", "- name: c19-agent\n");
    let out = c.kubectl_with_input(
        &["apply", "--server-side", "--dry-run=server", "-f", "-"],
        &bad,
    );
    assert!(!out.status.success(), "the CEL rules refuse it");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved for the agent sidecar"));

    ctx.operator();
    std::thread::sleep(Duration::from_secs(3));
    let report = workload.stop();
    let after = ctx.ready_pods(3);
    assert_eq!(lives(&after), lives(&before), "no group pod restarted");
    verify(ctx, "demo", &report, &[], 3);
    ctx.wait_converged();
}
