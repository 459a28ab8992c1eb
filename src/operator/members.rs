//! A group's members from its EndpointSlices (discovery.k8s.io/v1): the successor of core
//! Endpoints, which are deprecated since 1.33 and truncated at 1000 addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::desired::{GROUP_LABEL, PEER_PORT};
use super::health::Member;

/// A group: namespace and name.
pub type GroupKey = (String, String);

/// Members of every group, from all slices (a group's Service may have several).
pub fn members_by_group<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeMap<GroupKey, Vec<Member>> {
    let mut out: BTreeMap<GroupKey, BTreeSet<Member>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        let (Some(group), Some(ns)) = (
            labels.and_then(|l| l.get(GROUP_LABEL)),
            slice.metadata.namespace.as_ref(),
        ) else {
            continue;
        };
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("c19-peer"))
            .and_then(|p| p.port)
            .unwrap_or(PEER_PORT) as u16;
        let members = out.entry((ns.clone(), group.clone())).or_default();
        for ep in &slice.endpoints {
            if ep
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false)
            {
                continue;
            }
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let address = SocketAddr::new(ip, port).to_string();
            let name = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| address.clone());
            members.insert(Member { name, address });
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(name: &str, group: &str, endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": name, "namespace": "shop", "labels": {GROUP_LABEL: group, "kubernetes.io/service-name": format!("{group}-c19")}},
            "ports": [{"name": "c19-peer", "port": 4097, "protocol": "TCP"}],
            "endpoints": endpoints
        }))
        .unwrap()
    }

    #[test]
    fn members_come_from_every_slice_of_a_group_without_terminating_ones() {
        let a = slice(
            "web-c19-1",
            "web",
            json!([
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "web-a"}, "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "web-b"}, "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"], "targetRef": {"kind": "Pod", "name": "web-c"}, "conditions": {"terminating": true}}
            ]),
        );
        let b = slice("web-c19-2", "web", json!([{"addresses": ["10.0.0.4"]}]));
        let other = slice("db-c19-1", "db", json!([]));
        let m = members_by_group([&a, &b, &other]);
        let web = &m[&("shop".to_string(), "web".to_string())];
        let names: Vec<_> = web.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["10.0.0.4:4097", "web-a", "web-b"]);
        assert_eq!(web[1].address, "10.0.0.1:4097");
        assert!(m[&("shop".to_string(), "db".to_string())].is_empty());
    }
}
