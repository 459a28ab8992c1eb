//! N real agents on `127.<net>.0.<i>` whose every peer link runs through its own [`LinkProxy`]
//! (`127.<net + 1>.<from>.<to>:4097`), and the faults the nemesis applies to them.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use crate::common::{Agent, TempDir, get};
use crate::proxy::LinkProxy;

/// Gossip settings of the agents under test, also used by the checker's time bounds.
pub const PUSH_MS: u64 = 100;
pub const PULL_MS: u64 = 2000;
pub const TIMEOUT_MS: u64 = 500;

/// One fault, held for a while and then lifted.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Every link to and from one agent is cut.
    Isolate(usize),
    /// The agents in the set are cut off from the others (and still reach each other).
    Partition(BTreeSet<usize>),
    /// Every link is cut: each agent is alone.
    AllLinks,
    /// The agent hears everyone, nobody hears it (its requests and its answers are dropped).
    Asymmetric(usize),
    /// Every byte on every link waits this many milliseconds.
    Delay(u64),
    /// SIGSTOP, SIGCONT when lifted.
    Pause(usize),
    /// SIGKILL, restarted (with an empty state) when lifted.
    Kill(usize),
}

impl Fault {
    /// The agents that keep gossiping with each other normally while the fault holds.
    pub fn healthy(&self, n: usize) -> Vec<usize> {
        let all = 0..n;
        match self {
            Fault::Isolate(a) | Fault::Asymmetric(a) | Fault::Pause(a) | Fault::Kill(a) => {
                all.filter(|i| i != a).collect()
            }
            Fault::Partition(minority) => all.filter(|i| !minority.contains(i)).collect(),
            Fault::AllLinks => Vec::new(),
            Fault::Delay(_) => all.collect(),
        }
    }
    pub fn label(&self) -> String {
        match self {
            Fault::Isolate(a) => format!("isolate a{a}"),
            Fault::Partition(m) => format!("partition {m:?}"),
            Fault::AllLinks => "all links cut".into(),
            Fault::Asymmetric(a) => format!("asymmetric a{a}"),
            Fault::Delay(ms) => format!("delay {ms} ms"),
            Fault::Pause(a) => format!("SIGSTOP a{a}"),
            Fault::Kill(a) => format!("SIGKILL a{a}"),
        }
    }
}

pub struct Cluster {
    /// Holds the agents' configs and logs until the cluster is dropped.
    _dir: TempDir,
    /// Locked only to start, stop and restart processes; reads go to fixed addresses.
    pub agents: Vec<Mutex<Agent>>,
    pub apps: Vec<String>,
    /// `links[from][to]`, `None` on the diagonal.
    links: Vec<Vec<Option<LinkProxy>>>,
}

impl Cluster {
    /// Each test its own `net`, so a test never meets the sockets of the one before.
    pub fn start(name: &str, net: u8, n: usize) -> Cluster {
        Cluster::start_with(name, net, n, "")
    }

    /// [`start`](Cluster::start) with a `state:` section for every agent (YAML, indented by 4).
    pub fn start_with(name: &str, net: u8, n: usize, state: &str) -> Cluster {
        let dir = TempDir::new(name);
        let ip = |i: usize| format!("127.{net}.0.{}", i + 1);
        let links: Vec<Vec<Option<LinkProxy>>> = (0..n)
            .map(|from| {
                (0..n)
                    .map(|to| {
                        (from != to).then(|| {
                            let listen = format!("127.{}.{}.{}:4097", net + 1, from + 1, to + 1);
                            LinkProxy::start(&listen, &format!("{}:4097", ip(to)))
                                .unwrap_or_else(|e| panic!("proxy on {listen}: {e}"))
                        })
                    })
                    .collect()
            })
            .collect();
        let agents = (0..n)
            .map(|i| {
                let peers: Vec<String> = links[i]
                    .iter()
                    .flatten()
                    .map(|p| format!("\"{}\"", p.listen))
                    .collect();
                let state = if state.is_empty() {
                    String::new()
                } else {
                    format!("  state:\n{state}")
                };
                let config = format!(
                    "version: 0.1\nspec:\n  agent:\n    bind: {ip}\n{state}  connection:\n    bind: {ip}\n    push_interval: {PUSH_MS}\n    pull_interval: {PULL_MS}\n    timeout: {TIMEOUT_MS}\n    peer_provider:\n      kind: Static\n      peers: [{}]\n",
                    peers.join(", "),
                    ip = ip(i),
                );
                Mutex::new(Agent::start(&dir, &ip(i), &config))
            })
            .collect();
        Cluster {
            apps: (0..n).map(|i| format!("{}:3097", ip(i))).collect(),
            _dir: dir,
            agents,
            links,
        }
    }

    pub fn len(&self) -> usize {
        self.apps.len()
    }

    fn link(&self, from: usize, to: usize) -> &crate::proxy::Link {
        &self.links[from][to]
            .as_ref()
            .expect("no link to itself")
            .link
    }

    fn cut(&self, a: usize, b: usize) {
        self.link(a, b).blackhole(true, true);
        self.link(b, a).blackhole(true, true);
    }

    pub fn apply(&self, fault: &Fault) {
        let n = self.len();
        match fault {
            Fault::Isolate(a) => (0..n).filter(|b| b != a).for_each(|b| self.cut(*a, b)),
            Fault::Partition(m) => {
                for a in m {
                    (0..n)
                        .filter(|b| !m.contains(b))
                        .for_each(|b| self.cut(*a, b));
                }
            }
            Fault::AllLinks => {
                for a in 0..n {
                    (a + 1..n).for_each(|b| self.cut(a, b));
                }
            }
            Fault::Asymmetric(a) => {
                for b in (0..n).filter(|b| b != a) {
                    self.link(*a, b).blackhole(true, false);
                    self.link(b, *a).blackhole(false, true);
                }
            }
            Fault::Delay(ms) => self
                .links
                .iter()
                .flatten()
                .flatten()
                .for_each(|p| p.link.delay(*ms)),
            Fault::Pause(a) => self.agents[*a].lock().unwrap().signal("STOP"),
            Fault::Kill(a) => self.agents[*a].lock().unwrap().kill(),
        }
    }

    pub fn lift(&self, fault: &Fault) {
        self.links
            .iter()
            .flatten()
            .flatten()
            .for_each(|p| p.link.heal());
        match fault {
            Fault::Pause(a) => self.agents[*a].lock().unwrap().signal("CONT"),
            Fault::Kill(a) => self.agents[*a].lock().unwrap().spawn(),
            _ => {}
        }
    }

    /// The live values of agent `i` (`GET /`), or `None` when it does not answer.
    pub fn listing(&self, i: usize) -> Option<serde_json::Map<String, serde_json::Value>> {
        let (status, body) = get(&self.apps[i], "/");
        (status == 200).then(|| serde_json::from_str(&body).expect("listing is a JSON object"))
    }

    /// The sync digest of agent `i`: equal digests mean equal states.
    pub fn digest(&self, i: usize) -> Option<String> {
        let (status, body) = get(&self.apps[i].replace(":3097", ":4097"), "/c19/digest");
        (status == 200).then(|| {
            let report: serde_json::Value = serde_json::from_str(&body).expect("digest report");
            report["digest"].as_str().expect("digest field").to_string()
        })
    }

    /// Waits until every agent reports the same digest.
    pub fn settle(&self, timeout: Duration) -> Result<Duration, ()> {
        crate::common::wait_for(timeout, || {
            let digests: Vec<Option<String>> = (0..self.len()).map(|i| self.digest(i)).collect();
            digests[0].is_some() && digests.iter().all(|d| d == &digests[0])
        })
    }
}
