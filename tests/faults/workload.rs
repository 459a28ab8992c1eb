//! The clients: writers adding unique keys (a set) and overwriting a few hot keys (registers) at
//! random agents, and a prober that times how fast a write reaches every healthy agent. Every
//! request is logged with its outcome for the checker.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::common::{get, request};
use c19_harness::checker::{Event, Op, Outcome};

/// Hot keys every writer overwrites.
pub const REGISTERS: usize = 3;
/// One add in this many carries a short TTL, so expiry runs during faults too.
const TTL_EVERY: u64 = 10;
pub const SHORT_TTL_MS: u64 = 1500;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// What the nemesis is doing, read by the prober.
#[derive(Clone)]
pub struct Phase {
    pub label: String,
    /// Agents gossiping normally with each other; the prober writes and reads only there.
    pub healthy: Vec<usize>,
}

/// One timed probe: how long a write took to be readable on every healthy agent.
#[derive(Debug, Clone)]
pub struct Probe {
    pub phase: String,
    pub ms: Option<u64>,
}

pub struct Workload {
    stop: Arc<AtomicBool>,
    pub history: Arc<Mutex<Vec<Event>>>,
    pub probes: Arc<Mutex<Vec<Probe>>>,
    pub phase: Arc<Mutex<Phase>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workload {
    pub fn start(cluster: &Arc<Cluster>, writers: usize) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let phase = Arc::new(Mutex::new(Phase {
            label: "none".into(),
            healthy: (0..cluster.len()).collect(),
        }));
        let ids = Arc::new(AtomicU64::new(0));
        let mut threads = Vec::new();
        for _ in 0..writers {
            let (cluster, stop, history, ids) =
                (cluster.clone(), stop.clone(), history.clone(), ids.clone());
            threads.push(std::thread::spawn(move || {
                writer(&cluster, &stop, &history, &ids)
            }));
        }
        let (c, s, h, p, ph) = (
            cluster.clone(),
            stop.clone(),
            history.clone(),
            probes.clone(),
            phase.clone(),
        );
        threads.push(std::thread::spawn(move || prober(&c, &s, &h, &p, &ph)));
        Workload {
            stop,
            history,
            probes,
            phase,
            threads,
        }
    }

    pub fn set_phase(&self, label: String, healthy: Vec<usize>) {
        *self.phase.lock().unwrap() = Phase { label, healthy };
    }

    pub fn stop(self) -> (Vec<Event>, Vec<Probe>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let history = std::mem::take(&mut *self.history.lock().unwrap());
        let probes = std::mem::take(&mut *self.probes.lock().unwrap());
        (history, probes)
    }
}

fn writer(cluster: &Cluster, stop: &AtomicBool, history: &Mutex<Vec<Event>>, ids: &AtomicU64) {
    let mut rng = fastrand::Rng::new();
    while !stop.load(Ordering::SeqCst) {
        let id = ids.fetch_add(1, Ordering::SeqCst);
        let agent = rng.usize(..cluster.len());
        let op = if rng.u8(..5) == 0 {
            Op::Write {
                key: format!("r-{}", rng.usize(..REGISTERS)),
                value: format!("w-{id:08}"),
                ts: now_ms(),
            }
        } else {
            Op::Add {
                key: format!("s-{id:08}"),
                value: id,
                ttl: (id % TTL_EVERY == 0).then_some(SHORT_TTL_MS),
            }
        };
        // Not `history.lock().push(send(..))`: that would hold the lock through the request
        // and let one request to a paused agent stall every client.
        let event = send(cluster, agent, op);
        history.lock().unwrap().push(event);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends one write and logs it: 204 acknowledged, another status a definite failure, no answer
/// unknown (it may or may not have been applied).
fn send(cluster: &Cluster, agent: usize, op: Op) -> Event {
    let body = match &op {
        Op::Add { value, ttl, .. } => match ttl {
            Some(t) => format!(r#"{{"value": {value}, "ttl": {t}}}"#),
            None => format!(r#"{{"value": {value}}}"#),
        },
        Op::Write { value, ts, .. } => format!(r#"{{"value": "{value}", "ts": {ts}}}"#),
    };
    let start_ms = now_ms();
    let (status, _) = request(
        &cluster.apps[agent],
        "PUT",
        &format!("/{}", op.key()),
        Some(body.as_bytes()),
        &[],
    );
    let outcome = match status {
        204 => Outcome::Ok,
        0 => Outcome::Unknown,
        s => Outcome::Fail(s),
    };
    Event {
        op,
        agent,
        start_ms,
        end_ms: now_ms(),
        outcome,
    }
}

/// Every 250 ms: a new key at a random healthy agent, timed until every healthy agent serves it.
fn prober(
    cluster: &Cluster,
    stop: &AtomicBool,
    history: &Mutex<Vec<Event>>,
    probes: &Mutex<Vec<Probe>>,
    phase: &Mutex<Phase>,
) {
    let mut rng = fastrand::Rng::new();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(250));
        let Phase { label, healthy } = phase.lock().unwrap().clone();
        if healthy.len() < 2 {
            continue;
        }
        n += 1;
        let op = Op::Add {
            key: format!("p-{n:06}"),
            value: n,
            ttl: None,
        };
        let key = op.key().to_string();
        let event = send(cluster, healthy[rng.usize(..healthy.len())], op);
        let start = Instant::now();
        let acked = event.outcome == Outcome::Ok;
        history.lock().unwrap().push(event);
        if !acked {
            continue;
        }
        let mut pending = healthy.clone();
        let same_phase = || phase.lock().unwrap().label == label;
        while !pending.is_empty() && start.elapsed() < Duration::from_secs(10) && same_phase() {
            pending.retain(|&i| get(&cluster.apps[i], &format!("/{key}")).0 != 200);
            if !pending.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        // A phase change while polling makes the sample meaningless for either phase.
        if same_phase() {
            probes.lock().unwrap().push(Probe {
                phase: label,
                ms: pending
                    .is_empty()
                    .then(|| start.elapsed().as_millis() as u64),
            });
        }
    }
}
