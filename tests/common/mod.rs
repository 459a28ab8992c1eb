//! Helpers shared by the integration tests: real `c19 agent` processes on loopback addresses and
//! a minimal HTTP/1.1 client (one request per connection), so tests need no HTTP client crate.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_c19");

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("c19-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent process bound to `ip` (app port 3097, peer port 4097).
pub struct Agent {
    pub ip: String,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Agent {
    /// An agent not started yet, its config written to a file.
    fn new(dir: &TempDir, ip: &str, config: &str) -> Agent {
        Agent {
            ip: ip.into(),
            config: dir.file(&format!("agent-{ip}.yaml"), config),
            child: None,
            log: dir.0.join(format!("agent-{ip}.log")),
        }
    }

    /// Writes `config` to a file and starts an agent on it, waiting until it is ready.
    pub fn start(dir: &TempDir, ip: &str, config: &str) -> Agent {
        let mut agent = Agent::new(dir, ip, config);
        agent.spawn();
        agent
    }

    /// Starts an agent and waits only until it serves (`/healthz`), not until it is warm.
    pub fn start_unready(dir: &TempDir, ip: &str, config: &str) -> Agent {
        let mut agent = Agent::new(dir, ip, config);
        agent.launch();
        let peer = agent.peer();
        wait_for(Duration::from_secs(10), || get(&peer, "/healthz").0 == 200)
            .unwrap_or_else(|_| panic!("agent {ip} did not start: {}", agent.logs()));
        agent
    }

    /// Starts the process and waits until it is ready (or, fed by the operator, serving).
    pub fn spawn(&mut self) {
        self.launch();
        let ip = self.ip.clone();
        // An agent fed by the operator is not ready before its first peer list: it serves.
        let fed = std::fs::read_to_string(&self.config)
            .unwrap_or_default()
            .contains("kind: Operator");
        wait_for(Duration::from_secs(10), || {
            let probe = if fed { "/healthz" } else { "/readyz" };
            get(&format!("{ip}:4097"), probe).0 == 200
        })
        .unwrap_or_else(|_| panic!("agent {ip} did not become ready: {}", self.logs()));
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "c19=debug")
            .env_remove("HOSTNAME")
            .env_remove("POD_IP")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    pub fn app(&self) -> String {
        format!("{}:3097", self.ip)
    }
    pub fn peer(&self) -> String {
        format!("{}:4097", self.ip)
    }
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    /// Kills the process and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// The live value of `key` as JSON text, or `None` when the agent answers 404.
    pub fn value(&self, key: &str) -> Option<serde_json::Value> {
        let (status, body) = get(&self.app(), &format!("/{key}"));
        (status == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap()["value"].clone())
    }
    pub fn digest(&self) -> serde_json::Value {
        let (status, body) = get(&self.peer(), "/c19/digest");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// A config for an agent on `ip` with static peers and fast gossip.
pub fn config(ip: &str, peers: &[String], push_ms: u64, extra_connection: &str) -> String {
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "version: 0.1\nspec:\n  agent:\n    bind: {ip}\n  connection:\n    bind: {ip}\n    push_interval: {push_ms}\n    pull_interval: 60000\n    timeout: 500\n{extra_connection}    peer_provider:\n      kind: Static\n      peers: [{}]\n",
        peers.join(", ")
    )
}

/// Starts `n` agents on `127.<net>.0.1..n` that all list each other.
pub fn group(dir: &TempDir, net: u8, n: u8, push_ms: u64) -> Vec<Agent> {
    let ips: Vec<String> = (1..=n).map(|i| format!("127.{net}.0.{i}")).collect();
    ips.iter()
        .map(|ip| Agent::start(dir, ip, &config(ip, &ips, push_ms, "")))
        .collect()
}

/// Polls `f` until it holds or `timeout` passes; returns how long it took.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> Result<Duration, ()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Ok(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(())
}

pub fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, "GET", path, None, &[])
}

pub fn put(addr: &str, path: &str, body: &str) -> (u16, String) {
    request(addr, "PUT", path, Some(body.as_bytes()), &[])
}

/// One HTTP/1.1 request; status 0 when the connection fails or times out.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let (status, _, body) = exchange(addr, method, path, body, headers);
    (status, body)
}

/// One HTTP/1.1 request: status (0 when the connection fails or times out), the response's
/// head (status line and headers) and body.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let failed = (0, String::new(), String::new());
    let Ok(sock) = addr.parse() else {
        return failed;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sock, Duration::from_millis(500)) else {
        return failed;
    };
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let body = body.unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .is_err()
    {
        return failed;
    }
    let mut raw = Vec::new();
    if s.read_to_end(&mut raw).is_err() && raw.is_empty() {
        return failed;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or_default();
    (status, head, body)
}

/// A header's value in a response head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A watch stream (`GET …?watch`) read line by line: the chunked body decoded, each line JSON.
pub struct Watch {
    sock: TcpStream,
    /// Decoded body bytes not yet returned as lines.
    pending: Vec<u8>,
    /// Raw bytes read and not yet decoded.
    raw: Vec<u8>,
    pub status: u16,
    pub ended: bool,
}

impl Watch {
    pub fn open(addr: &str, path: &str) -> Watch {
        let mut sock = TcpStream::connect(addr).unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        sock.write_all(head.as_bytes()).unwrap();
        let mut w = Watch {
            sock,
            pending: Vec::new(),
            raw: Vec::new(),
            status: 0,
            ended: false,
        };
        while !w.raw.windows(4).any(|x| x == b"\r\n\r\n") {
            assert!(w.fill(Duration::from_secs(5)), "no response head");
        }
        let at = w.raw.windows(4).position(|x| x == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&w.raw[..at]).into_owned();
        w.raw.drain(..at + 4);
        w.status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        if w.status == 200 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("transfer-encoding: chunked"),
                "{head}"
            );
        }
        w
    }

    fn fill(&mut self, timeout: Duration) -> bool {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 65536];
        match self.sock.read(&mut buf) {
            Ok(0) => {
                self.ended = true;
                false
            }
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// Moves complete chunks from `raw` to `pending`.
    fn decode(&mut self) {
        loop {
            let Some(eol) = self.raw.windows(2).position(|x| x == b"\r\n") else {
                return;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&self.raw[..eol]).unwrap(), 16)
                .expect("chunk size");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            if self.raw.len() < eol + 2 + size + 2 {
                return;
            }
            self.pending
                .extend_from_slice(&self.raw[eol + 2..eol + 2 + size]);
            self.raw.drain(..eol + 2 + size + 2);
        }
    }

    /// The next line, or `None` when none comes within `timeout` or the stream ended.
    pub fn next(&mut self, timeout: Duration) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            self.decode();
            if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.ended || left.is_zero() || !self.fill(left) {
                self.decode();
                if let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=nl).collect();
                    return Some(serde_json::from_slice(&line).expect("a JSON line"));
                }
                if self.ended || left.is_zero() {
                    return None;
                }
            }
        }
    }

    /// Lines until one of type `kind` (included), failing after `timeout`.
    pub fn until(&mut self, kind: &str, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .next(left)
                .unwrap_or_else(|| panic!("no {kind} line within {timeout:?}; got {lines:?}"));
            let done = line["type"] == kind;
            lines.push(line);
            if done {
                return lines;
            }
        }
    }
}
