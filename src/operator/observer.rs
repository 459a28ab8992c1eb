//! The operator's loop over the agents: feed every agent its group's peer list (when the
//! EndpointSlices change, when a probe shows an agent lacks it, and periodically), probe every
//! agent's digest, and trigger a reconcile when a group's health observation changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::agents::{feed_all, probe_all};
use super::context::Context;
use super::crd::C19Group;
use super::desired::Names;
use super::health::{Member, observe};
use super::members::{GroupKey, members_by_group};
use crate::connection::client::PeerClient;

#[derive(Debug, Clone, Copy)]
pub struct ObserverConfig {
    pub probe_interval: Duration,
    /// Every agent gets its peer list again this often, so a restarted agent is never left alone.
    pub resend_interval: Duration,
    pub timeout: Duration,
}

/// What was last sent to a group, to send again only what changed.
struct Fed {
    members: Vec<Member>,
    at: Instant,
}

pub struct Observer {
    ctx: Arc<Context>,
    groups: Store<C19Group>,
    slices: Store<EndpointSlice>,
    config: ObserverConfig,
    client: PeerClient,
    fed: HashMap<GroupKey, Fed>,
    tokens: HashMap<GroupKey, String>,
    trigger: mpsc::Sender<ObjectRef<C19Group>>,
}

impl Observer {
    pub fn new(
        ctx: Arc<Context>,
        groups: Store<C19Group>,
        slices: Store<EndpointSlice>,
        config: ObserverConfig,
        trigger: mpsc::Sender<ObjectRef<C19Group>>,
    ) -> Observer {
        let client = PeerClient::new(None, config.timeout);
        Observer {
            ctx,
            groups,
            slices,
            config,
            client,
            fed: HashMap::new(),
            tokens: HashMap::new(),
            trigger,
        }
    }

    /// Runs rounds every probe interval, and at once when the EndpointSlices change.
    pub async fn run(mut self, slices_changed: Arc<Notify>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.probe_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = slices_changed.notified() => {}
            }
            self.round().await;
        }
    }

    /// One round over every group.
    pub async fn round(&mut self) {
        let members = members_by_group(self.slices.state().iter().map(|s| &**s));
        let groups = self.groups.state();
        let mut live = Vec::with_capacity(groups.len());
        for group in groups.iter() {
            let Some(ns) = group.namespace() else {
                continue;
            };
            let key = (ns, group.name_any());
            let group_members = members.get(&key).cloned().unwrap_or_default();
            self.round_for(group, &key, &group_members).await;
            live.push(key);
        }
        self.fed.retain(|k, _| live.contains(k));
        self.tokens.retain(|k, _| live.contains(k));
        let gone: Vec<GroupKey> = self
            .ctx
            .observations
            .lock()
            .expect("observations lock")
            .keys()
            .filter(|k| !live.contains(k))
            .cloned()
            .collect();
        for k in gone {
            self.ctx.forget(&k);
        }
    }

    async fn round_for(&mut self, group: &C19Group, key: &GroupKey, members: &[Member]) {
        let Some(token) = self.token(key).await else {
            tracing::debug!(group = %key.1, "no token yet; the reconciler creates it");
            return;
        };
        let metrics = &self.ctx.metrics;
        let previous = self.ctx.observation(key);
        let resend = self
            .fed
            .get(key)
            .is_none_or(|f| f.members != members || f.at.elapsed() >= self.config.resend_interval);
        let targets: Vec<Member> = if resend {
            members.to_vec()
        } else {
            let stale = previous
                .as_ref()
                .map(|o| o.stale_peers.clone())
                .unwrap_or_default();
            members
                .iter()
                .filter(|m| stale.contains(&m.address))
                .cloned()
                .collect()
        };
        if !targets.is_empty() {
            metrics.peer_feeds.add(targets.len() as u64);
            let failed = feed_all(
                &self.client,
                Some(&token),
                members,
                &targets,
                &metrics.traffic,
            )
            .await;
            metrics.peer_feeds_failed.add(failed.len() as u64);
            if !failed.is_empty() {
                tracing::debug!(group = %key.1, failed = failed.len(), "some agents did not take their peer list");
                self.tokens.remove(key);
            }
            if resend {
                self.fed.insert(
                    key.clone(),
                    Fed {
                        members: members.to_vec(),
                        at: Instant::now(),
                    },
                );
            }
        }
        let results = probe_all(&self.client, Some(&token), members, metrics).await;
        let observation = observe(&results, previous.as_ref());
        if self.ctx.observe(key.clone(), observation) {
            let _ = self.trigger.try_send(ObjectRef::from_obj(group));
        }
    }

    /// The group's token, read from its Secret once and cached until a feed fails.
    async fn token(&mut self, key: &GroupKey) -> Option<String> {
        if let Some(t) = self.tokens.get(key) {
            return Some(t.clone());
        }
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &key.0);
        let secret = api.get_opt(&Names::of(&key.1).secret).await.ok()??;
        let bytes = secret.data?.remove("token")?;
        let token = String::from_utf8(bytes.0).ok()?.trim().to_string();
        self.tokens.insert(key.clone(), token.clone());
        Some(token)
    }
}
