//! The shipped examples stay valid: agent configs load, and C19Groups parse as the CRD's type.

use std::path::Path;

use c19::config::Config;
use c19::operator::crd::C19Group;

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn agent_configs_load() {
    let configs: Vec<_> = files("examples")
        .into_iter()
        .chain(files("examples/local-cluster"))
        .collect();
    assert_eq!(configs.len(), 4);
    for f in configs {
        Config::load(&f).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn groups_parse() {
    let mut groups = 0;
    for f in files("examples/kubernetes") {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in text.split("\n---") {
            let v: serde_yaml::Value = serde_yaml::from_str(doc).unwrap();
            if v["kind"] == "C19Group" {
                let g: C19Group =
                    serde_yaml::from_value(v).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                assert!(
                    c19::operator::desired::validate(&g).is_ok(),
                    "{}",
                    f.display()
                );
                groups += 1;
            }
        }
    }
    assert_eq!(groups, 2);
}
