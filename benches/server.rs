//! The HTTP server, this build (warp filters on c19's connections) against the one it replaced
//! (hyper directly, commit `BASELINE`), side by side in one run: each pinned to CPU 0 with one
//! worker, wrk -t1 on CPU 1, 32 connections, GET of a held key and PUT of one key, the two
//! servers taking turns run after run so that the machine's drift hits both alike. Prints each
//! pair and the median ratio (this build / baseline).
//!
//!   cargo bench --bench server                 # 5 pairs of 3 s runs per operation
//!   C19_BENCH_FULL=1 cargo bench --bench server # 9 pairs of 10 s runs

mod support;

use std::path::Path;

use support::{Group, baseline, common, external, full, percentile, write_report};

/// The last commit before the app and peer APIs moved to warp.
const BASELINE: &str = "84269f4";
const CONNECTIONS: usize = 32;

fn main() {
    let (pairs, secs) = if full() { (9, 10) } else { (5, 3) };
    let old = baseline::binary(BASELINE);
    let new = Path::new(common::BIN);
    println!(
        "pinned: server on CPU 0 (one worker), wrk -t1 on CPU 1, {CONNECTIONS} connections, {secs} s runs; baseline {BASELINE} (hyper) vs this build (warp)"
    );
    println!(
        "{:>10} {:>4} {:>12} {:>9} {:>12} {:>9} {:>8} {:>8}",
        "operation", "pair", "base req/s", "p99 ms", "warp req/s", "p99 ms", "ratio", "p99 x"
    );
    let mut report = Vec::new();
    for (name, path, body) in [
        ("GET", "/key-1", None),
        ("PUT 1 key", "/w-1", Some(r#"{"value":"some value"}"#)),
    ] {
        let mut ratios = Vec::new();
        let mut p99_ratios = Vec::new();
        for pair in 1..=pairs {
            // Alternate which server goes first.
            let order: [(&str, &Path); 2] = if pair % 2 == 1 {
                [("base", &old), ("warp", new)]
            } else {
                [("warp", new), ("base", &old)]
            };
            let mut got = std::collections::HashMap::new();
            for (label, bin) in order {
                let g = Group::start_pinned_binary("server", 102, "0", bin);
                common::put(&g.app(0), "/", r#"{"key-1": {"value": "value 1"}}"#);
                let url = format!("http://{}{path}", g.app(0));
                let Some(r) = external::wrk_pinned("1", &url, CONNECTIONS, secs, body) else {
                    println!("wrk or taskset not installed (scripts/bench-deps)");
                    return;
                };
                got.insert(label, r);
            }
            let (b, w) = (got["base"], got["warp"]);
            let ratio = w.rps / b.rps;
            let p99 = w.p99_ms / b.p99_ms;
            ratios.push(ratio);
            p99_ratios.push(p99);
            println!(
                "{name:>10} {pair:>4} {:>12.0} {:>9.3} {:>12.0} {:>9.3} {ratio:>8.3} {p99:>8.2}",
                b.rps, b.p99_ms, w.rps, w.p99_ms
            );
            report.push(serde_json::json!({
                "operation": name, "pair": pair, "baseline_rps": b.rps, "baseline_p99_ms": b.p99_ms,
                "rps": w.rps, "p99_ms": w.p99_ms, "ratio": ratio, "p99_ratio": p99,
            }));
        }
        ratios.sort_by(f64::total_cmp);
        p99_ratios.sort_by(f64::total_cmp);
        println!(
            "{name:>10}  median throughput ratio {:.3} (range {:.3}–{:.3}), median p99 ratio {:.2}",
            percentile(&ratios, 0.5),
            ratios[0],
            ratios[ratios.len() - 1],
            percentile(&p99_ratios, 0.5)
        );
    }
    write_report(
        "server",
        &serde_json::json!({"baseline": BASELINE, "seconds": secs, "pairs": report}),
    );
}
