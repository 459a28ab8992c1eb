//! What the benchmarks share: real agent processes on loopback, a few HTTP helpers, percentiles,
//! and the JSON report. Quick by default; `C19_BENCH_FULL=1` for the full run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod baseline;
#[path = "../../tests/common/mod.rs"]
pub mod common;
pub mod external;
pub mod plot;

pub fn full() -> bool {
    std::env::var_os("C19_BENCH_FULL").is_some()
}

/// Agents on `127.<net>.x.y`, all listing each other, killed on drop.
pub struct Group {
    pub ips: Vec<String>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Group {
    /// Agents that list each other statically.
    pub fn start(name: &str, net: u8, n: usize, connection: &str) -> Group {
        Group::start_with(name, net, n, connection, None)
    }

    /// Agents with `connection` settings and the given peer provider (default: all of them,
    /// statically).
    pub fn start_with(
        name: &str,
        net: u8,
        n: usize,
        connection: &str,
        provider: Option<&str>,
    ) -> Group {
        Group::launch(name, net, n, connection, provider, None)
    }

    /// One agent without peers on one CPU with one tokio worker (`taskset`), so a load generator
    /// pinned to the other CPU measures the agent's latency rather than the two competing for
    /// both cores.
    pub fn start_pinned(name: &str, net: u8, cpu: &str) -> Group {
        Group::start_pinned_binary(name, net, cpu, Path::new(common::BIN))
    }

    /// [`start_pinned`](Self::start_pinned) with another c19 binary (a baseline build).
    pub fn start_pinned_binary(name: &str, net: u8, cpu: &str, bin: &Path) -> Group {
        let none = Some("{kind: Static, peers: []}");
        Group::launch(name, net, 1, "", none, Some((cpu, bin)))
    }

    fn launch(
        name: &str,
        net: u8,
        n: usize,
        connection: &str,
        provider: Option<&str>,
        pinned: Option<(&str, &Path)>,
    ) -> Group {
        let dir = scratch(name);
        std::fs::create_dir_all(&dir).unwrap();
        let ips: Vec<String> = (0..n)
            .map(|i| format!("127.{net}.{}.{}", i / 250, i % 250 + 1))
            .collect();
        let peers = ips
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let provider = provider
            .map(String::from)
            .unwrap_or_else(|| format!("{{kind: Static, peers: [{peers}]}}"));
        let mut children = Vec::new();
        for ip in &ips {
            let cfg = dir.join(format!("{ip}.yaml"));
            std::fs::write(
                &cfg,
                format!(
                    "spec:\n  agent: {{bind: {ip}}}\n  connection:\n    bind: {ip}\n{connection}    peer_provider: {provider}\n"
                ),
            )
            .unwrap();
            let mut cmd = match pinned {
                Some((cpu, bin)) => {
                    let mut c = Command::new("taskset");
                    c.args(["-c", cpu])
                        .arg(bin)
                        .env("TOKIO_WORKER_THREADS", "1");
                    c
                }
                None => Command::new(common::BIN),
            };
            children.push(
                cmd.args(["agent", "--config"])
                    .arg(&cfg)
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap(),
            );
        }
        for ip in &ips {
            common::wait_for(Duration::from_secs(20), || {
                common::get(&format!("{ip}:4097"), "/readyz").0 == 200
            })
            .unwrap_or_else(|_| panic!("agent {ip} did not start"));
        }
        Group { ips, children, dir }
    }

    pub fn app(&self, i: usize) -> String {
        format!("{}:3097", self.ips[i])
    }

    pub fn peer(&self, i: usize) -> String {
        format!("{}:4097", self.ips[i])
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.children[i].id()
    }

    /// A counter from an agent's /metrics.
    pub fn metric(&self, i: usize, name: &str) -> f64 {
        let (_, text) = common::get(&self.peer(i), "/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn keys(&self, i: usize) -> u64 {
        self.metric(i, "c19_keys ") as u64
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The scratch directory of a benchmark run.
pub fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("c19-bench-{name}-{}", std::process::id()))
}

/// Resident memory of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Polls `f` every millisecond until it holds; returns the time taken, or `None` after `limit`.
pub fn time_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Writes a report next to the other build outputs and says where.
pub fn write_report(name: &str, value: &serde_json::Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
    println!("written {}", path.display());
}
