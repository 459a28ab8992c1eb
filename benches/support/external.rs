//! Closed-loop load generators from Debian (`scripts/bench-deps`), when installed: wrk against an
//! agent, and Redis with redis-benchmark as the reference line. Both keep a fixed number of
//! requests in flight, so their latencies understate tails (coordinated omission); the Rust
//! generator's fixed-rate runs give the honest tail.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Throughput and latency of one closed-loop run.
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

fn installed(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `wrk -t2 -c<connections> --latency` against `url`; `put_body` makes it a PUT of that body.
pub fn wrk(url: &str, connections: usize, secs: u64, put_body: Option<&str>) -> Option<ClosedLoop> {
    if !installed("wrk") {
        return None;
    }
    run_wrk(Command::new("wrk"), "-t2", url, connections, secs, put_body)
}

/// `wrk -t1` on CPU `cpu` (`taskset`): against an agent pinned to the other CPU.
pub fn wrk_pinned(
    cpu: &str,
    url: &str,
    connections: usize,
    secs: u64,
    put_body: Option<&str>,
) -> Option<ClosedLoop> {
    if !installed("wrk") || !installed("taskset") {
        return None;
    }
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu, "wrk"]);
    run_wrk(cmd, "-t1", url, connections, secs, put_body)
}

fn run_wrk(
    mut cmd: Command,
    threads: &str,
    url: &str,
    connections: usize,
    secs: u64,
    put_body: Option<&str>,
) -> Option<ClosedLoop> {
    cmd.args([
        threads,
        &format!("-c{connections}"),
        &format!("-d{secs}s"),
        "--latency",
    ]);
    let script = super::scratch("wrk.lua");
    if let Some(body) = put_body {
        std::fs::write(
            &script,
            format!("wrk.method = \"PUT\"\nwrk.body = '{body}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"),
        )
        .ok()?;
        cmd.arg("-s").arg(&script);
    }
    let out = cmd.arg(url).output().ok()?;
    let _ = std::fs::remove_file(&script);
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn parse_wrk(text: &str) -> Option<ClosedLoop> {
    let duration_ms = |v: &str| -> Option<f64> {
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1e3,
            "ms" => n,
            "s" => n * 1e3,
            _ => return None,
        })
    };
    let percentile = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p))
            .and_then(|v| duration_ms(v.trim()))
    };
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(ClosedLoop {
        rps,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

/// A throwaway redis-server on loopback (on CPU `cpu` when given), killed on drop.
pub struct Redis {
    child: Child,
    port: &'static str,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    /// `None` when Redis (or, for a pinned server, `taskset`) is not installed.
    pub fn start(port: &'static str, cpu: Option<&str>) -> Option<Redis> {
        if !installed("redis-server") || !installed("redis-benchmark") {
            return None;
        }
        let mut cmd = match cpu {
            Some(cpu) if installed("taskset") => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu, "redis-server"]);
                c
            }
            Some(_) => return None,
            None => Command::new("redis-server"),
        };
        let child = cmd
            .args(["--port", port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Redis { child, port };
        super::common::wait_for(Duration::from_secs(5), || {
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
        })
        .ok()?;
        Some(server)
    }

    /// redis-benchmark over `connections` clients on 10k random keys with 16-byte values:
    /// `tests` (`set,get`) with `threads` client threads, on CPU `cpu` when given.
    pub fn bench(
        &self,
        tests: &str,
        connections: usize,
        requests: usize,
        threads: usize,
        cpu: Option<&str>,
    ) -> Option<Vec<(String, ClosedLoop)>> {
        let mut cmd = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpu, "redis-benchmark"]);
                c
            }
            None => Command::new("redis-benchmark"),
        };
        let out = cmd
            .args(["-h", "127.0.0.1", "-p", self.port, "-t", tests])
            .args(["-r", "10000", "-d", "16", "--csv"])
            .args(["--threads", &threads.to_string()])
            .args(["-c", &connections.to_string(), "-n", &requests.to_string()])
            .output()
            .ok()?;
        parse_redis_csv(&String::from_utf8_lossy(&out.stdout))
    }
}

/// GET and SET on Redis with redis-benchmark (`connections` clients, two threads like wrk),
/// or `None` when Redis is not installed.
pub fn redis_reference(connections: usize, requests: usize) -> Option<Vec<(String, ClosedLoop)>> {
    Redis::start("6390", None)?.bench("set,get", connections, requests, 2, None)
}

fn parse_redis_csv(text: &str) -> Option<Vec<(String, ClosedLoop)>> {
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()?
        .split(',')
        .map(|h| h.trim_matches('"').to_string())
        .collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    let (rps, p50, p99) = (col("rps")?, col("p50_latency_ms")?, col("p99_latency_ms")?);
    let rows = lines
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(',').map(|c| c.trim_matches('"')).collect();
            Some((
                cells.first()?.to_string(),
                ClosedLoop {
                    rps: cells.get(rps)?.parse().ok()?,
                    p50_ms: cells.get(p50)?.parse().ok()?,
                    p99_ms: cells.get(p99)?.parse().ok()?,
                },
            ))
        })
        .collect::<Vec<_>>();
    (!rows.is_empty()).then_some(rows)
}
