//! `c19 crd --apply`: installs or upgrades the C19Group CRD with server-side apply, and waits
//! until the API server serves it. The Helm chart runs it as a pre-upgrade hook, since Helm
//! installs `crds/` only on the first install and never upgrades it.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResourceExt};

use super::crd::C19Group;

/// The field manager of the CRD, so that later applies own the fields they set.
const FIELD_MANAGER: &str = "c19-crd";
/// How long the API server may take to establish the CRD.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot load a kubeconfig or in-cluster config: {0}")]
    Config(#[source] kube::Error),
    #[error("cannot apply the C19Group CRD: {0}")]
    Apply(#[source] kube::Error),
    #[error("the C19Group CRD was applied but not established within {0:?}")]
    NotEstablished(Duration),
}

/// Whether a CRD's `Established` condition is true.
pub fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Applies the CRD this binary defines and waits until it is established.
pub async fn apply_crd() -> Result<(), InstallError> {
    let client = Client::try_default().await.map_err(InstallError::Config)?;
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let crd = C19Group::crd();
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(&crd))
        .await
        .map_err(InstallError::Apply)?;
    let deadline = tokio::time::Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        if api
            .get(&name)
            .await
            .map_err(InstallError::Apply)
            .map(|c| established(&c))?
        {
            tracing::info!(crd = %name, "CRD applied and established");
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(InstallError::NotEstablished(ESTABLISH_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_reads_the_condition() {
        let crd = |status: &str| -> CustomResourceDefinition {
            let mut crd = C19Group::crd();
            crd.status = Some(
                serde_json::from_value(serde_json::json!({
                    "conditions": [{"type": "Established", "status": status}]
                }))
                .unwrap(),
            );
            crd
        };
        assert!(established(&crd("True")));
        assert!(!established(&crd("False")));
        assert!(!established(&C19Group::crd()));
    }
}
