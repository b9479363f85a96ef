//! The example provider served by its own binary, `stowage-example`: the same `serve`
//! command and config file as `stowage`, with `providers.example` turning it on. A claim on
//! an `example.stowage.dev` class ends Bound, with its image file made.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_stowage-example");

struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a CLI command against the server in `data`, as an admin would; panics on failure.
fn cli(data: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("--kubeconfig")
        .arg(data.join("kubeconfig"))
        .args(args)
        .output()
        .expect("run stowage-example");
    assert!(
        out.status.success(),
        "stowage-example {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_binary_of_its_own_serves_the_example_provider() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let images = dir.path().join("images");
    let config = dir.path().join("stowage.yaml");
    std::fs::write(
        &config,
        format!("providers:\n  example:\n    root: {}\n", images.display()),
    )
    .unwrap();

    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start stowage-example");
    let stdout = child.stdout.take().unwrap();
    let server = Served(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("stowage-example did not start");

    assert!(cli(&data, &["providers"]).contains("example.stowage.dev"));
    let manifests = dir.path().join("claim.yaml");
    std::fs::write(
        &manifests,
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: images}
provisioner: example.stowage.dev
volumeBindingMode: Immediate
parameters: {preallocate: \"false\"}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: default}
spec:
  storageClassName: images
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
",
    )
    .unwrap();
    cli(&data, &["apply", "-f", manifests.to_str().unwrap()]);
    cli(
        &data,
        &[
            "wait",
            "pvc/data",
            "-n",
            "default",
            "--for=phase=Bound",
            "--timeout",
            "60s",
        ],
    );
    let claim: serde_json::Value = serde_json::from_str(&cli(
        &data,
        &["get", "pvc", "data", "-n", "default", "-o", "json"],
    ))
    .expect("the claim as JSON");
    let volume = claim["spec"]["volumeName"]
        .as_str()
        .expect("a bound volume");
    let image = images.join(format!("{volume}.img"));
    assert_eq!(
        std::fs::metadata(&image).map(|m| m.len()).ok(),
        Some(1 << 30),
        "no 1Gi image at {}",
        image.display()
    );
    drop(server);
}
