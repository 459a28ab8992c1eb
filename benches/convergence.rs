//! Convergence: time until a write at a random agent is readable on every agent, for a new key,
//! an overwrite, and two agents writing the same key with the same `ts`. Reported in ms and in
//! push rounds next to the push-pull bound log2(N) + ln(N).
//!
//!   cargo bench --bench convergence                 # N = 3, 10, 30; 5 trials each
//!   C19_BENCH_FULL=1 cargo bench --bench convergence # N = 3, 10, 30, 100; 20 trials each

mod support;

use std::time::Duration;

use support::common::{get, put};
use support::{Group, full, percentile, time_until, write_report};

const PUSH_MS: u64 = 100;
const PULL_MS: u64 = 60_000;

fn value_at(g: &Group, i: usize, key: &str) -> Option<serde_json::Value> {
    let (status, body) = get(&g.app(i), &format!("/{key}"));
    (status == 200)
        .then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap()["value"].clone())
}

/// Time until every agent reads `want` at `key`.
fn spread(g: &Group, key: &str, want: &serde_json::Value) -> Option<Duration> {
    let mut pending: Vec<usize> = (0..g.ips.len()).collect();
    time_until(Duration::from_millis(PULL_MS + 5000), || {
        pending.retain(|&i| value_at(g, i, key).as_ref() != Some(want));
        pending.is_empty()
    })
}

fn main() {
    let sizes: &[usize] = if full() {
        &[3, 10, 30, 100]
    } else {
        &[3, 10, 30]
    };
    let trials = if full() { 20 } else { 5 };
    let mut rng = fastrand::Rng::with_seed(19);
    let mut rows = Vec::new();
    println!("push_interval {PUSH_MS} ms, pull_interval {PULL_MS} ms, r0 3, {trials} trials");
    println!(
        "{:>4} {:>10} {:>9} {:>9} {:>11} {:>11} {:>8} {:>11}",
        "N", "case", "p50 ms", "max ms", "p50 rounds", "max rounds", "theory", "full pulls"
    );
    let mut cdfs = Vec::new();
    for (idx, &n) in sizes.iter().enumerate() {
        let mut all_times = Vec::new();
        let g = Group::start(
            "convergence",
            60 + idx as u8,
            n,
            &format!(
                "    push_interval: {PUSH_MS}\n    pull_interval: {PULL_MS}\n    timeout: 500\n"
            ),
        );
        std::thread::sleep(Duration::from_millis(300));
        for case in ["new key", "overwrite", "same ts"] {
            let mut times = Vec::new();
            let mut pulls = 0;
            for t in 0..trials {
                let key = format!("{}-{t}", case.replace(' ', "-"));
                let writer = rng.usize(0..n);
                let want = match case {
                    "new key" => {
                        put(
                            &g.app(writer),
                            "/",
                            &format!(r#"{{"{key}": {{"value": {t}}}}}"#),
                        );
                        serde_json::json!(t)
                    }
                    "overwrite" => {
                        put(
                            &g.app(writer),
                            "/",
                            &format!(r#"{{"{key}": {{"value": "old"}}}}"#),
                        );
                        spread(&g, &key, &serde_json::json!("old")).expect("first version spreads");
                        let other = (writer + 1 + rng.usize(0..n - 1)) % n;
                        put(
                            &g.app(other),
                            "/",
                            &format!(r#"{{"{key}": {{"value": "new"}}}}"#),
                        );
                        serde_json::json!("new")
                    }
                    _ => {
                        let other = (writer + 1 + rng.usize(0..n - 1)) % n;
                        let ts = 1_700_000_000_000u64 + t as u64;
                        put(
                            &g.app(writer),
                            "/",
                            &format!(r#"{{"{key}": {{"value": "apple", "ts": {ts}}}}}"#),
                        );
                        put(
                            &g.app(other),
                            "/",
                            &format!(r#"{{"{key}": {{"value": "zebra", "ts": {ts}}}}}"#),
                        );
                        serde_json::json!("zebra")
                    }
                };
                match spread(&g, &key, &want) {
                    Some(d) => {
                        if d > Duration::from_millis(PULL_MS) {
                            pulls += 1;
                        }
                        times.push(d.as_secs_f64() * 1e3);
                    }
                    None => pulls += 1,
                }
            }
            times.sort_by(f64::total_cmp);
            all_times.extend(&times);
            let theory = (n as f64).log2() + (n as f64).ln();
            let (p50, max) = (
                percentile(&times, 0.5),
                times.last().copied().unwrap_or(f64::NAN),
            );
            println!(
                "{:>4} {:>10} {:>9.0} {:>9.0} {:>11.1} {:>11.1} {:>8.1} {:>11}",
                n,
                case,
                p50,
                max,
                p50 / PUSH_MS as f64,
                max / PUSH_MS as f64,
                theory,
                pulls
            );
            rows.push(serde_json::json!({
                "agents": n, "case": case, "trials": trials, "p50_ms": p50, "max_ms": max,
                "p50_rounds": p50 / PUSH_MS as f64, "max_rounds": max / PUSH_MS as f64,
                "theory_rounds": theory, "needed_full_pull": pulls,
            }));
        }
        all_times.sort_by(f64::total_cmp);
        cdfs.push(support::plot::Series {
            name: format!("N = {n}"),
            points: support::plot::cdf(&all_times),
        });
    }
    support::plot::lines(
        "convergence",
        &format!("Write readable on every agent (push {PUSH_MS} ms, r0 3, all cases)"),
        "milliseconds after the write",
        "fraction of trials",
        &cdfs,
    );
    write_report(
        "convergence",
        &serde_json::json!({"push_interval_ms": PUSH_MS, "pull_interval_ms": PULL_MS, "rows": rows}),
    );
}
