//! The operator's own HTTP endpoint: liveness, readiness (caches synced, or standing by for the
//! Lease) and Prometheus metrics.

use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Method, StatusCode};

use std::collections::{BTreeSet, HashMap, HashSet};

use super::context::{Context, OperatorMetrics};
use super::health::Observation;
use super::members::GroupKey;
use crate::http::{self, Request, Response};
use crate::metrics::Exposition;

pub fn handle(ctx: &Context, ready: &AtomicBool, req: Request) -> Response {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/healthz") => http::text("ok\n".into()),
        (&Method::GET, "/readyz") if ready.load(Ordering::Relaxed) => http::text("ready\n".into()),
        (&Method::GET, "/readyz") => {
            http::error(StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet")
        }
        (&Method::GET, "/metrics") => http::text(metrics(ctx)),
        (&Method::GET, _) => http::error(StatusCode::NOT_FOUND, "no such endpoint"),
        _ => http::method_not_allowed("GET"),
    }
}

fn metrics(ctx: &Context) -> String {
    // Rendered under the locks (no copies); nothing takes both elsewhere.
    let observations = ctx.observations.lock().expect("observations lock");
    let rolling_out = ctx.rolling_out.lock().expect("rollouts lock");
    exposition(&ctx.metrics, &observations, &rolling_out)
}

/// The operator's metrics: totals, then one sample per group and family, labelled `namespace`
/// and `c19_group` (the chart's ServiceMonitor honours these labels over the scrape target's).
pub fn exposition(
    m: &OperatorMetrics,
    observations: &HashMap<GroupKey, Observation>,
    rolling_out: &HashSet<GroupKey>,
) -> String {
    let converged = observations.values().filter(|o| o.converged()).count();
    let groups: BTreeSet<&GroupKey> = observations.keys().chain(rolling_out).collect();
    let per_group = |value: &dyn Fn(Option<&Observation>, bool) -> Option<f64>| {
        groups
            .iter()
            .filter_map(|key| {
                let v = value(observations.get(*key), rolling_out.contains(*key))?;
                Some((
                    format!("namespace=\"{}\",c19_group=\"{}\"", key.0, key.1),
                    v,
                ))
            })
            .collect::<Vec<_>>()
    };
    let family = |e: &mut Exposition, name: &str, help: &str, samples: Vec<(String, f64)>| {
        let samples: Vec<(&str, f64)> = samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        e.family(name, help, "gauge", &samples);
    };
    let mut e = Exposition::default();
    e.counter(
        "c19_operator_reconciles_total",
        "Reconciles run.",
        m.reconciles.get(),
    )
    .counter(
        "c19_operator_reconcile_errors_total",
        "Reconciles that failed.",
        m.reconcile_errors.get(),
    )
    .family(
        "c19_operator_reconcile_duration_seconds_total",
        "Time spent reconciling, in seconds (divide by reconciles for the mean).",
        "counter",
        &[("", m.reconcile_micros.get() as f64 / 1e6)],
    )
    .counter(
        "c19_operator_writes_total",
        "Writes to the API server (applies, creates, deletes, status).",
        m.writes.get(),
    )
    .counter(
        "c19_operator_probes_total",
        "Agent health probes sent.",
        m.probes.get(),
    )
    .counter(
        "c19_operator_probes_failed_total",
        "Agent health probes that got no answer.",
        m.probes_failed.get(),
    )
    .histogram(
        "c19_operator_probe_duration_seconds",
        "How long agents took to answer health probes (timeouts included).",
        &m.probe_latency,
    )
    .counter(
        "c19_operator_peer_feeds_total",
        "Peer lists sent to agents.",
        m.peer_feeds.get(),
    )
    .counter(
        "c19_operator_peer_feeds_failed_total",
        "Peer lists agents did not take.",
        m.peer_feeds_failed.get(),
    )
    .gauge(
        "c19_operator_groups",
        "Groups observed.",
        observations.len() as f64,
    )
    .gauge(
        "c19_operator_groups_converged",
        "Groups whose members hold the same state.",
        converged as f64,
    );
    let flag = |b: bool| f64::from(u8::from(b));
    family(
        &mut e,
        "c19_operator_group_converged",
        "1 when every member answered its last probe and all hold the same state.",
        per_group(&|o, _| Some(flag(o.is_some_and(Observation::converged)))),
    );
    family(
        &mut e,
        "c19_operator_group_members",
        "Members (serving endpoints) probed in the last round.",
        per_group(&|o, _| Some(o.map_or(0, |o| o.members) as f64)),
    );
    family(
        &mut e,
        "c19_operator_group_members_unreachable",
        "Members that did not answer the last probe.",
        per_group(&|o, _| Some(o.map_or(0, |o| o.unreachable.len()) as f64)),
    );
    family(
        &mut e,
        "c19_operator_group_members_divergent",
        "Members whose state differed from the majority's in the last probe round.",
        per_group(&|o, _| Some(o.map_or(0, |o| o.divergent.len()) as f64)),
    );
    family(
        &mut e,
        "c19_operator_group_keys",
        "Live keys held by the majority of members.",
        per_group(&|o, _| o.and_then(|o| o.keys).map(|k| k as f64)),
    );
    family(
        &mut e,
        "c19_operator_group_rolling_out",
        "1 while the group's Deployment rolls out.",
        per_group(&|_, rolling| Some(flag(rolling))),
    );
    e.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_gets_its_samples() {
        let shop = ("shop".to_string(), "web".to_string());
        let new = ("shop".to_string(), "new".to_string());
        let observations = HashMap::from([(
            shop.clone(),
            Observation {
                members: 3,
                reachable: 2,
                keys: Some(10),
                unreachable: vec!["10.0.0.3:4097".into()],
                ..Observation::default()
            },
        )]);
        let text = exposition(
            &OperatorMetrics::default(),
            &observations,
            &HashSet::from([new]),
        );
        for line in [
            "c19_operator_groups 1",
            "c19_operator_group_converged{namespace=\"shop\",c19_group=\"web\"} 0",
            "c19_operator_group_members{namespace=\"shop\",c19_group=\"web\"} 3",
            "c19_operator_group_members_unreachable{namespace=\"shop\",c19_group=\"web\"} 1",
            "c19_operator_group_keys{namespace=\"shop\",c19_group=\"web\"} 10",
            "c19_operator_group_rolling_out{namespace=\"shop\",c19_group=\"web\"} 0",
            "c19_operator_group_rolling_out{namespace=\"shop\",c19_group=\"new\"} 1",
            "c19_operator_group_members{namespace=\"shop\",c19_group=\"new\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(!text.contains("c19_operator_group_keys{namespace=\"shop\",c19_group=\"new\"}"));
    }
}
