//! Whatever a client or a peer sends, the agent answers with a status below 500 and stays up:
//! random methods, paths (percent sequences, our `/c19/` endpoints) and bodies (bytes, JSON-ish
//! fragments) against both ports of a real agent process.

mod common;

use common::*;
use proptest::prelude::*;

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"])
}

fn path() -> impl Strategy<Value = String> {
    let segment = prop::sample::select(vec![
        "",
        "c19",
        "sync",
        "diff",
        "entries",
        "digest",
        "peers",
        "healthz",
        "metrics",
        "%",
        "%FF",
        "%2F",
        "a%20b",
        "..",
        "0",
        "18446744073709551615",
        "k",
        "\u{e9}",
    ]);
    prop::collection::vec(segment, 0..4).prop_map(|s| {
        let p = format!("/{}", s.join("/"));
        // The request line cannot carry raw spaces or non-ASCII; encode what is left.
        p.replace('\u{e9}', "%C3%A9")
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ",",
        ":",
        "\"k\"",
        "\"value\"",
        "\"ts\"",
        "\"ttl\"",
        "\"deleted\"",
        "\"peers\"",
        "\"digest\"",
        "\"count\"",
        "\"fingerprints\"",
        "1",
        "-1",
        "1e999",
        "18446744073709551616",
        "null",
        "true",
        "\"\\u0000\"",
        "\"\\ud800\"",
    ]);
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(fragment, 0..24).prop_map(|f| f.concat().into_bytes()),
    ]
}

#[test]
fn no_request_makes_the_agent_fail() {
    let dir = TempDir::new("no-panic");
    let a = Agent::start(&dir, "127.22.0.1", &config("127.22.0.1", &[], 100, ""));
    put(&a.app(), "/", r#"{"survivor": {"value": 1}}"#);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        ..ProptestConfig::default()
    });
    runner
        .run(
            &(method(), path(), body(), any::<bool>()),
            |(m, p, b, peer_port)| {
                let addr = if peer_port { a.peer() } else { a.app() };
                let (status, text) = request(&addr, m, &p, Some(&b), &[]);
                prop_assert!(
                    status != 0 && status < 500,
                    "{m} {addr}{p} {:?} -> {status} {text}",
                    String::from_utf8_lossy(&b)
                );
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(get(&a.peer(), "/healthz").0, 200);
    assert_eq!(
        a.value("survivor"),
        Some(serde_json::json!(1)),
        "no request touched a key it did not name"
    );
    assert!(!a.logs().contains("panicked"), "{}", a.logs());
}
