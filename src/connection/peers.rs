//! The current peer list, as the peer provider last set it, and the choice of whom to gossip with.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::state::Share;
use crate::state::share::address_id;

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
    /// Requests in flight per peer, up to [`MAX_IN_FLIGHT`].
    in_flight: Mutex<HashMap<String, usize>>,
    /// Peers whose last request failed, until when: chosen only when too few others are free,
    /// so pushes keep reaching live peers while some are cut off.
    suspects: Mutex<HashMap<String, Instant>>,
    /// The ids peers answered with (header `c19-agent`), so a share names a peer the same way
    /// for agents that spell its address differently.
    ids: Mutex<HashMap<String, u32>>,
    /// Whether the provider has delivered a list yet, even an empty one: an agent alone in its
    /// group is warm at once, one that has not heard yet is not.
    fed: std::sync::atomic::AtomicBool,
}

/// Requests in flight to one peer at most. Above one, a push whose round trip outlasts a round
/// (a link slower than `push_interval`) overlaps the next round's push instead of holding its
/// news back until it ends; the cap bounds what a dead or paused peer costs: this many requests
/// waiting out their `timeout`. With every link delayed 180 ms each way (push 100 ms), a write
/// reached five agents in 1.0 s (p50) with one slot, 0.84 s with two, 0.62 s with three and
/// 0.48–0.67 s with four.
pub const MAX_IN_FLIGHT: usize = 4;

/// Holds one of a peer's [`MAX_IN_FLIGHT`] slots while a request to it is in flight; dropping
/// it frees the slot.
#[derive(Debug)]
pub struct Busy<'a> {
    peers: &'a Peers,
    peer: String,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.peers.in_flight.lock().expect("peer lock");
        if let Some(n) = in_flight.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                in_flight.remove(&self.peer);
            }
        }
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
            ids: Mutex::default(),
            fed: Default::default(),
        }
    }

    /// Whether a peer list has been set.
    pub fn fed(&self) -> bool {
        self.fed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the list; returns whether it changed.
    pub fn set(&self, mut peers: Vec<String>) -> bool {
        self.fed.store(true, std::sync::atomic::Ordering::Relaxed);
        peers.retain(|p| !self.own.contains(p));
        peers.sort();
        peers.dedup();
        let mut current = self.current.write().expect("peer lock");
        if **current == peers {
            return false;
        }
        self.ids
            .lock()
            .expect("peer lock")
            .retain(|p, _| peers.binary_search(p).is_ok());
        *current = Arc::new(peers);
        true
    }

    /// Notes the id `peer` answered with; a restarted agent answers with a new one.
    pub fn learn(&self, peer: &str, id: u32) {
        let listed = self
            .list()
            .binary_search_by(|p| p.as_str().cmp(peer))
            .is_ok();
        let mut ids = self.ids.lock().expect("peer lock");
        if listed && ids.get(peer) != Some(&id) {
            ids.insert(peer.to_string(), id);
        }
    }

    /// The share naming `members`: each by its address and, once learned, by its id, so that a
    /// receiver finds it by either (see [`Share`]).
    pub fn share_of<'a>(&self, members: impl IntoIterator<Item = &'a str>) -> Share {
        let ids = self.ids.lock().expect("peer lock");
        Share::of(
            members
                .into_iter()
                .flat_map(|p| std::iter::once(address_id(p)).chain(ids.get(p).copied())),
        )
    }

    /// The peers `share` names, by address or by learned id.
    pub fn named_in(&self, share: &Share) -> HashSet<String> {
        let ids = self.ids.lock().expect("peer lock");
        self.list()
            .iter()
            .filter(|p| {
                share.contains(address_id(p)) || ids.get(*p).is_some_and(|id| share.contains(*id))
            })
            .cloned()
            .collect()
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

    /// Up to `n` distinct random peers with a free slot, for syncs: idle peers first, so that
    /// one slow or paused peer never holds back gossip to the others, and suspected peers only
    /// when too few others are free. A peer that always has a push in flight (a slow link under
    /// steady writes) is still synced with.
    pub fn pick(&self, n: usize, rng: &mut fastrand::Rng) -> Vec<String> {
        self.by_preference(|_| true, rng)
            .into_iter()
            .filter(|(_, in_flight)| *in_flight < MAX_IN_FLIGHT)
            .take(n)
            .map(|(p, _)| p)
            .collect()
    }

    /// The peers `within` dealt into up to `n` groups, for a push down a tree: each group's
    /// first peer has a free slot and gets the rest of its group as its share (see
    /// [`Share`](crate::state::Share)). Leaders are trusted peers before suspected ones, and
    /// among those peers with fewer requests in flight first; a peer with every slot taken never
    /// leads, and is reached through the leader of its group. No groups when every peer
    /// `within` is full: the news waits.
    pub fn groups(
        &self,
        n: usize,
        within: impl Fn(&str) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Vec<Vec<String>> {
        let ordered = self.by_preference(within, rng);
        let heads = n.min(ordered.iter().filter(|(_, n)| *n < MAX_IN_FLIGHT).count());
        deal(ordered.into_iter().map(|(p, _)| p).collect(), heads)
    }

    /// The peers `within` with their requests in flight, in random order, then: those with a
    /// free slot before full ones, trusted before suspected, fewer in flight first.
    fn by_preference(
        &self,
        within: impl Fn(&str) -> bool,
        rng: &mut fastrand::Rng,
    ) -> Vec<(String, usize)> {
        let mut ordered: Vec<(String, usize)> = {
            let in_flight = self.in_flight.lock().expect("peer lock");
            self.list()
                .iter()
                .filter(|p| within(p))
                .map(|p| (p.clone(), in_flight.get(p).copied().unwrap_or(0)))
                .collect()
        };
        rng.shuffle(&mut ordered);
        let now = Instant::now();
        let suspects = self.suspects.lock().expect("peer lock");
        let suspected = |p: &String| suspects.get(p).is_some_and(|until| *until > now);
        ordered.sort_by_key(|(p, n)| (*n >= MAX_IN_FLIGHT, suspected(p), *n));
        ordered
    }

    /// [`Peers::groups`] over the peers `share` names: where news received by push goes on.
    pub fn groups_in(&self, n: usize, share: &Share, rng: &mut fastrand::Rng) -> Vec<Vec<String>> {
        let members = self.named_in(share);
        self.groups(n, |p| members.contains(p), rng)
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

    /// Claims a slot of `peer` for one request; `None` when [`MAX_IN_FLIGHT`] requests to it
    /// are already in flight.
    pub fn claim(&self, peer: &str) -> Option<Busy<'_>> {
        let mut in_flight = self.in_flight.lock().expect("peer lock");
        let n = in_flight.entry(peer.to_string()).or_insert(0);
        if *n == MAX_IN_FLIGHT {
            return None;
        }
        *n += 1;
        Some(Busy {
            peers: self,
            peer: peer.to_string(),
        })
    }
}

/// Deals `ordered` round-robin into `heads` groups, so the first `heads` peers lead them and
/// the groups differ in size by at most one.
pub fn deal(ordered: Vec<String>, heads: usize) -> Vec<Vec<String>> {
    let mut groups = vec![Vec::new(); heads];
    if heads > 0 {
        for (i, peer) in ordered.into_iter().enumerate() {
            groups[i % heads].push(peer);
        }
    }
    groups
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
    fn deals_peers_into_groups_led_by_the_first() {
        let peers: Vec<String> = (1..=9).map(|i| format!("p{i}")).collect();
        let groups = deal(peers.clone(), 3);
        assert_eq!(groups[0], ["p1", "p4", "p7"]);
        assert_eq!(groups[2], ["p3", "p6", "p9"]);
        let groups = deal(peers[..5].to_vec(), 3);
        assert_eq!(groups.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert!(deal(peers, 0).is_empty());
    }

    #[test]
    fn suspected_peers_lead_only_when_too_few_others_are_free() {
        let peers = Peers::new(HashSet::new());
        peers.set((1..=6).map(|i| format!("10.0.0.{i}:4097")).collect());
        peers.report("10.0.0.1:4097", false, Duration::from_secs(60));
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20 {
            let groups = peers.groups(3, |_| true, &mut rng);
            assert!(groups.iter().all(|g| g[0] != "10.0.0.1:4097"));
            assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 6);
        }
    }

    #[test]
    fn a_share_names_peers_by_address_and_by_the_id_they_answered_with() {
        // The sender reaches c through a proxy; the receiver knows c by its own address.
        let (sender, receiver) = (Peers::new(HashSet::new()), Peers::new(HashSet::new()));
        sender.set(vec!["b:4097".into(), "proxy-to-c:4097".into()]);
        receiver.set(vec!["a:4097".into(), "c:4097".into()]);
        let named = |share: &Share| {
            let mut v: Vec<String> = receiver.named_in(share).into_iter().collect();
            v.sort();
            v
        };
        // Before either has learned c's id, only addresses spelled alike match.
        let share = sender.share_of(["proxy-to-c:4097"]);
        assert!(named(&share).is_empty());
        assert_eq!(named(&sender.share_of(["c:4097"])), ["c:4097"]);
        sender.learn("proxy-to-c:4097", 0xC19);
        receiver.learn("c:4097", 0xC19);
        assert_eq!(named(&sender.share_of(["proxy-to-c:4097"])), ["c:4097"]);
        // Ids of peers no longer listed are forgotten; unknown peers are not learned.
        receiver.learn("z:4097", 7);
        receiver.set(vec!["a:4097".into()]);
        receiver.set(vec!["a:4097".into(), "c:4097".into()]);
        assert!(named(&sender.share_of(["proxy-to-c:4097"])).is_empty());
        assert!(named(&Share::of([7])).is_empty());
    }

    #[test]
    fn never_lists_itself_and_prefers_idle_peers() {
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
        assert_eq!(peers.pick(5, &mut rng).len(), 2);
        let busy = peers.claim("127.0.0.2:4097").unwrap();
        // Syncs and pushes go to idle peers first, then to those with a free slot.
        for _ in 0..10 {
            assert_eq!(
                peers.pick(5, &mut rng),
                vec!["127.0.0.3:4097", "127.0.0.2:4097"]
            );
        }
        for _ in 0..10 {
            assert_eq!(
                peers.groups(1, |_| true, &mut rng),
                vec![vec!["127.0.0.3:4097", "127.0.0.2:4097"]]
            );
        }
        assert_eq!(peers.groups(3, |_| true, &mut rng).len(), 2);
        // A peer with every slot taken is reached through one with a slot free.
        let slots: Vec<_> = (1..MAX_IN_FLIGHT)
            .map(|_| peers.claim("127.0.0.2:4097").unwrap())
            .collect();
        assert!(peers.claim("127.0.0.2:4097").is_none());
        assert_eq!(
            peers.groups(3, |_| true, &mut rng),
            vec![vec!["127.0.0.3:4097", "127.0.0.2:4097"]]
        );
        assert!(
            peers
                .groups(3, |p| p == "127.0.0.2:4097", &mut rng)
                .is_empty()
        );
        assert_eq!(peers.pick(5, &mut rng), vec!["127.0.0.3:4097"]);
        drop(slots);
        drop(busy);
        assert_eq!(peers.pick(5, &mut rng).len(), 2);
        assert_eq!(
            peers.groups(3, |p| p != "127.0.0.2:4097", &mut rng),
            vec![vec!["127.0.0.3:4097"]]
        );
    }
}
