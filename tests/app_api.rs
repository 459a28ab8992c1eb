//! The app API beyond C19 0.1, on real agents: watch streams (order, resume, reset, snapshot,
//! expiry, slow watchers, the watcher limit, shutdown), prefix pages under concurrent writes,
//! conditional writes, and the 4xx answers to bad input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

/// An agent config with extra `agent:` settings.
fn with_agent(ip: &str, peers: &[String], agent: &str) -> String {
    config(ip, peers, 50, "").replacen(
        &format!("    bind: {ip}\n  connection:"),
        &format!("    bind: {ip}\n{agent}  connection:"),
        1,
    )
}

fn pair(dir: &TempDir, net: u8, agent: &str) -> (Agent, Agent) {
    let ips = [format!("127.{net}.0.1"), format!("127.{net}.0.2")];
    let a = Agent::start(dir, &ips[0], &with_agent(&ips[0], &ips, agent));
    let b = Agent::start(dir, &ips[1], &with_agent(&ips[1], &ips, agent));
    (a, b)
}

/// The body of a single-key write.
fn value(v: impl std::fmt::Display) -> String {
    format!("{{\"value\": {v}}}")
}

fn seq(line: &Value) -> u64 {
    let pos = line["pos"].as_str().unwrap();
    pos.split_once('-').unwrap().1.parse().unwrap()
}

#[test]
fn a_watcher_on_b_sees_writes_at_a_in_order_and_resumes_without_loss_or_repeat() {
    let dir = TempDir::new("watch-resume");
    let (a, b) = pair(&dir, 61, "");
    let mut w = Watch::open(&b.app(), "/?watch&prefix=cfg/");
    assert_eq!(w.status, 200);
    let synced = w.until("synced", T);
    assert_eq!(
        synced.len(),
        1,
        "nothing before the first change: {synced:?}"
    );

    // 3 keys, 20 versions each, written at A; plus keys outside the prefix.
    for v in 0..20 {
        for k in 0..3 {
            assert_eq!(put(&a.app(), &format!("/cfg/{k}"), &value(v)).0, 204);
        }
        put(&a.app(), "/other", &value(1));
    }
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut last = 0;
    let mut last_pos = String::new();
    while seen
        .values()
        .map(|v| v.last() == Some(&19))
        .filter(|d| *d)
        .count()
        < 3
    {
        let line = w.next(T).expect("changes from A reach the watcher on B");
        assert_eq!(line["type"], "put", "{line}");
        let key = line["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("cfg/"), "{line}");
        assert!(seq(&line) > last, "positions increase: {line}");
        last = seq(&line);
        last_pos = line["pos"].as_str().unwrap().to_string();
        seen.entry(key)
            .or_default()
            .push(line["value"].as_i64().unwrap());
    }
    for (key, values) in &seen {
        // Gossip may skip versions a push superseded, never reorder them.
        assert!(values.windows(2).all(|p| p[0] < p[1]), "{key}: {values:?}");
    }
    drop(w);

    // Changes made while the watcher is away are replayed from its last position, exactly once.
    for k in 0..3 {
        put(&b.app(), &format!("/cfg/{k}"), &value(100));
    }
    let (status, _) = request(&b.app(), "DELETE", "/cfg/0", None, &[]);
    assert_eq!(status, 204);
    let mut w = Watch::open(&b.app(), &format!("/?watch&prefix=cfg/&since={last_pos}"));
    let lines = w.until("synced", T);
    let changes: Vec<(String, String)> = lines[..lines.len() - 1]
        .iter()
        .map(|l| {
            (
                l["type"].as_str().unwrap().into(),
                l["key"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("put".into(), "cfg/0".into()),
            ("put".into(), "cfg/1".into()),
            ("put".into(), "cfg/2".into()),
            ("delete".into(), "cfg/0".into())
        ]
    );
    assert!(seq(&lines[0]) > last, "only what came after the position");
    let synced_at = seq(lines.last().unwrap());
    assert_eq!(synced_at, seq(&lines[lines.len() - 2]));
}

#[test]
fn a_position_too_old_or_from_before_a_restart_gets_a_reset_then_a_snapshot() {
    let dir = TempDir::new("watch-reset");
    let ip = "127.62.0.1";
    let mut a = Agent::start(&dir, ip, &with_agent(ip, &[], "    watch_history: 16\n"));
    let mut w = Watch::open(&a.app(), "/?watch");
    let first = w.until("synced", T);
    let start = first[0]["pos"].as_str().unwrap().to_string();
    for i in 0..40 {
        put(&a.app(), &format!("/k{i}"), &value(1));
    }
    let latest = w.until("put", T); // at least one change
    drop(latest);

    // 40 changes after `start`, 16 held: the watcher is told, then gets the state whole.
    let mut w = Watch::open(&a.app(), &format!("/?watch&since={start}&snapshot"));
    let lines = w.until("synced", T);
    assert_eq!(lines[0]["type"], "reset", "{lines:?}");
    assert!(
        lines[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no longer held"),
        "{lines:?}"
    );
    let snapshot: BTreeSet<&str> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "put");
            l["key"].as_str().unwrap()
        })
        .collect();
    assert_eq!(snapshot.len(), 40);
    let synced = lines.last().unwrap()["pos"].as_str().unwrap().to_string();

    // After a restart the agent's positions start over in a new epoch.
    a.kill();
    a.spawn();
    let mut w = Watch::open(&a.app(), &format!("/?watch&since={synced}"));
    let lines = w.until("synced", T);
    assert_eq!(lines[0]["type"], "reset");
    assert!(lines[0]["reason"].as_str().unwrap().contains("restarted"));
    assert_ne!(
        lines[0]["pos"].as_str().unwrap()[..16],
        synced[..16],
        "a new epoch"
    );
}

#[test]
fn a_snapshot_and_the_changes_after_it_rebuild_the_state_exactly() {
    let dir = TempDir::new("watch-snapshot");
    let ip = "127.63.0.1";
    let a = Agent::start(&dir, ip, &with_agent(ip, &[], ""));
    for i in 0..200 {
        put(&a.app(), &format!("/s/{i}"), &value(i));
    }
    let app = a.app();
    let writer = std::thread::spawn(move || {
        for i in 0..400 {
            let key = format!("/s/{}", (i * 7) % 300);
            if i % 5 == 0 {
                request(&app, "DELETE", &key, None, &[]);
            } else {
                put(&app, &key, &value(1000 + i));
            }
        }
    });
    let mut w = Watch::open(&a.app(), "/?watch&prefix=s/&snapshot");
    let mut view: BTreeMap<String, Value> = BTreeMap::new();
    let mut last = 0;
    for line in w.until("synced", T) {
        if line["type"] == "put" {
            view.insert(line["key"].as_str().unwrap().into(), line["value"].clone());
        }
    }
    writer.join().unwrap();
    let marker = put(&a.app(), "/s/zz-end", &value(0));
    assert_eq!(marker.0, 204);
    loop {
        let line = w.next(T).expect("changes after the snapshot");
        assert!(seq(&line) > last, "no change twice: {line}");
        last = seq(&line);
        let key = line["key"].as_str().unwrap().to_string();
        match line["type"].as_str().unwrap() {
            "put" => {
                view.insert(key.clone(), line["value"].clone());
            }
            "delete" => {
                view.remove(&key);
            }
            other => panic!("{other}: {line}"),
        }
        if key == "s/zz-end" {
            break;
        }
    }
    let (_, body) = get(&a.app(), "/?prefix=s/&limit=10000");
    let page: Value = serde_json::from_str(&body).unwrap();
    let state: BTreeMap<String, Value> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap().to_string(), e["value"].clone()))
        .collect();
    assert_eq!(view, state, "snapshot + changes = the agent's state");
}

#[test]
fn expiries_reach_watchers() {
    let dir = TempDir::new("watch-expiry");
    let ip = "127.64.0.1";
    let a = Agent::start(&dir, ip, &with_agent(ip, &[], ""));
    let mut w = Watch::open(&a.app(), "/lease?watch");
    w.until("synced", T);
    put(&a.app(), "/", r#"{"lease": {"value": "me", "ttl": 300}}"#);
    put(&a.app(), "/other", &value(1));
    let put_line = w.next(T).unwrap();
    assert_eq!(put_line["type"], "put");
    assert_eq!(put_line["ttl"], 300);
    let started = Instant::now();
    let expired = w.next(T).unwrap();
    assert_eq!(expired["type"], "expire", "{expired}");
    assert_eq!(expired["key"], "lease");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(get(&a.app(), "/lease").0, 404);
}

#[test]
fn a_slow_watcher_is_dropped_with_a_reset_and_does_not_slow_writes() {
    let dir = TempDir::new("watch-slow");
    let ip = "127.65.0.1";
    let a = Agent::start(&dir, ip, &with_agent(ip, &[], "    watch_history: 64\n"));
    let mut slow = Watch::open(&a.app(), "/?watch");
    slow.until("synced", T);
    let mut fast = Watch::open(&a.app(), "/?watch&prefix=tick");
    fast.until("synced", T);
    // 4,000 changes of 6 KB (24 MB): far more than a loopback socket holds for a reader that does
    // not read (its receive window stays near the 128 KiB default; sends buffer up to 4 MiB),
    // and than the 64 changes the agent keeps.
    let big = value(format!("\"{}\"", "x".repeat(6144)));
    let started = Instant::now();
    for i in 0..4000 {
        assert_eq!(put(&a.app(), &format!("/big{}", i % 50), &big).0, 204);
    }
    let writing = started.elapsed();
    put(&a.app(), "/tick", &value(1));
    assert_eq!(
        fast.next(T).unwrap()["key"],
        "tick",
        "the other watcher keeps up"
    );
    // The slow watcher reads what was in flight, then a reset naming why, then the end.
    let mut last = Value::Null;
    while let Some(line) = slow.next(Duration::from_secs(15)) {
        last = line;
    }
    assert_eq!(last["type"], "reset", "{last}");
    assert!(last["reason"].as_str().unwrap().contains("fell behind"));
    assert!(slow.ended);
    let (_, metrics) = get(&a.peer(), "/metrics");
    assert!(
        metrics.contains("c19_watchers_dropped_total 1"),
        "{metrics}"
    );
    println!("4,000 writes with a stalled watcher: {writing:?}");
}

#[test]
fn watchers_beyond_the_limit_get_503_and_shutdown_ends_streams() {
    let dir = TempDir::new("watch-limit");
    let ip = "127.66.0.1";
    let mut a = Agent::start(&dir, ip, &with_agent(ip, &[], "    max_watchers: 2\n"));
    let mut w1 = Watch::open(&a.app(), "/?watch");
    let mut w2 = Watch::open(&a.app(), "/x?watch");
    w1.until("synced", T);
    w2.until("synced", T);
    let (status, body) = get(&a.app(), "/?watch");
    assert_eq!(status, 503);
    assert!(
        body.contains("too many watchers") && body.contains("max_watchers"),
        "{body}"
    );
    drop(w2);
    assert!(
        wait_for(T, || get(&a.peer(), "/metrics")
            .1
            .contains("c19_watchers 1"))
        .is_ok(),
        "a closed stream frees its slot"
    );
    let mut w3 = Watch::open(&a.app(), "/?watch");
    w3.until("synced", T);

    // SIGTERM: open streams end at once, so the agent does not wait out its drain.
    let started = Instant::now();
    a.signal("TERM");
    let mut child = a.child.take().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(w1.next(T).is_none() && w1.ended);
}

#[test]
fn prefix_pages_cover_the_keyspace_exactly_once_under_concurrent_writes() {
    let dir = TempDir::new("pages");
    let ip = "127.67.0.1";
    let a = Agent::start(&dir, ip, &with_agent(ip, &[], ""));
    let mut batch = serde_json::Map::new();
    for i in 0..2000 {
        batch.insert(format!("p/{i:05}"), json!({"value": i}));
        batch.insert(format!("q/{i:05}"), json!({"value": i}));
    }
    assert_eq!(put(&a.app(), "/", &Value::Object(batch).to_string()).0, 204);
    let app = a.app();
    let writer = std::thread::spawn(move || {
        // New keys inside the prefix and overwrites of listed ones, while pages are read.
        for i in 0..600 {
            put(&app, &format!("/p/{:05}x", (i * 13) % 2000), &value(1));
            put(&app, &format!("/p/{:05}", (i * 7) % 2000), &value(2));
        }
    });
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(k) => format!("/?prefix=p/&limit=97&keys&after={k}"),
            None => "/?prefix=p/&limit=97&keys".to_string(),
        };
        let (status, body) = get(&a.app(), &path);
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        let keys = page["keys"].as_array().unwrap();
        assert!(keys.len() <= 97);
        listed.extend(keys.iter().map(|k| k.as_str().unwrap().to_string()));
        pages += 1;
        match page["next"].as_str() {
            Some(k) => after = Some(k.to_string()),
            None => break,
        }
    }
    writer.join().unwrap();
    assert!(
        listed.windows(2).all(|p| p[0] < p[1]),
        "in order, none twice"
    );
    let stable: BTreeSet<String> = (0..2000).map(|i| format!("p/{i:05}")).collect();
    let got: BTreeSet<String> = listed
        .iter()
        .filter(|k| !k.ends_with('x'))
        .cloned()
        .collect();
    assert_eq!(
        got, stable,
        "every key that existed throughout, exactly once"
    );
    assert!(pages >= 21);

    // Entries carry their values; a limit above the maximum is refused.
    let (_, body) = get(&a.app(), "/?prefix=q/0000&limit=3");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["entries"][0],
        json!({"key": "q/00000", "value": 0, "ts": page["entries"][0]["ts"], "ttl": null})
    );
    assert_eq!(page["next"], "q/00002");
    let (status, body) = get(&a.app(), "/?prefix=q/&limit=10001");
    assert_eq!(status, 400);
    assert!(body.contains("from 1 to 10000"), "{body}");
}

#[test]
fn conditional_writes_answer_412_and_apply_nothing() {
    let dir = TempDir::new("conditional");
    let ip = "127.68.0.1";
    let a = Agent::start(&dir, ip, &with_agent(ip, &[], ""));
    let app = a.app();
    let create = [("If-None-Match", "*")];
    let (status, head, _) = exchange(&app, "PUT", "/flag", Some(br#"{"value": "on"}"#), &create);
    assert_eq!(status, 204);
    let tag = header(&head, "etag")
        .expect("a write answers its ETag")
        .to_string();
    let (status, _, body) = exchange(&app, "PUT", "/flag", Some(br#"{"value": "off"}"#), &create);
    assert_eq!(status, 412, "create-only on an existing key");
    assert!(
        body.contains("precondition failed") && body.contains(&tag[1..17]),
        "{body}"
    );
    assert_eq!(a.value("flag"), Some(json!("on")), "nothing applied");

    // Compare-and-set with the tag read.
    let (status, head, _) = exchange(&app, "GET", "/flag", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(header(&head, "etag"), Some(tag.as_str()));
    let (status, head, _) = exchange(
        &app,
        "PUT",
        "/flag",
        Some(br#"{"value": "off"}"#),
        &[("If-Match", &tag)],
    );
    assert_eq!(status, 204);
    let newer = header(&head, "etag").unwrap().to_string();
    assert_ne!(newer, tag);
    let (status, _, _) = exchange(
        &app,
        "PUT",
        "/flag",
        Some(br#"{"value": "x"}"#),
        &[("If-Match", &tag)],
    );
    assert_eq!(status, 412, "a stale tag");
    let (status, _, _) = exchange(&app, "DELETE", "/flag", None, &[("If-Match", &tag)]);
    assert_eq!(status, 412);
    assert_eq!(a.value("flag"), Some(json!("off")));
    // A read with the current tag: not modified.
    let (status, _, _) = exchange(&app, "GET", "/flag", None, &[("If-None-Match", &newer)]);
    assert_eq!(status, 304);
    let (status, _, _) = exchange(&app, "DELETE", "/flag", None, &[("If-Match", &newer)]);
    assert_eq!(status, 204);
    let (status, _, _) = exchange(
        &app,
        "PUT",
        "/flag",
        Some(br#"{"value": 1}"#),
        &[("If-Match", "*")],
    );
    assert_eq!(status, 412, "If-Match: * needs a value");
    assert_eq!(a.value("flag"), None);
}

#[test]
fn bad_input_gets_a_4xx_naming_what_is_wrong() {
    let dir = TempDir::new("app-bad-input");
    let ip = "127.69.0.1";
    let a = Agent::start(&dir, ip, &with_agent(ip, &[], ""));
    let app = a.app();
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 9] = [
        (
            "GET",
            "/?prefix=%FF",
            &[],
            "\\\"prefix\\\" is not valid UTF-8",
        ),
        (
            "GET",
            "/?prefx=a",
            &[],
            "unknown query parameter \\\"prefx\\\"",
        ),
        ("GET", "/?watch&since=12", &[], "\\\"since\\\""),
        ("GET", "/?limit=0", &[], "from 1 to 10000"),
        (
            "GET",
            "/k?prefix=a&watch",
            &[],
            "unknown query parameter \\\"prefix\\\"",
        ),
        ("GET", "/k?limit=1", &[], "query parameters apply to"),
        ("PUT", "/k", &[("If-Match", "abc")], "If-Match: expected *"),
        (
            "PUT",
            "/",
            &[("If-None-Match", "*")],
            "apply to single keys",
        ),
        (
            "DELETE",
            "/k",
            &[("If-None-Match", "W/1")],
            "If-None-Match: expected *",
        ),
    ];
    for (method, path, headers, want) in cases {
        let body = (method == "PUT").then_some(&b"{}"[..]);
        let (status, text) = request(&app, method, path, body, headers);
        assert_eq!(status, 400, "{method} {path}: {text}");
        assert!(text.contains(want), "{method} {path}: {text} lacks {want}");
    }
    assert!(a.logs().lines().all(|l| !l.contains("panicked")));
}
