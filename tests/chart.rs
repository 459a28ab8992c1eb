//! The Helm chart: lint, render with default and non-default values, check the rendered objects,
//! and refuse bad values. Uses the Go-built `helm` of `scripts/k8s-binaries`; no cluster needed.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/c19-operator");

fn helm_bin() -> PathBuf {
    let dir = match std::env::var("C19_K8S_BIN_DIR") {
        Ok(d) => d,
        Err(_) => {
            let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/k8s-binaries"))
                .output()
                .expect("scripts/k8s-binaries runs");
            assert!(
                out.status.success(),
                "scripts/k8s-binaries failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim()
                .to_string()
        }
    };
    PathBuf::from(dir).join("helm")
}

fn helm(args: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(args)
        .output()
        .expect("helm runs")
}

/// Renders the chart and returns its objects.
fn render(set: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "c19",
        CHART,
        "--namespace",
        "c19-system",
        "--kube-version",
        "1.33.0",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---")
        .filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

/// The release's objects of a kind, hooks left out.
fn find<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind && !is_hook(o))
        .collect()
}

fn is_hook(o: &Value) -> bool {
    !o["metadata"]["annotations"]["helm.sh/hook"].is_null()
}

/// Before an upgrade, a hook Job applies the new CRD with the new image; its ServiceAccount may
/// get and patch that one CRD only. Off with crds.upgrade=false.
#[test]
fn a_pre_upgrade_hook_applies_the_new_crd() {
    let objects = render(&[]);
    let hooks: Vec<&Value> = objects.iter().filter(|o| is_hook(o)).collect();
    let kinds: Vec<&str> = hooks.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Job"]
    );
    for h in &hooks {
        assert_eq!(h["metadata"]["annotations"]["helm.sh/hook"], "pre-upgrade");
    }
    let role = hooks[1];
    assert_eq!(
        role["rules"],
        serde_json::json!([{
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "resourceNames": ["c19groups.c19.dev"],
            "verbs": ["get", "patch"]
        }])
    );
    let job = &hooks[3]["spec"]["template"]["spec"];
    assert_eq!(
        job["containers"][0]["args"],
        serde_json::json!(["crd", "--apply"])
    );
    assert_eq!(job["containers"][0]["image"], "c19:0.1.0");
    let off = render(&["crds.upgrade=false"]);
    assert!(off.iter().all(|o| !is_hook(o)));
}

#[test]
fn the_chart_lints() {
    let out = helm(&["lint", CHART, "--strict", "--kube-version", "1.33.0"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chart_ships_the_current_crd() {
    let top = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/c19group.yaml"))
        .unwrap();
    let chart = std::fs::read_to_string(format!("{CHART}/crds/c19group.yaml")).unwrap();
    assert!(
        top == chart,
        "charts/c19-operator/crds/c19group.yaml differs from crds/c19group.yaml: copy it"
    );
}

#[test]
fn defaults_render_a_hardened_cluster_wide_operator() {
    let objects = render(&[]);
    assert!(
        find(&objects, "PodMonitor").is_empty(),
        "no PodMonitor unless asked (its CRD may be missing)"
    );
    let deployment = find(&objects, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"], "c19:0.1.0",
        "the image defaults to the appVersion"
    );
    assert_eq!(c["args"], serde_json::json!(["operator"]));
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["memory"].is_string());
    let env: Vec<(String, String)> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        env.contains(&("C19_AGENT_IMAGE".into(), "c19:0.1.0".into())),
        "the agent image defaults to the operator's: {env:?}"
    );
    assert!(env.contains(&("C19_LEADER_ELECT".into(), "false".into())));
    assert_eq!(pod["serviceAccountName"], "c19-c19-operator");

    let roles = find(&objects, "ClusterRole");
    assert_eq!(roles.len(), 1);
    let rules = roles[0]["rules"].as_array().unwrap();
    let verbs_of = |resource: &str| -> Vec<String> {
        rules
            .iter()
            .filter(|r| {
                r["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x == resource)
            })
            .flat_map(|r| {
                r["verbs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
            })
            .collect()
    };
    assert_eq!(
        verbs_of("secrets"),
        ["get", "create"],
        "secrets are read and created, never listed"
    );
    assert_eq!(verbs_of("endpointslices"), ["get", "list", "watch"]);
    assert!(
        !verbs_of("deployments").contains(&"delete".to_string()),
        "garbage collection deletes, not the operator"
    );
    assert!(
        rules
            .iter()
            .all(|r| r["verbs"].as_array().unwrap().iter().all(|v| v != "*")),
        "no wildcards"
    );
    assert_eq!(find(&objects, "ClusterRoleBinding").len(), 1);
    assert!(
        find(&objects, "Role").is_empty(),
        "no Lease role without leader election"
    );
    assert_eq!(
        find(&objects, "Service")[0]["spec"]["ports"][0]["port"],
        8080
    );
    assert!(find(&objects, "ServiceMonitor").is_empty());
}

#[test]
fn one_namespace_and_leader_election_narrow_the_rbac() {
    let objects = render(&[
        "watchNamespace=shop",
        "leaderElection.enabled=true",
        "replicaCount=2",
        "metrics.serviceMonitor.enabled=true",
        "agentImage=reg/c19-agent:1",
        "agentMetrics.namespace=monitoring",
        "agentMetrics.podMonitor.enabled=true",
    ]);
    assert!(
        find(&objects, "ClusterRole").is_empty(),
        "no cluster-wide rights when watching one namespace"
    );
    let roles = find(&objects, "Role");
    let namespaces: Vec<&str> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["shop", "c19-system"]);
    let lease = roles[1]["rules"][0].clone();
    assert_eq!(lease["resources"], serde_json::json!(["leases"]));
    let deployment = find(&objects, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let get = |n: &str| env.iter().find(|e| e["name"] == n).unwrap()["value"].clone();
    assert_eq!(get("C19_WATCH_NAMESPACE"), "shop");
    assert_eq!(get("C19_LEADER_ELECT"), "true");
    assert_eq!(get("C19_AGENT_IMAGE"), "reg/c19-agent:1");
    assert_eq!(find(&objects, "ServiceMonitor").len(), 1);
    assert_eq!(get("C19_AGENT_METRICS_NAMESPACE"), "monitoring");
    let pm = find(&objects, "PodMonitor");
    assert_eq!(pm.len(), 1, "the agents' PodMonitor");
    assert_eq!(
        pm[0]["spec"]["podMetricsEndpoints"][0]["port"],
        "c19-metrics"
    );
    assert_eq!(
        pm[0]["spec"]["namespaceSelector"]["matchNames"],
        serde_json::json!(["shop"])
    );
    assert_eq!(
        pm[0]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/managed-by"],
        "c19-operator"
    );
}

#[test]
fn bad_values_fail_at_install_time() {
    let template = |set: &str| {
        helm(&[
            "template",
            "c19",
            CHART,
            "--kube-version",
            "1.33.0",
            "--set",
            set,
        ])
    };
    let out = template("replicaCont=2");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("replicaCont"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = template("image.pullPolicy=Sometimes");
    assert!(!out.status.success());
    let out = template("replicaCount=2");
    assert!(
        !out.status.success(),
        "two replicas without leader election"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("leaderElection.enabled"));
}

/// `helm upgrade --reuse-values` renders the new chart with the old release's values, which lack
/// whatever this chart added since (`agentMetrics`): the templates must not need them.
#[test]
fn values_of_an_older_release_still_render() {
    let objects = render(&["agentMetrics=null", "alerts=null", "dashboard=null"]);
    assert!(find(&objects, "PodMonitor").is_empty());
    assert!(find(&objects, "PrometheusRule").is_empty());
    assert!(find(&objects, "ConfigMap").is_empty());
    let deployment = find(&objects, "Deployment")[0];
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let metrics_ns = env
        .iter()
        .find(|e| e["name"] == "C19_AGENT_METRICS_NAMESPACE")
        .unwrap();
    assert_eq!(metrics_ns["value"], "");
}

/// The PrometheusRule and the dashboard ConfigMap carry exactly the files tests/monitoring.rs
/// checks with promtool; the scrape configs label series the way their queries expect.
#[test]
fn alerts_and_dashboard_ship_the_tested_files() {
    let defaults = render(&[]);
    assert!(find(&defaults, "PrometheusRule").is_empty());
    assert!(find(&defaults, "ConfigMap").is_empty());

    let objects = render(&[
        "alerts.enabled=true",
        "alerts.labels.release=prometheus",
        "dashboard.enabled=true",
        "dashboard.namespace=grafana",
        "metrics.serviceMonitor.enabled=true",
        "agentMetrics.podMonitor.enabled=true",
    ]);
    let file = |name: &str| std::fs::read_to_string(format!("{CHART}/files/{name}")).unwrap();

    let rule = find(&objects, "PrometheusRule")[0];
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    let alerts: Value = serde_yaml::from_str(&file("alerts.yaml")).unwrap();
    assert_eq!(rule["spec"], alerts);

    let dashboard = find(&objects, "ConfigMap")[0];
    assert_eq!(dashboard["metadata"]["namespace"], "grafana");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value =
        serde_json::from_str(dashboard["data"]["c19-groups.json"].as_str().unwrap()).unwrap();
    let source: Value = serde_json::from_str(&file("dashboard.json")).unwrap();
    assert_eq!(shipped, source);

    // Per-group operator series name the group's namespace, not the operator's.
    let monitor = find(&objects, "ServiceMonitor")[0];
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);
    // Agent series carry their group as c19_group.
    let pods = find(&objects, "PodMonitor")[0];
    let relabel = &pods["spec"]["podMetricsEndpoints"][0]["relabelings"][0];
    assert_eq!(
        relabel["sourceLabels"][0],
        "__meta_kubernetes_pod_label_c19_dev_group"
    );
    assert_eq!(relabel["targetLabel"], "c19_group");
}
