//! What every part of the operator shares: the client, settings, metrics and the last health
//! observation of every group.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kube::runtime::events::Reporter;

use super::desired::Settings;
use super::health::Observation;
use super::members::GroupKey;
use crate::connection::client::Traffic;
use crate::metrics::{Counter, Histogram};

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    /// Total reconcile time in microseconds (with `reconciles`, the mean duration).
    pub reconcile_micros: Counter,
    pub writes: Counter,
    pub probes: Counter,
    pub probes_failed: Counter,
    /// How long each agent took to answer its health probe.
    pub probe_latency: Histogram,
    pub peer_feeds: Counter,
    pub peer_feeds_failed: Counter,
    pub traffic: Traffic,
}

pub struct Context {
    pub client: kube::Client,
    pub settings: Settings,
    pub reporter: Reporter,
    pub metrics: OperatorMetrics,
    pub observations: Mutex<HashMap<GroupKey, Observation>>,
    /// Groups whose Deployment was rolling out at their last reconcile.
    pub rolling_out: Mutex<HashSet<GroupKey>>,
}

impl Context {
    pub fn new(client: kube::Client, settings: Settings, reporter: Reporter) -> Context {
        Context {
            client,
            settings,
            reporter,
            metrics: OperatorMetrics::default(),
            observations: Mutex::default(),
            rolling_out: Mutex::default(),
        }
    }

    pub fn observation(&self, key: &GroupKey) -> Option<Observation> {
        self.observations
            .lock()
            .expect("observations lock")
            .get(key)
            .cloned()
    }

    /// Stores a group's observation; returns whether it changed.
    pub fn observe(&self, key: GroupKey, obs: Observation) -> bool {
        let mut all = self.observations.lock().expect("observations lock");
        all.insert(key, obs.clone()).is_none_or(|old| old != obs)
    }

    pub fn forget(&self, key: &GroupKey) {
        self.observations
            .lock()
            .expect("observations lock")
            .remove(key);
        self.set_rolling_out(key, false);
    }

    pub fn set_rolling_out(&self, key: &GroupKey, rolling: bool) {
        let mut all = self.rolling_out.lock().expect("rollouts lock");
        if rolling {
            all.insert(key.clone());
        } else {
            all.remove(key);
        }
    }
}
