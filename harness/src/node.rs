//! The real node: containerd (with runc and the CNI `bridge`), the images imported without a
//! registry, and the kubelet registered as `c19-node`. Everything it writes lives under the
//! cluster's directory, `/run` (a tmpfs of the namespace) or its own cgroup root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{eventually, run};
use crate::{NODE_IP, NODE_NAME, POD_CIDR};

pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The containerd namespace of the CRI plugin (what the kubelet's containers live in).
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The sandbox image, built from the kubernetes module's `pause.c` by `scripts/images`.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Where `scripts/images` leaves the OCI layouts (relative to the project root).
pub const IMAGE_DIR: &str = "target/images";

/// The cgroup hierarchies of this machine (cgroup v1, or v1 with the v2 `unified` beside it).
fn hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Creates the node's cgroup root under every hierarchy; the kubelet puts every pod below it.
pub fn create_cgroups(root: &str) {
    for h in hierarchies() {
        let dir = h.join(root);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        if h.ends_with("cpuset") {
            // A v1 cpuset cgroup takes no task until it has CPUs and memory nodes.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let v = std::fs::read(h.join(f)).unwrap();
                std::fs::write(dir.join(f), v).unwrap();
            }
        }
    }
}

/// Removes a cgroup root and everything below it, deepest first. Called after the namespaces
/// are gone: their processes may take a moment to leave, hence the retries.
pub fn remove_cgroups(root: &str) {
    for _ in 0..50 {
        let mut left = false;
        for h in hierarchies() {
            let top = h.join(root);
            if !top.exists() {
                continue;
            }
            let mut dirs = Vec::new();
            collect_dirs(&top, &mut dirs);
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            for d in dirs {
                if std::fs::remove_dir(&d).is_err() {
                    left = true;
                }
            }
        }
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("c19 harness: could not remove every cgroup under {root}");
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

/// Removes the cgroup roots of earlier runs that were killed before they could clean up
/// (their namespaces are gone, so their cgroups hold no process).
pub fn sweep_stale_cgroups() {
    let mut stale = std::collections::BTreeSet::new();
    for h in hierarchies() {
        for e in std::fs::read_dir(&h).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("c19-harness-") else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                stale.insert(name);
            }
        }
    }
    for root in stale {
        remove_cgroups(&root);
    }
}

fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd"
state = "/run/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  enable_selinux = false
  disable_apparmor = true
  # runc cannot lower a process's oom_score_adj without CAP_SYS_RESOURCE, which this machine lacks.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
"#
    )
}

/// Pods on one bridge, each with an address of the node's range; nothing is masqueraded or
/// routed out of the namespace.
fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "c19",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni-ipam").display().to_string()
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

fn kubelet_config(dir: &Path, cgroup_root: &str, cluster_dns: &str) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://{CONTAINERD_SOCKET}
podLogsDir: {d}/pod-logs
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: [{cluster_dns}]
# Images cannot be pulled back: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {{memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}}
makeIPTablesUtilChains: false
serializeImagePulls: false
# The API server reaches the kubelet (logs, exec) inside the namespace only.
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
"#
    )
}

/// Writes containerd's and the CNI's configuration and returns containerd's arguments.
pub fn containerd_args(dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir.join("cni")).unwrap();
    std::fs::write(dir.join("cni/10-c19.conflist"), cni_config(dir)).unwrap();
    let config = dir.join("containerd.toml");
    std::fs::write(&config, containerd_config(dir)).unwrap();
    vec!["--config".into(), config.display().to_string()]
}

/// Waits for containerd's socket to answer.
pub fn wait_for_containerd() {
    eventually("containerd", Duration::from_secs(60), || {
        ctr(&["version"]).status.success().then_some(())
    });
}

/// `ctr` against the node's containerd, in the CRI namespace.
pub fn ctr(args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .args(["--address", CONTAINERD_SOCKET, "--namespace", CRI_NAMESPACE])
        .args(args)
        .output()
        .expect("ctr runs")
}

/// Imports OCI image layouts (tar files) into the CRI namespace, unpacked for overlayfs.
pub fn import_images(images: &[PathBuf]) {
    for image in images {
        let out = ctr(&[
            "images",
            "import",
            "--all-platforms",
            "--snapshotter",
            "overlayfs",
            &image.display().to_string(),
        ]);
        assert!(
            out.status.success(),
            "importing {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The image layouts of `scripts/images`, or a message saying how to build them.
pub fn built_images(project: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = project.join(IMAGE_DIR);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| {
            format!(
                "{}: {e}; build the images with scripts/images",
                dir.display()
            )
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .collect();
    v.sort();
    if v.iter().any(|p| p.ends_with("pause.tar")) {
        Ok(v)
    } else {
        Err(format!(
            "no pause.tar in {}; build the images with scripts/images",
            dir.display()
        ))
    }
}

/// Writes the kubelet's configuration and node credential and returns its arguments.
pub fn kubelet_args(
    dir: &Path,
    kubeconfig: &Path,
    cgroup_root: &str,
    cluster_dns: &str,
) -> Vec<String> {
    let kdir = dir.join("kubelet");
    std::fs::create_dir_all(kdir.join("pki")).unwrap();
    std::fs::create_dir_all(dir.join("pod-logs")).unwrap();
    let config = kdir.join("config.yaml");
    std::fs::write(&config, kubelet_config(dir, cgroup_root, cluster_dns)).unwrap();
    [
        "--config",
        &config.display().to_string(),
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--root-dir",
        &kdir.join("root").display().to_string(),
        "--cert-dir",
        &kdir.join("pki").display().to_string(),
        "--hostname-override",
        NODE_NAME,
        "--node-ip",
        NODE_IP,
        "--v=1",
    ]
    .map(String::from)
    .to_vec()
}

/// The containerd task of a container (`containerd://<id>` in the pod's status): its id and the
/// PID of its first process as this namespace sees it.
pub fn task(container_id: &str) -> Option<(String, u32)> {
    let id = container_id.strip_prefix("containerd://")?;
    let out = ctr(&["tasks", "ls"]);
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next()? == id).then_some(())?;
        Some((id.to_string(), f.next()?.parse().ok()?))
    })
}

/// Freezes (`pause`) or thaws (`resume`) a container through its freezer cgroup.
pub fn freeze(container_id: &str, frozen: bool) {
    let (id, _) = task(container_id).expect("the container runs");
    let verb = if frozen { "pause" } else { "resume" };
    let out = ctr(&["tasks", verb, &id]);
    assert!(
        out.status.success(),
        "ctr tasks {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills a container's process with `signal`, as a crash or the OOM killer would; the kubelet
/// sees it exit and applies the pod's restart policy.
pub fn kill(container_id: &str, signal: &str) {
    let (id, _) = task(container_id).expect("the container runs");
    run(Command::new("ctr")
        .args(["--address", CONTAINERD_SOCKET, "--namespace", CRI_NAMESPACE])
        .args(["tasks", "kill", "--signal", signal, &id]));
}

/// Gives an imported image a second name, as pushing a new tag of the same build would.
pub fn tag_image(source: &str, target: &str) {
    let _ = ctr(&["images", "rm", target]);
    let out = ctr(&["images", "tag", source, target]);
    assert!(
        out.status.success(),
        "ctr images tag: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
