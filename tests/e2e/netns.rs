//! Running inside private network and PID namespaces: the cluster, the agents and the test see
//! only their own loopback, and every process started there dies when the namespace's first
//! process exits. The binaries are located (and built, if need be) before entering, since no
//! registry is reachable inside.

use std::path::PathBuf;
use std::process::{Command, ExitCode};

const INSIDE: &str = "C19_E2E_INSIDE";

/// Whether this process already runs inside the namespaces.
pub fn inside() -> bool {
    std::env::var_os(INSIDE).is_some()
}

/// The directory of the control-plane binaries (`scripts/k8s-binaries`).
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var("C19_K8S_BIN_DIR")
        .ok()
        .filter(|d| !d.is_empty())
    {
        return Ok(PathBuf::from(d));
    }
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/k8s-binaries"))
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

/// Re-runs this binary as PID 1 of new network and PID namespaces and returns its exit code.
/// `on_start` gets the PID of `unshare`, which holds the new network namespace (for `nsenter`).
pub fn reenter(on_start: impl FnOnce(u32)) -> ExitCode {
    let bins = match bin_dir() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("c19 e2e: {e}");
            return ExitCode::FAILURE;
        }
    };
    let me = std::env::current_exe().expect("own path");
    let child = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(me)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .env("C19_K8S_BIN_DIR", &bins)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("c19 e2e: cannot run unshare (needs root and util-linux): {e}");
            return ExitCode::FAILURE;
        }
    };
    on_start(child.id());
    match child.wait() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("c19 e2e: failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("c19 e2e: {e}");
            ExitCode::FAILURE
        }
    }
}
