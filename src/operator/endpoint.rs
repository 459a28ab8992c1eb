//! The operator's own HTTP endpoint: liveness, readiness (caches synced, or standing by for the
//! Lease) and Prometheus metrics.

use std::sync::atomic::{AtomicBool, Ordering};

use hyper::{Method, StatusCode};

use super::context::Context;
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
    let m = &ctx.metrics;
    let (groups, converged) = {
        let obs = ctx.observations.lock().expect("observations lock");
        (obs.len(), obs.values().filter(|o| o.converged()).count())
    };
    Exposition::default()
        .counter(
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
        .gauge("c19_operator_groups", "Groups observed.", groups as f64)
        .gauge(
            "c19_operator_groups_converged",
            "Groups whose members hold the same state.",
            converged as f64,
        )
        .finish()
}
