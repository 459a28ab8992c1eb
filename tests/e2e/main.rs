//! End to end against a real control plane (kube-apiserver, controller-manager, scheduler, etcd,
//! kwok), driven the way users drive c19: `kubectl apply`, `kubectl scale`, `kubectl wait`.
//!
//! The test re-runs itself inside new network and PID namespaces (`unshare`), so the cluster and
//! the agents live on a private loopback that nothing outside can reach, and every process it
//! started dies with it. Needs root and the binaries of `scripts/k8s-binaries`.

mod cluster;
#[path = "../common/mod.rs"]
mod common;
mod netns;
mod scenarios;
mod sidecars;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if !netns::inside() {
        return netns::reenter(|_| {});
    }
    let bins = netns::bin_dir().expect("set by the outer run");
    let dir = std::env::temp_dir().join("c19-e2e");
    let started = Instant::now();
    let cluster = cluster::Cluster::start(&bins, &dir);
    println!(
        "control plane ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
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
                println!(
                    "test {name} ... FAILED ({:.1} s)",
                    t.elapsed().as_secs_f64()
                );
                println!("--- operator log tail ---\n{}", ctx.operator_log_tail());
            }
        }
    }
    println!("e2e suite took {:.1} s", started.elapsed().as_secs_f64());
    println!("{passed} passed, {failed} failed");
    drop(ctx);
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The project's `c19` binary.
pub fn c19_bin() -> PathBuf {
    PathBuf::from(common::BIN)
}
