//! The kubelet's part for the agent sidecar: for every pod of a group that kwok runs, a real
//! `c19 agent` process bound to the pod's IP, with the config the operator rendered for the
//! group; stopped when the pod goes away.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// One running sidecar.
pub struct Sidecar {
    pub pod: String,
    pub group: String,
    pub ip: String,
    pub token: String,
    child: Child,
}

impl Sidecar {
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

pub struct Kubelet {
    pub sidecars: Arc<Mutex<HashMap<String, Sidecar>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Kubelet {
    pub fn start(bin: PathBuf, kubeconfig: PathBuf, dir: PathBuf) -> Kubelet {
        let sidecars: Arc<Mutex<HashMap<String, Sidecar>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (sidecars, stop) = (sidecars.clone(), stop.clone());
            std::thread::spawn(move || {
                std::fs::create_dir_all(&dir).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    sync(&bin, &kubeconfig, &dir, &sidecars);
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        };
        Kubelet {
            sidecars,
            stop,
            thread: Some(thread),
        }
    }

    /// The running sidecars of a group, by pod name.
    pub fn group(&self, group: &str) -> Vec<(String, String, String)> {
        let mut v: Vec<_> = self
            .sidecars
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.group == group)
            .map(|s| (s.pod.clone(), s.ip.clone(), s.token.clone()))
            .collect();
        v.sort();
        v
    }

    pub fn with<T>(&self, pod: &str, f: impl FnOnce(&Sidecar) -> T) -> T {
        f(self
            .sidecars
            .lock()
            .unwrap()
            .values()
            .find(|s| s.pod == pod)
            .expect("sidecar runs"))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, mut s) in self.sidecars.lock().unwrap().drain() {
            let _ = Command::new("kill")
                .args(["-CONT", &s.child.id().to_string()])
                .status();
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}

fn kubectl(kubeconfig: &PathBuf, args: &[&str]) -> Option<String> {
    let out = Command::new("kubectl")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts sidecars for new running pods and stops those whose pod is gone.
fn sync(
    bin: &PathBuf,
    kubeconfig: &PathBuf,
    dir: &std::path::Path,
    sidecars: &Mutex<HashMap<String, Sidecar>>,
) {
    let Some(text) = kubectl(
        kubeconfig,
        &["get", "pods", "-A", "-l", "c19.dev/group", "-o", "json"],
    ) else {
        return;
    };
    let pods: Value = serde_json::from_str(&text).unwrap();
    let mut running: HashMap<String, &Value> = HashMap::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        let ip = pod["status"]["podIP"].as_str().unwrap_or("");
        let terminating = !pod["metadata"]["deletionTimestamp"].is_null();
        if !ip.is_empty() && !terminating && pod["status"]["phase"] == "Running" {
            running.insert(pod["metadata"]["uid"].as_str().unwrap().to_string(), pod);
        }
    }
    let mut current = sidecars.lock().unwrap();
    let gone: Vec<String> = current
        .keys()
        .filter(|uid| !running.contains_key(*uid))
        .cloned()
        .collect();
    for uid in gone {
        let mut s = current.remove(&uid).unwrap();
        let _ = Command::new("kill")
            .args(["-CONT", &s.child.id().to_string()])
            .status();
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    for (uid, pod) in running {
        if current.contains_key(&uid) {
            continue;
        }
        if let Some(s) = start(bin, kubeconfig, dir, pod) {
            current.insert(uid, s);
        }
    }
}

/// Starts the agent of one pod with its group's rendered config, rewritten to bind to the pod's
/// IP (every agent shares this namespace's network) and to read the token and seed from files.
fn start(
    bin: &PathBuf,
    kubeconfig: &PathBuf,
    dir: &std::path::Path,
    pod: &Value,
) -> Option<Sidecar> {
    let ns = pod["metadata"]["namespace"].as_str()?.to_string();
    let name = pod["metadata"]["name"].as_str()?.to_string();
    let group = pod["metadata"]["labels"]["c19.dev/group"]
        .as_str()?
        .to_string();
    let ip = pod["status"]["podIP"].as_str()?.to_string();
    let config = kubectl(
        kubeconfig,
        &[
            "get",
            "configmap",
            "-n",
            &ns,
            &format!("{group}-c19"),
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ],
    )?;
    let token = kubectl(
        kubeconfig,
        &[
            "get",
            "secret",
            "-n",
            &ns,
            &format!("{group}-c19-token"),
            "-o",
            "go-template={{.data.token | base64decode}}",
        ],
    )?;
    let pod_dir = dir.join(&name);
    std::fs::create_dir_all(&pod_dir).ok()?;
    let token_file = pod_dir.join("token");
    std::fs::write(&token_file, &token).ok()?;
    let mut config = config
        .replace("bind: 127.0.0.1", &format!("bind: {ip}"))
        .replace("bind: 0.0.0.0", &format!("bind: {ip}"))
        .replace("/etc/c19/token/token", &token_file.display().to_string());
    if config.contains("/etc/c19/seed/data.json") {
        let seed = pod["spec"]["volumes"]
            .as_array()?
            .iter()
            .find(|v| v["name"] == "c19-seed")?;
        let (cm, key) = (
            seed["configMap"]["name"].as_str()?,
            seed["configMap"]["items"][0]["key"].as_str()?,
        );
        let data = kubectl(
            kubeconfig,
            &[
                "get",
                "configmap",
                "-n",
                &ns,
                cm,
                "-o",
                &format!("go-template={{{{index .data \"{key}\"}}}}"),
            ],
        )?;
        let seed_file = pod_dir.join("data.json");
        std::fs::write(&seed_file, data).ok()?;
        config = config.replace("/etc/c19/seed/data.json", &seed_file.display().to_string());
    }
    let config_file = pod_dir.join("config.yaml");
    std::fs::write(&config_file, config).ok()?;
    let log = std::fs::File::create(pod_dir.join("agent.log")).ok()?;
    let child = Command::new(bin)
        .args(["agent", "--config"])
        .arg(&config_file)
        .env("POD_IP", &ip)
        .env("HOSTNAME", &name)
        .env("RUST_LOG", "c19=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .ok()?;
    Some(Sidecar {
        pod: name,
        group,
        ip,
        token,
        child,
    })
}
