//! The objects a group should own, computed from the group alone: no I/O, so every field is
//! unit-tested. The reconciler applies them with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec, Secret, Service, Volume};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::crd::{C19Group, PullPolicy};
use super::render::{CONFIG_FILE, SEED_DIR, TOKEN_DIR, agent_config, warmup_timeout};

/// The label that marks a group's pods; the selector of everything the group owns.
pub const GROUP_LABEL: &str = "c19.dev/group";
/// Changes when the agent config changes, so the Deployment rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "c19.dev/config-hash";
pub const AGENT_CONTAINER: &str = "c19-agent";
pub const PEER_PORT: i32 = 4097;
/// The agents' own metrics port: scrapeable without reaching the peer API.
pub const METRICS_PORT: i32 = 9097;
pub const APP_PORT: i32 = 3097;
const MANAGED_BY: &str = "c19-operator";
/// Longest group name whose derived names (`<name>-c19`) are still valid Service names.
pub const MAX_NAME_LEN: usize = 59;

/// What the operator knows that a group does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Agent image when the group names none: the operator's own image.
    pub agent_image: String,
    /// Namespace and pod labels of the operator, allowed through the NetworkPolicy to 4097.
    pub operator_namespace: String,
    pub operator_labels: BTreeMap<String, String>,
    /// The namespace whose pods may scrape the agents' metrics port, for groups that name none
    /// (`spec.agent.metricsNamespace`); `None`: the port is open like the app's.
    pub agent_metrics_namespace: Option<String>,
}

/// Names of the objects a group owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub deployment: String,
    pub config_map: String,
    pub secret: String,
    pub service: String,
    pub network_policy: String,
    pub pdb: String,
}

impl Names {
    pub fn of(group: &str) -> Names {
        let c19 = format!("{group}-c19");
        Names {
            deployment: group.to_string(),
            config_map: c19.clone(),
            secret: format!("{group}-c19-token"),
            service: c19.clone(),
            network_policy: c19.clone(),
            pdb: c19,
        }
    }
}

/// Everything a group owns except the token Secret, which is created once and never re-applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub network_policy: NetworkPolicy,
    /// `None` when replicas <= 1: a budget of one pod would block every node drain.
    pub pdb: Option<PodDisruptionBudget>,
}

/// Why a spec that passed schema validation cannot be reconciled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// Checks what the CRD schema cannot express.
pub fn validate(group: &C19Group) -> Result<(), InvalidSpec> {
    let name = group.name_any();
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidSpec(format!(
            "metadata.name: at most {MAX_NAME_LEN} characters, so that {name}-c19 is a valid Service name"
        )));
    }
    let Some(pod) = group.spec.template.spec.as_ref() else {
        return Err(InvalidSpec(
            "spec.template.spec: missing; the template needs at least one container".into(),
        ));
    };
    if pod.containers.is_empty() {
        return Err(InvalidSpec(
            "spec.template.spec.containers: at least one container is required".into(),
        ));
    }
    let all = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    for c in all {
        if c.name == AGENT_CONTAINER {
            return Err(InvalidSpec(format!(
                "spec.template: container name {AGENT_CONTAINER} is reserved for the agent"
            )));
        }
        for p in c.ports.iter().flatten() {
            if p.container_port == APP_PORT || p.container_port == PEER_PORT {
                return Err(InvalidSpec(format!(
                    "spec.template: container {} uses port {}, which the agent needs",
                    c.name, p.container_port
                )));
            }
        }
    }
    if let Some(v) = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with("c19-"))
    {
        return Err(InvalidSpec(format!(
            "spec.template.spec.volumes: volume name {} is reserved (prefix c19-)",
            v.name
        )));
    }
    Ok(())
}

/// What a group's Deployment runs now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running<'a> {
    pub image: &'a str,
    /// The agent config hash its pod template carries.
    pub config_hash: Option<&'a str>,
}

/// The agent image and config a group's Deployment runs now, if it exists.
pub fn running(d: &Deployment) -> Option<Running<'_>> {
    let template = &d.spec.as_ref()?.template;
    let image = template
        .spec
        .as_ref()?
        .init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == AGENT_CONTAINER)?
        .image
        .as_deref()?;
    let config_hash = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(CONFIG_HASH_ANNOTATION))
        .map(String::as_str);
    Some(Running { image, config_hash })
}

/// The agent image of a group: the user's; else, unless it follows the operator, the one its
/// pods already run, so that an operator upgrade rolls no group; else the operator's.
///
/// One exception: when this operator renders the agent config differently from the operator
/// that rendered the running pods' (the config hash differs while the spec is the one last
/// reconciled), the new config is meant for this operator's agent, and an older agent may not
/// read it. The pods then roll once, one warm pod at a time, onto the operator's agent image.
pub fn agent_image(group: &C19Group, running: Option<Running>, operator_image: &str) -> String {
    let agent = &group.spec.agent;
    if let Some(image) = &agent.image {
        return image.clone();
    }
    let spec_reconciled = group.metadata.generation.is_some()
        && group.status.as_ref().and_then(|s| s.observed_generation) == group.metadata.generation;
    match running {
        Some(_) if agent.follow_operator_image == Some(true) => operator_image.to_string(),
        Some(r) if spec_reconciled && r.config_hash != Some(&config_hash(group)) => {
            operator_image.to_string()
        }
        Some(r) => r.image.to_string(),
        None => operator_image.to_string(),
    }
}

fn labels(group: &str) -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "c19"),
        ("app.kubernetes.io/instance", group),
        ("app.kubernetes.io/managed-by", MANAGED_BY),
        (GROUP_LABEL, group),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

pub fn selector(group: &str) -> BTreeMap<String, String> {
    [(GROUP_LABEL.to_string(), group.to_string())].into()
}

/// The label selector string of a group's pods, as the scale subresource reports it.
pub fn selector_string(group: &str) -> String {
    format!("{GROUP_LABEL}={group}")
}

fn meta(group: &C19Group, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: group.namespace(),
        labels: Some(labels(&group.name_any())),
        owner_references: Some(vec![owner(group)]),
        ..ObjectMeta::default()
    }
}

fn owner(group: &C19Group) -> OwnerReference {
    group
        .controller_owner_ref(&())
        .expect("a stored group has a name and uid")
}

/// The agent config of a group, as the operator renders it into its ConfigMap.
fn config_of(group: &C19Group) -> String {
    let names = Names::of(&group.name_any());
    let service_dns = format!(
        "{}.{}.svc",
        names.service,
        group.namespace().unwrap_or_default()
    );
    agent_config(&group.spec, &service_dns)
}

/// The hash of a group's agent config that its pod template carries.
pub fn config_hash(group: &C19Group) -> String {
    hash_of(&config_of(group))
}

fn hash_of(config: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh64::xxh64(config.as_bytes(), 0))
}

/// The objects for a valid group.
pub fn desired(group: &C19Group, settings: &Settings) -> Desired {
    let name = group.name_any();
    let names = Names::of(&name);
    let config = config_of(group);
    let config_hash = hash_of(&config);
    let config_map = ConfigMap {
        metadata: meta(group, &names.config_map),
        data: Some([(CONFIG_FILE.to_string(), config)].into()),
        ..ConfigMap::default()
    };
    Desired {
        deployment: deployment(group, settings, &names, &config_hash),
        service: service(group, &names),
        network_policy: network_policy(group, settings, &names),
        pdb: (group.spec.replicas > 1).then(|| pdb(group, &names)),
        config_map,
    }
}

/// The token Secret, created once with a fresh token and never regenerated by a reconcile.
pub fn token_secret(group: &C19Group, token: &str) -> Secret {
    Secret {
        metadata: meta(group, &Names::of(&group.name_any()).secret),
        type_: Some("Opaque".into()),
        string_data: Some([("token".to_string(), token.to_string())].into()),
        ..Secret::default()
    }
}

fn deployment(
    group: &C19Group,
    settings: &Settings,
    names: &Names,
    config_hash: &str,
) -> Deployment {
    let name = group.name_any();
    let mut template: PodTemplateSpec = group.spec.template.clone();
    let tmeta = template.metadata.get_or_insert_with(ObjectMeta::default);
    tmeta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels(&name));
    tmeta
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(CONFIG_HASH_ANNOTATION.into(), config_hash.into());
    let pod = template.spec.get_or_insert_with(Default::default);
    // The agent comes first, so that the app and any init container of the user's find
    // localhost:3097 answering when they start.
    let mut init = vec![agent_container(group, settings)];
    init.extend(pod.init_containers.take().unwrap_or_default());
    pod.init_containers = Some(init);
    pod.volumes
        .get_or_insert_with(Vec::new)
        .extend(volumes(group, names));

    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(group, &names.deployment),
        "spec": {
            "replicas": group.spec.replicas,
            "selector": {"matchLabels": selector(&name)},
            // One pod at a time, and none taken down before its replacement is ready: a ready
            // agent holds the group's state (see the agent's warm-up), so a rollout never takes
            // down the last copy of anything.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": template,
        }
    });
    serde_json::from_value(deployment).expect("the Deployment is well-formed")
}

fn agent_container(group: &C19Group, settings: &Settings) -> Container {
    let agent = &group.spec.agent;
    let pull = agent.image_pull_policy.map(|p| match p {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    });
    let resources = agent
        .resources
        .clone()
        .map(|r| serde_json::to_value(r).expect("resources serialize"))
        .unwrap_or_else(
            || json!({"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}}),
        );
    let mut mounts = vec![
        json!({"name": "c19-config", "mountPath": "/etc/c19/config", "readOnly": true}),
        json!({"name": "c19-token", "mountPath": TOKEN_DIR, "readOnly": true}),
    ];
    if agent.state.seed.is_some() {
        mounts.push(json!({"name": "c19-seed", "mountPath": SEED_DIR, "readOnly": true}));
    }
    let probe = |path: &str, period: i32, failures: i32| json!({"httpGet": {"path": path, "port": PEER_PORT}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 1});
    // `/readyz` turns 200 once the agent holds its group's state (or its warm-up timed out):
    // the startup probe, which holds the app back, allows that long and 30 s more.
    let startup_failures = (warmup_timeout(&group.spec).div_ceil(1000) + 30) as i32;
    let container = json!({
        "name": AGENT_CONTAINER,
        // Resolved by the reconciler (see `agent_image`): settings carry the group's image.
        "image": agent.image.clone().unwrap_or_else(|| settings.agent_image.clone()),
        "imagePullPolicy": pull,
        "args": ["agent", "--config", format!("/etc/c19/config/{CONFIG_FILE}"), "--log-format", "json"],
        // Native sidecar: started before the app, kept running beside it, stopped after it.
        "restartPolicy": "Always",
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "RUST_LOG", "value": "info"}
        ],
        "ports": [
            {"name": "c19-peer", "containerPort": PEER_PORT, "protocol": "TCP"},
            {"name": "c19-metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}
        ],
        "startupProbe": probe("/readyz", 1, startup_failures),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        // Runs as soon as the pod starts terminating, beside the app's own shutdown: the agent
        // pushes what it has not pushed yet, then keeps serving until the app has exited.
        "lifecycle": {"preStop": {"httpGet": {"path": "/prestop", "port": PEER_PORT}}},
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "volumeMounts": mounts,
    });
    serde_json::from_value(container).expect("the agent container is well-formed")
}

fn volumes(group: &C19Group, names: &Names) -> Vec<Volume> {
    let mut v = vec![
        json!({"name": "c19-config", "configMap": {"name": names.config_map}}),
        // Readable by every uid: the agent runs as 65532, the files belong to root, and a pod
        // may have no fsGroup (or the user's own). Only the agent container mounts the volume,
        // so no other container of the pod sees the token either way.
        json!({"name": "c19-token", "secret": {"secretName": names.secret, "defaultMode": 0o444}}),
    ];
    if let Some(seed) = &group.spec.agent.state.seed {
        v.push(json!({"name": "c19-seed", "configMap": {"name": seed.config_map, "items": [{"key": seed.key, "path": "data.json"}]}}));
    }
    v.into_iter()
        .map(|v| serde_json::from_value(v).expect("volumes are well-formed"))
        .collect()
}

fn service(group: &C19Group, names: &Names) -> Service {
    let s = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(group, &names.service),
        "spec": {
            "clusterIP": "None",
            // Agents must find each other before they are ready, or a new group never starts.
            "publishNotReadyAddresses": true,
            "selector": selector(&group.name_any()),
            "ports": [{"name": "c19-peer", "port": PEER_PORT, "targetPort": PEER_PORT, "protocol": "TCP"}]
        }
    });
    serde_json::from_value(s).expect("the Service is well-formed")
}

/// Only group members and the operator may reach 4097; the agents' metrics port only the
/// namespace named for it (the group's, or the operator's default), or everyone when none is. A
/// policy that selects a pod denies every port it does not allow, so the app's own ports stay
/// open to everyone: the group's policy must restrict the agent, not the app.
fn network_policy(group: &C19Group, settings: &Settings, names: &Names) -> NetworkPolicy {
    let metrics_from = group
        .spec
        .agent
        .metrics_namespace
        .as_ref()
        .or(settings.agent_metrics_namespace.as_ref());
    let metrics_rule = match metrics_from {
        Some(ns) => json!({
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}],
            "ports": [{"protocol": "TCP", "port": METRICS_PORT}]
        }),
        None => json!({"ports": [{"protocol": "TCP", "port": METRICS_PORT}]}),
    };
    let np = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(group, &names.network_policy),
        "spec": {
            "podSelector": {"matchLabels": selector(&group.name_any())},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": selector(&group.name_any())}},
                        {
                            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.operator_namespace}},
                            "podSelector": {"matchLabels": settings.operator_labels}
                        }
                    ],
                    "ports": [{"protocol": "TCP", "port": PEER_PORT}]
                },
                metrics_rule,
                {
                    "ports": [
                        {"protocol": "TCP", "port": 1, "endPort": PEER_PORT - 1},
                        {"protocol": "TCP", "port": PEER_PORT + 1, "endPort": METRICS_PORT - 1},
                        {"protocol": "TCP", "port": METRICS_PORT + 1, "endPort": 65535},
                        {"protocol": "UDP", "port": 1, "endPort": 65535},
                        {"protocol": "SCTP", "port": 1, "endPort": 65535}
                    ]
                }
            ]
        }
    });
    serde_json::from_value(np).expect("the NetworkPolicy is well-formed")
}

fn pdb(group: &C19Group, names: &Names) -> PodDisruptionBudget {
    let p = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta(group, &names.pdb),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(&group.name_any())}}
    });
    serde_json::from_value(p).expect("the PodDisruptionBudget is well-formed")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn settings() -> Settings {
        Settings {
            agent_image: "c19:test".into(),
            operator_namespace: "c19-system".into(),
            operator_labels: [(
                "app.kubernetes.io/name".to_string(),
                "c19-operator".to_string(),
            )]
            .into(),
            agent_metrics_namespace: None,
        }
    }

    pub fn group(spec: serde_json::Value) -> C19Group {
        let mut g: C19Group = serde_json::from_value(json!({
            "apiVersion": "c19.dev/v1alpha1", "kind": "C19Group",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "generation": 1},
            "spec": spec
        }))
        .unwrap();
        g.metadata.generation = Some(1);
        g
    }

    pub fn app_spec(replicas: i32) -> serde_json::Value {
        json!({
            "replicas": replicas,
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"team": "a"}},
                "spec": {
                    "containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 8080}]}],
                    "nodeSelector": {"disk": "ssd"}
                }
            }
        })
    }

    #[test]
    fn the_deployment_runs_the_app_with_the_agent_as_a_native_sidecar() {
        let g = group(app_spec(3));
        let d = desired(&g, &settings()).deployment;
        assert_eq!(d.metadata.name.as_deref(), Some("web"));
        assert_eq!(d.metadata.namespace.as_deref(), Some("shop"));
        let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("C19Group", Some(true))
        );
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        let rolling = spec
            .strategy
            .as_ref()
            .unwrap()
            .rolling_update
            .as_ref()
            .unwrap();
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
        assert_eq!(
            (rolling.max_surge.clone(), rolling.max_unavailable.clone()),
            (Some(Int(1)), Some(Int(0))),
            "one pod at a time, none down before its replacement is ready"
        );
        assert_eq!(spec.selector.match_labels.unwrap()[GROUP_LABEL], "web");
        let t = spec.template;
        let tmeta = t.metadata.unwrap();
        assert_eq!(
            tmeta.labels.as_ref().unwrap()["app"],
            "web",
            "user labels pass through"
        );
        assert_eq!(tmeta.labels.as_ref().unwrap()[GROUP_LABEL], "web");
        assert_eq!(tmeta.annotations.as_ref().unwrap()["team"], "a");
        assert!(
            tmeta
                .annotations
                .as_ref()
                .unwrap()
                .contains_key(CONFIG_HASH_ANNOTATION)
        );
        let pod = t.spec.unwrap();
        assert_eq!(
            pod.node_selector.unwrap()["disk"],
            "ssd",
            "scheduling fields pass through"
        );
        assert_eq!(pod.containers.len(), 1);
        let agent = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(agent.name, AGENT_CONTAINER);
        assert_eq!(agent.restart_policy.as_deref(), Some("Always"));
        assert_eq!(agent.image.as_deref(), Some("c19:test"));
        let startup = agent.startup_probe.as_ref().unwrap();
        assert_eq!(
            startup.http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        // The default warm-up (300 s) and 30 s more, at one probe a second.
        assert_eq!(
            (startup.period_seconds, startup.failure_threshold),
            (Some(1), Some(330))
        );
        let sc = agent.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &vec!["ALL".to_string()]
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let pre_stop = agent.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.http_get.as_ref().unwrap().path.as_deref(),
            Some("/prestop")
        );
        assert_eq!(agent.ports.as_ref().unwrap()[0].container_port, PEER_PORT);
        assert_eq!(agent.env.as_ref().unwrap()[0].name, "POD_IP");
        let vols = pod.volumes.unwrap();
        let names: Vec<_> = vols.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["c19-config", "c19-token"]);
        // The agent (uid 65532, no fsGroup) must be able to read the root-owned token file.
        let token = vols[1].secret.as_ref().unwrap();
        assert_eq!(token.default_mode, Some(0o444));
        let mounted_by: Vec<_> = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .filter(|c| {
                c.volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "c19-token")
            })
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            mounted_by,
            [AGENT_CONTAINER],
            "only the agent sees the token"
        );
    }

    #[test]
    fn a_config_change_changes_the_pod_template_and_a_replica_change_does_not() {
        let hash = |spec| {
            let d = desired(&group(spec), &settings()).deployment;
            d.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let mut faster = app_spec(3);
        faster["agent"] = json!({"connection": {"pushInterval": 200}});
        assert_ne!(hash(app_spec(3)), hash(faster));
        assert_eq!(hash(app_spec(3)), hash(app_spec(5)));
    }

    #[test]
    fn the_service_is_headless_and_publishes_not_ready_members() {
        let s = desired(&group(app_spec(3)), &settings())
            .service
            .spec
            .unwrap();
        assert_eq!(s.cluster_ip.as_deref(), Some("None"));
        assert_eq!(s.publish_not_ready_addresses, Some(true));
        assert_eq!(s.ports.unwrap()[0].port, PEER_PORT);
        assert_eq!(s.selector.unwrap()[GROUP_LABEL], "web");
    }

    #[test]
    fn the_network_policy_guards_only_the_peer_port() {
        let np = desired(&group(app_spec(3)), &settings())
            .network_policy
            .spec
            .unwrap();
        let ingress = np.ingress.unwrap();
        let guarded = &ingress[0];
        let from = guarded.from.as_ref().unwrap();
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[GROUP_LABEL],
            "web"
        );
        assert_eq!(
            from[1]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"],
            "c19-system"
        );
        let open = ingress[2].ports.as_ref().unwrap();
        assert!(ingress[2].from.is_none());
        assert_eq!(open[0].end_port, Some(PEER_PORT - 1));
        assert_eq!(open[1].end_port, Some(METRICS_PORT - 1));
        assert_eq!(open[2].end_port, Some(65535));
        // No namespace named: the metrics port is open like the app's.
        assert!(ingress[1].from.is_none());
        let port = |r: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule| {
            r.ports.as_ref().unwrap()[0].port.clone()
        };
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int;
        assert_eq!(port(&ingress[1]), Some(Int(METRICS_PORT)));
        // Named (by the operator, or by the group, which wins): only that namespace.
        let mut s = settings();
        s.agent_metrics_namespace = Some("monitoring".into());
        let from = |g: &C19Group, s: &Settings| {
            let np = desired(g, s).network_policy.spec.unwrap();
            let rule = np.ingress.unwrap()[1].clone();
            rule.from.unwrap()[0]
                .namespace_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()["kubernetes.io/metadata.name"]
                .clone()
        };
        assert_eq!(from(&group(app_spec(3)), &s), "monitoring");
        let mut spec = app_spec(3);
        spec["agent"] = json!({"metricsNamespace": "observability"});
        assert_eq!(from(&group(spec), &s), "observability");
    }

    #[test]
    fn a_pdb_only_for_more_than_one_replica() {
        assert!(desired(&group(app_spec(1)), &settings()).pdb.is_none());
        let pdb = desired(&group(app_spec(2)), &settings()).pdb.unwrap();
        assert_eq!(
            pdb.spec.unwrap().max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
    }

    #[test]
    fn a_seed_mounts_the_config_map_key() {
        let mut spec = app_spec(1);
        spec["agent"] = json!({"image": "c19:custom", "imagePullPolicy": "Never", "state": {"seed": {"configMap": "seed", "key": "data.json"}}});
        let d = desired(&group(spec), &settings()).deployment;
        let pod = d.spec.unwrap().template.spec.unwrap();
        let agent = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(agent.image.as_deref(), Some("c19:custom"));
        assert_eq!(agent.image_pull_policy.as_deref(), Some("Never"));
        let seed = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "c19-seed")
            .unwrap();
        assert_eq!(seed.config_map.unwrap().items.unwrap()[0].path, "data.json");
    }

    #[test]
    fn invalid_specs_are_explained() {
        let bad = |spec: serde_json::Value| validate(&group(spec)).unwrap_err().0;
        assert!(bad(json!({"template": {}})).contains("spec.template.spec"));
        assert!(
            bad(json!({"template": {"spec": {"containers": []}}}))
                .contains("at least one container")
        );
        assert!(
            bad(json!({"template": {"spec": {"containers": [{"name": "c19-agent"}]}}}))
                .contains("reserved")
        );
        assert!(bad(json!({"template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 4097}]}]}}})).contains("4097"));
        assert!(validate(&group(app_spec(1))).is_ok());
        let mut long = group(app_spec(1));
        long.metadata.name = Some("x".repeat(60));
        assert!(validate(&long).unwrap_err().0.contains("metadata.name"));
    }

    #[test]
    fn an_operator_upgrade_keeps_the_agent_image_a_group_runs() {
        let mut g = group(app_spec(3));
        g.status = Some(serde_json::from_value(json!({"observedGeneration": 1})).unwrap());
        let deployment = desired(&g, &settings()).deployment;
        let now = running(&deployment);
        assert_eq!(now.map(|r| r.image), Some("c19:test"));
        // The operator now defaults to a newer image: the group keeps its own.
        assert_eq!(agent_image(&g, now, "c19:next"), "c19:test");
        // A new group takes the operator's.
        assert_eq!(agent_image(&g, None, "c19:next"), "c19:next");
        // Opted in: it follows the operator.
        let mut spec = app_spec(3);
        spec["agent"] = json!({"followOperatorImage": true});
        assert_eq!(agent_image(&group(spec), now, "c19:next"), "c19:next");
        // The user's own image wins over both.
        let mut spec = app_spec(3);
        spec["agent"] = json!({"image": "c19:mine"});
        assert_eq!(agent_image(&group(spec), now, "c19:next"), "c19:mine");
    }

    #[test]
    fn a_new_rendering_of_an_unchanged_spec_moves_the_group_to_the_operators_agent() {
        let mut g = group(app_spec(3));
        g.status = Some(serde_json::from_value(json!({"observedGeneration": 1})).unwrap());
        // Pods rendered by an older operator, whose config this one renders differently.
        let old = Running {
            image: "c19:old",
            config_hash: Some("0123456789abcdef"),
        };
        assert_eq!(agent_image(&g, Some(old), "c19:next"), "c19:next");
        // A spec change not reconciled yet is the user's doing: the image stays.
        g.metadata.generation = Some(2);
        assert_eq!(agent_image(&g, Some(old), "c19:next"), "c19:old");
    }

    #[test]
    fn the_token_secret_is_owned_by_the_group() {
        let s = token_secret(&group(app_spec(1)), "abc");
        assert_eq!(s.metadata.name.as_deref(), Some("web-c19-token"));
        assert_eq!(s.string_data.unwrap()["token"], "abc");
        assert_eq!(s.metadata.owner_references.unwrap()[0].name, "web");
    }
}
