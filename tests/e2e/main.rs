//! End to end against a real control plane (kube-apiserver, controller-manager, scheduler, etcd,
//! kwok), driven the way users drive c19: `kubectl apply`, `kubectl scale`, `kubectl wait`.
//!
//! The test re-runs itself inside new network and PID namespaces (`unshare`), so the cluster and
//! the agents live on a private loopback that nothing outside can reach, and every process it
//! started dies with it. Needs root and the binaries of `scripts/k8s-binaries`.

mod cluster;
mod scenarios;
mod sidecars;
#[path = "../common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

const INSIDE: &str = "C19_E2E_INSIDE";

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if std::env::var_os(INSIDE).is_none() {
        return enter_namespaces();
    }
    let bins = PathBuf::from(std::env::var("C19_K8S_BIN_DIR").expect("set by the outer run"));
    let dir = std::env::temp_dir().join("c19-e2e");
    let started = Instant::now();
    let cluster = cluster::Cluster::start(&bins, &dir);
    println!("control plane ready in {:.1} s", started.elapsed().as_secs_f64());
    let ctx = scenarios::Ctx::new(cluster, &dir);
    let mut passed = 0;
    let mut failed = 0;
    for (name, scenario) in scenarios::ALL {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let t = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&ctx)));
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED ({:.1} s)", t.elapsed().as_secs_f64());
                println!("--- operator log tail ---\n{}", ctx.operator_log_tail());
            }
        }
    }
    println!("e2e suite took {:.1} s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    drop(ctx);
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Re-runs this binary as PID 1 of new network and PID namespaces.
fn enter_namespaces() -> ExitCode {
    let bins = match std::env::var("C19_K8S_BIN_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/k8s-binaries")).output();
            match out {
                Ok(o) if o.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("").trim())
                }
                _ => {
                    eprintln!("e2e: the control-plane binaries are missing; run scripts/k8s-binaries (needs Go)");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let me = std::env::current_exe().unwrap();
    let status = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(me)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .env("C19_K8S_BIN_DIR", &bins)
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("e2e: failed ({s})");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("e2e: cannot run unshare (needs root and util-linux): {e}");
            ExitCode::FAILURE
        }
    }
}

/// The project's `c19` binary.
pub fn c19_bin() -> PathBuf {
    PathBuf::from(common::BIN)
}
