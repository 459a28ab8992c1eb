//! What every part of the operator shares: the client, settings, metrics and the last health
//! observation of every group.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::runtime::events::Reporter;

use super::desired::Settings;
use super::health::Observation;
use super::members::GroupKey;
use crate::connection::client::Traffic;
use crate::metrics::Counter;

#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub reconciles: Counter,
    pub reconcile_errors: Counter,
    /// Total reconcile time in microseconds (with `reconciles`, the mean duration).
    pub reconcile_micros: Counter,
    pub writes: Counter,
    pub probes: Counter,
    pub probes_failed: Counter,
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
}

impl Context {
    pub fn new(client: kube::Client, settings: Settings, reporter: Reporter) -> Context {
        Context {
            client,
            settings,
            reporter,
            metrics: OperatorMetrics::default(),
            observations: Mutex::default(),
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
    }
}
