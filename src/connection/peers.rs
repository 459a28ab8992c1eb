//! The current peer list, as the peer provider last set it, and the choice of whom to gossip with.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::state::Holders;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PeerError {
    #[error("peer {0:?}: not an address, host or host:port")]
    Invalid(String),
}

/// Normalizes a peer as C19 0.1 wrote them (`ip` or `ip:port`), plus host names and IPv6, into
/// `host:port` (IPv6 in brackets), so the same peer is always spelled the same way.
pub fn normalize(peer: &str, default_port: u16) -> Result<String, PeerError> {
    let peer = peer.trim();
    let invalid = || PeerError::Invalid(peer.to_string());
    if let Ok(sa) = peer.parse::<SocketAddr>() {
        return Ok(sa.to_string());
    }
    if let Ok(ip) = peer
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(SocketAddr::new(ip, default_port).to_string());
    }
    let (host, port) = match peer.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| invalid())?),
        None => (peer, default_port),
    };
    let valid_host = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !valid_host {
        return Err(invalid());
    }
    Ok(format!("{host}:{port}"))
}

/// The peers of this agent, never including itself.
#[derive(Debug)]
pub struct Peers {
    current: RwLock<Arc<Vec<String>>>,
    own: HashSet<String>,
    in_flight: Mutex<HashSet<String>>,
    /// Peers whose last request failed, until when: chosen only when too few others are free,
    /// so pushes keep reaching live peers while some are cut off.
    suspects: Mutex<HashMap<String, Instant>>,
}

/// Marks a peer busy while a request to it is in flight; dropping it frees the peer.
#[derive(Debug)]
pub struct Busy<'a> {
    peers: &'a Peers,
    peer: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.peers
            .in_flight
            .lock()
            .expect("peer lock")
            .remove(&self.peer);
    }
}

impl Peers {
    /// `own` holds the addresses (`host:port`) under which this agent would appear in a list.
    pub fn new(own: HashSet<String>) -> Peers {
        Peers {
            current: RwLock::default(),
            own,
            in_flight: Mutex::default(),
            suspects: Mutex::default(),
        }
    }

    /// Replaces the list; returns whether it changed.
    pub fn set(&self, mut peers: Vec<String>) -> bool {
        peers.retain(|p| !self.own.contains(p));
        peers.sort();
        peers.dedup();
        let mut current = self.current.write().expect("peer lock");
        if **current == peers {
            return false;
        }
        *current = Arc::new(peers);
        true
    }

    pub fn list(&self) -> Arc<Vec<String>> {
        self.current.read().expect("peer lock").clone()
    }

    pub fn len(&self) -> usize {
        self.current.read().expect("peer lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `n` distinct random peers with no request in flight, so that one slow or paused
    /// peer never holds back gossip to the others; suspected peers only when too few others are
    /// free.
    pub fn pick(&self, n: usize, rng: &mut fastrand::Rng) -> Vec<String> {
        self.choose(n, |_| false, rng)
    }

    /// Like [`Peers::pick`], among the peers not known to hold a push's records: where news is
    /// passed on.
    pub fn pick_lacking(
        &self,
        n: usize,
        holders: &Holders,
        rng: &mut fastrand::Rng,
    ) -> Vec<String> {
        self.choose(n, |p| holders.contains(p), rng)
    }

    /// One random peer with no request in flight, not in `tried` and not known to hold the
    /// records: where a push goes when its first choice failed or was busy.
    pub fn pick_other(
        &self,
        tried: &[String],
        holders: &Holders,
        rng: &mut fastrand::Rng,
    ) -> Option<String> {
        let skip = |p: &str| tried.iter().any(|t| t == p) || holders.contains(p);
        self.choose(1, skip, rng).pop()
    }

    /// The names under which this agent appears in its peers' lists.
    pub fn own(&self) -> impl Iterator<Item = &str> {
        self.own.iter().map(|s| s.as_str())
    }

    fn choose(
        &self,
        n: usize,
        skip: impl Fn(&str) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Vec<String> {
        let list = self.list();
        let busy = self.in_flight.lock().expect("peer lock");
        let now = Instant::now();
        let suspects = self.suspects.lock().expect("peer lock");
        let suspected = |p: &String| suspects.get(p).is_some_and(|until| *until > now);
        let (mut trusted, mut doubted): (Vec<&String>, Vec<&String>) = list
            .iter()
            .filter(|p| !busy.contains(*p) && !skip(p))
            .partition(|p| !suspected(p));
        rng.shuffle(&mut trusted);
        rng.shuffle(&mut doubted);
        trusted
            .into_iter()
            .chain(doubted)
            .take(n)
            .cloned()
            .collect()
    }

    /// Records the outcome of a request to `peer`: a failure makes it a suspect for `window`.
    pub fn report(&self, peer: &str, ok: bool, window: Duration) {
        let mut suspects = self.suspects.lock().expect("peer lock");
        if ok {
            suspects.remove(peer);
        } else {
            suspects.insert(peer.to_string(), Instant::now() + window);
        }
    }

    /// Claims `peer` for one request; `None` when a request to it is already in flight.
    pub fn claim(&self, peer: &str) -> Option<Busy<'_>> {
        let mut busy = self.in_flight.lock().expect("peer lock");
        busy.insert(peer.to_string()).then(|| Busy {
            peers: self,
            peer: peer.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_every_spelling_of_a_peer() {
        let n = |p| normalize(p, 4097);
        assert_eq!(n("192.168.1.2").unwrap(), "192.168.1.2:4097");
        assert_eq!(n("192.168.1.3:5000").unwrap(), "192.168.1.3:5000");
        assert_eq!(n("::1").unwrap(), "[::1]:4097");
        assert_eq!(n("[fe80::1]:99").unwrap(), "[fe80::1]:99");
        assert_eq!(n("[fe80::1]").unwrap(), "[fe80::1]:4097");
        assert_eq!(
            n("c19-0.c19.default.svc").unwrap(),
            "c19-0.c19.default.svc:4097"
        );
        assert_eq!(n("host:80").unwrap(), "host:80");
        assert!(n("host:http").is_err());
        assert!(n("").is_err());
        assert!(n("a b").is_err());
    }

    #[test]
    fn never_lists_itself_and_skips_busy_peers() {
        let own: HashSet<String> = ["127.0.0.1:4097".to_string()].into();
        let peers = Peers::new(own);
        assert!(peers.set(vec![
            "127.0.0.2:4097".into(),
            "127.0.0.1:4097".into(),
            "127.0.0.3:4097".into()
        ]));
        assert!(!peers.set(vec!["127.0.0.3:4097".into(), "127.0.0.2:4097".into()]));
        assert_eq!(*peers.list(), vec!["127.0.0.2:4097", "127.0.0.3:4097"]);
        let mut rng = fastrand::Rng::with_seed(1);
        let none = Holders::default();
        assert_eq!(peers.pick(5, &mut rng).len(), 2);
        let busy = peers.claim("127.0.0.2:4097").unwrap();
        assert!(peers.claim("127.0.0.2:4097").is_none());
        assert_eq!(peers.pick(5, &mut rng), vec!["127.0.0.3:4097"]);
        assert_eq!(
            peers.pick_other(&[], &none, &mut rng).unwrap(),
            "127.0.0.3:4097"
        );
        assert_eq!(
            peers.pick_other(&["127.0.0.3:4097".into()], &none, &mut rng),
            None
        );
        drop(busy);
        assert_eq!(peers.pick(5, &mut rng).len(), 2);
        let holds_3 = Holders::of(["127.0.0.3:4097"]);
        assert_eq!(
            peers.pick_lacking(5, &holds_3, &mut rng),
            vec!["127.0.0.2:4097"]
        );
        assert_eq!(
            peers.pick_other(&["127.0.0.2:4097".into()], &holds_3, &mut rng),
            None
        );
        assert_eq!(
            peers
                .pick_other(&["127.0.0.3:4097".into()], &none, &mut rng)
                .unwrap(),
            "127.0.0.2:4097"
        );
    }
}
