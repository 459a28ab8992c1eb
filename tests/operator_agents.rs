//! The operator's peer feed and health probe against real agent processes on loopback: agents
//! receive their peer list and converge, and divergent and unreachable members are reported.

mod common;

use std::time::Duration;

use c19::connection::client::{PeerClient, Traffic};
use c19::operator::agents::{feed_all, probe_all};
use c19::operator::context::OperatorMetrics;
use c19::operator::health::{Member, Observation, Probe, observe};
use common::*;
use hyper::StatusCode;

const TOKEN: &str = "group-token";

fn operator_fed(dir: &TempDir, ip: &str) -> Agent {
    let token = dir.file("token", TOKEN);
    let config = format!(
        "version: 0.1\nspec:\n  agent: {{bind: {ip}}}\n  connection:\n    bind: {ip}\n    push_interval: 100\n    timeout: 300\n    token_file: {}\n    peer_provider: {{kind: Operator}}\n",
        token.display()
    );
    Agent::start(dir, ip, &config)
}

fn member(a: &Agent) -> Member {
    Member {
        name: a.ip.clone(),
        address: a.peer(),
    }
}

async fn round(
    client: &PeerClient,
    members: &[Member],
    previous: Option<&Observation>,
) -> Observation {
    observe(
        &probe_all(client, Some(TOKEN), members, &OperatorMetrics::default()).await,
        previous,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fed_agents_converge_and_the_probe_sees_it() {
    let dir = TempDir::new("operator-agents");
    let agents: Vec<Agent> = (1..=3)
        .map(|i| operator_fed(&dir, &format!("127.30.0.{i}")))
        .collect();
    let members: Vec<Member> = agents.iter().map(member).collect();
    let client = PeerClient::new(None, Duration::from_millis(500));
    let traffic = Traffic::default();

    // Before the feed, every agent is alone and reports no peers.
    let before = round(&client, &members, None).await;
    assert_eq!(before.stale_peers.len(), 3);

    let failed = feed_all(&client, Some(TOKEN), &members, &members, &traffic).await;
    assert!(failed.is_empty(), "{failed:?}");
    put(&agents[0].app(), "/", r#"{"k": {"value": 1}}"#);
    wait_for(Duration::from_secs(10), || {
        agents.iter().all(|a| a.value("k").is_some())
    })
    .expect("fed agents gossip");

    let mut obs = round(&client, &members, None).await;
    for _ in 0..50 {
        if obs.converged() && obs.divergent.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        obs = round(&client, &members, Some(&obs)).await;
    }
    assert!(obs.converged(), "{obs:?}");
    assert_eq!((obs.members, obs.reachable, obs.keys), (3, 3, Some(1)));
    assert!(
        obs.stale_peers.is_empty(),
        "every agent reports its two peers"
    );

    // A wrong token is refused, and the feed reports the member as failed.
    let failed = feed_all(&client, Some("wrong"), &members, &members[..1], &traffic).await;
    assert_eq!(failed.len(), 1);

    // A paused agent is unreachable at once.
    agents[2].signal("STOP");
    let paused = round(&client, &members, Some(&obs)).await;
    assert_eq!(paused.unreachable, vec![agents[2].ip.clone()]);
    assert!(!paused.converged());
    agents[2].signal("CONT");

    // A member holding another state (not gossiping with the group) is divergent from the
    // second round on.
    let loner = Agent::start(
        &dir,
        "127.30.0.9",
        &config(
            "127.30.0.9",
            &[],
            100,
            &format!("    token_file: {}\n", dir.0.join("token").display()),
        ),
    );
    put(&loner.app(), "/", r#"{"other": {"value": 2}}"#);
    let mut with_loner = members.clone();
    with_loner.push(member(&loner));
    let first = round(&client, &with_loner, None).await;
    let second = round(&client, &with_loner, Some(&first)).await;
    assert_eq!(second.divergent, vec![loner.ip.clone()]);
    assert!(!second.converged());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_without_a_digest_endpoint_are_probed_through_their_full_map() {
    // A C19 0.1 agent: no /c19/digest, the full map on GET /.
    let legacy = |req: c19::http::Request| async move {
        match req.path.as_str() {
            "/" => c19::http::json_value(
                StatusCode::OK,
                &serde_json::json!({"cat": {"value": "garfield", "ts": 1601241450390u64, "ttl": null}}),
            ),
            _ => c19::http::error(StatusCode::NOT_FOUND, "Not Found"),
        }
    };
    let listener = tokio::net::TcpListener::bind("127.30.1.1:4097")
        .await
        .unwrap();
    tokio::spawn(c19::http::serve(
        listener,
        1024,
        legacy,
        std::future::pending(),
    ));

    let dir = TempDir::new("operator-legacy");
    let ours = Agent::start(&dir, "127.30.1.2", &config("127.30.1.2", &[], 100, ""));
    put(
        &ours.app(),
        "/",
        r#"{"cat": {"value": "garfield", "ts": 1601241450390}}"#,
    );

    let client = PeerClient::new(None, Duration::from_millis(500));
    let members = [
        Member {
            name: "legacy".into(),
            address: "127.30.1.1:4097".into(),
        },
        Member {
            name: "ours".into(),
            address: ours.peer(),
        },
    ];
    let results = probe_all(&client, None, &members, &OperatorMetrics::default()).await;
    let (Probe::Answered(legacy), Probe::Answered(ours)) = (&results[0].1, &results[1].1) else {
        panic!("{results:?}")
    };
    assert_eq!(legacy.keys, 1);
    assert_eq!(
        legacy.digest, ours.digest,
        "the same state digests the same, however it was read"
    );
    assert_eq!(legacy.version, "883365185692908898");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answering_garbage_is_reported_not_fatal() {
    let garbage = |_| async { c19::http::text("<html>definitely not a digest</html>".into()) };
    let listener = tokio::net::TcpListener::bind("127.30.2.1:4097")
        .await
        .unwrap();
    tokio::spawn(c19::http::serve(
        listener,
        1024,
        garbage,
        std::future::pending(),
    ));
    let dir = TempDir::new("operator-garbage");
    let ours = Agent::start(&dir, "127.30.2.2", &config("127.30.2.2", &[], 100, ""));
    let members = [
        Member {
            name: "garbage".into(),
            address: "127.30.2.1:4097".into(),
        },
        Member {
            name: "ours".into(),
            address: ours.peer(),
        },
    ];
    let client = PeerClient::new(None, Duration::from_millis(500));
    let results = probe_all(&client, None, &members, &OperatorMetrics::default()).await;
    let Probe::Unreachable(why) = &results[0].1 else {
        panic!("{results:?}")
    };
    assert!(why.contains("unreadable digest"), "{why}");
    assert!(
        matches!(results[1].1, Probe::Answered(_)),
        "the other members are still probed"
    );
    let obs = observe(&results, None);
    assert_eq!(
        (obs.reachable, obs.unreachable.clone()),
        (1, vec!["garbage".to_string()])
    );
}
