//! The c19 binary of an earlier commit, built once into `target/bench/baseline-<commit>` from a
//! temporary git worktree with the same release profile: what a bench compares this build
//! against when the question is "did this change make the agent slower".

use std::path::{Path, PathBuf};
use std::process::Command;

/// The release binary of `commit`, built on first use (a few minutes), reused after.
pub fn binary(commit: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join(format!("target/bench/baseline-{commit}"));
    let bin = target.join("release/c19");
    if bin.exists() {
        return bin;
    }
    let tree = root.join(format!("target/bench/baseline-src-{commit}"));
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .current_dir(root)
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "git {args:?} failed");
    };
    let _ = std::fs::remove_dir_all(&tree);
    let _ = Command::new("git")
        .current_dir(root)
        .args(["worktree", "prune"])
        .status();
    git(&[
        "worktree",
        "add",
        "--detach",
        tree.to_str().unwrap(),
        commit,
    ]);
    println!("building the baseline c19 of {commit} (release; once)");
    let built = Command::new("cargo")
        .current_dir(&tree)
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "c19",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .is_ok_and(|s| s.success());
    git(&["worktree", "remove", "--force", tree.to_str().unwrap()]);
    assert!(built, "building the baseline failed");
    bin
}
