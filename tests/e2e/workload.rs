//! A steady workload through the example app of the group's ready pods, the way its users'
//! requests would arrive: writers add unique keys (`PUT /kv/<key>` on :8080, acknowledged once the
//! pod's agent applied them), recorded for the history checker; a reader checks the promise of
//! warm readiness: no read on a Ready pod misses a key the group acknowledged before that pod was
//! created. A tracker keeps the list of ready pods from the API.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use c19_harness::checker::{Event, Op, Outcome};
use c19_harness::cmd::parse_time;

use crate::common::request;

/// Pause between two writes of one writer: about 40 writes a second each.
const WRITE_PAUSE: Duration = Duration::from_millis(25);
/// Pause between two reads.
const READ_PAUSE: Duration = Duration::from_millis(20);
/// At most this many writes per writer, whatever the scenario's length.
const MAX_WRITES: u64 = 20_000;
/// Creation times have one-second resolution: a key counts as held before a pod only when it
/// was acknowledged this long before the pod's creation second.
const CREATION_SLACK_MS: u64 = 1000;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A Ready, not terminating, pod of the group.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub ip: String,
    pub created_ms: u64,
}

fn ready_targets(kubeconfig: &std::path::Path, group: &str) -> Option<Vec<Target>> {
    let list = crate::pods::group_pods(kubeconfig, group)?;
    Some(
        list["items"]
            .as_array()?
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .filter_map(|p| {
                Some(Target {
                    name: p["metadata"]["name"].as_str()?.to_string(),
                    ip: p["status"]["podIP"].as_str()?.to_string(),
                    created_ms: parse_time(p["metadata"]["creationTimestamp"].as_str()?)?,
                })
            })
            .collect(),
    )
}

/// What a workload saw.
#[derive(Debug, Default)]
pub struct Report {
    /// The prefix of every key the run wrote.
    pub prefix: String,
    pub history: Vec<Event>,
    /// Reads on a Ready pod that missed a key acknowledged before the pod was created.
    pub misses: Vec<String>,
    /// Reads of such keys that found them.
    pub hits: u64,
    /// Pods the reader read from, and that had been created after the workload started.
    pub new_pods_read: Vec<String>,
}

pub struct Workload {
    prefix: String,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Event>>>,
    misses: Arc<Mutex<Vec<String>>>,
    hits: Arc<AtomicU64>,
    new_pods_read: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts `writers` writers, a reader and the tracker against the group `group`. Keys are
    /// `<prefix><writer>-<n>`: one prefix per run, so that a run's check sees only its own keys.
    pub fn start(kubeconfig: PathBuf, group: &str, prefix: &str, writers: usize) -> Workload {
        let started = now_ms();
        let stop = Arc::new(AtomicBool::new(false));
        let history: Arc<Mutex<Vec<Event>>> = Arc::default();
        let misses: Arc<Mutex<Vec<String>>> = Arc::default();
        let hits = Arc::new(AtomicU64::new(0));
        let new_pods_read: Arc<Mutex<Vec<String>>> = Arc::default();
        let targets: Arc<Mutex<Vec<Target>>> = Arc::default();
        *targets.lock().unwrap() = ready_targets(&kubeconfig, group).unwrap_or_default();
        let mut threads = Vec::new();
        {
            let (stop, targets, group) = (stop.clone(), targets.clone(), group.to_string());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(t) = ready_targets(&kubeconfig, &group) {
                        *targets.lock().unwrap() = t;
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            }));
        }
        for w in 0..writers {
            let (stop, targets, history) = (stop.clone(), targets.clone(), history.clone());
            let prefix = prefix.to_string();
            threads.push(std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(w as u64);
                for i in 0..MAX_WRITES {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let target = {
                        let t = targets.lock().unwrap();
                        (!t.is_empty()).then(|| t[rng.usize(..t.len())].clone())
                    };
                    let Some(target) = target else {
                        std::thread::sleep(WRITE_PAUSE);
                        continue;
                    };
                    let key = format!("{prefix}{w}-{i}");
                    let start_ms = now_ms();
                    let (status, _) = request(
                        &format!("{}:8080", target.ip),
                        "PUT",
                        &format!("/kv/{key}"),
                        Some(i.to_string().as_bytes()),
                        &[],
                    );
                    let outcome = match status {
                        204 => Outcome::Ok,
                        // No answer, or the app could not hear back from its agent.
                        0 | 502 => Outcome::Unknown,
                        s => Outcome::Fail(s),
                    };
                    history.lock().unwrap().push(Event {
                        op: Op::Add {
                            key,
                            value: i,
                            ttl: None,
                        },
                        agent: 0,
                        start_ms,
                        end_ms: now_ms(),
                        outcome,
                    });
                    std::thread::sleep(WRITE_PAUSE);
                }
            }));
        }
        {
            let (stop, targets, history) = (stop.clone(), targets.clone(), history.clone());
            let (misses, hits, new_pods_read) =
                (misses.clone(), hits.clone(), new_pods_read.clone());
            threads.push(std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(99);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(READ_PAUSE);
                    let target = {
                        let t = targets.lock().unwrap();
                        (!t.is_empty()).then(|| t[rng.usize(..t.len())].clone())
                    };
                    let Some(target) = target else { continue };
                    let cutoff = target.created_ms.saturating_sub(CREATION_SLACK_MS);
                    let key = {
                        let h = history.lock().unwrap();
                        let held: Vec<&Event> = h
                            .iter()
                            .filter(|e| e.outcome == Outcome::Ok && e.end_ms < cutoff)
                            .collect();
                        (!held.is_empty())
                            .then(|| held[rng.usize(..held.len())].op.key().to_string())
                    };
                    let Some(key) = key else { continue };
                    let (status, _) = request(
                        &format!("{}:8080", target.ip),
                        "GET",
                        &format!("/kv/{key}"),
                        None,
                        &[],
                    );
                    match status {
                        200 => {
                            hits.fetch_add(1, Ordering::Relaxed);
                            if target.created_ms > started {
                                let mut seen = new_pods_read.lock().unwrap();
                                if !seen.contains(&target.name) {
                                    seen.push(target.name.clone());
                                }
                            }
                        }
                        404 => misses.lock().unwrap().push(format!(
                            "{key} on {} (created {})",
                            target.name, target.created_ms
                        )),
                        // The pod went away between the tracker's look and the read.
                        _ => {}
                    }
                }
            }));
        }
        Workload {
            prefix: prefix.to_string(),
            stop,
            history,
            misses,
            hits,
            new_pods_read,
            threads,
        }
    }

    pub fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        Report {
            prefix: self.prefix.clone(),
            history: std::mem::take(&mut self.history.lock().unwrap()),
            misses: std::mem::take(&mut self.misses.lock().unwrap()),
            hits: self.hits.load(Ordering::Relaxed),
            new_pods_read: std::mem::take(&mut self.new_pods_read.lock().unwrap()),
        }
    }
}
