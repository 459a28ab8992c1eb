//! Real agent processes on loopback: the C19 0.1 curl session, convergence of new keys and
//! overwrites, ties, deletes, restarts, a paused peer, auth, bad input and lifecycle.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(10);

#[test]
fn the_original_curl_session() {
    let dir = TempDir::new("curl");
    let a = Agent::start(&dir, "127.10.0.1", &config("127.10.0.1", &[], 100, ""));
    assert_eq!(get(&a.app(), "/cat").0, 404);
    assert_eq!(
        put(
            &a.app(),
            "/",
            r#"{"cat": {"value": "garfield", "ts": 1601241450390, "ttl": null}}"#
        )
        .0,
        204
    );
    let (status, body) = get(&a.app(), "/cat");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        json!({"value": "garfield", "ts": 1601241450390u64, "ttl": null})
    );

    // GET /<version> answers 204 only for the exact state; anything else gets the full map.
    let (status, body) = get(&a.peer(), "/0");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["cat"]["value"],
        "garfield"
    );
    assert_eq!(
        a.digest()["version"],
        "883365185692908898",
        "C19 0.1's version of the state"
    );
    let (_, metrics) = get(&a.peer(), "/metrics");
    assert!(metrics.contains("c19_keys 1"), "{metrics}");

    // A TTL relative to ts: the value disappears once ts + ttl has passed.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let body = format!(r#"{{"short": {{"value": 1, "ts": {now}, "ttl": 300}}}}"#);
    assert_eq!(put(&a.app(), "/", &body).0, 204);
    assert_eq!(a.value("short"), Some(json!(1)));
    wait_for(Duration::from_secs(3), || a.value("short").is_none()).expect("the value expires");

    // Percent-decoded keys, single-key PUT, listing.
    assert_eq!(put(&a.app(), "/a%20b", r#"{"value": [1, 2]}"#).0, 204);
    assert_eq!(a.value("a%20b"), Some(json!([1, 2])));
    let (status, list) = get(&a.app(), "/");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert!(list.get("a b").is_some() && list.get("cat").is_some() && list.get("short").is_none());
}

#[test]
fn new_keys_and_overwrites_reach_ten_agents_within_a_few_rounds() {
    let dir = TempDir::new("ten");
    let push_ms = 100;
    let agents = group(&dir, 11, 10, push_ms);
    let all_have = |key: &'static str, value: serde_json::Value| {
        let agents = &agents;
        let value = Some(value);
        move || agents.iter().all(|a| a.value(key) == value)
    };
    assert_eq!(
        put(&agents[3].app(), "/", r#"{"k": {"value": "first"}}"#).0,
        204
    );
    let t = wait_for(SETTLE, all_have("k", json!("first"))).expect("new key on every agent");
    eprintln!(
        "new key on 10 agents after {t:?} ({:.1} push rounds)",
        t.as_millis() as f64 / push_ms as f64
    );
    // The overwrite must spread as fast as the new key (C19 0.1 pushed the old value).
    assert_eq!(
        put(&agents[7].app(), "/", r#"{"k": {"value": "second"}}"#).0,
        204
    );
    let t = wait_for(SETTLE, all_have("k", json!("second"))).expect("overwrite on every agent");
    eprintln!(
        "overwrite on 10 agents after {t:?} ({:.1} push rounds)",
        t.as_millis() as f64 / push_ms as f64
    );
    // Far below the 60 s pull interval: gossip did it, not the full pull.
    assert!(t < Duration::from_secs(10));
    wait_for(SETTLE, || {
        let d: Vec<_> = agents
            .iter()
            .map(|a| a.digest()["digest"].clone())
            .collect();
        d.windows(2).all(|w| w[0] == w[1])
    })
    .expect("digests agree");
}

#[test]
fn equal_timestamps_still_converge() {
    let dir = TempDir::new("tie");
    let agents = group(&dir, 12, 3, 100);
    put(
        &agents[0].app(),
        "/",
        r#"{"k": {"value": "apple", "ts": 1700000000000}}"#,
    );
    put(
        &agents[1].app(),
        "/",
        r#"{"k": {"value": "zebra", "ts": 1700000000000}}"#,
    );
    // The tie breaks on the value bytes: the same winner on every agent.
    wait_for(SETTLE, || {
        agents.iter().all(|a| a.value("k") == Some(json!("zebra")))
    })
    .expect("one value everywhere");
}

#[test]
fn deletes_replicate() {
    let dir = TempDir::new("delete");
    let agents = group(&dir, 13, 3, 100);
    put(
        &agents[0].app(),
        "/",
        r#"{"k": {"value": 1}, "keep": {"value": 2}}"#,
    );
    wait_for(SETTLE, || agents.iter().all(|a| a.value("k").is_some())).unwrap();
    assert_eq!(request(&agents[2].app(), "DELETE", "/k", None, &[]).0, 204);
    assert_eq!(agents[2].value("k"), None, "read-your-delete");
    wait_for(SETTLE, || agents.iter().all(|a| a.value("k").is_none()))
        .expect("delete on every agent");
    assert!(agents.iter().all(|a| a.value("keep") == Some(json!(2))));
    assert_eq!(agents[0].digest()["tombstones"], 1);
}

#[test]
fn a_restarted_agent_catches_up() {
    let dir = TempDir::new("restart");
    let mut agents = group(&dir, 14, 3, 100);
    put(&agents[0].app(), "/", r#"{"before": {"value": 1}}"#);
    wait_for(SETTLE, || agents[2].value("before").is_some()).unwrap();
    agents[2].kill();
    let batch: serde_json::Map<String, serde_json::Value> = (0..500)
        .map(|i| (format!("while-down-{i}"), json!({"value": i})))
        .collect();
    put(
        &agents[0].app(),
        "/",
        &serde_json::to_string(&batch).unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    agents[2].spawn();
    // It restarts empty and gets everything by anti-entropy, without waiting for the pull interval.
    wait_for(SETTLE, || agents[2].digest()["keys"] == 501).expect("restarted agent catches up");
    assert_eq!(agents[2].digest()["digest"], agents[0].digest()["digest"]);
}

#[test]
fn a_paused_agent_does_not_stall_the_others() {
    let dir = TempDir::new("pause");
    let agents = group(&dir, 15, 4, 100);
    agents[3].signal("STOP");
    for i in 0..5 {
        put(
            &agents[0].app(),
            "/",
            &format!(r#"{{"k{i}": {{"value": {i}}}}}"#),
        );
        let t = wait_for(SETTLE, || {
            agents[1].value(&format!("k{i}")).is_some()
                && agents[2].value(&format!("k{i}")).is_some()
        })
        .expect("healthy agents converge while one is paused");
        eprintln!("write {i} reached the healthy agents in {t:?}");
    }
    agents[3].signal("CONT");
    wait_for(SETTLE, || {
        agents[3].value("k4").is_some() && agents[3].value("k0").is_some()
    })
    .expect("resumed agent catches up");
}

#[test]
fn the_peer_port_requires_the_token() {
    let dir = TempDir::new("auth");
    let token = dir.file("token", "s3cret\n");
    let extra = format!("    token_file: {}\n", token.display());
    let ips = ["127.16.0.1".to_string(), "127.16.0.2".to_string()];
    let a = Agent::start(&dir, &ips[0], &config(&ips[0], &ips, 100, &extra));
    let b = Agent::start(&dir, &ips[1], &config(&ips[1], &ips, 100, &extra));
    for (method, path) in [
        ("GET", "/"),
        ("PUT", "/"),
        ("GET", "/123"),
        ("GET", "/c19/digest"),
        ("PUT", "/c19/peers"),
        ("POST", "/c19/sync"),
    ] {
        assert_eq!(
            request(&a.peer(), method, path, Some(b"{}"), &[]).0,
            401,
            "{method} {path}"
        );
        assert_eq!(
            request(
                &a.peer(),
                method,
                path,
                Some(b"{}"),
                &[("Authorization", "Bearer wrong")]
            )
            .0,
            401
        );
    }
    assert_eq!(
        request(
            &a.peer(),
            "GET",
            "/",
            None,
            &[("Authorization", "Bearer s3cret")]
        )
        .0,
        200
    );
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(get(&a.peer(), open).0, 200, "{open}");
    }
    put(&a.app(), "/", r#"{"k": {"value": 1}}"#);
    wait_for(SETTLE, || b.value("k").is_some()).expect("agents sharing the token gossip");
    assert!(
        !a.logs().contains("s3cret") && !b.logs().contains("s3cret"),
        "the token never reaches the logs"
    );
}

#[test]
fn bad_input_gets_a_4xx_and_changes_nothing() {
    let dir = TempDir::new("bad");
    let extra = "    max_body_bytes: 100000\n";
    let cfg = config("127.17.0.1", &[], 100, extra).replace(
        "  agent:\n    bind: 127.17.0.1\n",
        "  agent:\n    bind: 127.17.0.1\n    max_batch_entries: 3\n",
    );
    let a = Agent::start(&dir, "127.17.0.1", &cfg);
    put(&a.app(), "/", r#"{"existing": {"value": 1}}"#);
    let before = a.digest();
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("PUT", "/", "garbage".into(), 400, "not a JSON object"),
        (
            "PUT",
            "/",
            r#"{"ok": {"value": 1}, "bad": {"ts": 1}}"#.into(),
            400,
            "entry \\\"bad\\\": missing field `value`",
        ),
        (
            "PUT",
            "/",
            r#"{"ok": {"value": 1}, "bad": {"value": 1, "ttl": -5}}"#.into(),
            400,
            "entry \\\"bad\\\": invalid value",
        ),
        (
            "PUT",
            "/",
            r#"{"bad": {"value": 1, "ts": "yesterday"}}"#.into(),
            400,
            "invalid type: string",
        ),
        ("GET", "/%FF%FE", String::new(), 400, "UTF-8"),
        ("PUT", "/single", "{}".into(), 400, "missing field `value`"),
        ("POST", "/", String::new(), 405, "not allowed"),
        (
            "PUT",
            "/",
            format!(r#"{{"{}": {{"value": 1}}}}"#, "k".repeat(2000)),
            400,
            "longer than 1024 bytes",
        ),
        (
            "PUT",
            "/",
            r#"{"a": {"value": 1}, "b": {"value": 2}, "c": {"value": 3}, "d": {"value": 4}}"#
                .into(),
            400,
            "batch has 4 entries, more than the limit of 3",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, text) = request(&a.app(), method, path, Some(body.as_bytes()), &[]);
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(
            text.contains(needle),
            "{method} {path}: {text} should contain {needle}"
        );
        assert!(serde_json::from_str::<serde_json::Value>(&text).unwrap()["error"].is_string());
    }
    // Oversized bodies are refused from their declared length, before they are read.
    let (status, text) = request(
        &a.app(),
        "PUT",
        "/",
        None,
        &[("Content-Length", "17000000")],
    );
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("larger than"), "{text}");
    assert_eq!(a.value("ok"), None, "a refused batch applies nothing");
    assert_eq!(a.digest(), before);
    // The peer port validates too.
    assert_eq!(
        request(
            &a.peer(),
            "PUT",
            "/",
            Some(br#"{"x": {"value": 1, "ts": -1}}"#),
            &[]
        )
        .0,
        400
    );
    assert_eq!(
        request(&a.peer(), "PUT", "/", None, &[("Content-Length", "200000")]).0,
        413
    );
    let (status, text) = request(
        &a.peer(),
        "GET",
        "/c19/digest",
        None,
        &[("Authorization", "Bearer caf\u{e9}")],
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("header authorization"), "{text}");
    assert_eq!(
        request(
            &a.peer(),
            "POST",
            "/c19/sync",
            Some(br#"{"digest": 1, "count": 3}"#),
            &[]
        )
        .0,
        400
    );
    assert_eq!(a.digest(), before);
}

#[test]
fn the_operator_feeds_peers_only_to_operator_fed_agents() {
    let dir = TempDir::new("feed");
    let fed = "version: 0.1\nspec:\n  agent: {bind: 127.18.0.1}\n  connection:\n    bind: 127.18.0.1\n    push_interval: 100\n    peer_provider: {kind: Operator}\n";
    let a = Agent::start(&dir, "127.18.0.1", fed);
    let b = Agent::start(
        &dir,
        "127.18.0.2",
        &config("127.18.0.2", &["127.18.0.1".into()], 100, ""),
    );
    let (status, body) = get(&a.peer(), "/readyz");
    assert_eq!(status, 503, "not ready before its first peer list: {body}");
    assert!(body.contains("waiting_for_peers"), "{body}");
    let list = r#"{"peers": ["127.18.0.2", "127.18.0.1:4097"]}"#;
    assert_eq!(
        request(&a.peer(), "PUT", "/c19/peers", Some(list.as_bytes()), &[]).0,
        204
    );
    wait_for(SETTLE, || get(&a.peer(), "/readyz").0 == 200)
        .expect("ready once it copied its fed peer's state");
    let (_, peers) = get(&a.peer(), "/c19/peers");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&peers).unwrap(),
        json!({"peers": ["127.18.0.2:4097"]}),
        "never itself"
    );
    assert_eq!(
        request(&b.peer(), "PUT", "/c19/peers", Some(list.as_bytes()), &[]).0,
        409
    );
    assert_eq!(
        request(
            &a.peer(),
            "PUT",
            "/c19/peers",
            Some(br#"{"peers": ["bad host"]}"#),
            &[]
        )
        .0,
        400
    );
    put(&a.app(), "/", r#"{"k": {"value": 1}}"#);
    wait_for(SETTLE, || b.value("k").is_some()).expect("fed peers are gossiped with");
}

#[test]
fn sigterm_pushes_pending_changes_and_exits_zero() {
    let dir = TempDir::new("term");
    let ips = ["127.19.0.1".to_string(), "127.19.0.2".to_string()];
    let b = Agent::start(&dir, &ips[1], &config(&ips[1], &[], 60_000, ""));
    let mut a = Agent::start(&dir, &ips[0], &config(&ips[0], &ips, 60_000, ""));
    std::thread::sleep(Duration::from_millis(100));
    put(&a.app(), "/", r#"{"last-words": {"value": 1}}"#);
    a.signal("TERM");
    let status = a.child.take().unwrap().wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        b.value("last-words"),
        Some(json!(1)),
        "pushed on the way out"
    );
}

#[test]
fn a_taken_port_and_a_bad_config_are_errors() {
    let dir = TempDir::new("errors");
    let a = Agent::start(&dir, "127.20.0.1", &config("127.20.0.1", &[], 100, ""));
    let same = dir.file("same.yaml", &config("127.20.0.1", &[], 100, ""));
    let out = std::process::Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&same)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot bind the app port 127.20.0.1:3097"),
        "{err}"
    );
    drop(a);

    let bad = dir.file(
        "bad.yaml",
        "version: 0.1\nspec:\n  connection:\n    push_intreval: 10\n",
    );
    // The C19 0.1 command line: `c19 --config FILE`.
    let out = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("push_intreval"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn the_dns_provider_resolves_a_name_into_peers() {
    let dir = TempDir::new("dns");
    // `localhost` resolves to this machine's loopback addresses; the agent drops itself.
    let cfg = "version: 0.1\nspec:\n  agent: {bind: 127.21.0.1}\n  connection:\n    bind: 127.21.0.1\n    target_port: 4097\n    peer_provider: {kind: Dns, name: localhost, interval: 200}\n";
    let a = Agent::start(&dir, "127.21.0.1", cfg);
    let peers = wait_for(SETTLE, || {
        let (_, body) = get(&a.peer(), "/c19/peers");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["peers"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    assert!(peers.is_ok(), "no peers resolved");
    let (_, body) = get(&a.peer(), "/c19/peers");
    let peers: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "127.0.0.1:4097"),
        "{peers}"
    );
    assert!(
        !peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "127.21.0.1:4097")
    );
}

/// A new member reports ready only once it holds the state of a member that answered, copied
/// bucket by bucket; with no member answering, it gives up after `warmup_timeout`.
#[test]
fn a_joining_agent_is_ready_only_once_it_holds_the_groups_state() {
    let dir = TempDir::new("warm");
    let a = Agent::start(&dir, "127.22.0.1", &config("127.22.0.1", &[], 100, ""));
    // 20,000 keys: two buckets of the copy.
    for batch in 0..20 {
        let body: Vec<String> = (0..1000)
            .map(|i| format!("\"k{batch}-{i}\": {{\"value\": {i}}}"))
            .collect();
        assert_eq!(
            put(&a.app(), "/", &format!("{{{}}}", body.join(","))).0,
            204
        );
    }
    assert_eq!(request(&a.app(), "DELETE", "/k0-0", None, &[]).0, 204);
    let b_ip = "127.22.0.2";
    let b_config = config(b_ip, &["127.22.0.1".into()], 100, "");
    let path = dir.file("agent-b.yaml", &b_config);
    let log = std::fs::File::create(dir.0.join("agent-b.log")).unwrap();
    let mut b = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&path)
        .stderr(log)
        .spawn()
        .unwrap();
    // The first 200 of /readyz: B must already hold every key and the delete.
    let mut phases = std::collections::BTreeSet::new();
    wait_for(Duration::from_secs(20), || {
        let (status, body) = get(&format!("{b_ip}:4097"), "/readyz");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
            phases.insert(v["phase"].as_str().unwrap_or("").to_string());
        }
        status == 200
    })
    .expect("B turns ready");
    let (_, digest) = get(&format!("{b_ip}:4097"), "/c19/digest");
    let digest: serde_json::Value = serde_json::from_str(&digest).unwrap();
    assert_eq!(
        digest["keys"], 19_999,
        "B held the whole state when it turned ready"
    );
    assert_eq!(digest["tombstones"], 1, "deletes are copied too");
    let (_, ready) = get(&format!("{b_ip}:4097"), "/readyz");
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["how"], "copied", "{ready}");
    assert_eq!(ready["records"], 20_000, "{ready}");
    assert!(
        !phases.contains("waiting_for_peers"),
        "a static list is known at once: {phases:?}"
    );
    let (_, metrics) = get(&format!("{b_ip}:4097"), "/metrics");
    assert!(metrics.contains("c19_warm 1"), "{metrics}");
    assert!(
        metrics.contains("c19_warmup_records_total 20000"),
        "{metrics}"
    );
    let _ = b.kill();
    let _ = b.wait();

    // A member that does not answer at all (paused) may hold data: C waits for it, then gives
    // up after its warmup_timeout and serves what it holds, saying so.
    unsafe_signal(a.pid(), "STOP");
    let c_ip = "127.22.0.3";
    let c_config = config(
        c_ip,
        &["127.22.0.1".into()],
        100,
        "    warmup_timeout: 1500\n",
    );
    let c = Agent::start_unready(&dir, c_ip, &c_config);
    let (status, body) = get(&c.peer(), "/readyz");
    assert_eq!(status, 503, "{body}");
    wait_for(Duration::from_secs(10), || {
        get(&c.peer(), "/readyz").0 == 200
    })
    .expect("C gives up waiting");
    let (_, body) = get(&c.peer(), "/readyz");
    assert!(body.contains("timed_out"), "{body}");
    assert!(
        get(&c.peer(), "/metrics")
            .1
            .contains("c19_warmup_timed_out 1")
    );
    unsafe_signal(a.pid(), "CONT");
}

fn unsafe_signal(pid: i32, sig: &str) {
    assert!(
        Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// The sidecar's preStop hook (`GET /prestop`, no token: the kubelet sends none) pushes what
/// the agent has not pushed yet, at once, and the agent keeps serving after it.
#[test]
fn the_prestop_hook_pushes_pending_writes_at_once() {
    let dir = TempDir::new("prestop");
    let ips = ["127.23.0.1".to_string(), "127.23.0.2".to_string()];
    let token = dir.file("token", "s3cret");
    let extra = format!("    token_file: {}\n", token.display());
    let b = Agent::start(&dir, &ips[1], &config(&ips[1], &[], 60_000, &extra));
    let a = Agent::start(&dir, &ips[0], &config(&ips[0], &ips, 60_000, &extra));
    std::thread::sleep(Duration::from_millis(100));
    put(&a.app(), "/", r#"{"before-the-end": {"value": 1}}"#);
    assert_eq!(
        b.value("before-the-end"),
        None,
        "not pushed before its round"
    );
    let (status, body) = get(&a.peer(), "/prestop");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        b.value("before-the-end"),
        Some(json!(1)),
        "pushed by the hook"
    );
    assert_eq!(put(&a.app(), "/", r#"{"after": {"value": 2}}"#).0, 204);
    assert!(
        get(&a.peer(), "/metrics")
            .1
            .contains("c19_prestop_flushes_total 1")
    );
}

/// A peer that is warming up itself (a c19 agent reporting no `since`) is not copied: it may
/// hold part of a state. With no warm member, a joining agent is ready at once with its own.
#[test]
fn a_peer_still_warming_up_is_not_copied() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.24.0.2:4097").unwrap();
    // Answers every request as a warming agent holding five keys would (the thread ends with
    // the test process).
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]);
            let body = if request.starts_with("GET /c19/digest") {
                r#"{"digest":"1","keys":5,"tombstones":0,"version":"","peers":0,"agent":"0.1.0"}"#
            } else {
                r#"{"k": {"value": "partial", "ts": 1}}"#
            };
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    let dir = TempDir::new("warming-peer");
    let a = Agent::start(
        &dir,
        "127.24.0.1",
        &config("127.24.0.1", &["127.24.0.2".into()], 60_000, ""),
    );
    let (status, ready) = get(&a.peer(), "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert!(ready.contains("none_running"), "{ready}");
    assert_eq!(a.value("k"), None, "nothing copied from a warming peer");
}

/// `connection.metrics_port` serves `/metrics` and `/healthz` only, without a token: a
/// Prometheus may be let in there while the peer API stays closed to it.
#[test]
fn the_metrics_port_serves_metrics_and_nothing_of_the_peer_api() {
    let dir = TempDir::new("metrics-port");
    let token = dir.file("token", "s3cret");
    let extra = format!(
        "    token_file: {}\n    metrics_port: 9097\n",
        token.display()
    );
    let a = Agent::start(&dir, "127.25.0.1", &config("127.25.0.1", &[], 100, &extra));
    put(&a.app(), "/", r#"{"k": {"value": 1}}"#);
    let (status, metrics) = get("127.25.0.1:9097", "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("c19_keys 1"), "{metrics}");
    assert_eq!(get("127.25.0.1:9097", "/healthz").0, 200);
    for path in ["/", "/c19/peers", "/c19/digest", "/prestop"] {
        assert_eq!(get("127.25.0.1:9097", path).0, 404, "{path}");
    }
    assert_eq!(
        get(&a.peer(), "/c19/digest").0,
        401,
        "the peer port still wants the token"
    );
}
