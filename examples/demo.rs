//! A local demo of the whole system on the harness's real cluster: a control plane, a node that
//! runs real containers (kubelet, containerd, runc), the operator installed with its Helm chart,
//! and the sample group of `examples/kubernetes/web.yaml`: the example app with the c19 agent as
//! its native sidecar. Run it with `scripts/demo` (root; the first run builds the cluster's
//! binaries from Go modules). Ctrl-C tears it all down.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use c19_harness::{Cluster, cluster::Options, eventually, netns, node};

const DIR: &str = "/tmp/c19-demo";

fn main() -> ExitCode {
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !netns::inside() {
        if let Err(e) = node::built_images(project) {
            eprintln!("demo: {e}");
            return ExitCode::FAILURE;
        }
        return netns::reenter(|pid| {
            let _ = std::fs::create_dir_all(DIR);
            let _ = std::fs::write(format!("{DIR}.pid"), pid.to_string());
        });
    }
    let dir = PathBuf::from(DIR);
    let started = Instant::now();
    println!(
        "starting the cluster (etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet)..."
    );
    let options = Options {
        images: node::built_images(project).unwrap(),
    };
    let cluster = Cluster::start(&netns::bin_dir().unwrap(), &dir, &options);
    println!("node Ready in {:.1} s", started.elapsed().as_secs_f64());
    let root = env!("CARGO_MANIFEST_DIR");
    println!("installing the operator with its Helm chart...");
    let helm = Command::new(cluster.bins.join("helm"))
        .args(["install", "c19", &format!("{root}/charts/c19-operator")])
        .args(["--namespace", "c19-system", "--create-namespace"])
        .args(["--set", "image.tag=dev", "--set", "probeInterval=1000"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap();
    if !helm.status.success() {
        eprintln!("helm install: {}", String::from_utf8_lossy(&helm.stderr));
        return ExitCode::FAILURE;
    }
    cluster.kubectl(&[
        "wait",
        "--for=condition=Available",
        "-n",
        "c19-system",
        "deployment/c19-c19-operator",
        "--timeout=120s",
    ]);
    cluster.apply_yaml(
        &std::fs::read_to_string(format!("{root}/examples/kubernetes/web.yaml")).unwrap(),
    );
    println!("waiting for the sample group's pods and their convergence...");
    eventually(
        "the Deployment of the group",
        Duration::from_secs(60),
        || {
            cluster
                .kubectl_output(&["get", "deployment", "web"])
                .status
                .success()
                .then_some(())
        },
    );
    cluster.kubectl(&["rollout", "status", "deployment/web", "--timeout=180s"]);
    cluster.kubectl(&[
        "wait",
        "--for=condition=Converged",
        "c19g/web",
        "--timeout=180s",
    ]);
    let pid = std::fs::read_to_string(format!("{DIR}.pid")).unwrap_or_default();
    let pod = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "c19.dev/group=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let ip = cluster.kubectl(&[
        "get",
        "pods",
        "-l",
        "c19.dev/group=web",
        "-o",
        "jsonpath={.items[1].status.podIP}",
    ]);
    let kc = cluster.kubeconfig.display();
    println!(
        "\nThe demo runs in its own namespaces. From another terminal (as root):\n\n  \
         alias k='nsenter -t {pid} -n -m -- kubectl --kubeconfig {kc}'\n  \
         k get c19g\n  \
         k get pods -o wide\n  \
         k exec {pod} -c app -- curl -s -X PUT localhost:3097/ -d '{{\"cat\": {{\"value\": \"garfield\"}}}}'\n  \
         k exec {pod} -c app -- curl -s localhost:3097/cat\n  \
         k exec {pod} -c app -- curl -sN 'localhost:3097/?watch&snapshot'    # changes as they happen\n  \
         k exec {pod} -c app -- curl -s 'localhost:3097/?prefix=started/&keys'\n  \
         nsenter -t {pid} -n -- curl -s {ip}:8080/hello/ada\n  \
         k scale c19g/web --replicas=5\n  \
         k logs -n c19-system deploy/c19-c19-operator\n\n\
         kubeconfig: {kc}\nlogs: {DIR}/*.log, {DIR}/pod-logs/\nCtrl-C tears everything down.\n"
    );
    println!("{}", cluster.kubectl(&["get", "c19g"]));
    println!("{}", cluster.kubectl(&["get", "pods", "-o", "wide"]));
    // This process is PID 1 of the demo's PID namespace: when it returns, the kernel ends every
    // process of the demo, containers included. PID 1 ignores signals it has no handler for,
    // hence the handlers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
    println!("tearing down");
    drop(cluster);
    std::thread::sleep(Duration::from_millis(100));
    ExitCode::SUCCESS
}
