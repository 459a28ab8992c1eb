//! Private namespaces for a test cluster. The caller re-runs itself as PID 1 of new network,
//! mount and PID namespaces (`unshare`): the cluster sees only its own network, its mounts
//! (tmpfs over `/run`, shadowed sysctls) vanish with it, and every process it started, containers
//! included, dies when PID 1 exits. cgroups are not namespaced, so the outer process removes the
//! node's cgroup root once the namespaces are gone, however the inner run ended.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::cmd::run;
use crate::{KUBERNETES_SERVICE_IP, NODE_IP};

const INSIDE: &str = "C19_HARNESS_INSIDE";
const CGROUP: &str = "C19_HARNESS_CGROUP";

/// The kernel settings the kubelet writes at start. They are global, not per namespace: the
/// namespace gets writable copies, so the machine's own values never change.
const SHADOWED_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Whether this process already runs inside the namespaces.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// The cgroup root (one directory under every hierarchy) of this run's node.
pub fn cgroup_root() -> String {
    std::env::var(CGROUP).unwrap_or_else(|_| format!("c19-harness-{}", std::process::id()))
}

/// The project's scripts directory.
pub fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The directory of the cluster binaries (`scripts/k8s-binaries`, built on first use).
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var("C19_K8S_BIN_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        return Ok(PathBuf::from(d));
    }
    let out = Command::new(scripts().join("k8s-binaries"))
        .output()
        .map_err(|e| format!("cannot run scripts/k8s-binaries: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/k8s-binaries failed (it needs Go): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or("")
            .trim(),
    ))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Re-runs this binary as PID 1 of new network, mount and PID namespaces and returns its exit
/// code. `on_start` gets the PID of `unshare`, which holds the namespaces (for `nsenter`).
/// Ctrl-C, SIGTERM or SIGHUP end the whole namespace; the node's cgroups are removed after.
pub fn reenter(on_start: impl FnOnce(u32)) -> ExitCode {
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("c19 harness: {e}");
            return ExitCode::FAILURE;
        }
    };
    crate::node::sweep_stale_cgroups();
    let cgroup = cgroup_root();
    let me = std::env::current_exe().expect("own path");
    let child = Command::new("unshare")
        .args(["--net", "--mount", "--pid", "--fork", "--kill-child"])
        .args(["--mount-proc", "--propagation", "private"])
        .arg(me)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .env(CGROUP, &cgroup)
        .env("C19_K8S_BIN_DIR", &bins)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("c19 harness: cannot run unshare (needs root and util-linux): {e}");
            return ExitCode::FAILURE;
        }
    };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    on_start(child.id());
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
        if STOP.load(Ordering::SeqCst) {
            // unshare's child (PID 1 inside) dies with it (--kill-child), and the namespace
            // with every process in it.
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    crate::node::remove_cgroups(&cgroup);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("c19 harness: failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("c19 harness: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up the namespace for a cluster: loopback with the node's address, tmpfs where
/// containerd, the CNI plugins and the kubelet write outside their settings, shadowed sysctls,
/// and the `kubernetes` Service routed to the API server (there is no kube-proxy).
pub fn prepare(dir: &Path) {
    assert!(inside(), "prepare() runs inside the namespaces only");
    run(Command::new("ip").args(["link", "set", "lo", "up"]));
    run(Command::new("ip").args(["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"]));
    for path in ["/run", "/var/log", "/var/lib/cni"] {
        std::fs::create_dir_all(path).unwrap();
        run(Command::new("mount").args(["-t", "tmpfs", "tmpfs", path]));
    }
    let copies = dir.join("sysctl");
    std::fs::create_dir_all(&copies).unwrap();
    for name in SHADOWED_SYSCTLS {
        let real = Path::new("/proc/sys").join(name);
        let copy = copies.join(name.replace('/', "."));
        std::fs::write(&copy, std::fs::read(&real).unwrap_or_default()).unwrap();
        run(Command::new("mount").arg("--bind").arg(&copy).arg(&real));
    }
    for chain in ["PREROUTING", "OUTPUT"] {
        run(Command::new("iptables").args([
            "-t",
            "nat",
            "-A",
            chain,
            "-d",
            KUBERNETES_SERVICE_IP,
            "-p",
            "tcp",
            "--dport",
            "443",
            "-j",
            "DNAT",
            "--to-destination",
            &format!("{NODE_IP}:6443"),
        ]));
    }
}
