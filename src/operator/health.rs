//! Health of a group from observations, as pure functions: what the probe saw, the status that
//! follows, the conditions (keeping `lastTransitionTime` when nothing changed), and the events
//! that mark transitions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::crd::C19GroupStatus;
use crate::connection::api::DigestReport;

/// Members listed in a status field, at most.
pub const LISTED_MAX: usize = 10;

/// One agent of a group, as its EndpointSlice lists it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    /// The pod name, or the address when the slice names no pod.
    pub name: String,
    /// `ip:port` of the peer API.
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Answered(DigestReport),
    Unreachable(String),
}

/// What one probe round saw of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observation {
    pub members: usize,
    pub reachable: usize,
    /// Keys held by the majority of members.
    pub keys: Option<usize>,
    /// Members whose digest differs from the majority's.
    pub divergent: Vec<String>,
    pub unreachable: Vec<String>,
    /// Addresses of members whose peer count shows they lack the current peer list.
    pub stale_peers: Vec<String>,
    /// Consecutive rounds in which some member differed; gossip in flight makes single rounds
    /// differ routinely, so divergence is reported from the second round on.
    pub divergent_rounds: u32,
    /// The agent versions the members that answered report (`unknown` for C19 0.1 agents).
    pub versions: Vec<String>,
}

impl Observation {
    pub fn converged(&self) -> bool {
        self.members > 0
            && self.unreachable.is_empty()
            && (self.divergent.is_empty() || self.divergent_rounds < 2)
    }
}

/// Summarizes a probe round; `previous` carries the count of divergent rounds.
pub fn observe(results: &[(Member, Probe)], previous: Option<&Observation>) -> Observation {
    let mut by_digest: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut unreachable = Vec::new();
    let mut stale_peers = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    let expected_peers = results.len().saturating_sub(1);
    for (member, probe) in results {
        match probe {
            Probe::Answered(r) => {
                versions.insert(r.agent.clone().unwrap_or_else(|| "unknown".into()));
                let e = by_digest.entry(r.digest.as_str()).or_insert((0, r.keys));
                e.0 += 1;
                if r.peers != expected_peers && r.peers != super::agents::UNKNOWN_PEERS {
                    stale_peers.push(member.address.clone());
                }
            }
            Probe::Unreachable(_) => unreachable.push(member.name.clone()),
        }
    }
    // The majority digest; ties go to the state with more keys, then to the smaller digest, so
    // every operator replica picks the same one.
    let majority = by_digest
        .iter()
        .max_by(|a, b| a.1.0.cmp(&b.1.0).then(a.1.1.cmp(&b.1.1)).then(b.0.cmp(a.0)))
        .map(|(d, (_, keys))| (d.to_string(), *keys));
    let mut divergent: Vec<String> = results
        .iter()
        .filter_map(|(m, p)| match (p, &majority) {
            (Probe::Answered(r), Some((d, _))) if &r.digest != d => Some(m.name.clone()),
            _ => None,
        })
        .collect();
    divergent.sort();
    unreachable.sort();
    let divergent_rounds = if divergent.is_empty() {
        0
    } else {
        previous.map_or(0, |p| p.divergent_rounds) + 1
    };
    Observation {
        members: results.len(),
        reachable: results.len() - unreachable.len(),
        keys: majority.map(|(_, k)| k),
        divergent,
        unreachable,
        stale_peers,
        divergent_rounds,
        versions: versions.into_iter().collect(),
    }
}

/// Inputs of a status besides the probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub generation: Option<i64>,
    pub desired_replicas: i32,
    pub replicas: i32,
    pub ready_replicas: i32,
    pub selector: String,
    /// How far the Deployment's rollout is, while one runs.
    pub rollout: Option<String>,
    /// The agent image the group's pods are given.
    pub agent_image: Option<String>,
    /// Why the spec cannot be reconciled, if it cannot.
    pub invalid: Option<String>,
}

/// The status that follows from the facts and the last observation.
pub fn status(
    previous: &C19GroupStatus,
    facts: &Facts,
    obs: Option<&Observation>,
    now: &Time,
) -> C19GroupStatus {
    let ready = ready_condition(facts);
    let progressing = progressing_condition(facts);
    let converged = match &facts.rollout {
        // Members come and go while pods roll: convergence is claimed once the rollout is over.
        Some(progress) => (
            "False",
            "RollingOut".into(),
            format!("rollout in progress: {progress}"),
        ),
        None => converged_condition(obs),
    };
    let mut conditions = previous.conditions.clone();
    for (type_, (status, reason, message)) in [
        ("Ready", ready),
        ("Progressing", progressing),
        ("Converged", converged),
    ] {
        set_condition(
            &mut conditions,
            type_,
            status,
            &reason,
            &message,
            facts.generation,
            now,
        );
    }
    let cap = |v: &[String]| v.iter().take(LISTED_MAX).cloned().collect::<Vec<_>>();
    C19GroupStatus {
        observed_generation: facts.generation,
        replicas: facts.replicas,
        ready_replicas: facts.ready_replicas,
        selector: facts.selector.clone(),
        members: obs.map_or(0, |o| o.members as i32),
        reachable: obs.map_or(0, |o| o.reachable as i32),
        keys: obs.and_then(|o| o.keys).map(|k| k as i64),
        converged: facts.rollout.is_none() && obs.is_some_and(Observation::converged),
        divergent: obs
            .filter(|o| o.divergent_rounds >= 2)
            .map(|o| cap(&o.divergent))
            .unwrap_or_default(),
        unreachable: obs.map(|o| cap(&o.unreachable)).unwrap_or_default(),
        agent_image: facts.agent_image.clone(),
        agent_versions: obs.map(|o| o.versions.clone()).unwrap_or_default(),
        conditions,
    }
}

type ConditionValue = (&'static str, String, String);

fn ready_condition(f: &Facts) -> ConditionValue {
    if let Some(why) = &f.invalid {
        return ("False", "InvalidSpec".into(), why.clone());
    }
    if f.ready_replicas >= f.desired_replicas {
        return (
            "True",
            "ReplicasReady".into(),
            format!("{}/{} pods ready", f.ready_replicas, f.desired_replicas),
        );
    }
    (
        "False",
        "ReplicasNotReady".into(),
        format!("{}/{} pods ready", f.ready_replicas, f.desired_replicas),
    )
}

/// `Progressing` is True while the group's pods roll out (one at a time, none taken down before
/// its replacement is warm), False once every pod runs the current template.
fn progressing_condition(f: &Facts) -> ConditionValue {
    match &f.rollout {
        Some(progress) => ("True", "RollingOut".into(), progress.clone()),
        None => (
            "False",
            "RolloutComplete".into(),
            "every pod runs the current template".into(),
        ),
    }
}

fn converged_condition(obs: Option<&Observation>) -> ConditionValue {
    let Some(o) = obs else {
        return (
            "Unknown",
            "NotProbed".into(),
            "no health probe has run yet".into(),
        );
    };
    if o.members == 0 {
        return (
            "Unknown",
            "NoMembers".into(),
            "the group has no agents to probe".into(),
        );
    }
    if !o.unreachable.is_empty() {
        let names = listed(&o.unreachable);
        return (
            "False",
            "MembersUnreachable".into(),
            format!(
                "{} of {} members did not answer: {names}",
                o.unreachable.len(),
                o.members
            ),
        );
    }
    if !o.converged() {
        let names = listed(&o.divergent);
        return (
            "False",
            "Diverged".into(),
            format!(
                "{} of {} members hold a different state: {names}",
                o.divergent.len(),
                o.members
            ),
        );
    }
    (
        "True",
        "Converged".into(),
        format!("all {} members hold the same state", o.members),
    )
}

/// At most `LISTED_MAX` names, comma-separated, for a condition message.
fn listed(names: &[String]) -> String {
    names
        .iter()
        .take(LISTED_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sets a condition in a list keyed by `type`, keeping `lastTransitionTime` unless the status
/// changed.
pub fn set_condition(
    list: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) {
    let existing = list.iter().position(|c| c.type_ == type_);
    let last_transition_time = match existing.map(|i| &list[i]) {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time,
    };
    match existing {
        Some(i) => list[i] = condition,
        None => list.push(condition),
    }
}

/// A Kubernetes Event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

/// Events for what changed between two statuses.
pub fn transitions(old: &C19GroupStatus, new: &C19GroupStatus) -> Vec<Transition> {
    let cond = |s: &C19GroupStatus, t: &str| s.conditions.iter().find(|c| c.type_ == t).cloned();
    let mut out = Vec::new();
    let (old_c, new_c) = (cond(old, "Converged"), cond(new, "Converged"));
    if let Some(n) = &new_c {
        let changed = old_c
            .as_ref()
            .is_none_or(|o| o.status != n.status || o.reason != n.reason);
        if changed {
            match (n.status.as_str(), n.reason.as_str()) {
                ("True", _) => out.push(Transition {
                    warning: false,
                    reason: "Converged",
                    note: n.message.clone(),
                }),
                ("False", "MembersUnreachable") => out.push(Transition {
                    warning: true,
                    reason: "MemberUnreachable",
                    note: n.message.clone(),
                }),
                ("False", _) => out.push(Transition {
                    warning: true,
                    reason: "Diverged",
                    note: n.message.clone(),
                }),
                _ => {}
            }
        }
    }
    if let Some(n) = cond(new, "Ready") {
        let old_r = cond(old, "Ready");
        if n.reason == "InvalidSpec"
            && old_r.is_none_or(|o| o.reason != n.reason || o.message != n.message)
        {
            out.push(Transition {
                warning: true,
                reason: "InvalidSpec",
                note: n.message.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(i: usize) -> Member {
        Member {
            name: format!("web-{i}"),
            address: format!("10.0.0.{i}:4097"),
        }
    }

    fn answered(digest: &str, keys: usize, peers: usize) -> Probe {
        Probe::Answered(DigestReport {
            digest: digest.into(),
            keys,
            tombstones: 0,
            version: String::new(),
            peers,
            agent: Some("0.1.0".into()),
            since: None,
        })
    }

    fn t(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn facts() -> Facts {
        Facts {
            generation: Some(2),
            desired_replicas: 3,
            replicas: 3,
            ready_replicas: 3,
            selector: "c19.dev/group=web".into(),
            rollout: None,
            agent_image: None,
            invalid: None,
        }
    }

    #[test]
    fn a_rollout_is_progressing_and_not_converged_until_it_ends() {
        let now = t("2026-01-01T00:00:00Z");
        let r: Vec<_> = (1..=3).map(|i| (member(i), answered("7", 5, 2))).collect();
        let obs = observe(&r, None);
        let condition = |s: &C19GroupStatus, type_: &str| {
            let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
            (c.status.clone(), c.reason.clone())
        };
        let rolling = Facts {
            rollout: Some("1 of 3 pods updated".into()),
            ..facts()
        };
        let s = status(&C19GroupStatus::default(), &rolling, Some(&obs), &now);
        assert!(!s.converged, "equal digests, but pods still roll");
        assert_eq!(
            condition(&s, "Progressing"),
            ("True".into(), "RollingOut".into())
        );
        assert_eq!(
            condition(&s, "Converged"),
            ("False".into(), "RollingOut".into())
        );
        let s = status(&s, &facts(), Some(&obs), &now);
        assert!(s.converged);
        assert_eq!(
            condition(&s, "Progressing"),
            ("False".into(), "RolloutComplete".into())
        );
        assert_eq!(
            condition(&s, "Converged"),
            ("True".into(), "Converged".into())
        );
    }

    #[test]
    fn equal_digests_are_converged() {
        let r: Vec<_> = (1..=3).map(|i| (member(i), answered("7", 5, 2))).collect();
        let o = observe(&r, None);
        assert!(o.converged());
        assert_eq!((o.members, o.reachable, o.keys), (3, 3, Some(5)));
        assert_eq!(o.versions, ["0.1.0"], "the versions present");
        assert!(o.stale_peers.is_empty());
    }

    #[test]
    fn a_divergent_member_is_reported_from_the_second_round() {
        let r = vec![
            (member(1), answered("7", 5, 2)),
            (member(2), answered("7", 5, 2)),
            (member(3), answered("9", 4, 0)),
        ];
        let first = observe(&r, None);
        assert_eq!(first.divergent, ["web-3"]);
        assert!(
            first.converged(),
            "one round of difference is gossip in flight"
        );
        let second = observe(&r, Some(&first));
        assert!(!second.converged());
        assert_eq!(second.stale_peers, ["10.0.0.3:4097"]);
        let s = status(
            &C19GroupStatus::default(),
            &facts(),
            Some(&second),
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(s.divergent, ["web-3"]);
        assert!(!s.converged);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Converged")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Diverged")
        );
    }

    #[test]
    fn an_unreachable_member_is_reported_at_once() {
        let r = vec![
            (member(1), answered("7", 5, 1)),
            (member(2), Probe::Unreachable("timeout".into())),
        ];
        let o = observe(&r, None);
        assert!(!o.converged());
        let s = status(
            &C19GroupStatus::default(),
            &facts(),
            Some(&o),
            &t("2026-01-01T00:00:00Z"),
        );
        assert_eq!(s.unreachable, ["web-2"]);
        assert_eq!(s.reachable, 1);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Converged")
            .unwrap();
        assert_eq!(c.reason, "MembersUnreachable");
        assert!(c.message.contains("web-2"));
    }

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let r: Vec<_> = (1..=3).map(|i| (member(i), answered("7", 5, 2))).collect();
        let o = observe(&r, None);
        let s1 = status(
            &C19GroupStatus::default(),
            &facts(),
            Some(&o),
            &t("2026-01-01T00:00:00Z"),
        );
        let s2 = status(&s1, &facts(), Some(&o), &t("2026-01-01T00:05:00Z"));
        assert_eq!(
            s1, s2,
            "an unchanged group yields an identical status: nothing to write"
        );
        let bad = vec![
            (member(1), answered("7", 5, 2)),
            (member(2), Probe::Unreachable("x".into())),
        ];
        let s3 = status(
            &s2,
            &facts(),
            Some(&observe(&bad, None)),
            &t("2026-01-01T00:06:00Z"),
        );
        let c = s3
            .conditions
            .iter()
            .find(|c| c.type_ == "Converged")
            .unwrap();
        assert_eq!(c.last_transition_time, t("2026-01-01T00:06:00Z"));
        let ready = s3.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.last_transition_time, t("2026-01-01T00:00:00Z"));
        assert_eq!(ready.observed_generation, Some(2));
    }

    #[test]
    fn ready_follows_the_replicas_and_the_spec() {
        let now = t("2026-01-01T00:00:00Z");
        let s = status(
            &C19GroupStatus::default(),
            &Facts {
                ready_replicas: 1,
                ..facts()
            },
            None,
            &now,
        );
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.message.as_str()),
            ("False", "1/3 pods ready")
        );
        let converged = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Converged")
            .unwrap();
        assert_eq!(converged.status, "Unknown");
        let s = status(
            &C19GroupStatus::default(),
            &Facts {
                invalid: Some("bad port".into()),
                ..facts()
            },
            None,
            &now,
        );
        let ready = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.reason.as_str(), ready.message.as_str()),
            ("InvalidSpec", "bad port")
        );
    }

    #[test]
    fn events_mark_transitions_only() {
        let now = t("2026-01-01T00:00:00Z");
        let good: Vec<_> = (1..=2).map(|i| (member(i), answered("7", 5, 1))).collect();
        let bad = vec![
            (member(1), answered("7", 5, 1)),
            (member(2), Probe::Unreachable("x".into())),
        ];
        let s0 = C19GroupStatus::default();
        let s1 = status(&s0, &facts(), Some(&observe(&good, None)), &now);
        assert_eq!(
            transitions(&s0, &s1)
                .iter()
                .map(|e| e.reason)
                .collect::<Vec<_>>(),
            ["Converged"]
        );
        assert!(
            transitions(
                &s1,
                &status(&s1, &facts(), Some(&observe(&good, None)), &now)
            )
            .is_empty()
        );
        let s2 = status(&s1, &facts(), Some(&observe(&bad, None)), &now);
        let e = transitions(&s1, &s2);
        assert_eq!((e[0].reason, e[0].warning), ("MemberUnreachable", true));
        let s3 = status(
            &s2,
            &Facts {
                invalid: Some("x".into()),
                ..facts()
            },
            None,
            &now,
        );
        assert!(
            transitions(&s2, &s3)
                .iter()
                .any(|e| e.reason == "InvalidSpec")
        );
    }
}
