//! A real control plane for tests: etcd, kube-apiserver (token auth, RBAC, service-account keys),
//! kube-controller-manager, kube-scheduler and kwok with one fake node, inside the network
//! namespace the test runs in, with the pod CIDR routed to the namespace's loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const POD_CIDR: &str = "10.244.0.0/16";
pub const NODE_IP: &str = "10.0.0.1";
const ADMIN_TOKEN: &str = "c19-e2e-admin-token";

pub struct Cluster {
    pub dir: PathBuf,
    pub bins: PathBuf,
    pub kubeconfig: PathBuf,
    /// Name, arguments (to restart it) and process of every control-plane component.
    procs: std::sync::Mutex<Vec<(String, Vec<String>, Child)>>,
}

/// Runs a command and fails with its output when it fails.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Cluster {
    /// Sets up the namespace's network and starts every component; returns when the API server
    /// is ready and the node is Ready.
    pub fn start(bins: &Path, dir: &Path) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        run(Command::new("ip").args(["link", "set", "lo", "up"]));
        run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]));
        // Every address of the pod CIDR is local: agents bind to their pod's IP without one
        // interface address per pod.
        run(Command::new("ip").args(["route", "add", "local", POD_CIDR, "dev", "lo"]));

        let pki = dir.join("pki");
        run(Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(pki.join("sa.key"))
            .arg("2048")
            .stderr(Stdio::null()));
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-in"])
            .arg(pki.join("sa.key"))
            .arg("-out")
            .arg(pki.join("sa.pub"))
            .stderr(Stdio::null()));
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: https://127.0.0.1:6443\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\n    namespace: default\ncurrent-context: e2e\n"
            ),
        )
        .unwrap();

        let c = Cluster {
            dir: dir.to_owned(),
            bins: bins.to_owned(),
            kubeconfig: kubeconfig.clone(),
            procs: Default::default(),
        };
        let d = |p: &str| dir.join(p).display().to_string();
        let kc = kubeconfig.display().to_string();
        c.spawn(
            "etcd",
            &[
                "--data-dir",
                &d("etcd"),
                "--name",
                "e2e",
                "--unsafe-no-fsync",
                "--listen-client-urls",
                "http://127.0.0.1:2379",
                "--advertise-client-urls",
                "http://127.0.0.1:2379",
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-cluster",
                "e2e=http://127.0.0.1:2380",
                "--log-level",
                "warn",
            ],
        );
        c.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                "http://127.0.0.1:2379",
                "--bind-address",
                "127.0.0.1",
                "--secure-port",
                "6443",
                "--advertise-address",
                NODE_IP,
                "--cert-dir",
                &d("pki"),
                "--token-auth-file",
                &d("tokens.csv"),
                "--authorization-mode",
                "RBAC",
                "--service-account-key-file",
                &d("pki/sa.pub"),
                "--service-account-signing-key-file",
                &d("pki/sa.key"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range",
                "10.96.0.0/16",
                "--allow-privileged=true",
                "--v=0",
            ],
        );
        eventually("the API server", Duration::from_secs(90), || {
            c.kubectl_output(&["get", "--raw", "/readyz"])
                .status
                .success()
                .then_some(())
        });
        c.spawn(
            "kube-controller-manager",
            &[
                "--kubeconfig",
                &kc,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--service-account-private-key-file",
                &d("pki/sa.key"),
                "--root-ca-file",
                &d("pki/apiserver.crt"),
                "--controllers",
                "*",
                "--concurrent-deployment-syncs",
                "5",
                "--v=0",
            ],
        );
        c.spawn(
            "kube-scheduler",
            &[
                "--kubeconfig",
                &kc,
                "--leader-elect=false",
                "--bind-address",
                "127.0.0.1",
                "--v=0",
            ],
        );
        c.spawn(
            "kwok",
            &[
                "--kubeconfig",
                &kc,
                "--manage-all-nodes=true",
                "--cidr",
                POD_CIDR,
                "--node-ip",
                NODE_IP,
                "--node-lease-duration-seconds",
                "40",
            ],
        );
        c.apply_yaml(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: kwok-node-0\n  labels: {kubernetes.io/hostname: kwok-node-0, type: kwok}\n  annotations: {kwok.x-k8s.io/node: fake}\nspec: {}\nstatus:\n  allocatable: {cpu: '64', memory: 256Gi, pods: '250'}\n  capacity: {cpu: '64', memory: 256Gi, pods: '250'}\n  nodeInfo: {kubeletVersion: fake, architecture: amd64, operatingSystem: linux}\n",
        );
        eventually("the kwok node to be Ready", Duration::from_secs(60), || {
            let out = c.kubectl_output(&[
                "get",
                "node",
                "kwok-node-0",
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        });
        eventually(
            "the default service account",
            Duration::from_secs(60),
            || {
                c.kubectl_output(&["get", "serviceaccount", "default"])
                    .status
                    .success()
                    .then_some(())
            },
        );
        c
    }

    /// Kills component `name` (SIGKILL, as a crash or a node loss would), keeps it down for
    /// `down`, then starts it again with the same arguments.
    pub fn restart(&self, name: &str, down: Duration) {
        let (name, args, mut child) = {
            let mut procs = self.procs.lock().unwrap();
            let i = procs
                .iter()
                .position(|(n, _, _)| n == name)
                .unwrap_or_else(|| panic!("no component {name}"));
            procs.remove(i)
        };
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(down);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(&name, &args);
    }

    fn spawn(&self, name: &str, args: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(self.bins.join(name))
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.lock().unwrap().push((
            name.to_string(),
            args.iter().map(|a| a.to_string()).collect(),
            child,
        ));
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns its stdout; fails the test when kubectl fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl(&a)).unwrap()
    }

    /// `kubectl apply -f -` of a YAML text; returns kubectl's output.
    pub fn apply_yaml_output(&self, yaml: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(["apply", "--server-side", "--force-conflicts", "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn apply_yaml(&self, yaml: &str) {
        let out = self.apply_yaml_output(yaml);
        assert!(
            out.status.success(),
            "apply failed: {}\n{yaml}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, _, child) in self.procs.get_mut().unwrap().iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
