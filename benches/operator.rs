//! The operator's per-round costs against real agents on loopback: feeding peer lists to N
//! agents and one health-probe round over N agents. Prints a table and writes JSON.
//!
//!   cargo bench --bench operator            # N = 100, 5 rounds
//!   C19_BENCH_FULL=1 cargo bench --bench operator   # N = 100 and 300, 20 rounds

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use c19::connection::client::{PeerClient, Traffic};
use c19::operator::agents::{feed_all, probe_all};
use c19::operator::health::{Member, observe};

struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_c19"))
}

fn start(n: usize, dir: &std::path::Path) -> (Agents, Vec<Member>) {
    let token = dir.join("token");
    std::fs::write(&token, "bench").unwrap();
    let mut children = Vec::new();
    let mut members = Vec::new();
    for i in 0..n {
        let ip = format!("127.50.{}.{}", i / 250, i % 250 + 1);
        let cfg = dir.join(format!("{ip}.yaml"));
        std::fs::write(
            &cfg,
            format!("spec:\n  agent: {{bind: {ip}}}\n  connection:\n    bind: {ip}\n    token_file: {}\n    peer_provider: {{kind: Operator}}\n", token.display()),
        )
        .unwrap();
        let child = Command::new(bin())
            .args(["agent", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
        members.push(Member {
            name: ip.clone(),
            address: format!("{ip}:4097"),
        });
    }
    (Agents(children), members)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    assert!(
        bin().exists(),
        "build the agent first: cargo build --release --bin c19"
    );
    let full = std::env::var_os("C19_BENCH_FULL").is_some();
    let (sizes, rounds): (&[usize], usize) = if full { (&[100, 300], 20) } else { (&[100], 5) };
    let dir = std::env::temp_dir().join(format!("c19-bench-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let client = PeerClient::new(None, Duration::from_secs(1));
    let mut rows = Vec::new();
    println!(
        "{:>5} {:>14} {:>14} {:>14} {:>14}",
        "N", "feed p50 ms", "feed max ms", "probe p50 ms", "probe max ms"
    );
    for &n in sizes {
        let (_agents, members) = start(n, &dir);
        // Wait until every agent answers.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let obs = observe(
                &probe_all(&client, Some("bench"), &members, &Traffic::default()).await,
                None,
            );
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
            let obs = observe(
                &probe_all(&client, Some("bench"), &members, &Traffic::default()).await,
                None,
            );
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
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/operator.json");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, serde_json::to_vec_pretty(&rows).unwrap()).unwrap();
    println!("written {}", out.display());
    let _ = std::fs::remove_dir_all(&dir);
}
