//! The `C19Group` custom resource. Doc comments on the fields become `kubectl explain` text.

// kube's `printcolumn(type_ = ...)` repeats an argument name, which clippy mistakes for a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::{PodTemplateSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A group of pods that share one replicated C19 state. Each pod runs the application from
/// `template` and a c19 agent as a native sidecar; the app reads and writes the state on
/// localhost:3097, the agents gossip on port 4097, and the status says whether they converged.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "c19.dev",
    version = "v1alpha1",
    kind = "C19Group",
    plural = "c19groups",
    shortname = "c19g",
    category = "c19",
    namespaced,
    status = "C19GroupStatus",
    doc = "A group of pods sharing one replicated C19 state: the app from spec.template plus a c19 agent sidecar in every pod.",
    validation = Rule::new("size(self.metadata.name) <= 59").message("metadata.name: at most 59 characters, so that <name>-c19 is a valid Service name"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Desired pods"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyReplicas",
        description = "Ready pods"
    ),
    printcolumn(
        name = "Converged",
        type_ = "boolean",
        json_path = ".status.converged",
        description = "Whether every member holds the same state"
    ),
    printcolumn(
        name = "Keys",
        type_ = "integer",
        json_path = ".status.keys",
        description = "Live keys in the group's state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct C19GroupSpec {
    /// Number of pods in the group. Each pod runs the application and one c19 agent.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// The application's pod template, as in a Deployment. The operator adds the c19 agent as a
    /// native sidecar (an init container with restartPolicy Always), the label
    /// c19.dev/group=<name>, and the agent's volumes. Labels, annotations and scheduling fields
    /// (nodeSelector, affinity, tolerations, ...) pass through unchanged.
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
    /// Settings of the c19 agent sidecar.
    #[serde(default)]
    pub agent: AgentSpec,
}

fn default_replicas() -> i32 {
    1
}

/// Settings of the c19 agent sidecar.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Agent image. Unset: the operator's agent image (--agent-image) when the group is
    /// created, kept from then on, so that upgrading the operator rolls no group; set
    /// followOperatorImage to take the operator's on every upgrade instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The namespace whose pods (a Prometheus) may scrape the agents' metrics port (9097); the
    /// peer port stays closed to them. Default: the operator's --agent-metrics-namespace, or,
    /// without one, the port is open like the app's ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub metrics_namespace: Option<String>,
    /// With no image set: follow the operator's agent image when the operator is upgraded
    /// (which rolls the group's pods). Default false: the image is fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_operator_image: Option<bool>,
    /// Pull policy of the agent image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// CPU and memory requests and limits of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// How the state behaves: TTL, purging, deletes, and an optional seed.
    #[serde(default)]
    pub state: StateSpec,
    /// How agents gossip with each other.
    #[serde(default)]
    pub connection: ConnectionSpec,
}

/// Image pull policy.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// State settings (C19 config `spec.state`). Durations are milliseconds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateSpec {
    /// Default time to live (ms) for values written without one. Unset: values never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub ttl: Option<u64>,
    /// How often (ms) deletes and expired values past their lifetime are purged. Default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub purge_interval: Option<u64>,
    /// How long (ms) deletes and expired values are remembered so that lagging peers cannot
    /// resurrect them. Default 3600000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tombstone_lifetime: Option<u64>,
    /// Entries loaded into every agent at start, from a ConfigMap key holding the same JSON as a
    /// PUT body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedSpec>,
}

/// A seed file taken from a ConfigMap in the group's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeedSpec {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1))]
    pub config_map: String,
    /// Key of the ConfigMap whose value is the seed JSON.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Gossip settings (C19 config `spec.connection`). Durations are milliseconds.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// Period (ms) of push rounds. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub push_interval: Option<u64>,
    /// Period (ms) of the wider anti-entropy round. Default 60000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub pull_interval: Option<u64>,
    /// Peers contacted per push round. Default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub r0: Option<u32>,
    /// Whole-request timeout (ms) for gossip requests. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub timeout: Option<u64>,
    /// How long (ms) a starting agent may take to get its peer list and copy a member's state
    /// before it reports ready with what it holds. The startup probe allows this long plus 30 s.
    /// Default 300000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1000, max = 3600000))]
    pub warmup_timeout: Option<u64>,
}

/// What the operator observed of the group.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct C19GroupStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the group's Deployment.
    #[serde(default)]
    pub replicas: i32,
    /// Ready pods of the group's Deployment.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the group's pods (for the scale subresource and HPA).
    #[serde(default)]
    pub selector: String,
    /// Agents listed in the group's EndpointSlices.
    #[serde(default)]
    pub members: i32,
    /// Members whose agent answered the last health probe.
    #[serde(default)]
    pub reachable: i32,
    /// Live keys in the state held by most members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<i64>,
    /// True when every member answered and all hold the same state.
    #[serde(default)]
    pub converged: bool,
    /// Members whose state differs from the majority (at most 10 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub divergent: Vec<String>,
    /// Members that did not answer the last probe (at most 10 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<String>,
    /// The agent image the group's pods are given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_image: Option<String>,
    /// The agent versions the members report (more than one during an upgrade).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_versions: Vec<String>,
    /// Ready, Progressing and Converged conditions.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
}

/// The pod template: any PodTemplateSpec (validated when the operator applies the Deployment),
/// with just enough declared for the API server to refuse, at `kubectl apply`, what would clash
/// with the agent: a container named c19-agent, the agent's ports, volumes named c19-*. Lists
/// are bounded so that the rules' cost can be estimated.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let name = serde_json::json!({"type": "string", "maxLength": 253, "description": "Its name."});
    let container = serde_json::json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "name": name,
            "ports": {
                "type": "array",
                "maxItems": 64,
                "description": "Its ports; 3097, 4097 and 9097 are the agent's.",
                "items": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"containerPort": {"type": "integer", "description": "The port number."}}
                }
            }
        }
    });
    let reserved_name = |list: &str| {
        serde_json::json!({
            "rule": format!("!has(self.{list}) || self.{list}.all(c, !has(c.name) || c.name != 'c19-agent')"),
            "message": format!("{list}: the name c19-agent is reserved for the agent sidecar"),
            "fieldPath": format!(".{list}"),
        })
    };
    let reserved_ports = |list: &str| {
        serde_json::json!({
            "rule": format!("!has(self.{list}) || self.{list}.all(c, !has(c.ports) || c.ports.all(p, !has(p.containerPort) || !(p.containerPort in [3097, 4097, 9097])))"),
            "message": format!("{list}: ports 3097, 4097 and 9097 are the agent's (app API, peer API, metrics)"),
            "fieldPath": format!(".{list}"),
        })
    };
    schemars::json_schema!({
        "type": "object",
        "description": "The application's pod template (core/v1 PodTemplateSpec). Validated when the operator applies the Deployment.",
        "x-kubernetes-preserve-unknown-fields": true,
        "required": ["spec"],
        "properties": {
            "spec": {
                "type": "object",
                "description": "The pod's spec (core/v1 PodSpec).",
                "x-kubernetes-preserve-unknown-fields": true,
                "required": ["containers"],
                "properties": {
                    "containers": {"type": "array", "minItems": 1, "maxItems": 64, "items": container, "description": "The app's containers (at least one); the name c19-agent is the agent's."},
                    "initContainers": {"type": "array", "maxItems": 64, "items": container, "description": "The app's init containers; the agent comes before them."},
                    "volumes": {
                        "type": "array",
                        "maxItems": 256,
                        "description": "The pod's volumes; names starting with c19- are the agent's.",
                        "items": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"name": name}
                        }
                    }
                },
                "x-kubernetes-validations": [
                    reserved_name("containers"),
                    reserved_name("initContainers"),
                    reserved_ports("containers"),
                    reserved_ports("initContainers"),
                    {
                        "rule": "!has(self.volumes) || self.volumes.all(v, !has(v.name) || !v.name.startsWith('c19-'))",
                        "message": "volumes: names starting with c19- are reserved for the agent's volumes",
                        "fieldPath": ".volumes"
                    }
                ]
            }
        }
    })
}

fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

/// The CRD as YAML, as `c19 crd` prints it and `crds/c19group.yaml` holds it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&C19Group::crd()).expect("the CRD serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn names_subresources_and_columns() {
        let crd = C19Group::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("c19groups.c19.dev"));
        let names = &crd.spec.names;
        assert_eq!(names.short_names, Some(vec!["c19g".to_string()]));
        assert_eq!(names.categories, Some(vec!["c19".to_string()]));
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        let sub = v.subresources.as_ref().unwrap();
        assert!(sub.status.is_some());
        assert_eq!(
            sub.scale.as_ref().unwrap().label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let cols: Vec<_> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(cols, ["Replicas", "Ready", "Converged", "Keys", "Age"]);
    }

    #[test]
    fn every_spec_field_is_documented() {
        let crd = serde_json::to_value(C19Group::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        fn walk(path: &str, s: &serde_json::Value) {
            if let Some(props) = s.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    let p = format!("{path}.{name}");
                    assert!(sub.get("description").is_some(), "{p} has no description");
                    walk(&p, sub);
                }
            }
        }
        walk("spec", spec);
        let r0 = &spec["properties"]["agent"]["properties"]["connection"]["properties"]["r0"];
        assert_eq!(r0["minimum"].as_f64(), Some(1.0));
    }

    #[test]
    fn the_committed_crd_is_current() {
        let committed = include_str!("../../crds/c19group.yaml");
        assert!(
            committed == crd_yaml(),
            "crds/c19group.yaml is stale: run `cargo run -- crd > crds/c19group.yaml`"
        );
    }
}
