//! Bulk writes, bytes on the wire and memory: keys written at one agent (one batch, or one key per
//! request), time until every agent holds them, body bytes sent between agents per key per
//! receiving agent (from the agents' counters, checked against the loopback interface's counters:
//! the bench re-runs itself in a network namespace of its own, where only it and its agents use
//! `lo`), the idle cost, and resident memory per key on a receiving agent.
//!
//!   cargo bench --bench bulk                  # 10k and 100k keys on N = 3 and 10; memory at 100k
//!   C19_BENCH_FULL=1 cargo bench --bench bulk  # also one key per request at 100k; memory at 1M

mod support;

use std::time::{Duration, Instant};

use support::common::put;
use support::{Group, full, rss, time_until, write_report};

const CONNECTION: &str = "    push_interval: 100\n    pull_interval: 60000\n    timeout: 2000\n";

fn batch(from: usize, to: usize) -> String {
    let entries: Vec<String> = (from..to)
        .map(|i| format!(r#""key-{i:07}":{{"value":"v{i}"}}"#))
        .collect();
    format!("{{{}}}", entries.join(","))
}

/// Writes `keys` keys at agent 0 in batches of `per_request`; returns the requests and body bytes
/// sent.
fn write(g: &Group, keys: usize, per_request: usize) -> (usize, usize) {
    let (mut requests, mut bytes) = (0, 0);
    let mut from = 0;
    while from < keys {
        let to = (from + per_request).min(keys);
        let body = if per_request == 1 {
            format!(r#"{{"value":"v{from}"}}"#)
        } else {
            batch(from, to)
        };
        let path = if per_request == 1 {
            format!("/key-{from:07}")
        } else {
            "/".to_string()
        };
        let (status, text) = put(&g.app(0), &path, &body);
        assert_eq!(status, 204, "{text}");
        requests += 1;
        bytes += body.len() + path.len();
        from = to;
    }
    (requests, bytes)
}

const INSIDE: &str = "C19_BENCH_NETNS";

/// Re-runs this bench in a network namespace of its own (`unshare --net`, needs root), so the
/// loopback interface carries only its traffic; `None` inside, or when that is not possible.
fn reenter() -> Option<std::process::ExitStatus> {
    if std::env::var_os(INSIDE).is_some() {
        return None;
    }
    let possible = std::process::Command::new("unshare")
        .args(["--net", "ip", "link", "set", "lo", "up"])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !possible {
        return None;
    }
    let me = std::env::current_exe().ok()?;
    std::process::Command::new("unshare")
        .args(["--net", "--fork", "--kill-child", "sh", "-c"])
        .arg("ip link set lo up && exec \"$0\" \"$@\"")
        .arg(me)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .status()
        .ok()
}

/// Bytes sent on the loopback interface, when this process has it to itself. Read from
/// /proc/self/net/dev, which follows the reader's network namespace (sysfs shows the mounter's).
fn lo_bytes() -> Option<f64> {
    std::env::var_os(INSIDE)?;
    let dev = std::fs::read_to_string("/proc/self/net/dev").ok()?;
    let line = dev.lines().find_map(|l| l.trim().strip_prefix("lo:"))?;
    // Receive: bytes packets errs drop fifo frame compressed multicast; then transmit bytes.
    line.split_whitespace().nth(8)?.parse().ok()
}

/// Keys an agent holds, from its digest report (a small answer, so polling costs little).
fn keys_at(g: &Group, i: usize) -> u64 {
    let (_, body) = support::common::get(&g.peer(i), "/c19/digest");
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["keys"].as_u64())
        .unwrap_or(0)
}

fn sent_bytes(g: &Group) -> f64 {
    (0..g.ips.len())
        .map(|i| g.metric(i, "c19_bytes_sent_total "))
        .sum()
}

fn main() {
    let mut rows = Vec::new();
    let mut cases: Vec<(usize, usize, usize)> = vec![
        (10_000, 3, 10_000),
        (10_000, 10, 10_000),
        (10_000, 3, 1),
        (100_000, 3, 50_000),
        (100_000, 10, 50_000),
    ];
    if full() {
        cases.push((100_000, 3, 1));
    }
    if let Some(status) = reenter() {
        std::process::exit(status.code().unwrap_or(1));
    }
    if lo_bytes().is_none() {
        println!("(no network namespace of our own: loopback interface check skipped)");
    }
    println!(
        "{:>8} {:>4} {:>12} {:>12} {:>16} {:>14} {:>10}",
        "keys", "N", "per request", "all hold, s", "body B/key/recv", "lo B/key/recv", "write, s"
    );
    for (idx, &(keys, n, per_request)) in cases.iter().enumerate() {
        let g = Group::start("bulk", 70 + idx as u8, n, CONNECTION);
        std::thread::sleep(Duration::from_millis(500));
        // What one request costs on the interface beyond its bodies (a fresh connection, headers,
        // TCP/IP), from polls of the digest, to take the bench's own share out.
        let digest_len = support::common::get(&g.peer(0), "/c19/digest").1.len() as f64;
        let calibrate = lo_bytes();
        for _ in 0..50 {
            (0..n).for_each(|i| {
                keys_at(&g, i);
            });
        }
        let per_poll = calibrate.and_then(|c| Some((lo_bytes()? - c) / (50 * n) as f64));
        let before = sent_bytes(&g);
        let lo_start = lo_bytes();
        let start = Instant::now();
        let (requests, body_bytes) = write(&g, keys, per_request);
        let written = start.elapsed();
        let mut polls = 0usize;
        let all = time_until(Duration::from_secs(120), || {
            std::thread::sleep(Duration::from_millis(4));
            (0..n).all(|i| {
                polls += 1;
                keys_at(&g, i) == keys as u64
            })
        });
        let total = all.map(|d| d.as_secs_f64() + written.as_secs_f64());
        // Let the last syncs settle before reading the counters.
        std::thread::sleep(Duration::from_millis(500));
        let lo_end = lo_bytes();
        let receivers = keys as f64 * (n - 1) as f64;
        let wire = (sent_bytes(&g) - before) / receivers;
        let lo = match (lo_start, lo_end, per_poll) {
            (Some(a), Some(b), Some(p)) => {
                let own = polls as f64 * p + requests as f64 * (p - digest_len) + body_bytes as f64;
                Some((b - a - own) / receivers)
            }
            _ => None,
        };
        println!(
            "{:>8} {:>4} {:>12} {:>12} {:>16.0} {:>14} {:>10.2}",
            keys,
            n,
            per_request,
            total.map_or("timeout".into(), |t| format!("{t:.2}")),
            wire,
            lo.map_or("—".into(), |b| format!("{b:.0}")),
            written.as_secs_f64()
        );
        rows.push(serde_json::json!({
            "keys": keys, "agents": n, "keys_per_request": per_request,
            "seconds_until_all_hold": total, "write_seconds": written.as_secs_f64(),
            "wire_bytes_per_key_per_receiver": wire,
            "interface_bytes_per_key_per_receiver": lo,
        }));
    }

    // Idle cost: what a converged group of 10 sends per agent per second.
    let g = Group::start("idle", 90, 10, CONNECTION);
    write(&g, 1000, 1000);
    time_until(Duration::from_secs(30), || {
        (0..10).all(|i| keys_at(&g, i) == 1000)
    });
    std::thread::sleep(Duration::from_secs(1));
    let before = sent_bytes(&g);
    std::thread::sleep(Duration::from_secs(5));
    let idle = (sent_bytes(&g) - before) / 10.0 / 5.0;
    println!("idle: {idle:.0} body bytes sent per agent per second (N = 10, push_interval 100 ms)");
    drop(g);

    // Memory per key on a receiving agent.
    let mut memory = Vec::new();
    let sizes: &[usize] = if full() {
        &[100_000, 1_000_000]
    } else {
        &[100_000]
    };
    for (idx, &keys) in sizes.iter().enumerate() {
        let g = Group::start("memory", 95 + idx as u8, 2, CONNECTION);
        std::thread::sleep(Duration::from_millis(300));
        let base = rss(g.pid(1));
        write(&g, keys, 50_000);
        time_until(Duration::from_secs(300), || keys_at(&g, 1) == keys as u64)
            .expect("the receiver holds every key");
        std::thread::sleep(Duration::from_millis(500));
        let per_key = (rss(g.pid(1)) as f64 - base as f64) / keys as f64;
        println!(
            "memory: {per_key:.0} bytes of resident memory per small key at {keys} keys (receiving agent)"
        );
        memory.push(serde_json::json!({"keys": keys, "rss_bytes_per_key": per_key}));
    }
    write_report(
        "bulk",
        &serde_json::json!({"bulk": rows, "idle_bytes_per_agent_per_second": idle, "memory": memory}),
    );
}
