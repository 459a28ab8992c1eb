//! The reconciler: make a group's owned objects match the desired ones (server-side apply under
//! one field manager, only when something differs) and write its status when it changed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::context::Context;
use super::crd::{C19Group, C19GroupStatus};
use super::desired::{self, Names, Settings, desired, selector_string, token_secret};
use super::diff::is_subset;
use super::health::{self, Facts};

/// The one field manager for everything the operator applies.
pub const MANAGER: &str = "c19-operator";
/// Even with no event, re-check every group this often (drift, lost events).
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("{action} {kind} {name}: {source}")]
    Kube {
        action: &'static str,
        kind: String,
        name: String,
        source: kube::Error,
    },
    #[error("the group has no namespace")]
    NoNamespace,
    #[error("cannot read /dev/urandom for the group token: {0}")]
    Random(std::io::Error),
}

fn kube_err<K: Resource<DynamicType = ()>>(
    action: &'static str,
    name: &str,
) -> impl FnOnce(kube::Error) -> ReconcileError {
    let name = name.to_string();
    move |source| ReconcileError::Kube {
        action,
        kind: K::kind(&()).to_string(),
        name,
        source,
    }
}

pub async fn reconcile(group: Arc<C19Group>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let result = reconcile_inner(&group, &ctx).await;
    ctx.metrics
        .reconcile_micros
        .add(started.elapsed().as_micros() as u64);
    if result.is_err() {
        ctx.metrics.reconcile_errors.inc();
    }
    result
}

async fn reconcile_inner(group: &C19Group, ctx: &Context) -> Result<Action, ReconcileError> {
    let ns = group.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = group.name_any();
    let facts = match desired::validate(group) {
        Err(invalid) => {
            // Nothing existing is torn down: the last good objects keep running.
            let deployment: Option<Deployment> =
                get(&Api::namespaced(ctx.client.clone(), &ns), &name).await?;
            facts(group, deployment.as_ref(), Some(invalid.0))
        }
        Ok(()) => {
            ensure_token(group, ctx, &ns).await?;
            let running: Option<Deployment> =
                get(&Api::namespaced(ctx.client.clone(), &ns), &name).await?;
            let settings = Settings {
                agent_image: desired::agent_image(
                    group,
                    running.as_ref().and_then(desired::running),
                    &ctx.settings.agent_image,
                ),
                ..ctx.settings.clone()
            };
            let d = desired(group, &settings);
            apply(ctx, &ns, d.config_map).await?;
            apply(ctx, &ns, d.service).await?;
            apply(ctx, &ns, d.network_policy).await?;
            let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
            match d.pdb {
                Some(pdb) => {
                    apply(ctx, &ns, pdb).await?;
                }
                None => {
                    let pdb_name = Names::of(&name).pdb;
                    if get(&pdbs, &pdb_name).await?.is_some() {
                        ctx.metrics.writes.inc();
                        pdbs.delete(&pdb_name, &DeleteParams::default())
                            .await
                            .map_err(kube_err::<PodDisruptionBudget>("delete", &pdb_name))?;
                    }
                }
            }
            let deployment = apply(ctx, &ns, d.deployment).await?;
            Facts {
                agent_image: Some(settings.agent_image),
                ..facts(group, Some(&deployment), None)
            }
        }
    };
    ctx.set_rolling_out(&(ns.clone(), name.clone()), facts.rollout.is_some());
    update_status(group, ctx, &ns, &facts).await?;
    Ok(Action::requeue(RESYNC))
}

fn facts(group: &C19Group, deployment: Option<&Deployment>, invalid: Option<String>) -> Facts {
    let status = deployment.and_then(|d| d.status.as_ref());
    Facts {
        generation: group.metadata.generation,
        desired_replicas: group.spec.replicas,
        replicas: status.and_then(|s| s.replicas).unwrap_or(0),
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        selector: selector_string(&group.name_any()),
        rollout: deployment.and_then(super::rollout::in_progress),
        agent_image: deployment
            .and_then(desired::running)
            .map(|r| r.image.to_string()),
        invalid,
    }
}

async fn get<K>(api: &Api<K>, name: &str) -> Result<Option<K>, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.map_err(kube_err::<K>("get", name))
}

/// Applies `desired` unless the live object already holds all of it: a reconcile of an
/// unchanged group writes nothing.
async fn apply<K>(ctx: &Context, ns: &str, desired: K) -> Result<K, ReconcileError>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = desired.name_any();
    if let Some(live) = get(&api, &name).await? {
        let want = serde_json::to_value(&desired).expect("objects serialize");
        let have = serde_json::to_value(&live).expect("objects serialize");
        if is_subset(&want, &have) {
            return Ok(live);
        }
    }
    ctx.metrics.writes.inc();
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await
    .map_err(kube_err::<K>("apply", &name))
}

/// Creates the group's token Secret once; an existing token is never replaced, since the running
/// agents hold it.
async fn ensure_token(group: &C19Group, ctx: &Context, ns: &str) -> Result<(), ReconcileError> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let name = Names::of(&group.name_any()).secret;
    if get(&api, &name).await?.is_some() {
        return Ok(());
    }
    let token = random_token().map_err(ReconcileError::Random)?;
    ctx.metrics.writes.inc();
    match api
        .create(
            &PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            },
            &token_secret(group, &token),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(kube_err::<Secret>("create", &name)(e)),
    }
}

fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes the status only when it changed (so the operator never re-triggers itself), with
/// server-side apply so that fields that became empty are removed, and publishes the events of
/// the transitions.
async fn update_status(
    group: &C19Group,
    ctx: &Context,
    ns: &str,
    facts: &Facts,
) -> Result<(), ReconcileError> {
    let name = group.name_any();
    let key = (ns.to_string(), name.clone());
    let observation = ctx.observation(&key);
    let previous = group.status.clone().unwrap_or_default();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status: C19GroupStatus = health::status(&previous, facts, observation.as_ref(), &now);
    if status == previous {
        return Ok(());
    }
    let api: Api<C19Group> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"apiVersion": "c19.dev/v1alpha1", "kind": "C19Group", "status": status});
    ctx.metrics.writes.inc();
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err::<C19Group>("update status of", &name))?;
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let reference = group.object_ref(&());
    for t in health::transitions(&previous, &status) {
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason.into(),
            note: Some(t.note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(group = %name, error = %e, "cannot publish event");
        }
    }
    Ok(())
}

/// Retry with a delay that keeps a failing group from hammering the API server.
pub fn error_policy(group: Arc<C19Group>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(group = %group.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(15))
}
