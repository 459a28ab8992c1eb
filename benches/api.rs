//! The app API of one agent: GET (hit and miss), PUT of one key, PUT of a 100-key batch, DELETE.
//! For each, the most requests per second 32 connections get (closed loop), then p50/p99/p999
//! latency at a fixed rate of 70% of that, measured from each request's *scheduled* send time when
//! an earlier answer delayed it, so a stall counts against every request it delays (no coordinated
//! omission). Then GET again while the agent's peers gossip writes to it in the background; then
//! the throughput-latency curve (plotted to `target/bench/api.png`), and closed-loop runs with wrk
//! against the agent and redis-benchmark against Redis as a reference, when installed
//! (`scripts/bench-deps`). A last wrk GET runs against an agent pinned to CPU 0 with wrk on CPU 1:
//! on two cores, the closed-loop p99 is mostly the agent and wrk waiting for each other's core.
//!
//!   cargo bench --bench api                 # 3 s per measurement
//!   C19_BENCH_FULL=1 cargo bench --bench api # 10 s per measurement

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use support::plot::Series;
use support::{Group, external, full, percentile, write_report};

const CONNECTIONS: usize = 32;

#[derive(Clone, Copy)]
enum Op {
    GetHit,
    GetMiss,
    PutOne,
    PutBatch,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::GetHit => "GET hit",
            Op::GetMiss => "GET miss",
            Op::PutOne => "PUT 1 key",
            Op::PutBatch => "PUT 100 keys",
            Op::Delete => "DELETE",
        }
    }

    fn request(self, host: &str, i: u64) -> Request<Full<Bytes>> {
        let (method, path, body) = match self {
            Op::GetHit => (Method::GET, format!("/key-{}", i % 10_000), String::new()),
            Op::GetMiss => (Method::GET, format!("/missing-{i}"), String::new()),
            Op::PutOne => (
                Method::PUT,
                format!("/w-{}", i % 10_000),
                r#"{"value":"some value"}"#.to_string(),
            ),
            Op::PutBatch => {
                let entries: Vec<String> = (0..100)
                    .map(|k| format!(r#""b-{}-{k}":{{"value":{i}}}"#, i % 100))
                    .collect();
                (
                    Method::PUT,
                    "/".to_string(),
                    format!("{{{}}}", entries.join(",")),
                )
            }
            Op::Delete => (Method::DELETE, format!("/d-{i}"), String::new()),
        };
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }
}

struct Run {
    rps: f64,
    latencies_ms: Vec<f64>,
    errors: u64,
}

/// `rate` None: closed loop (each connection sends as soon as the previous answer arrived).
async fn run(addr: &str, op: Op, rate: Option<f64>, duration: Duration) -> Run {
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let addr = addr.to_string();
            tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::spawn(conn);
                let interval = rate.map(|r| Duration::from_secs_f64(CONNECTIONS as f64 / r));
                let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, 0u64);
                loop {
                    let scheduled = match interval {
                        Some(iv) => {
                            start + iv.mul_f64(i as f64) + iv.mul_f64(c as f64 / CONNECTIONS as f64)
                        }
                        None => Instant::now(),
                    };
                    if scheduled.duration_since(start) >= duration {
                        break;
                    }
                    // A request delayed by the previous answer counts from its scheduled time (no
                    // coordinated omission); one on an idle connection counts from when it was
                    // sent, so the timer's millisecond granularity is not charged to the agent.
                    let late = Instant::now() > scheduled;
                    tokio::time::sleep_until(scheduled.into()).await;
                    let from = if late { scheduled } else { Instant::now() };
                    let req = op.request(&addr, i * CONNECTIONS as u64 + c as u64);
                    match sender.send_request(req).await {
                        Ok(resp) => {
                            let ok = resp.status().as_u16() < 500;
                            let _ = resp.into_body().collect().await;
                            if !ok {
                                errors += 1;
                            }
                        }
                        Err(_) => errors += 1,
                    }
                    lat.push(from.elapsed().as_secs_f64() * 1e3);
                    i += 1;
                }
                (lat, errors)
            })
        })
        .collect();
    let mut latencies_ms = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        latencies_ms.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies_ms.sort_by(f64::total_cmp);
    Run {
        rps: latencies_ms.len() as f64 / elapsed,
        latencies_ms,
        errors,
    }
}

#[tokio::main]
async fn main() {
    let secs = if full() { 10 } else { 3 };
    let d = Duration::from_secs(secs);
    let g = Group::start(
        "api",
        100,
        3,
        "    push_interval: 100\n    pull_interval: 60000\n",
    );
    let app = g.app(0);
    // 10k keys to hit.
    let entries: Vec<String> = (0..10_000)
        .map(|i| format!(r#""key-{i}":{{"value":"value {i}"}}"#))
        .collect();
    support::common::put(&app, "/", &format!("{{{}}}", entries.join(",")));
    println!(
        "{CONNECTIONS} connections, {secs} s per run; latency at 70% of the closed-loop maximum, from scheduled send times"
    );
    println!(
        "{:>14} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7}",
        "operation", "max req/s", "rate req/s", "p50 ms", "p99 ms", "p999 ms", "errors"
    );
    let mut rows = Vec::new();
    let mut measure = |name: String, max: Run, fixed: Run| {
        let l = &fixed.latencies_ms;
        println!(
            "{:>14} {:>10.0} {:>12.0} {:>9.3} {:>9.3} {:>9.3} {:>7}",
            name,
            max.rps,
            fixed.rps,
            percentile(l, 0.5),
            percentile(l, 0.99),
            percentile(l, 0.999),
            max.errors + fixed.errors
        );
        rows.push(serde_json::json!({
            "operation": name, "max_rps": max.rps, "fixed_rps": fixed.rps,
            "p50_ms": percentile(l, 0.5), "p99_ms": percentile(l, 0.99), "p999_ms": percentile(l, 0.999),
            "errors": max.errors + fixed.errors,
        }));
    };
    let mut maxima = Vec::new();
    for op in [
        Op::GetHit,
        Op::GetMiss,
        Op::PutOne,
        Op::PutBatch,
        Op::Delete,
    ] {
        let max = run(&app, op, None, d).await;
        maxima.push(max.rps);
        let fixed = run(&app, op, Some(max.rps * 0.7), d).await;
        measure(op.name().to_string(), max, fixed);
    }
    let sweep = sweep(&app, &[(Op::GetHit, maxima[0]), (Op::PutOne, maxima[2])], d).await;
    // GET while the two peers take 1000 writes per second each and gossip them to this agent.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = [g.app(1), g.app(2)]
        .into_iter()
        .map(|peer| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    support::common::put(
                        &peer,
                        &format!("/bg-{}", i % 5000),
                        r#"{"value":"background"}"#,
                    );
                    i += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        })
        .collect();
    let max = run(&app, Op::GetHit, None, d).await;
    let fixed = run(&app, Op::GetHit, Some(max.rps * 0.7), d).await;
    measure("GET + gossip".to_string(), max, fixed);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    let closed = closed_loop(&app, secs);
    drop(g);
    let pinned = pinned(secs);
    write_report(
        "api",
        &serde_json::json!({
            "connections": CONNECTIONS, "seconds": secs, "rows": rows,
            "throughput_vs_latency": sweep, "closed_loop": closed, "pinned": pinned,
        }),
    );
}

/// p50 and p99 at a series of fixed rates up to the closed-loop maximum: the throughput-latency
/// curve, printed and plotted.
async fn sweep(app: &str, ops: &[(Op, f64)], d: Duration) -> serde_json::Value {
    let mut series = Vec::new();
    let mut rows = Vec::new();
    println!("\nthroughput vs latency (fixed rates, latency from scheduled send times)");
    println!(
        "{:>14} {:>12} {:>12} {:>9} {:>9}",
        "operation", "target req/s", "achieved", "p50 ms", "p99 ms"
    );
    for (op, max) in ops {
        let (mut p50s, mut p99s) = (Vec::new(), Vec::new());
        for fraction in [0.2, 0.4, 0.6, 0.8, 0.9, 1.0] {
            let r = run(app, *op, Some(max * fraction), d).await;
            let (p50, p99) = (
                percentile(&r.latencies_ms, 0.5),
                percentile(&r.latencies_ms, 0.99),
            );
            println!(
                "{:>14} {:>12.0} {:>12.0} {:>9.3} {:>9.3}",
                op.name(),
                max * fraction,
                r.rps,
                p50,
                p99
            );
            p50s.push((r.rps / 1e3, p50));
            p99s.push((r.rps / 1e3, p99));
            rows.push(serde_json::json!({
                "operation": op.name(), "target_rps": max * fraction, "achieved_rps": r.rps,
                "p50_ms": p50, "p99_ms": p99,
            }));
        }
        series.push(Series {
            name: format!("{} p50", op.name()),
            points: p50s,
        });
        series.push(Series {
            name: format!("{} p99", op.name()),
            points: p99s,
        });
    }
    support::plot::lines(
        "api",
        &format!("App API, one agent, {CONNECTIONS} connections"),
        "throughput (thousand requests/s)",
        "latency (ms)",
        &series,
    );
    serde_json::Value::Array(rows)
}

/// wrk against the agent and redis-benchmark against Redis, when installed, with ratios.
fn closed_loop(app: &str, secs: u64) -> serde_json::Value {
    let get = external::wrk(&format!("http://{app}/key-1"), CONNECTIONS, secs, None);
    let put = external::wrk(
        &format!("http://{app}/w-1"),
        CONNECTIONS,
        secs,
        Some(r#"{"value":"some value"}"#),
    );
    let redis = external::redis_reference(CONNECTIONS, if full() { 1_000_000 } else { 200_000 });
    if get.is_none() && redis.is_none() {
        println!("\nclosed loop: wrk and redis-benchmark not installed (scripts/bench-deps)");
        return serde_json::Value::Null;
    }
    println!(
        "\nclosed loop, {CONNECTIONS} connections, 2 client threads (wrk; redis-benchmark for Redis)"
    );
    println!(
        "{:>18} {:>10} {:>9} {:>9} {:>16}",
        "operation", "req/s", "p50 ms", "p99 ms", "req/s vs Redis"
    );
    let redis_rps = |name: &str| {
        redis
            .as_ref()
            .and_then(|r| r.iter().find(|(n, _)| n == name).map(|(_, c)| c.rps))
    };
    let mut rows = Vec::new();
    let mut line = |name: &str, r: Option<external::ClosedLoop>, reference: Option<f64>| {
        let Some(r) = r else { return };
        let ratio = reference.map(|x| r.rps / x);
        println!(
            "{:>18} {:>10.0} {:>9.3} {:>9.3} {:>16}",
            name,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            ratio.map_or("—".into(), |x| format!("{x:.2}"))
        );
        rows.push(serde_json::json!({
            "operation": name, "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            "ratio_to_redis": ratio,
        }));
    };
    line("c19 GET (wrk)", get, redis_rps("GET"));
    line("c19 PUT 1 (wrk)", put, redis_rps("SET"));
    for (name, r) in redis.iter().flatten() {
        line(&format!("Redis {name}"), Some(*r), None);
    }
    serde_json::Value::Array(rows)
}

/// Pinned runs, each c19 run followed by a Redis run.
const PINNED_RUNS: usize = 5;

/// GET with the server on CPU 0 and the load generator on CPU 1, so neither waits for the other's
/// core: the agent (one worker) under `wrk -t1`, and, right after each run, Redis under
/// `redis-benchmark --threads 1` the same way. This machine's speed drifts by up to 2x over
/// minutes (the same agent needed 10 to 19 µs of CPU per GET), so one run says little; the
/// ratio of each pair drifts much less.
fn pinned(secs: u64) -> serde_json::Value {
    let agent = Group::start_pinned("api-pinned", 101, "0");
    let url = format!("http://{}/key-1", agent.app(0));
    support::common::put(&agent.app(0), "/", r#"{"key-1": {"value": "value 1"}}"#);
    let redis = external::Redis::start("6391", Some("0"));
    // About `secs` seconds of Redis GETs.
    let requests = 80_000 * secs as usize;
    let (target_rps, target_p99) = (90_000.0, 1.0);
    println!(
        "\npinned GET: server on CPU 0 (c19 with one worker), client on CPU 1 (wrk -t1; redis-benchmark --threads 1), {CONNECTIONS} connections"
    );
    println!(
        "{:>4} {:>10} {:>9} {:>9} {:>12} {:>9} {:>9} {:>14}",
        "run",
        "c19 req/s",
        "p50 ms",
        "p99 ms",
        "Redis req/s",
        "p99 ms",
        "c19/Redis",
        "≥90k, p99≤1ms"
    );
    let mut runs = Vec::new();
    for run in 1..=PINNED_RUNS {
        let Some(c19) = external::wrk_pinned("1", &url, CONNECTIONS, secs, None) else {
            println!("wrk or taskset not installed (scripts/bench-deps)");
            return serde_json::Value::Null;
        };
        let reference = redis
            .as_ref()
            .and_then(|r| r.bench("get", CONNECTIONS, requests, 1, Some("1")))
            .and_then(|rows| rows.into_iter().next())
            .map(|(_, r)| r);
        let ratio = reference.map(|r| c19.rps / r.rps);
        let met = c19.rps >= target_rps && c19.p99_ms <= target_p99;
        println!(
            "{run:>4} {:>10.0} {:>9.3} {:>9.3} {:>12} {:>9} {:>9} {:>14}",
            c19.rps,
            c19.p50_ms,
            c19.p99_ms,
            reference.map_or("—".into(), |r| format!("{:.0}", r.rps)),
            reference.map_or("—".into(), |r| format!("{:.3}", r.p99_ms)),
            ratio.map_or("—".into(), |x| format!("{x:.2}")),
            if met { "yes" } else { "no" },
        );
        runs.push(serde_json::json!({
            "rps": c19.rps, "p50_ms": c19.p50_ms, "p99_ms": c19.p99_ms,
            "redis_rps": reference.map(|r| r.rps), "redis_p99_ms": reference.map(|r| r.p99_ms),
            "ratio_to_redis": ratio, "target_met": met,
        }));
    }
    let mut rps: Vec<f64> = runs.iter().filter_map(|r| r["rps"].as_f64()).collect();
    rps.sort_by(f64::total_cmp);
    let met = runs.iter().filter(|r| r["target_met"] == true).count();
    println!(
        "c19 GET pinned: median {:.0} req/s, best {:.0}; target met in {met} of {} runs",
        percentile(&rps, 0.5),
        rps.last().copied().unwrap_or(0.0),
        runs.len()
    );
    serde_json::json!({"runs": runs, "target_met_runs": met})
}
