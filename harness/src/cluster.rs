//! A whole cluster in the namespace: etcd, kube-apiserver (token auth, Node and RBAC
//! authorization, service-account keys), kube-controller-manager, kube-scheduler, CoreDNS,
//! containerd and the kubelet, with the images of `scripts/images` imported. Driven through `kubectl`, as users
//! drive theirs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use crate::cmd::{eventually, run};
use crate::{NODE_IP, NODE_NAME, POD_CIDR, SERVICE_CIDR, netns, node};

const ADMIN_TOKEN: &str = "c19-harness-admin-token";
const NODE_TOKEN: &str = "c19-harness-node-token";

/// What a cluster runs besides the control plane and the node.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Image layouts to import into the node's containerd (the pause image among them).
    pub images: Vec<PathBuf>,
}

/// A running component and what it takes to start it again.
struct Component {
    name: String,
    program: String,
    args: Vec<String>,
    child: Child,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub bins: PathBuf,
    pub kubeconfig: PathBuf,
    /// Every component, in start order.
    procs: Mutex<Vec<Component>>,
}

fn kubeconfig_text(server: &str, user: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c19\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: c19\n  context:\n    cluster: c19\n    user: {user}\n    namespace: default\ncurrent-context: c19\n"
    )
}

impl Cluster {
    /// Prepares the namespace and starts every component; returns when the node is Ready and
    /// the `default` ServiceAccount exists, so pods can be created at once.
    pub fn start(bins: &Path, dir: &Path, options: &Options) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("pki")).unwrap();
        netns::prepare(dir);
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
            format!(
                "{ADMIN_TOKEN},admin,admin,system:masters\n{NODE_TOKEN},system:node:{NODE_NAME},{NODE_NAME},system:nodes\n"
            ),
        )
        .unwrap();
        let kubeconfig = dir.join("kubeconfig");
        let server = format!("https://{NODE_IP}:6443");
        std::fs::write(&kubeconfig, kubeconfig_text(&server, "admin", ADMIN_TOKEN)).unwrap();
        let node_kubeconfig = dir.join("kubeconfig-node");
        std::fs::write(
            &node_kubeconfig,
            kubeconfig_text(&server, NODE_NAME, NODE_TOKEN),
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
                "c19",
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
                "c19=http://127.0.0.1:2380",
                "--log-level",
                "warn",
            ],
        );
        c.spawn(
            "kube-apiserver",
            &[
                "--etcd-servers",
                "http://127.0.0.1:2379",
                // Pods reach it through the node's address (the `kubernetes` Service is NATed
                // there); nothing outside the namespace can.
                "--bind-address",
                "0.0.0.0",
                "--secure-port",
                "6443",
                "--advertise-address",
                NODE_IP,
                "--cert-dir",
                &d("pki"),
                "--token-auth-file",
                &d("tokens.csv"),
                "--authorization-mode",
                "Node,RBAC",
                "--enable-admission-plugins",
                "NodeRestriction",
                "--kubelet-preferred-address-types",
                "InternalIP",
                "--service-account-key-file",
                &d("pki/sa.pub"),
                "--service-account-signing-key-file",
                &d("pki/sa.key"),
                "--service-account-issuer",
                "https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range",
                SERVICE_CIDR,
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
                "--use-service-account-credentials",
                "--controllers",
                "*",
                "--allocate-node-cidrs",
                "--cluster-cidr",
                POD_CIDR,
                "--node-cidr-mask-size",
                "24",
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
        // The cluster DNS (CoreDNS's kubernetes plugin) on port 53 of the namespace (so on the
        // node's address): the kubelet points every pod's resolv.conf at it.
        let corefile = dir.join("Corefile");
        std::fs::write(
            &corefile,
            format!(
                ".:53 {{\n  errors\n  kubernetes cluster.local in-addr.arpa ip6.arpa {{\n    kubeconfig {kc} c19\n    fallthrough in-addr.arpa ip6.arpa\n  }}\n}}\n"
            ),
        )
        .unwrap();
        c.spawn("coredns", &["-conf", &corefile.display().to_string()]);
        c.spawn_from("containerd", "containerd", &node::containerd_args(dir));
        node::wait_for_containerd();
        node::import_images(&options.images);
        node::create_cgroups(&netns::cgroup_root());
        c.spawn(
            "kubelet",
            &node::kubelet_args(dir, &node_kubeconfig, &netns::cgroup_root(), NODE_IP)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        eventually("the node to be Ready", Duration::from_secs(120), || {
            let out = c.kubectl_output(&[
                "get",
                "node",
                NODE_NAME,
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
        c.assert_running();
        c
    }

    /// Panics, naming it and its log, when a component has exited.
    pub fn assert_running(&self) {
        for component in self.procs.lock().unwrap().iter_mut() {
            if let Ok(Some(status)) = component.child.try_wait() {
                panic!(
                    "{} exited ({status}); see {}",
                    component.name,
                    self.dir.join(format!("{}.log", component.name)).display()
                );
            }
        }
    }

    /// Kills component `name` (SIGKILL, as a crash would), keeps it down for `down`, then starts
    /// it again with the same arguments.
    pub fn restart(&self, name: &str, down: Duration) {
        let mut c = {
            let mut procs = self.procs.lock().unwrap();
            let i = procs
                .iter()
                .position(|c| c.name == name)
                .unwrap_or_else(|| panic!("no component {name}"));
            procs.remove(i)
        };
        let _ = c.child.kill();
        let _ = c.child.wait();
        std::thread::sleep(down);
        self.spawn_from(&c.name, &c.program, &c.args);
    }

    /// Starts a component from the cluster's binaries, logging to `<dir>/<name>.log`.
    fn spawn(&self, name: &str, args: &[&str]) {
        let program = self.bins.join(name).display().to_string();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.spawn_from(name, &program, &args);
    }

    fn spawn_from(&self, name: &str, program: &str, args: &[String]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        self.procs.lock().unwrap().push(Component {
            name: name.to_string(),
            program: program.to_string(),
            args: args.to_vec(),
            child,
        });
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .expect("kubectl runs")
    }

    /// Runs kubectl and returns its stdout; panics with its stderr when it fails.
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

    /// kubectl with `input` on its standard input; returns its output.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
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
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// `kubectl apply --server-side -f -` of a YAML text; returns kubectl's output.
    pub fn apply_yaml_output(&self, yaml: &str) -> Output {
        self.kubectl_with_input(
            &["apply", "--server-side", "--force-conflicts", "-f", "-"],
            yaml,
        )
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
    /// Stops the components, newest first. Containers keep running until the namespace's PID 1
    /// exits, which ends them all.
    fn drop(&mut self) {
        for c in self.procs.get_mut().unwrap().iter_mut().rev() {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}
