//! End to end on a real cluster: control plane and a real node (kubelet, containerd, runc, CNI)
//! running the project's own images, driven the way users drive c19: `helm install`,
//! `kubectl apply`, `kubectl scale`, `kubectl wait`, `kubectl exec`.
//!
//! The test re-runs itself inside new network, mount and PID namespaces (`c19_harness::netns`),
//! so the cluster and its pods live on a private network that nothing outside can reach, and
//! every process it started dies with it. Needs root, the binaries of `scripts/k8s-binaries`
//! and the images of `scripts/images` (both run by `scripts/test`).

#[path = "../common/mod.rs"]
mod common;
mod lifecycle;
mod pods;
mod scenarios;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use c19_harness::{Cluster, cluster::Options, netns, node};

fn main() -> ExitCode {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !netns::inside() {
        if let Err(e) = node::built_images(project) {
            eprintln!("c19 e2e: {e}");
            return ExitCode::FAILURE;
        }
        return netns::reenter(|_| {});
    }
    let bins = netns::bin_dir().expect("set by the outer run");
    let dir = std::env::temp_dir().join("c19-e2e");
    let started = Instant::now();
    let options = Options {
        images: node::built_images(project).expect("checked outside"),
    };
    let cluster = Cluster::start(&bins, &dir, &options);
    println!(
        "cluster ready (node Ready) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let ctx = scenarios::Ctx::new(cluster, &dir);
    let mut passed = 0;
    let mut failed = 0;
    for (name, scenario) in scenarios::ALL {
        // A filter of comma-separated parts runs the scenarios whose name contains any of them
        // (later scenarios build on earlier ones: `cargo test --test e2e crd,chart,terminating`).
        if filter
            .as_deref()
            .is_some_and(|f| !f.split(',').any(|part| name.contains(part)))
        {
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
                println!("{}", ctx.diagnostics());
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

/// The project's `c19` binary (for what runs outside pods: `c19 crd`, a CLI error check).
pub fn c19_bin() -> PathBuf {
    PathBuf::from(common::BIN)
}
