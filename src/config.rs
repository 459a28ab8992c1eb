//! The C19 YAML configuration, compatible with C19 0.1.
//!
//! Every file the original agent accepted keeps its meaning: same field names, same defaults, all
//! durations in milliseconds. Unlike the original, unknown fields are rejected, because a silently
//! ignored typo (`push_intreval`) is a production incident waiting to happen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

/// Why a configuration file could not be used. Rendered as one line naming the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: {field}: {message}")]
    Invalid {
        file: PathBuf,
        field: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_version", deserialize_with = "version_string")]
    pub version: String,
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(default)]
    pub agent: AgentConfig,
    #[serde(default)]
    pub state: StateConfig,
    #[serde(default)]
    pub connection: ConnectionConfig,
}

/// The only layer implementation C19 0.1 had; kept so that `kind: Default` still parses.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum LayerKind {
    #[default]
    Default,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    #[serde(default)]
    pub kind: LayerKind,
    #[serde(default = "default_agent_port")]
    pub port: u16,
    /// The app API is for the local app only, so it binds to loopback unless told otherwise.
    #[serde(default = "default_agent_bind")]
    pub bind: String,
    #[serde(default = "default_agent_max_body")]
    pub max_body_bytes: usize,
    #[serde(default = "default_max_key")]
    pub max_key_bytes: usize,
    /// Entries in one app batch: bounded so that one request cannot hold the state for long.
    #[serde(default = "default_max_batch")]
    pub max_batch_entries: usize,
    /// Watch streams served at once; one more is answered 503.
    #[serde(default = "default_max_watchers")]
    pub max_watchers: usize,
    /// Changes kept for watchers that reconnect with the position they stopped at.
    #[serde(default = "default_watch_history")]
    pub watch_history: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default)]
    pub kind: LayerKind,
    /// Default TTL (ms) for values written without one; `null` means they never expire.
    #[serde(default)]
    pub ttl: Option<u64>,
    #[serde(default = "default_purge_interval")]
    pub purge_interval: u64,
    /// How long (ms after its `ts`, or after its expiry for a value with a TTL) a delete or an
    /// expired value is remembered so that an older copy elsewhere cannot resurrect it.
    #[serde(default = "default_tombstone_lifetime")]
    pub tombstone_lifetime: u64,
    #[serde(default)]
    pub data_seeder: Option<DataSeederConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum DataSeederConfig {
    File { filename: PathBuf },
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    #[serde(default)]
    pub kind: LayerKind,
    #[serde(default = "default_connection_port")]
    pub port: u16,
    /// Peers are reached on the pod IP, so the peer API listens on every address by default.
    #[serde(default = "default_connection_bind")]
    pub bind: String,
    #[serde(default)]
    pub target_port: Option<u16>,
    #[serde(default = "default_push_interval")]
    pub push_interval: u64,
    #[serde(default = "default_pull_interval")]
    pub pull_interval: u64,
    #[serde(default = "default_r0")]
    pub r0: usize,
    /// Whole-request timeout (ms), not only the connect timeout as in the original.
    #[serde(default = "default_timeout")]
    pub timeout: u64,
    #[serde(default = "default_peer_max_body")]
    pub max_body_bytes: usize,
    /// A port of its own for `/metrics` (and `/healthz`), on `bind`: a Prometheus outside the
    /// group can be let in there without reaching the peer API.
    #[serde(default)]
    pub metrics_port: Option<u16>,
    /// How long (ms) a starting agent may wait for a peer list and copy a member's state before
    /// it reports ready with what it holds.
    #[serde(default = "default_warmup_timeout")]
    pub warmup_timeout: u64,
    /// A file holding the bearer token that every peer request must carry.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub peer_provider: PeerProviderConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum PeerProviderConfig {
    /// A fixed list: `ip`, `ip:port`, `host`, `host:port`, `[v6]:port` or a bare IPv6 address.
    Static {
        #[serde(default)]
        peers: Vec<String>,
    },
    /// Pods selected by labels, in one namespace or in all of them (`:all`), as in C19 0.1.
    K8s {
        #[serde(default)]
        selector: BTreeMap<String, String>,
        #[serde(default = "default_namespace")]
        namespace: String,
    },
    /// Every address a DNS name resolves to (a headless Service), re-resolved every `interval` ms.
    Dns {
        name: String,
        #[serde(default = "default_dns_interval")]
        interval: u64,
    },
    /// Peers are set by the c19 operator through `PUT /c19/peers` on the peer port. With `dns`
    /// (the group's headless Service), an agent the operator is silent to finds its peers there:
    /// `dns_after` ms after its start without a list, and after a silence of
    /// [`OPERATOR_SILENCE_MS`] once fed, until the operator's lists arrive again.
    Operator {
        #[serde(default)]
        dns: Option<String>,
        #[serde(default = "default_dns_after")]
        dns_after: u64,
    },
}

impl Default for PeerProviderConfig {
    fn default() -> Self {
        PeerProviderConfig::K8s {
            selector: BTreeMap::new(),
            namespace: default_namespace(),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        from_empty()
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        from_empty()
    }
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        from_empty()
    }
}

/// Builds a layer from an empty mapping, so the serde defaults are the single source of truth.
fn from_empty<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_value(serde_json::json!({})).expect("every layer field has a default")
}

fn default_version() -> String {
    "0.1".into()
}
fn default_agent_port() -> u16 {
    3097
}
fn default_agent_bind() -> String {
    "127.0.0.1".into()
}
fn default_agent_max_body() -> usize {
    16 << 20
}
fn default_max_key() -> usize {
    1024
}
fn default_max_batch() -> usize {
    1_000_000
}
fn default_max_watchers() -> usize {
    256
}
fn default_watch_history() -> usize {
    crate::state::store::DEFAULT_WATCH_HISTORY
}
fn default_purge_interval() -> u64 {
    60_000
}
fn default_tombstone_lifetime() -> u64 {
    3_600_000
}
fn default_connection_port() -> u16 {
    4097
}
fn default_connection_bind() -> String {
    "0.0.0.0".into()
}
fn default_push_interval() -> u64 {
    1000
}
fn default_pull_interval() -> u64 {
    60_000
}
fn default_r0() -> usize {
    3
}
fn default_timeout() -> u64 {
    1000
}
fn default_warmup_timeout() -> u64 {
    300_000
}
fn default_peer_max_body() -> usize {
    64 << 20
}
fn default_namespace() -> String {
    "default".into()
}
fn default_dns_after() -> u64 {
    5000
}

/// How long an agent fed by the operator goes without a peer list before it turns to DNS again:
/// three of the operator's re-sends (every 30 s by default).
pub const OPERATOR_SILENCE_MS: u64 = 90_000;

fn default_dns_interval() -> u64 {
    5000
}

/// `version: 0.1` is a YAML float; accept it and its string form alike.
fn version_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum V {
        S(String),
        F(f64),
    }
    Ok(match V::deserialize(d)? {
        V::S(s) => s,
        V::F(f) => f.to_string(),
    })
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
            file: file.to_owned(),
            source,
        })?;
        Config::parse(&text, file)
    }

    /// Parses and validates config text; `file` only names the source in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let config: Config = serde_yaml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: one_line(&e.to_string()),
        })?;
        config
            .validate()
            .map_err(|(field, message)| ConfigError::Invalid {
                file: file.to_owned(),
                field,
                message,
            })?;
        Ok(config)
    }

    /// Checks what the types cannot: ranges and the supported version.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        let c = &self.spec.connection;
        let s = &self.spec.state;
        let checks: [(bool, &'static str, &str); 13] = [
            (
                self.version == "0.1",
                "version",
                "only version 0.1 is supported",
            ),
            (
                c.push_interval > 0,
                "spec.connection.push_interval",
                "must be at least 1 ms",
            ),
            (
                c.pull_interval > 0,
                "spec.connection.pull_interval",
                "must be at least 1 ms",
            ),
            (
                c.timeout > 0,
                "spec.connection.timeout",
                "must be at least 1 ms",
            ),
            (c.r0 > 0, "spec.connection.r0", "must be at least 1"),
            (
                c.warmup_timeout > 0,
                "spec.connection.warmup_timeout",
                "must be at least 1 ms",
            ),
            (
                s.purge_interval > 0,
                "spec.state.purge_interval",
                "must be at least 1 ms",
            ),
            (
                c.max_body_bytes > 0,
                "spec.connection.max_body_bytes",
                "must be positive",
            ),
            (
                self.spec.agent.max_key_bytes > 0,
                "spec.agent.max_key_bytes",
                "must be positive",
            ),
            (
                self.spec.agent.max_body_bytes > 0,
                "spec.agent.max_body_bytes",
                "must be positive",
            ),
            (
                self.spec.agent.max_watchers > 0,
                "spec.agent.max_watchers",
                "must be at least 1",
            ),
            (
                self.spec.agent.watch_history > 0,
                "spec.agent.watch_history",
                "must be at least 1",
            ),
            (
                self.spec.agent.max_batch_entries > 0,
                "spec.agent.max_batch_entries",
                "must be positive",
            ),
        ];
        if let Some((_, field, message)) = checks.iter().find(|(ok, _, _)| !ok) {
            return Err((field, message.to_string()));
        }
        if self.spec.agent.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(("spec.agent.bind", "must be an IP address".into()));
        }
        if c.bind.parse::<std::net::IpAddr>().is_err() {
            return Err(("spec.connection.bind", "must be an IP address".into()));
        }
        if let PeerProviderConfig::Dns { name, interval } = &c.peer_provider {
            if name.is_empty() {
                return Err((
                    "spec.connection.peer_provider.name",
                    "must not be empty".into(),
                ));
            }
            if *interval == 0 {
                return Err((
                    "spec.connection.peer_provider.interval",
                    "must be at least 1 ms".into(),
                ));
            }
        }
        Ok(())
    }

    /// The port used to reach peers given without one.
    pub fn target_port(&self) -> u16 {
        self.spec
            .connection
            .target_port
            .unwrap_or(self.spec.connection.port)
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("c.yaml"))
    }

    #[test]
    fn original_example_keeps_its_meaning() {
        let c = parse(
            "version: 0.1\nspec:\n  agent: {kind: Default, port: 3097}\n  state:\n    kind: Default\n    ttl: null\n    purge_interval: 60000\n    data_seeder: {kind: File, filename: data.json}\n  connection:\n    kind: Default\n    port: 4097\n    target_port: null\n    push_interval: 1000\n    pull_interval: 60000\n    r0: 3\n    timeout: 1000\n    peer_provider: {kind: Static, peers: [192.168.1.2, \"192.168.1.3:4097\"]}\n",
        )
        .unwrap();
        assert_eq!(c.version, "0.1");
        assert_eq!(c.spec.agent.port, 3097);
        assert_eq!(
            c.spec.state.data_seeder,
            Some(DataSeederConfig::File {
                filename: "data.json".into()
            })
        );
        assert_eq!(
            c.spec.connection.peer_provider,
            PeerProviderConfig::Static {
                peers: vec!["192.168.1.2".into(), "192.168.1.3:4097".into()]
            }
        );
        assert_eq!(c.target_port(), 4097);
    }

    #[test]
    fn missing_fields_take_the_original_defaults() {
        let c = parse("version: 0.1\nspec: {}\n").unwrap();
        assert_eq!(c.spec.agent.port, 3097);
        assert_eq!(c.spec.agent.bind, "127.0.0.1");
        assert_eq!(c.spec.state.ttl, None);
        assert_eq!(c.spec.state.purge_interval, 60_000);
        assert_eq!(c.spec.connection.port, 4097);
        assert_eq!(c.spec.connection.target_port, None);
        assert_eq!(c.spec.connection.push_interval, 1000);
        assert_eq!(c.spec.connection.pull_interval, 60_000);
        assert_eq!(c.spec.connection.r0, 3);
        assert_eq!(c.spec.connection.timeout, 1000);
        assert_eq!(
            c.spec.connection.peer_provider,
            PeerProviderConfig::K8s {
                selector: BTreeMap::new(),
                namespace: "default".into()
            }
        );
    }

    #[test]
    fn k8s_and_new_providers_parse() {
        let c = parse("spec:\n  connection:\n    peer_provider: {kind: K8s, selector: {c19: g}, namespace: \":all\"}\n").unwrap();
        assert!(
            matches!(c.spec.connection.peer_provider, PeerProviderConfig::K8s { ref namespace, .. } if namespace == ":all")
        );
        let c =
            parse("spec:\n  connection:\n    peer_provider: {kind: Dns, name: g.default.svc}\n")
                .unwrap();
        assert_eq!(
            c.spec.connection.peer_provider,
            PeerProviderConfig::Dns {
                name: "g.default.svc".into(),
                interval: 5000
            }
        );
        let c = parse("spec:\n  connection:\n    peer_provider: {kind: Operator}\n").unwrap();
        assert_eq!(
            c.spec.connection.peer_provider,
            PeerProviderConfig::Operator {
                dns: None,
                dns_after: 5000
            }
        );
        let c = parse(
            "spec:\n  connection:\n    peer_provider: {kind: Operator, dns: web-c19.shop.svc, dns_after: 2000}\n",
        )
        .unwrap();
        assert_eq!(
            c.spec.connection.peer_provider,
            PeerProviderConfig::Operator {
                dns: Some("web-c19.shop.svc".into()),
                dns_after: 2000
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_field_on_one_line() {
        let cases = [
            (
                "spec:\n  connection:\n    push_intreval: 5\n",
                "push_intreval",
            ),
            ("spec:\n  connection:\n    r0: many\n", "spec.connection.r0"),
            ("spec:\n  agent:\n    port: 70000\n", "spec.agent.port"),
            ("spec:\n  connection:\n    r0: 0\n", "spec.connection.r0"),
            ("version: 0.2\nspec: {}\n", "version"),
            (
                "spec:\n  connection:\n    peer_provider: {kind: Consul}\n",
                "Consul",
            ),
            ("spec:\n  agent:\n    bind: localhost\n", "spec.agent.bind"),
            ("spec: [\n", "c.yaml"),
        ];
        for (text, needle) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.starts_with("c.yaml: "), "{e}");
            assert!(e.contains(needle), "{e} should name {needle}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = Config::load(Path::new("/nonexistent/c19.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("/nonexistent/c19.yaml: cannot read"), "{e}");
    }
}
