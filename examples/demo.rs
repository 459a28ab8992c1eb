//! A local demo of the whole system on the end-to-end harness: a real control plane, the CRD, the
//! operator, and a sample group whose agents run on this machine. Run it with `scripts/demo`
//! (root; builds the control plane from Go modules on first use). Ctrl-C tears it all down.

// Shared with the end-to-end tests, which use more of them than the demo does.
#[allow(dead_code)]
#[path = "../tests/e2e/cluster.rs"]
mod cluster;
#[path = "../tests/e2e/netns.rs"]
mod netns;
#[allow(dead_code)]
#[path = "../tests/e2e/sidecars.rs"]
mod sidecars;

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

const DIR: &str = "/tmp/c19-demo";

fn main() -> ExitCode {
    if !netns::inside() {
        return netns::reenter(|pid| {
            let _ = std::fs::create_dir_all(DIR);
            let _ = std::fs::write(format!("{DIR}.pid"), pid.to_string());
        });
    }
    let c19 = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("c19");
    assert!(
        c19.exists(),
        "build the binary first: cargo build --release --bin c19"
    );
    let dir = PathBuf::from(DIR);
    println!(
        "starting the control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)..."
    );
    let cluster = cluster::Cluster::start(&netns::bin_dir().unwrap(), &dir);
    let root = env!("CARGO_MANIFEST_DIR");
    cluster.apply_yaml(&std::fs::read_to_string(format!("{root}/crds/c19group.yaml")).unwrap());
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/c19groups.c19.dev",
        "--timeout=60s",
    ]);
    let log = std::fs::File::create(dir.join("operator.log")).unwrap();
    let mut operator = Command::new(&c19)
        .args([
            "operator",
            "--probe-interval",
            "1000",
            "--metrics-addr",
            "127.0.0.1:8080",
        ])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _kubelet =
        sidecars::Kubelet::start(c19.clone(), cluster.kubeconfig.clone(), dir.join("pods"));
    cluster.apply_yaml(
        &std::fs::read_to_string(format!("{root}/examples/kubernetes/web.yaml")).unwrap(),
    );
    println!("waiting for the sample group to converge...");
    cluster.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/web",
        "--timeout=120s",
    ]);
    let pid = std::fs::read_to_string(format!("{DIR}.pid")).unwrap_or_default();
    let ip = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "c19.dev/group=web",
        "-o",
        "jsonpath={.items[0].status.podIP}",
    ]);
    let kc = cluster.kubeconfig.display();
    println!(
        "\nThe demo runs in its own network namespace. From another terminal (as root):\n\n  \
         nsenter -t {pid} -n -- kubectl --kubeconfig {kc} get c19g\n  \
         nsenter -t {pid} -n -- kubectl --kubeconfig {kc} scale c19g/web --replicas=5\n  \
         nsenter -t {pid} -n -- curl -X PUT {ip}:3097/ -d '{{\"cat\": {{\"value\": \"garfield\"}}}}'\n  \
         nsenter -t {pid} -n -- curl {ip}:3097/cat\n  \
         nsenter -t {pid} -n -- curl 127.0.0.1:8080/metrics\n\n\
         kubeconfig: {kc}\nlogs: {DIR}/*.log, {DIR}/pods/*/agent.log\nCtrl-C tears everything down.\n"
    );
    println!("{}", cluster.kubectl(&["get", "c19g"]));
    // This process is PID 1 of the demo's PID namespace: when it returns, the kernel ends every
    // process of the demo. PID 1 ignores signals it has no handler for, hence the handlers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let code = runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
                _ = term.recv() => return ExitCode::SUCCESS,
                _ = tick.tick() => {
                    if let Ok(Some(status)) = operator.try_wait() {
                        eprintln!("the operator exited ({status}); see {DIR}/operator.log");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
    });
    println!("tearing down");
    let _ = operator.kill();
    code
}
