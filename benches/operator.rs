//! The operator's per-round costs against real agents on loopback: feeding peer lists to N
//! agents and one health-probe round over N agents. Prints a table and writes JSON.
//!
//!   cargo bench --bench operator            # N = 100, 5 rounds
//!   C19_BENCH_FULL=1 cargo bench --bench operator   # N = 100 and 300, 20 rounds

mod support;

use std::time::{Duration, Instant};

use c19::connection::client::{PeerClient, Traffic};
use c19::operator::agents::{feed_all, probe_all};
use c19::operator::context::OperatorMetrics;
use c19::operator::health::{Member, Observation, observe};
use support::{Group, percentile, write_report};

/// `n` agents fed by the operator, sharing the token `bench`.
fn start(n: usize) -> (Group, Vec<Member>) {
    let token = support::scratch("operator");
    std::fs::create_dir_all(&token).unwrap();
    let token = token.join("token");
    std::fs::write(&token, "bench").unwrap();
    let connection = format!("    token_file: {}\n", token.display());
    let group = Group::start_with("operator", 50, n, &connection, Some("{kind: Operator}"));
    let members = group
        .ips
        .iter()
        .map(|ip| Member {
            name: ip.clone(),
            address: format!("{ip}:4097"),
        })
        .collect();
    (group, members)
}

#[tokio::main]
async fn main() {
    let (sizes, rounds): (&[usize], usize) = if support::full() {
        (&[100, 300], 20)
    } else {
        (&[100], 5)
    };
    let client = PeerClient::new(None, Duration::from_secs(1));
    let mut rows = Vec::new();
    println!(
        "{:>5} {:>14} {:>14} {:>14} {:>14}",
        "N", "feed p50 ms", "feed max ms", "probe p50 ms", "probe max ms"
    );
    for &n in sizes {
        let (_agents, members) = start(n);
        // Wait until every agent answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let obs = probe_round(&client, &members).await;
            if obs.reachable == n || Instant::now() > deadline {
                assert_eq!(obs.reachable, n, "agents did not start");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (mut feeds, mut probes) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let t = Instant::now();
            let failed = feed_all(
                &client,
                Some("bench"),
                &members,
                &members,
                &Traffic::default(),
            )
            .await;
            feeds.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(failed.is_empty());
            let t = Instant::now();
            let obs = probe_round(&client, &members).await;
            probes.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(obs.reachable, n);
        }
        feeds.sort_by(f64::total_cmp);
        probes.sort_by(f64::total_cmp);
        let row = serde_json::json!({
            "agents": n, "rounds": rounds,
            "feed_ms_p50": percentile(&feeds, 0.5), "feed_ms_max": feeds[feeds.len() - 1],
            "probe_ms_p50": percentile(&probes, 0.5), "probe_ms_max": probes[probes.len() - 1],
        });
        println!(
            "{:>5} {:>14.1} {:>14.1} {:>14.1} {:>14.1}",
            n,
            percentile(&feeds, 0.5),
            feeds[feeds.len() - 1],
            percentile(&probes, 0.5),
            probes[probes.len() - 1]
        );
        rows.push(row);
    }
    write_report("operator", &serde_json::Value::Array(rows));
}

/// One health probe of every member, summarized.
async fn probe_round(client: &PeerClient, members: &[Member]) -> Observation {
    let results = probe_all(client, Some("bench"), members, &OperatorMetrics::default()).await;
    observe(&results, None)
}
