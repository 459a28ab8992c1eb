//! The reconciler against a mock API server (tower-test, as kube-rs's controller-rs does): a
//! small in-memory fake that stores what is applied, so one test can create a group and then
//! check that reconciling it again writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use c19::operator::context::Context;
use c19::operator::crd::C19Group;
use c19::operator::desired::Settings;
use c19::operator::reconcile::reconcile;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

/// Requests seen, as "METHOD path".
type Log = Arc<Mutex<Vec<String>>>;

struct Fake {
    objects: Arc<Mutex<HashMap<String, Value>>>,
    log: Log,
}

impl Fake {
    fn start() -> (kube::Client, Fake) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let objects: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let log: Log = Arc::default();
        let (store, seen) = (objects.clone(), log.clone());
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().clone();
                let path = req.uri().path().to_string();
                seen.lock().unwrap().push(format!("{method} {path}"));
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let body: Value = if body.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&body).unwrap()
                };
                let (status, reply) = respond(&store, &method, &path, body);
                let resp = Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        (kube::Client::new(service, "default"), Fake { objects, log })
    }

    fn writes(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("GET "))
            .cloned()
            .collect()
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    fn object(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }
}

fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

fn respond(
    store: &Mutex<HashMap<String, Value>>,
    method: &Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let mut store = store.lock().unwrap();
    match *method {
        Method::GET => store
            .get(path)
            .cloned()
            .map_or_else(not_found, |v| (StatusCode::OK, v)),
        Method::PATCH => {
            // Server-side apply: the fake keeps the applied object and answers with it.
            let key = path.trim_end_matches("/status").to_string();
            if path.ends_with("/status") {
                let mut obj = store.get(&key).cloned().unwrap_or(json!({}));
                obj["status"] = body["status"].clone();
                store.insert(key, obj.clone());
                return (StatusCode::OK, obj);
            }
            store.insert(key, body.clone());
            (StatusCode::OK, body)
        }
        Method::POST => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or("event")
                .to_string();
            store.insert(format!("{path}/{name}"), body.clone());
            (StatusCode::CREATED, body)
        }
        Method::DELETE => {
            store.remove(path);
            (
                StatusCode::OK,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
    }
}

fn context(client: kube::Client) -> Arc<Context> {
    context_with(client, "c19:test")
}

/// A context whose operator gives new groups `agent_image`.
fn context_with(client: kube::Client, agent_image: &str) -> Arc<Context> {
    let settings = Settings {
        agent_image: agent_image.into(),
        operator_namespace: "c19-system".into(),
        operator_labels: [(
            "app.kubernetes.io/name".to_string(),
            "c19-operator".to_string(),
        )]
        .into(),
        agent_metrics_namespace: None,
    };
    Arc::new(Context::new(
        client,
        settings,
        Reporter {
            controller: "c19-operator".into(),
            instance: None,
        },
    ))
}

fn group(spec: Value) -> C19Group {
    serde_json::from_value(json!({
        "apiVersion": "c19.dev/v1alpha1", "kind": "C19Group",
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1", "generation": 1, "resourceVersion": "1"},
        "spec": spec
    }))
    .unwrap()
}

fn app(replicas: i32) -> Value {
    json!({"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}})
}

const NS: &str = "/api/v1/namespaces/shop";
const APPS: &str = "/apis/apps/v1/namespaces/shop";

#[tokio::test]
async fn create_then_a_no_op_reconcile_writes_nothing() {
    let (client, fake) = Fake::start();
    let ctx = context(client);
    let mut g = group(app(3));
    fake.objects.lock().unwrap().insert(
        "/apis/c19.dev/v1alpha1/namespaces/shop/c19groups/web".into(),
        serde_json::to_value(&g).unwrap(),
    );

    reconcile(Arc::new(g.clone()), ctx.clone()).await.unwrap();
    let writes = fake.writes();
    for expected in [
        format!("POST {NS}/secrets"),
        format!("PATCH {NS}/configmaps/web-c19"),
        format!("PATCH {NS}/services/web-c19"),
        "PATCH /apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/web-c19".to_string(),
        "PATCH /apis/policy/v1/namespaces/shop/poddisruptionbudgets/web-c19".to_string(),
        format!("PATCH {APPS}/deployments/web"),
        "PATCH /apis/c19.dev/v1alpha1/namespaces/shop/c19groups/web/status".to_string(),
    ] {
        assert!(writes.contains(&expected), "{expected} not in {writes:#?}");
    }
    let deployment = fake.object(&format!("{APPS}/deployments/web")).unwrap();
    assert_eq!(
        deployment["spec"]["template"]["spec"]["initContainers"][0]["name"],
        "c19-agent"
    );
    let secret = fake.object(&format!("{NS}/secrets/web-c19-token")).unwrap();
    let token = secret["stringData"]["token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 64);
    let status = fake
        .object("/apis/c19.dev/v1alpha1/namespaces/shop/c19groups/web")
        .unwrap()["status"]
        .clone();
    assert_eq!(status["selector"], "c19.dev/group=web");
    assert_eq!(status["observedGeneration"], 1);
    let conditions: Vec<_> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(conditions, ["Ready", "Progressing", "Converged"]);
    assert_eq!(
        status["agentImage"], "c19:test",
        "the operator's image, for a new group"
    );

    // Reconciling the unchanged group again performs reads only.
    g.status = Some(serde_json::from_value(status).unwrap());
    fake.clear();
    reconcile(Arc::new(g.clone()), ctx.clone()).await.unwrap();
    assert_eq!(
        fake.writes(),
        Vec::<String>::new(),
        "a no-op reconcile writes nothing"
    );
    assert_eq!(
        fake.object(&format!("{NS}/secrets/web-c19-token")).unwrap()["stringData"]["token"],
        token.as_str(),
        "the token is never regenerated"
    );

    // The operator upgraded to a newer default agent image: the group keeps its own, and its
    // pods do not roll (nothing is written).
    let upgraded = context_with(ctx.client.clone(), "c19:next");
    reconcile(Arc::new(g.clone()), upgraded).await.unwrap();
    assert_eq!(
        fake.writes(),
        Vec::<String>::new(),
        "an operator upgrade rolls no group"
    );

    // Drift in an owned object is restored.
    fake.objects
        .lock()
        .unwrap()
        .get_mut(&format!("{APPS}/deployments/web"))
        .unwrap()["spec"]["replicas"] = json!(7);
    reconcile(Arc::new(g.clone()), ctx.clone()).await.unwrap();
    assert_eq!(fake.writes(), [format!("PATCH {APPS}/deployments/web")]);
    assert_eq!(
        fake.object(&format!("{APPS}/deployments/web")).unwrap()["spec"]["replicas"],
        3
    );

    // Scaling to one pod removes the disruption budget, which would block node drains.
    fake.clear();
    let mut one = g.clone();
    one.spec.replicas = 1;
    reconcile(Arc::new(one), ctx.clone()).await.unwrap();
    let writes = fake.writes();
    assert!(
        writes.contains(
            &"DELETE /apis/policy/v1/namespaces/shop/poddisruptionbudgets/web-c19".to_string()
        ),
        "{writes:#?}"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_and_nothing_is_torn_down() {
    let (client, fake) = Fake::start();
    let ctx = context(client);
    let g = group(app(2));
    fake.objects.lock().unwrap().insert(
        "/apis/c19.dev/v1alpha1/namespaces/shop/c19groups/web".into(),
        serde_json::to_value(&g).unwrap(),
    );
    reconcile(Arc::new(g.clone()), ctx.clone()).await.unwrap();
    fake.clear();

    let bad = group(
        json!({"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "image": "nginx", "ports": [{"containerPort": 4097}]}]}}}),
    );
    reconcile(Arc::new(bad), ctx.clone()).await.unwrap();
    let writes = fake.writes();
    assert!(
        writes.iter().all(|w| !w.starts_with("DELETE")),
        "{writes:#?}"
    );
    assert!(
        writes.contains(
            &"PATCH /apis/c19.dev/v1alpha1/namespaces/shop/c19groups/web/status".to_string()
        ),
        "{writes:#?}"
    );
    assert!(
        writes.contains(&"POST /apis/events.k8s.io/v1/namespaces/shop/events".to_string()),
        "a Warning event: {writes:#?}"
    );
    assert!(
        !writes.iter().any(|w| w.contains("/deployments/")),
        "the running Deployment is left alone: {writes:#?}"
    );
    let status = fake
        .object("/apis/c19.dev/v1alpha1/namespaces/shop/c19groups/web")
        .unwrap()["status"]
        .clone();
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(ready["message"].as_str().unwrap().contains("4097"));
    let events: Vec<Value> = fake
        .objects
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.contains("/events/"))
        .map(|(_, v)| v.clone())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "Warning" && e["reason"] == "InvalidSpec"),
        "{events:#?}"
    );
}
