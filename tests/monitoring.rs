//! The chart's alerting rules and Grafana dashboard, checked with Prometheus's own `promtool`
//! (built by `scripts/promtool`): the rules pass their unit tests on synthetic series, every
//! dashboard query parses, and both use only metric names a real agent and the operator export.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use c19::operator::context::OperatorMetrics;
use c19::operator::endpoint::exposition;
use c19::operator::health::Observation;
use common::*;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn chart_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("charts/c19-operator/files").join(name))
        .unwrap_or_else(|e| panic!("read {name}: {e}"))
}

fn promtool_bin() -> PathBuf {
    if let Ok(p) = std::env::var("C19_PROMTOOL") {
        return PathBuf::from(p);
    }
    let out = Command::new(Path::new(ROOT).join("scripts/promtool"))
        .output()
        .expect("scripts/promtool runs");
    assert!(
        out.status.success(),
        "scripts/promtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

/// Runs promtool in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(promtool_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let tests = Path::new(ROOT).join("tests/monitoring");
    let checked = promtool(
        &tests,
        &[
            "check",
            "rules",
            "../../charts/c19-operator/files/alerts.yaml",
        ],
    );
    assert!(checked.contains("SUCCESS: 7 rules found"), "{checked}");
    let tested = promtool(&tests, &["test", "rules", "alerts_test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every PromQL expression of the dashboard: panel targets, then the variables' metric
/// selectors, with Grafana's variables replaced by what a query would hold.
fn dashboard_queries() -> Vec<String> {
    let dashboard: Value = serde_json::from_str(&chart_file("dashboard.json")).unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"]["query"].as_str() {
            let selector = q
                .strip_prefix("label_values(")
                .and_then(|rest| rest.rsplit_once(','))
                .map(|(selector, _)| selector.to_string())
                .unwrap_or_else(|| {
                    panic!("variable query {q} is not label_values(selector, label)")
                });
            queries.push(selector);
        }
    }
    assert!(queries.len() > 20, "{queries:?}");
    queries
        .into_iter()
        .map(|q| {
            q.replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$group", ".*")
        })
        .collect()
}

#[test]
fn every_dashboard_query_parses() {
    let dir = TempDir::new("dashboard-queries");
    let rules: Vec<Value> = dashboard_queries()
        .into_iter()
        .enumerate()
        .map(|(i, expr)| serde_json::json!({"record": format!("c19:dashboard_query_{i}"), "expr": expr}))
        .collect();
    let file = dir.file(
        "queries.yaml",
        &serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    );
    let checked = promtool(&dir.0, &["check", "rules", file.to_str().unwrap()]);
    assert!(checked.contains("SUCCESS"), "{checked}");
}

/// The metric names an exposition declares (`# TYPE` lines), with a histogram's series.
fn declared(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name.to_string());
        }
    }
    names
}

/// The metric names a PromQL expression selects: identifiers outside strings, label matchers,
/// ranges and grouping clauses that are neither functions, keywords nor numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i]))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if GROUPING.contains(&word.as_str()) {
                    // A grouping clause's label list is no metric.
                    if next == Some(&'(') {
                        while i < chars.len() && chars[i] != ')' {
                            i += 1;
                        }
                    }
                } else if !KEYWORDS.contains(&word.as_str()) && next != Some(&'(') {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn the_expression_scanner_finds_metrics_only() {
    let names = metric_names(
        r#"sum by (pod, le) (rate(c19_a_total{namespace=~"x", c19_group="y"}[5m])) / on (pod) group_left c19_b > 0.9 and c19_c unless bool 1e3"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["c19_a_total", "c19_b", "c19_c"]
    );
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let dir = TempDir::new("exported-metrics");
    let agent = Agent::start(&dir, "127.44.0.1", &config("127.44.0.1", &[], 100, ""));
    let (status, scraped) = get(&agent.peer(), "/metrics");
    assert_eq!(status, 200);
    let group = ("shop".to_string(), "web".to_string());
    let operator = exposition(
        &OperatorMetrics::default(),
        &[(
            group.clone(),
            Observation {
                members: 1,
                keys: Some(1),
                ..Observation::default()
            },
        )]
        .into(),
        &[group].into(),
    );
    let exported: BTreeSet<String> = declared(&scraped)
        .into_iter()
        .chain(declared(&operator))
        .collect();

    let alerts: Value = serde_yaml::from_str(&chart_file("alerts.yaml")).unwrap();
    let alert_exprs = alerts["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["expr"].as_str().unwrap().to_string());
    let mut used = BTreeSet::new();
    for expr in dashboard_queries().into_iter().chain(alert_exprs) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "no metric found in {expr}");
        for name in names {
            assert!(
                exported.contains(&name),
                "{name} (in {expr}) is exported by neither the agent nor the operator; they export {exported:?}"
            );
            used.insert(name);
        }
    }
    // The dashboard covers what the issue asks for: convergence, members, keys, writes, bytes,
    // failures, sync volume, probe latency, reconciles and errors.
    for name in [
        "c19_operator_group_converged",
        "c19_operator_group_members",
        "c19_keys",
        "c19_writes_total",
        "c19_bytes_sent_total",
        "c19_pushes_failed_total",
        "c19_pulls_failed_total",
        "c19_sync_bytes_total",
        "c19_operator_probe_duration_seconds_bucket",
        "c19_operator_reconciles_total",
        "c19_operator_reconcile_errors_total",
    ] {
        assert!(used.contains(name), "the dashboard shows no {name}");
    }
}
