//! The agent config the operator renders for a group, in the C19 0.1 format, so the sidecar runs
//! exactly like a hand-configured agent, with peers fed by the operator.

use super::crd::C19GroupSpec;
use super::desired::METRICS_PORT;

pub const CONFIG_FILE: &str = "config.yaml";
pub const TOKEN_DIR: &str = "/etc/c19/token";
pub const SEED_DIR: &str = "/etc/c19/seed";

/// The agent's warm-up timeout (ms): the spec's, or the agent's default.
pub fn warmup_timeout(spec: &C19GroupSpec) -> u64 {
    spec.agent.connection.warmup_timeout.unwrap_or(300_000)
}

/// Renders the agent config of a group; defaults are C19 0.1's. `service` is the DNS name of the
/// group's headless Service, where agents find each other while the operator is silent.
pub fn agent_config(spec: &C19GroupSpec, service: &str) -> String {
    let state = &spec.agent.state;
    let conn = &spec.agent.connection;
    let opt = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
    let mut out = String::from(
        "# Rendered by the c19 operator; edits are overwritten.\nversion: 0.1\nspec:\n",
    );
    out.push_str("  agent:\n    kind: Default\n    port: 3097\n    bind: 127.0.0.1\n");
    out.push_str(&format!(
        "  state:\n    kind: Default\n    ttl: {}\n    purge_interval: {}\n    tombstone_lifetime: {}\n",
        opt(state.ttl),
        state.purge_interval.unwrap_or(60_000),
        state.tombstone_lifetime.unwrap_or(3_600_000),
    ));
    if state.seed.is_some() {
        out.push_str(&format!(
            "    data_seeder:\n      kind: File\n      filename: {SEED_DIR}/data.json\n"
        ));
    }
    out.push_str(&format!(
        "  connection:\n    kind: Default\n    port: 4097\n    bind: 0.0.0.0\n    push_interval: {}\n    pull_interval: {}\n    r0: {}\n    timeout: {}\n    warmup_timeout: {}\n    metrics_port: {METRICS_PORT}\n    token_file: {TOKEN_DIR}/token\n    peer_provider:\n      kind: Operator\n      dns: {service}\n",
        conn.push_interval.unwrap_or(1000),
        conn.pull_interval.unwrap_or(60_000),
        conn.r0.unwrap_or(3),
        conn.timeout.unwrap_or(1000),
        warmup_timeout(spec),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, PeerProviderConfig};
    use serde_json::json;

    fn spec(agent: serde_json::Value) -> C19GroupSpec {
        serde_json::from_value(json!({"template": {}, "agent": agent})).unwrap()
    }

    #[test]
    fn the_rendered_config_is_a_valid_agent_config() {
        let text = agent_config(&spec(json!({})), "web-c19.shop.svc");
        let c = Config::parse(&text, std::path::Path::new("rendered")).unwrap();
        assert_eq!(c.spec.agent.bind, "127.0.0.1");
        assert_eq!(c.spec.connection.metrics_port, Some(9097));
        assert_eq!(c.spec.connection.push_interval, 1000);
        assert_eq!(
            c.spec.connection.peer_provider,
            PeerProviderConfig::Operator {
                dns: Some("web-c19.shop.svc".into()),
                dns_after: 5000
            }
        );
        assert_eq!(
            c.spec.connection.token_file.as_deref(),
            Some(std::path::Path::new("/etc/c19/token/token"))
        );
        assert!(c.spec.state.data_seeder.is_none());
    }

    #[test]
    fn spec_settings_reach_the_config() {
        let text = agent_config(
            &spec(json!({
                "state": {"ttl": 5000, "purgeInterval": 100, "tombstoneLifetime": 9, "seed": {"configMap": "s", "key": "k"}},
                "connection": {"pushInterval": 200, "pullInterval": 3000, "r0": 4, "timeout": 300, "warmupTimeout": 5000}
            })),
            "web-c19.shop.svc",
        );
        let c = Config::parse(&text, std::path::Path::new("rendered")).unwrap();
        assert_eq!(c.spec.state.ttl, Some(5000));
        assert_eq!(c.spec.state.purge_interval, 100);
        assert_eq!(c.spec.state.tombstone_lifetime, 9);
        assert!(c.spec.state.data_seeder.is_some());
        let k = &c.spec.connection;
        assert_eq!(
            (k.push_interval, k.pull_interval, k.r0, k.timeout),
            (200, 3000, 4, 300)
        );
        assert_eq!(k.warmup_timeout, 5000);
    }
}
