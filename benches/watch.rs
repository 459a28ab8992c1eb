//! The app API's watch and listing targets:
//!
//! 1. A change written at agent A reaches a watcher on agent B no later than a reader polling B
//!    (a keep-alive connection, GET after GET) sees it, plus 5 ms.
//! 2. Agent-local delivery to 100 watchers while 10,000 changes/s are written (1,000 batches of
//!    10 keys per second, open loop): latency from each batch's scheduled send time to each
//!    watcher's read of the change; p99 target 5 ms.
//! 3. A prefix page of 1,000 keys out of 1,000,000: first call (builds the ordered index) and
//!    the calls after it; target 10 ms. And the index's memory.
//!
//!   cargo bench --bench watch                 # 5 s of changes in part 2
//!   C19_BENCH_FULL=1 cargo bench --bench watch # 20 s

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Group, common, full, percentile, rss, write_report};

fn main() {
    let propagation = propagation();
    let delivery = delivery(if full() { 20 } else { 5 });
    let listing = listing();
    write_report(
        "watch",
        &serde_json::json!({"propagation": propagation, "delivery": delivery, "listing": listing}),
    );
}

/// A keep-alive HTTP/1.1 GET loop on one connection: the fastest a poller can read.
struct Poller {
    sock: TcpStream,
    buf: Vec<u8>,
}

impl Poller {
    fn new(addr: &str) -> Poller {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_nodelay(true).unwrap();
        Poller {
            sock,
            buf: Vec::new(),
        }
    }

    /// GET `path`; the body.
    fn get(&mut self, path: &str) -> String {
        write!(self.sock, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = self.sock.read(&mut chunk).unwrap();
            assert!(n > 0, "connection closed");
            self.buf.extend_from_slice(&chunk[..n]);
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if self.buf.len() >= end + 4 + len {
                return String::from_utf8_lossy(&self.buf[end + 4..end + 4 + len]).into_owned();
            }
        }
    }
}

fn propagation() -> serde_json::Value {
    let g = Group::start(
        "watch-propagation",
        103,
        2,
        "    push_interval: 100\n    pull_interval: 60000\n",
    );
    let (a, b) = (g.app(0), g.app(1));
    let base = Instant::now();
    // Spaced wider than the push interval, so that gossip delivers every version to B (closer
    // writes are superseded before they travel, and neither reader sees them).
    const WRITES: usize = 60;
    let seen_poll = Arc::new(Mutex::new(vec![None::<Duration>; WRITES]));
    let seen_watch = Arc::new(Mutex::new(vec![None::<Duration>; WRITES]));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (seen, stop, b) = (seen_poll.clone(), stop.clone(), b.clone());
        std::thread::spawn(move || {
            let mut p = Poller::new(&b);
            while !stop.load(Ordering::Relaxed) {
                let body = p.get("/prop");
                if let Some(i) = value_of(&body) {
                    let mut s = seen.lock().unwrap();
                    if (i as usize) < WRITES && s[i as usize].is_none() {
                        s[i as usize] = Some(base.elapsed());
                    }
                }
            }
        })
    };
    let mut watch = common::Watch::open(&b, "/prop?watch");
    watch.until("synced", Duration::from_secs(5));
    let watcher = {
        let (seen, stop) = (seen_watch.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(line) = watch.next(Duration::from_millis(200)) {
                    let at = base.elapsed();
                    if let Some(i) = line["value"].as_u64() {
                        seen.lock().unwrap()[i as usize].get_or_insert(at);
                    }
                }
            }
        })
    };
    let mut written = Vec::new();
    for i in 0..WRITES {
        written.push(base.elapsed());
        common::put(&a, "/prop", &format!("{{\"value\":{i}}}"));
        std::thread::sleep(Duration::from_millis(150));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    watcher.join().unwrap();
    let (polls, watches) = (seen_poll.lock().unwrap(), seen_watch.lock().unwrap());
    let mut lead = Vec::new();
    let mut reach = Vec::new();
    for i in 0..WRITES {
        if let (Some(p), Some(w)) = (polls[i], watches[i]) {
            lead.push((w.as_secs_f64() - p.as_secs_f64()) * 1e3);
            reach.push((w - written[i]).as_secs_f64() * 1e3);
        }
    }
    lead.sort_by(f64::total_cmp);
    reach.sort_by(f64::total_cmp);
    println!("1. A change written at A, seen on B: watcher vs a poller GETting in a loop");
    println!(
        "   {} of {WRITES} writes seen by both; watcher minus poller: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (target ≤ 5 ms)",
        lead.len(),
        percentile(&lead, 0.5),
        percentile(&lead, 0.99),
        lead.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "   write at A to the watcher on B (gossip, push interval 100 ms): p50 {:.1} ms, p99 {:.1} ms",
        percentile(&reach, 0.5),
        percentile(&reach, 0.99)
    );
    serde_json::json!({
        "writes": WRITES, "seen": lead.len(),
        "watch_minus_poll_ms": {"p50": percentile(&lead, 0.5), "p99": percentile(&lead, 0.99), "max": lead.last()},
        "write_to_watch_ms": {"p50": percentile(&reach, 0.5), "p99": percentile(&reach, 0.99)},
    })
}

fn value_of(body: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["value"].as_u64()
}

/// Reads a watch stream raw, taking each `"value":<µs>` it carries as the time its change was
/// scheduled: every line of a chunk is whole (the agent writes whole lines), so a scan over
/// the bytes suffices.
fn read_latencies(addr: String, stop: Arc<AtomicBool>, base: Instant) -> (Vec<u32>, usize) {
    let mut sock = TcpStream::connect(&addr).unwrap();
    write!(sock, "GET /?watch&prefix=w/ HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut lat = Vec::new();
    let mut resets = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    const KEY: &[u8] = b"\"value\":";
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => continue,
        };
        let now = base.elapsed().as_micros() as u64;
        carry.extend_from_slice(&buf[..n]);
        let end = carry.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        let mut i = 0;
        while let Some(at) = carry[i..end].windows(KEY.len()).position(|w| w == KEY) {
            let mut j = i + at + KEY.len();
            let mut v = 0u64;
            while carry[j].is_ascii_digit() {
                v = v * 10 + u64::from(carry[j] - b'0');
                j += 1;
            }
            lat.push(now.saturating_sub(v) as u32);
            i = j;
        }
        resets += carry[..end]
            .windows(15)
            .filter(|w| w == b"\"type\":\"reset\"")
            .count();
        carry.drain(..end);
    }
    (lat, resets)
}

fn delivery(secs: u64) -> serde_json::Value {
    const WATCHERS: usize = 100;
    const BATCH: usize = 10;
    const BATCHES_PER_S: u64 = 1000;
    let g = Group::start(
        "watch-delivery",
        104,
        1,
        "    push_interval: 100\n    pull_interval: 60000\n",
    );
    let app = g.app(0);
    let base = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..WATCHERS)
        .map(|_| {
            let (app, stop) = (app.clone(), stop.clone());
            std::thread::spawn(move || read_latencies(app, stop, base))
        })
        .collect();
    common::wait_for(Duration::from_secs(10), || {
        common::get(&g.peer(0), "/metrics")
            .1
            .contains(&format!("c19_watchers {WATCHERS}"))
    })
    .expect("every watcher connected");
    let cpu_before = cpu_ticks(g.pid(0));
    // Open loop on 4 connections: batch k is due at k ms; its values are its due time (µs).
    let start = base.elapsed() + Duration::from_millis(20);
    let total = secs * BATCHES_PER_S;
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let app = app.clone();
            std::thread::spawn(move || {
                let mut p = Poller::new(&app);
                let mut k = w;
                while k < total {
                    let due = start + Duration::from_micros(k * 1_000_000 / BATCHES_PER_S);
                    if let Some(wait) = due.checked_sub(base.elapsed()) {
                        std::thread::sleep(wait);
                    }
                    let us = due.as_micros();
                    let entries: Vec<String> = (0..BATCH as u64)
                        .map(|e| {
                            format!("\"w/{}\":{{\"value\":{us}}}", (k * BATCH as u64 + e) % 5000)
                        })
                        .collect();
                    let body = format!("{{{}}}", entries.join(","));
                    write!(
                        p.sock,
                        "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                    let mut resp = [0u8; 1024];
                    let _ = p.sock.read(&mut resp).unwrap();
                    k += 4;
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let elapsed = base.elapsed() - start;
    std::thread::sleep(Duration::from_millis(500));
    let cpu = (cpu_ticks(g.pid(0)) - cpu_before) as f64 / 100.0;
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<f64> = Vec::new();
    let mut resets = 0;
    let mut per_watcher_min = usize::MAX;
    for r in readers {
        let (lat, rs) = r.join().unwrap();
        resets += rs;
        per_watcher_min = per_watcher_min.min(lat.len());
        all.extend(lat.iter().map(|us| f64::from(*us) / 1e3));
    }
    all.sort_by(f64::total_cmp);
    let changes = total as usize * BATCH;
    let rate = changes as f64 / elapsed.as_secs_f64();
    println!(
        "\n2. One agent, {WATCHERS} watchers, {rate:.0} changes/s for {secs} s ({BATCH}-key batches, open loop)"
    );
    println!(
        "   {} deliveries (every watcher got ≥ {per_watcher_min} of {changes}), {resets} resets; latency from scheduled write: p50 {:.3} ms, p99 {:.3} ms, p999 {:.3} ms, max {:.3} ms (target p99 ≤ 5 ms); agent CPU {:.0}%",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(f64::NAN),
        cpu / elapsed.as_secs_f64() * 100.0
    );
    serde_json::json!({
        "watchers": WATCHERS, "changes_per_s": rate, "seconds": secs, "deliveries": all.len(),
        "min_per_watcher": per_watcher_min, "changes": changes, "resets": resets,
        "latency_ms": {"p50": percentile(&all, 0.5), "p99": percentile(&all, 0.99), "p999": percentile(&all, 0.999), "max": all.last()},
        "agent_cpu_share": cpu / elapsed.as_secs_f64(),
    })
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn listing() -> serde_json::Value {
    const KEYS: usize = 1_000_000;
    let g = Group::start(
        "watch-listing",
        105,
        1,
        "    push_interval: 1000\n    pull_interval: 60000\n",
    );
    let app = g.app(0);
    for chunk in 0..KEYS / 10_000 {
        let entries: Vec<String> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| {
                // 1,000 of the million under cfg/, the rest spread over user/.
                let key = if i % 1000 == 0 {
                    format!("cfg/{:04}", i / 1000)
                } else {
                    format!("user/{i:07}")
                };
                format!("\"{key}\":{{\"value\":{i}}}")
            })
            .collect();
        let (status, _) = common::put(&app, "/", &format!("{{{}}}", entries.join(",")));
        assert_eq!(status, 204);
    }
    let before = rss(g.pid(0));
    let mut p = Poller::new(&app);
    let t = Instant::now();
    let body = p.get("/?prefix=cfg/&limit=1000");
    let first = t.elapsed().as_secs_f64() * 1e3;
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 1000);
    let index = rss(g.pid(0)).saturating_sub(before);
    let mut time = |path: &str| {
        let mut ms: Vec<f64> = (0..200)
            .map(|_| {
                let t = Instant::now();
                let body = p.get(path);
                assert!(body.len() > 1000);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms
    };
    let entries = time("/?prefix=cfg/&limit=1000");
    let keys = time("/?prefix=cfg/&limit=1000&keys");
    let middle = time("/?prefix=user/05&limit=1000");
    println!(
        "\n3. Prefix pages of 1,000 keys out of {KEYS} (one agent; 200 calls each, one keep-alive connection)"
    );
    println!(
        "   first call (builds the ordered index): {first:.1} ms; the index adds {:.0} MiB",
        index as f64 / (1 << 20) as f64
    );
    for (name, ms) in [
        ("entries, prefix cfg/", &entries),
        ("keys only, prefix cfg/", &keys),
        ("entries, prefix user/05 (dense)", &middle),
    ] {
        println!(
            "   {name:<32} p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms (target ≤ 10 ms)",
            percentile(ms, 0.5),
            percentile(ms, 0.99),
            ms.last().unwrap()
        );
    }
    serde_json::json!({
        "keys": KEYS, "first_ms": first, "index_bytes": index,
        "entries_ms": {"p50": percentile(&entries, 0.5), "p99": percentile(&entries, 0.99)},
        "keys_only_ms": {"p50": percentile(&keys, 0.5), "p99": percentile(&keys, 0.99)},
        "dense_ms": {"p50": percentile(&middle, 0.5), "p99": percentile(&middle, 0.99)},
    })
}
