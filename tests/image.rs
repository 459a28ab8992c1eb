//! The image the e2e suite and the demo run (`scripts/images`, no container engine) and the
//! `Dockerfile` users build must keep one runtime contract: the same user, entrypoint, default
//! command and ports, and no shell. This test builds the image from the test's own binary and
//! compares its config with the Dockerfile's last stage.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// USER, ENTRYPOINT, CMD and EXPOSE of the Dockerfile's last stage, as an image config has them.
fn dockerfile_contract(text: &str) -> Value {
    let last_stage = text
        .rsplit_once("\nFROM ")
        .map(|(_, s)| s)
        .expect("a multi-stage Dockerfile");
    let mut contract = json!({"User": "", "Entrypoint": null, "Cmd": null, "ExposedPorts": {}});
    for line in last_stage.lines() {
        let Some((instr, arg)) = line.trim().split_once(' ') else {
            continue;
        };
        match instr {
            "USER" => contract["User"] = json!(arg.trim()),
            "ENTRYPOINT" => contract["Entrypoint"] = serde_json::from_str(arg).unwrap(),
            "CMD" => contract["Cmd"] = serde_json::from_str(arg).unwrap(),
            "EXPOSE" => {
                for port in arg.split_whitespace() {
                    contract["ExposedPorts"][format!("{port}/tcp")] = json!({});
                }
            }
            _ => {}
        }
    }
    contract
}

fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

#[test]
fn the_built_image_keeps_the_dockerfiles_runtime_contract() {
    let dir = std::env::temp_dir().join(format!("c19-image-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = Command::new(Path::new(ROOT).join("scripts/images"))
        .args(["c19", env!("CARGO_BIN_EXE_c19")])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(dir.join("c19.tar"))
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());

    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let descriptor = &index["manifests"][0];
    assert_eq!(
        descriptor["annotations"]["io.containerd.image.name"],
        "docker.io/library/c19:dev"
    );
    let manifest: Value =
        serde_json::from_slice(&read_blob(&layout, descriptor["digest"].as_str().unwrap()))
            .unwrap();
    let config: Value = serde_json::from_slice(&read_blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ))
    .unwrap();

    let dockerfile = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).unwrap();
    let want = dockerfile_contract(&dockerfile);
    assert_eq!(
        want["User"], "65532:65532",
        "the Dockerfile runs as non-root"
    );
    for field in ["User", "Entrypoint", "Cmd", "ExposedPorts"] {
        assert_eq!(
            config["config"][field], want[field],
            "{field}: scripts/images and the Dockerfile disagree"
        );
    }

    // The layer: the binary where the entrypoint says, the non-root user known, and no shell
    // (distroless has none either).
    let layer = dir.join("layer.tar");
    std::fs::write(
        &layer,
        read_blob(&layout, manifest["layers"][0]["digest"].as_str().unwrap()),
    )
    .unwrap();
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(&layer)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let entrypoint = want["Entrypoint"][0]
        .as_str()
        .unwrap()
        .trim_start_matches('/');
    assert!(listing.contains(entrypoint), "{listing}");
    assert!(
        !listing.contains(" bin/sh"),
        "no shell in the image: {listing}"
    );
    let passwd = Command::new("tar")
        .arg("-xOf")
        .arg(&layer)
        .arg("etc/passwd")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&passwd.stdout).contains(":65532:65532:"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_contract_parser_reads_the_last_stage_only() {
    let c = dockerfile_contract(
        "FROM a AS build\nUSER 1\nCMD [\"x\"]\nFROM b\nUSER 2:2\nEXPOSE 1 2\nENTRYPOINT [\"/e\"]\n",
    );
    assert_eq!(
        c,
        json!({"User": "2:2", "Entrypoint": ["/e"], "Cmd": null, "ExposedPorts": {"1/tcp": {}, "2/tcp": {}}})
    );
}
