//! Whether a group's Deployment is rolling out, read the way `kubectl rollout status` reads it,
//! so that the group's status can say so (`Progressing`) and claim `Converged` only after it.

use k8s_openapi::api::apps::v1::Deployment;

/// `Some(progress)` while the Deployment rolls out: its controller has not seen the latest
/// spec yet, or some pods are not updated, old ones remain, or updated ones are not available.
pub fn in_progress(d: &Deployment) -> Option<String> {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(s) = d.status.as_ref() else {
        return Some("waiting for the Deployment controller".into());
    };
    if d.metadata.generation > s.observed_generation {
        return Some("waiting for the Deployment controller".into());
    }
    let updated = s.updated_replicas.unwrap_or(0);
    let total = s.replicas.unwrap_or(0);
    let available = s.available_replicas.unwrap_or(0);
    if updated < wanted {
        return Some(format!("{updated} of {wanted} pods updated"));
    }
    if total > updated {
        return Some(format!("{} old pods pending termination", total - updated));
    }
    if available < updated {
        return Some(format!("{available} of {updated} updated pods available"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn a_rollout_is_over_when_every_pod_is_updated_and_available() {
        let done = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3});
        assert_eq!(in_progress(&deployment(2, done.clone())), None);
        assert!(
            in_progress(&deployment(3, done))
                .unwrap()
                .contains("controller")
        );
        let cases = [
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1, "availableReplicas": 3}),
                "1 of 3 pods updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                "1 old pods pending termination",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                "2 of 3 updated pods available",
            ),
        ];
        for (status, want) in cases {
            assert_eq!(in_progress(&deployment(2, status)).as_deref(), Some(want));
        }
    }
}
