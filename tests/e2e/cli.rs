//! The admin CLI: the real `stowage` binary against a real server, every command's happy path
//! and error path, and golden checks of the tables.
//!
//! Each command runs through the kubeconfig the server wrote (unless a test is about how the
//! CLI finds its server), with a clean environment so a developer's own settings cannot leak in.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// What a finished command printed and how it exited.
#[derive(Debug)]
struct Ran {
    code: i32,
    out: String,
    err: String,
}

/// `stowage` with no connection settings at all, run in `cwd`.
fn bare(cwd: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(env!("CARGO_BIN_EXE_stowage"));
    for var in [
        "KUBECONFIG",
        "STOWAGE_SERVER",
        "STOWAGE_TOKEN",
        "STOWAGE_CA",
        "STOWAGE_LOG",
    ] {
        c.env_remove(var);
    }
    c.current_dir(cwd).timeout(Duration::from_secs(60));
    c
}

fn finish(c: &mut assert_cmd::Command) -> Ran {
    let o = c.output().expect("run stowage");
    Ran {
        code: o.status.code().unwrap_or(-1),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `stowage <args>` against `s`, through the kubeconfig it wrote.
fn stowage(s: &Server, args: &[&str]) -> Ran {
    stowage_with_input(s, args, "")
}

fn stowage_with_input(s: &Server, args: &[&str], stdin: &str) -> Ran {
    let mut c = bare(&s.data_dir);
    c.arg("--kubeconfig")
        .arg(s.data_dir.join("kubeconfig"))
        .args(args)
        .write_stdin(stdin);
    finish(&mut c)
}

/// Runs a command that must succeed and returns its standard output.
fn ok(s: &Server, args: &[&str]) -> String {
    let r = stowage(s, args);
    assert_eq!(r.code, 0, "stowage {args:?} failed: {r:?}");
    r.out
}

/// Runs a command that must fail with `code` and returns its standard error.
fn fails(s: &Server, args: &[&str], code: i32) -> String {
    let r = stowage(s, args);
    assert_eq!(r.code, code, "stowage {args:?}: {r:?}");
    assert!(!r.err.trim().is_empty(), "a failure says why: {r:?}");
    r.err
}

/// Writes `text` into `dir/name` and returns the path as a string.
fn file(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write manifest");
    p.display().to_string()
}

fn is_age(cell: &str) -> bool {
    cell.chars().next().is_some_and(|c| c.is_ascii_digit())
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || "smhdy".contains(c))
        && !cell.chars().last().is_some_and(|c| c.is_ascii_digit())
}

/// A table as `cell | cell | …` rows, cut at the header's column starts, with AGE cells
/// replaced by `<age>` (they change with time). Panics if a cell spills into the next column,
/// so the golden check also checks that the columns line up.
fn cells(table: &str) -> String {
    let lines: Vec<Vec<char>> = table.lines().map(|l| l.chars().collect()).collect();
    let header = &lines[0];
    // A column starts at a non-space after two or more spaces (names like "ACCESS MODES" hold one).
    let mut starts = vec![0];
    for i in 2..header.len() {
        if header[i] != ' ' && header[i - 1] == ' ' && header[i - 2] == ' ' {
            starts.push(i);
        }
    }
    let cut = |row: &[char], col: usize| -> String {
        let from = starts[col].min(row.len());
        let to = starts.get(col + 1).map_or(row.len(), |&e| e.min(row.len()));
        if col > 0 && from > 0 && from < row.len() {
            assert_eq!(
                row[from - 1],
                ' ',
                "a cell spills into column {col} in:\n{table}"
            );
        }
        row[from..to].iter().collect::<String>().trim().to_string()
    };
    let names: Vec<String> = (0..starts.len()).map(|c| cut(header, c)).collect();
    lines
        .iter()
        .map(|row| {
            (0..starts.len())
                .map(|c| {
                    let cell = cut(row, c);
                    if names[c] == "AGE" && row != header {
                        assert!(is_age(&cell), "{cell:?} is not an age in:\n{table}");
                        "<age>".to_string()
                    } else {
                        cell
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn golden(actual_table: &str, expected: &str) {
    let expected = expected
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(cells(actual_table), expected, "table:\n{actual_table}");
}

/// The provisioner of the classes these tests provision from: in-memory volumes that behave
/// like network disks. The CLI is the subject here, and any replica's controllers can serve
/// these, so the same commands run on one SQLite server and on PostgreSQL replicas (where the
/// server refuses the local provider: its directories are one machine's; `provisioning::` and
/// `node_agent::` test it).
const PROVISIONER: &str = "memory.stowage.dev";

/// The class claims of [`server`] get when they name none.
const DEFAULT_CLASS: &str = "standard";

/// A server that provisions [`PROVISIONER`] volumes from a pool of 100Gi, whose default class
/// is [`DEFAULT_CLASS`] (Delete, Immediate, expandable), made with the CLI.
async fn server() -> (Server, tempfile::TempDir) {
    let (dir, config) =
        config_file("providers:\n  memory:\n    enabled: true\n    capacity: 100Gi\n");
    let s = Server::start_with(&["--config", &config, "--no-default-class"]).await;
    ok(
        &s,
        &[
            "storageclass",
            "create",
            DEFAULT_CLASS,
            "--provisioner",
            PROVISIONER,
            "--allow-expansion",
            "--default",
        ],
    );
    (s, dir)
}

/// A server with two classes, two static volumes and two claims, one bound, one pending.
async fn static_world() -> Server {
    let s = Server::start_with(&["--no-default-class"]).await;
    ok(
        &s,
        &[
            "storageclass",
            "create",
            "manual",
            "--provisioner",
            "example.com/manual",
            "--reclaim-policy",
            "Retain",
        ],
    );
    ok(
        &s,
        &[
            "storageclass",
            "create",
            "fast",
            "--provisioner",
            "local.stowage.dev",
            "--binding-mode",
            "WaitForFirstConsumer",
            "--allow-expansion",
            "--default",
        ],
    );
    for (name, size) in [("pv-a", "1Gi"), ("pv-b", "5Gi")] {
        let mut pv = host_path_pv(name, size);
        pv["spec"]["storageClassName"] = json!("manual");
        pv["spec"]["persistentVolumeReclaimPolicy"] = json!("Retain");
        let (code, v) = s.post(PV, &pv).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    s.post(&pvcs("team-a"), &claim_in_class("data", "1Gi", "manual"))
        .await;
    s.post(&pvcs("team-b"), &claim_in_class("logs", "10Gi", "manual"))
        .await;
    s.wait_for_phase(&format!("{}/data", pvcs("team-a")), "Bound")
        .await;
    s
}

#[tokio::test]
async fn get_prints_the_tables_an_admin_needs() {
    let s = static_world().await;

    golden(
        &ok(&s, &["get", "pvc", "-n", "team-a"]),
        "NAME | STATUS | VOLUME | CAPACITY | ACCESS MODES | STORAGECLASS | VOLUMEATTRIBUTESCLASS | AGE
         data | Bound | pv-a | 1Gi | RWO | manual | <unset> | <age>",
    );
    golden(
        &ok(&s, &["get", "pvc", "-A"]),
        "NAMESPACE | NAME | STATUS | VOLUME | CAPACITY | ACCESS MODES | STORAGECLASS | VOLUMEATTRIBUTESCLASS | AGE
         team-a | data | Bound | pv-a | 1Gi | RWO | manual | <unset> | <age>
         team-b | logs | Pending |  |  |  | manual | <unset> | <age>",
    );
    golden(
        &ok(&s, &["get", "pv"]),
        "NAME | CAPACITY | ACCESS MODES | RECLAIM POLICY | STATUS | CLAIM | STORAGECLASS | VOLUMEATTRIBUTESCLASS | REASON | AGE
         pv-a | 1Gi | RWO | Retain | Bound | team-a/data | manual | <unset> |  | <age>
         pv-b | 5Gi | RWO | Retain | Available |  | manual | <unset> |  | <age>",
    );
    golden(
        &ok(&s, &["get", "pv", "pv-b", "-o", "wide"]),
        "NAME | CAPACITY | ACCESS MODES | RECLAIM POLICY | STATUS | CLAIM | STORAGECLASS | VOLUMEATTRIBUTESCLASS | REASON | AGE | VOLUMEMODE
         pv-b | 5Gi | RWO | Retain | Available |  | manual | <unset> |  | <age> | Filesystem",
    );
    // The class table says which class is the default and how much uses each one.
    golden(
        &ok(&s, &["get", "sc"]),
        "NAME | PROVISIONER | RECLAIMPOLICY | VOLUMEBINDINGMODE | ALLOWVOLUMEEXPANSION | CLAIMS | VOLUMES | AGE
         fast (default) | local.stowage.dev | Delete | WaitForFirstConsumer | true | 0 | 0 | <age>
         manual | example.com/manual | Retain | Immediate | false | 2 | 2 | <age>",
    );
    let no_headers = ok(&s, &["get", "pv", "--no-headers"]);
    assert_eq!(no_headers.lines().count(), 2, "{no_headers}");
    assert!(no_headers.starts_with("pv-a "), "{no_headers}");

    // No objects: a message on stderr, nothing on stdout, success.
    let r = stowage(&s, &["get", "pvc", "-n", "empty"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.out, "");
    assert!(
        r.err.contains("No resources found in empty namespace"),
        "{r:?}"
    );
}

#[tokio::test]
async fn get_selects_and_formats() {
    let s = static_world().await;
    s.patch(
        &format!("{PV}/pv-b"),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"tier": "gold"}}}),
    )
    .await;

    // -o name, for scripts; type/name and type name are the same thing.
    assert_eq!(
        ok(&s, &["get", "pv", "-o", "name"]),
        "persistentvolume/pv-a\npersistentvolume/pv-b\n"
    );
    assert_eq!(
        ok(&s, &["get", "pvc/data", "-n", "team-a", "-o", "name"]),
        "persistentvolumeclaim/data\n"
    );
    assert_eq!(
        ok(
            &s,
            &["get", "persistentvolumes", "-l", "tier=gold", "-o", "name"]
        ),
        "persistentvolume/pv-b\n"
    );
    assert_eq!(
        ok(
            &s,
            &["get", "pv", "-l", "tier in (silver,gold)", "-o", "name"]
        ),
        "persistentvolume/pv-b\n"
    );
    assert_eq!(
        ok(
            &s,
            &[
                "get",
                "pvc",
                "-A",
                "--field-selector",
                "status.phase=Pending",
                "-o",
                "name"
            ]
        ),
        "persistentvolumeclaim/logs\n"
    );

    // One object: the object itself; several: a List.
    let one: Value = serde_json::from_str(&ok(
        &s,
        &["get", "pvc", "data", "-n", "team-a", "-o", "json"],
    ))
    .expect("JSON");
    assert_eq!(one["kind"], "PersistentVolumeClaim");
    assert_eq!(one["spec"]["volumeName"], "pv-a");
    let many: Value = serde_json::from_str(&ok(&s, &["get", "pv", "-o", "json"])).expect("JSON");
    assert_eq!(many["kind"], "List");
    assert_eq!(many["items"].as_array().map(Vec::len), Some(2));
    let yaml: Value =
        serde_yaml_ng::from_str(&ok(&s, &["get", "sc", "fast", "-o", "yaml"])).expect("YAML");
    assert_eq!(yaml["kind"], "StorageClass");
    assert_eq!(yaml["volumeBindingMode"], "WaitForFirstConsumer");

    // Errors: the server's message and a distinct exit code.
    let err = fails(&s, &["get", "pvc", "nope", "-n", "team-a"], 3);
    assert!(
        err.contains("persistentvolumeclaims \"nope\" not found"),
        "{err}"
    );
    let err = fails(&s, &["get", "volumes"], 2);
    assert!(err.contains("unknown resource type"), "{err}");
    let err = fails(&s, &["get", "pv", "-l", "tier in (gold"], 5);
    assert!(err.contains("unable to parse requirement"), "{err}");
    fails(&s, &["get", "pv", "-o", "xml"], 2);
}

/// Reads a child's stdout lines on a thread, so a test can wait for a line with a timeout.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line showing {what}"),
        }
    }
}

#[tokio::test]
async fn get_watch_prints_changes_as_they_happen() {
    let s = Server::start_with(&["--no-default-class"]).await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stowage"))
        .arg("--kubeconfig")
        .arg(s.data_dir.join("kubeconfig"))
        .args(["get", "pvc", "-n", "w", "-w"])
        .env_remove("KUBECONFIG")
        .env_remove("STOWAGE_SERVER")
        .env_remove("STOWAGE_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn stowage get -w");
    let rx = lines_of(&mut child);
    // Give the watch a moment to start; changes made before it starts show up in its list.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.post(&pvcs("w"), &claim_in_class("w1", "1Gi", "manual"))
        .await;
    wait_line(&rx, "w1 Pending", |l| {
        l.starts_with("w1 ") && l.contains("Pending")
    });
    let mut pv = host_path_pv("pv-w", "1Gi");
    pv["spec"]["storageClassName"] = json!("manual");
    s.post(PV, &pv).await;
    let bound = wait_line(&rx, "w1 Bound", |l| {
        l.starts_with("w1 ") && l.contains("Bound")
    });
    assert!(bound.contains("pv-w"), "{bound}");
    s.delete(&format!("{}/w1", pvcs("w"))).await;
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn describe_shows_the_chain_from_claim_to_pod_and_events_newest_last() {
    let (s, _dir) = server().await;
    s.post(
        NODES,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}),
    )
    .await;
    s.post(&pvcs("app"), &pvc_of_default_class("db")).await;
    let claim = s
        .wait_for_phase(&format!("{}/db", pvcs("app")), "Bound")
        .await;
    let volume = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    s.post(&pods("app"), &pod_using("db-0", "db", Some("node-a")))
        .await;
    s.eventually(Duration::from_secs(20), "the attachment", || async {
        let (_, list) = s.get(VA).await;
        list["items"]
            .as_array()
            .filter(|l| l.iter().any(|v| v["status"]["attached"] == true))
            .map(|_| ())
    })
    .await;
    // A second event for the claim, a second after ProvisioningSucceeded.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = jiff::Timestamp::now().round(jiff::Unit::Second).unwrap();
    s.post(
        &events("app"),
        &json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "db.later"},
            "involvedObject": {"kind": "PersistentVolumeClaim", "namespace": "app", "name": "db"},
            "reason": "Checked", "message": "looked at by an admin", "type": "Normal",
            "lastTimestamp": now.to_string(),
        }),
    )
    .await;

    let out = ok(&s, &["describe", "pvc", "db", "-n", "app"]);
    for (key, value) in [
        ("Name", "db"),
        ("Namespace", "app"),
        ("StorageClass", DEFAULT_CLASS),
        ("Status", "Bound"),
        ("Volume", volume.as_str()),
        ("Used By", "db-0 (on node-a)"),
    ] {
        assert_eq!(field(&out, key), value, "in:\n{out}");
    }
    assert!(
        field(&out, "Attachments").contains("node node-a, attached"),
        "{out}"
    );
    let provisioned = out
        .find("ProvisioningSucceeded")
        .expect("provisioning event");
    let checked = out.find("Checked").expect("the later event");
    assert!(provisioned < checked, "events newest last:\n{out}");

    let out = ok(&s, &["describe", "pv", &volume]);
    assert_eq!(field(&out, "Claim"), "app/db", "{out}");
    assert_eq!(field(&out, "Reclaim Policy"), "Delete", "{out}");
    assert!(
        field(&out, "Attachments").contains("node node-a, attached"),
        "{out}"
    );
    let out = ok(&s, &["describe", &format!("sc/{DEFAULT_CLASS}")]);
    assert_eq!(field(&out, "IsDefaultClass"), "Yes", "{out}");
    assert_eq!(field(&out, "Provisioner"), PROVISIONER, "{out}");
    let out = ok(&s, &["describe", "pod", "db-0", "-n", "app"]);
    assert_eq!(field(&out, "Node"), "node-a", "{out}");
    assert!(field(&out, "Volumes").contains("db"), "{out}");
    let out = ok(&s, &["describe", "node", "node-a"]);
    assert!(out.contains(&volume), "attached volumes are listed:\n{out}");

    fails(&s, &["describe", "pvc", "nope", "-n", "app"], 3);
    fails(&s, &["describe", "pvc"], 2);
}

/// The value of `key` in `describe` output. Every value starts in the column `Name`'s does,
/// after at least one space; a misaligned line fails here.
fn field(out: &str, key: &str) -> String {
    let first = out.lines().next().expect("output");
    let column = first.len() - first["Name:".len()..].trim_start().len();
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key:?} in:\n{out}"));
    assert!(
        line.len() > column && line[..column].ends_with(' '),
        "{key}'s value is not in the value column:\n{out}"
    );
    line[column..].trim().to_string()
}

fn pvc_of_default_class(name: &str) -> Value {
    let mut c = pvc(name, "1Gi");
    c["spec"]
        .as_object_mut()
        .unwrap()
        .remove("storageClassName");
    c
}

const CLASS_AND_CLAIM: &str = "\
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: applied
provisioner: memory.stowage.dev
reclaimPolicy: Retain
---
# a comment-only document is skipped
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: from-file
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: applied
  resources:
    requests:
      storage: 1Gi
";

#[tokio::test]
async fn apply_create_and_delete_work_from_files_directories_and_stdin() {
    let (s, _cfg) = server().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = file(dir.path(), "app.yaml", CLASS_AND_CLAIM);

    assert_eq!(
        ok(&s, &["apply", "-f", &manifest, "-n", "files"]),
        "storageclass.storage.k8s.io/applied created\npersistentvolumeclaim/from-file created\n"
    );
    s.wait_for_phase(&format!("{}/from-file", pvcs("files")), "Bound")
        .await;
    // Applying the same thing again changes nothing; a changed file updates the object.
    let again = ok(&s, &["apply", "-f", &manifest, "-n", "files"]);
    assert!(
        again.contains("storageclass.storage.k8s.io/applied unchanged"),
        "{again}"
    );
    let labelled = CLASS_AND_CLAIM.replace(
        "  name: from-file\n",
        "  name: from-file\n  labels: {app: web}\n",
    );
    let changed = file(dir.path(), "app.yaml", &labelled);
    let out = ok(&s, &["apply", "-f", &changed, "-n", "files"]);
    assert!(
        out.contains("persistentvolumeclaim/from-file configured"),
        "{out}"
    );
    let (_, c) = s.get(&format!("{}/from-file", pvcs("files"))).await;
    assert_eq!(c["metadata"]["labels"]["app"], "web");

    // JSON, a directory, and stdin.
    let jdir = tempfile::tempdir().unwrap();
    file(
        jdir.path(),
        "a.json",
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "j1"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}})
        .to_string(),
    );
    file(
        jdir.path(),
        "b.yml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: j2, namespace: other}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    file(jdir.path(), "notes.txt", "not a manifest");
    let out = ok(&s, &["apply", "-f", &jdir.path().display().to_string()]);
    assert!(out.contains("persistentvolumeclaim/j1 created"), "{out}");
    assert!(out.contains("persistentvolumeclaim/j2 created"), "{out}");
    let (code, _) = s.get(&format!("{}/j2", pvcs("other"))).await;
    assert_eq!(code, StatusCode::OK, "the document's namespace wins");
    let piped = stowage_with_input(
        &s,
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: piped}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n",
    );
    assert_eq!(piped.code, 0, "{piped:?}");
    assert_eq!(piped.out, "persistentvolumeclaim/piped created\n");

    // create refuses what exists; bad input gets the server's message and exit code 5.
    let err = fails(&s, &["create", "-f", &manifest, "-n", "files"], 4);
    assert!(err.contains("already exists"), "{err}");
    let bad = file(
        dir.path(),
        "bad.yaml",
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bad}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: lots}}}\n",
    );
    let err = fails(&s, &["apply", "-f", &bad], 5);
    assert!(err.contains("persistentvolumeclaim/bad"), "{err}");
    let broken = file(dir.path(), "broken.yaml", "kind: [unclosed\n");
    let err = fails(&s, &["apply", "-f", &broken], 5);
    assert!(err.contains("broken.yaml: not valid YAML or JSON"), "{err}");
    let unknown = file(
        dir.path(),
        "unknown.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let err = fails(&s, &["apply", "-f", &unknown], 5);
    assert!(err.contains("ConfigMap"), "{err}");
    fails(&s, &["apply", "-f", "/nonexistent/file.yaml"], 2);

    // delete by file and by name; deleting what is gone is "not found".
    let out = ok(&s, &["delete", "-f", &manifest, "-n", "files"]);
    assert!(
        out.contains("persistentvolumeclaim \"from-file\" deleted from files namespace"),
        "{out}"
    );
    assert!(out.contains("storageclass \"applied\" deleted"), "{out}");
    let (code, _) = s.get(&format!("{}/from-file", pvcs("files"))).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "delete waits until it is gone");
    ok(&s, &["delete", "pvc", "j1", "piped"]);
    let err = fails(&s, &["delete", "pvc", "j1"], 3);
    assert!(err.contains("not found"), "{err}");
    fails(&s, &["delete", "pvc"], 2);
}

#[tokio::test]
async fn storageclass_commands_create_default_use_and_delete_classes() {
    let (s, _cfg) = server().await;
    let out = ok(
        &s,
        &[
            "storageclass",
            "create",
            "gold",
            "--provisioner",
            PROVISIONER,
            "--param",
            "tier=gold",
            "--param",
            "note=a=b",
            "--reclaim-policy",
            "Retain",
            "--binding-mode",
            "WaitForFirstConsumer",
            "--allow-expansion",
            "--mount-option",
            "noatime",
            "--default",
        ],
    );
    assert_eq!(
        out,
        format!(
            "storageclass.storage.k8s.io/gold created\n\
             storageclass.storage.k8s.io/{DEFAULT_CLASS} is no longer the default\n\
             storageclass.storage.k8s.io/gold is the default\n"
        )
    );
    let (_, gold) = s.get(&format!("{SC}/gold")).await;
    assert_eq!(gold["parameters"], json!({"tier": "gold", "note": "a=b"}));
    assert_eq!(gold["reclaimPolicy"], "Retain");
    assert_eq!(gold["volumeBindingMode"], "WaitForFirstConsumer");
    assert_eq!(gold["allowVolumeExpansion"], true);
    assert_eq!(gold["mountOptions"], json!(["noatime"]));

    let defaults = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                    == "true"
            })
            .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, list) = s.get(SC).await;
    assert_eq!(defaults(&list), ["gold"]);
    ok(&s, &["sc", "set-default", DEFAULT_CLASS]);
    let (_, list) = s.get(SC).await;
    assert_eq!(defaults(&list), [DEFAULT_CLASS], "exactly one default");
    fails(&s, &["storageclass", "set-default", "nope"], 3);

    // Usage: claims, volumes and capacity per class.
    for name in ["u1", "u2"] {
        s.post(&pvcs("use"), &claim_in_class(name, "2Gi", DEFAULT_CLASS))
            .await;
        s.wait_for_phase(&format!("{}/{name}", pvcs("use")), "Bound")
            .await;
    }
    // FREE: what the provider reports (CSIStorageCapacity), current within moments.
    let usage = s
        .eventually(
            Duration::from_secs(10),
            "the room left to follow",
            || async {
                let out = ok(&s, &["storageclass", "usage"]);
                // Both classes of the provider share its room.
                (out.matches("96Gi").count() == 2).then_some(out)
            },
        )
        .await;
    golden(
        &usage,
        "CLASS | CLAIMS | BOUND | REQUESTED | VOLUMES | CAPACITY | FREE
         gold | 0 | 0 | 0 | 0 | 0 | 96Gi
         standard | 2 | 2 | 4Gi | 2 | 4Gi | 96Gi",
    );

    // A class in use is not deleted by accident.
    let err = fails(&s, &["storageclass", "delete", DEFAULT_CLASS], 4);
    assert!(err.contains("used by 2 claim(s)"), "{err}");
    let (code, _) = s.get(&format!("{SC}/{DEFAULT_CLASS}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        ok(&s, &["storageclass", "delete", DEFAULT_CLASS, "--force"]),
        format!("storageclass.storage.k8s.io \"{DEFAULT_CLASS}\" deleted\n")
    );
    let (code, _) = s.get(&format!("{SC}/{DEFAULT_CLASS}")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    ok(&s, &["storageclass", "delete", "gold"]);
    fails(&s, &["storageclass", "delete", "gold"], 3);

    // Bad input.
    let create_of = |provisioner: &str, name: &str, extra: &[&str]| {
        let mut args = vec!["storageclass", "create", name, "--provisioner", provisioner];
        args.extend_from_slice(extra);
        stowage(&s, &args)
    };
    let create = |name: &str, extra: &[&str]| create_of(PROVISIONER, name, extra);
    assert_eq!(create("x", &["--param", "novalue"]).code, 2);
    assert_eq!(create("x", &["--reclaim-policy", "Recycle"]).code, 2);
    let r = create("Not_A_Name", &[]);
    assert_eq!(r.code, 5, "{r:?}");
    assert!(r.err.contains("Not_A_Name"), "{r:?}");
    // Parameters the provider would refuse: made, as in Kubernetes, with the server's warning.
    // (NFS declares its parameters; the memory provider takes any.)
    let nfs = |name: &str, on_delete: &str| {
        create_of(
            "nfs.stowage.dev",
            name,
            &[
                "--param",
                "server=nfs.example.com",
                "--param",
                "share=/exports",
                "--param",
                on_delete,
            ],
        )
    };
    let r = nfs("typo", "onDelet=archive");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.err.starts_with(
            "Warning: parameters: nfs.stowage.dev will refuse to provision claims of this class: unknown parameter \"onDelet\""
        ),
        "{r:?}"
    );
    let r = nfs("right", "onDelete=archive");
    assert!(r.code == 0 && r.err.is_empty(), "{r:?}");
    assert_eq!(create("twice", &[]).code, 0);
    let r = create("twice", &[]);
    assert_eq!(r.code, 4, "{r:?}");
    assert!(r.err.contains("already exists"), "{r:?}");
}

#[tokio::test]
async fn pv_release_makes_a_retained_volume_available_after_confirmation() {
    let (s, _cfg) = server().await;
    ok(
        &s,
        &[
            "storageclass",
            "create",
            "keep",
            "--provisioner",
            PROVISIONER,
            "--reclaim-policy",
            "Retain",
        ],
    );
    s.post(&pvcs("r"), &claim_in_class("old", "1Gi", "keep"))
        .await;
    let claim = s
        .wait_for_phase(&format!("{}/old", pvcs("r")), "Bound")
        .await;
    let volume = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv_path = format!("{PV}/{volume}");

    let err = fails(&s, &["pv", "release", &volume, "--yes"], 4);
    assert!(err.contains("only a Released volume"), "{err}");

    s.delete(&format!("{}/old", pvcs("r"))).await;
    s.wait_for_phase(&pv_path, "Released").await;

    // No answer (stdin is not a terminal and empty) or "n": nothing happens.
    let r = stowage(&s, &["pv", "release", &volume]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.err.contains("r/old"),
        "the question names the former claim: {r:?}"
    );
    let r = stowage_with_input(&s, &["pv", "release", &volume], "n\n");
    assert_eq!(r.code, 1, "{r:?}");
    let (_, pv) = s.get(&pv_path).await;
    assert_eq!(pv["status"]["phase"], "Released");

    let r = stowage_with_input(&s, &["pv", "release", &volume], "y\n");
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.out.contains("Available"), "{r:?}");
    let pv = s.wait_for_phase(&pv_path, "Available").await;
    assert!(pv["spec"]["claimRef"].is_null());

    // The next claim of the class binds the kept volume rather than a new one.
    s.post(&pvcs("r"), &claim_in_class("new", "1Gi", "keep"))
        .await;
    let claim = s
        .wait_for_phase(&format!("{}/new", pvcs("r")), "Bound")
        .await;
    assert_eq!(claim["spec"]["volumeName"], volume.as_str());

    fails(&s, &["pv", "release", "nope", "--yes"], 3);
    // A Delete-policy volume is never "released": its backing storage is going away.
    s.post(&pvcs("r"), &pvc_of_default_class("gone")).await;
    let claim = s
        .wait_for_phase(&format!("{}/gone", pvcs("r")), "Bound")
        .await;
    let doomed = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let err = fails(&s, &["pv", "release", &doomed, "--yes"], 4);
    assert!(err.contains("Bound"), "{err}");
}

#[tokio::test]
async fn pvc_resize_grows_claims_of_expandable_classes_only() {
    let (s, _cfg) = server().await;
    s.post(&pvcs("g"), &pvc_of_default_class("grow")).await;
    let item = format!("{}/grow", pvcs("g"));
    s.wait_for_phase(&item, "Bound").await;

    assert_eq!(
        ok(&s, &["pvc", "resize", "grow", "3Gi", "-n", "g"]),
        "persistentvolumeclaim/grow resized to 3Gi\n"
    );
    s.wait_for(&item, "capacity 3Gi", |c| {
        c["status"]["capacity"]["storage"] == "3Gi"
    })
    .await;
    let err = fails(&s, &["pvc", "resize", "grow", "1Gi", "-n", "g"], 5);
    assert!(err.contains("shrink") || err.contains("less"), "{err}");
    fails(&s, &["pvc", "resize", "grow", "lots", "-n", "g"], 2);
    fails(&s, &["pvc", "resize", "grow", "-1Gi", "-n", "g"], 2);
    fails(&s, &["pvc", "resize", "nope", "3Gi", "-n", "g"], 3);

    ok(
        &s,
        &[
            "storageclass",
            "create",
            "fixed",
            "--provisioner",
            PROVISIONER,
        ],
    );
    s.post(&pvcs("g"), &claim_in_class("stuck", "1Gi", "fixed"))
        .await;
    s.wait_for_phase(&format!("{}/stuck", pvcs("g")), "Bound")
        .await;
    let err = fails(&s, &["pvc", "resize", "stuck", "2Gi", "-n", "g"], 7);
    assert!(err.contains("allowVolumeExpansion"), "{err}");
}

#[tokio::test]
async fn wait_returns_when_the_state_is_reached_and_fails_on_timeout() {
    let (s, _cfg) = server().await;
    s.post(&pvcs("wt"), &pvc_of_default_class("soon")).await;
    assert_eq!(
        ok(
            &s,
            &[
                "wait",
                "pvc/soon",
                "-n",
                "wt",
                "--for=phase=Bound",
                "--timeout",
                "20s"
            ]
        ),
        "persistentvolumeclaim/soon condition met\n"
    );

    s.post(
        NODES,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    )
    .await;
    s.patch(
        &format!("{NODES}/n1/status"),
        "application/merge-patch+json",
        &json!({"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}}),
    )
    .await;
    ok(
        &s,
        &[
            "wait",
            "node/n1",
            "--for=condition=DiskPressure=False",
            "--timeout",
            "10s",
        ],
    );

    s.post(
        &pvcs("wt"),
        &claim_in_class("never", "1Gi", "no-such-class"),
    )
    .await;
    let err = fails(
        &s,
        &[
            "wait",
            "pvc/never",
            "-n",
            "wt",
            "--for=phase=Bound",
            "--timeout",
            "1s",
        ],
        8,
    );
    assert!(err.contains("timed out"), "{err}");

    // --for=delete returns once the object is gone.
    let waiter = std::thread::spawn({
        let kubeconfig = s.data_dir.join("kubeconfig");
        let cwd = s.data_dir.clone();
        move || {
            finish(bare(&cwd).arg("--kubeconfig").arg(kubeconfig).args([
                "wait",
                "pvc/never",
                "-n",
                "wt",
                "--for=delete",
                "--timeout",
                "20s",
            ]))
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.delete(&format!("{}/never", pvcs("wt"))).await;
    let r = tokio::task::spawn_blocking(move || waiter.join().unwrap())
        .await
        .unwrap();
    assert_eq!(r.code, 0, "{r:?}");

    fails(&s, &["wait", "pvc/soon", "-n", "wt", "--for=bound"], 2);
    fails(
        &s,
        &[
            "wait",
            "pvc/soon",
            "-n",
            "wt",
            "--for=phase=Bound",
            "--timeout",
            "soon",
        ],
        2,
    );
    fails(
        &s,
        &[
            "wait",
            "pvc/gone",
            "-n",
            "wt",
            "--for=phase=Bound",
            "--timeout",
            "1s",
        ],
        3,
    );
}

#[tokio::test]
async fn providers_lists_what_the_server_can_do() {
    // NFS is on by default on both engines (the local provider is one machine's, so not on
    // replicas), and declares its class parameters.
    let s = Server::start().await;
    let table = ok(&s, &["providers"]);
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "PROVISIONING",
        "ATTACH",
        "EXPANSION",
        "ACCESS MODES",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("nfs.stowage.dev ") && l.contains("ReadWriteMany")),
        "{table}"
    );
    let json: Value = serde_json::from_str(&ok(&s, &["providers", "--json"])).expect("JSON");
    let items = json["items"].as_array().expect("items");
    let nfs = items
        .iter()
        .find(|p| p["name"] == "nfs.stowage.dev")
        .unwrap_or_else(|| panic!("{json}"));
    assert_eq!(nfs["capabilities"]["expansion"], true, "{json}");
    // The class parameters each provider takes, as the console's class form shows them.
    let parameter = |name: &str| {
        nfs["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {json}"))
            .clone()
    };
    assert_eq!(parameter("server")["required"], true, "{json}");
    let on_delete = parameter("onDelete");
    assert_eq!(
        on_delete,
        json!({"name": "onDelete", "description": on_delete["description"],
               "values": ["delete", "retain", "archive"], "default": "delete",
               "required": false, "numbered": false}),
        "{json}"
    );
    assert_eq!(parameter("mountPermissions")["pattern"], "\\+?0*[0-7]{1,4}");
    // Required parameters are starred.
    assert!(
        table.lines().any(|l| l.starts_with("nfs.stowage.dev ")
            && l.ends_with("server*,share*,nfsvers,subDir,onDelete,mountPermissions,capacity")),
        "{table}"
    );
}

#[tokio::test]
async fn tokens_are_created_listed_used_and_revoked() {
    let (s, _cfg) = server().await;
    let r = stowage(
        &s,
        &["token", "create", "--role", "viewer", "--name", "reader"],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let token = r.out.trim().to_string();
    assert!(token.starts_with("stw_"), "{r:?}");
    assert!(r.err.contains("shown only now"), "{r:?}");

    let list = ok(&s, &["token", "list"]);
    let row = list
        .lines()
        .find(|l| l.contains("reader"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(row.contains("viewer"), "{list}");
    assert!(!list.contains(&token), "secrets are never listed");
    let id = row.split_whitespace().next().unwrap().to_string();

    // The token works from the environment, with the server's CA.
    let ca = s.data_dir.join("tls").join("ca.crt");
    let cwd = tempfile::tempdir().unwrap();
    let as_reader = |args: &[&str]| {
        finish(
            bare(cwd.path())
                .env("STOWAGE_SERVER", &s.base)
                .env("STOWAGE_TOKEN", &token)
                .env("STOWAGE_CA", &ca)
                .args(args),
        )
    };
    let r = as_reader(&["get", "sc", "-o", "name"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(
        r.out,
        format!("storageclass.storage.k8s.io/{DEFAULT_CLASS}\n")
    );
    let r = as_reader(&[
        "storageclass",
        "create",
        "mine",
        "--provisioner",
        PROVISIONER,
    ]);
    assert_eq!(r.code, 7, "a viewer cannot write: {r:?}");
    assert!(r.err.contains("forbidden"), "{r:?}");
    let r = as_reader(&["token", "list"]);
    assert_eq!(r.code, 7, "only admins manage tokens: {r:?}");

    assert_eq!(
        ok(&s, &["token", "revoke", &id]),
        format!("token {id} revoked\n")
    );
    let r = as_reader(&["get", "sc"]);
    assert_eq!(r.code, 7, "a revoked token is refused: {r:?}");
    fails(&s, &["token", "revoke", "nosuchid00"], 3);
    fails(&s, &["token", "create", "--role", "emperor"], 5);
    fails(
        &s,
        &["token", "create", "--role", "viewer", "--ttl", "forever"],
        2,
    );
}

#[tokio::test]
async fn the_cli_finds_its_server_by_flag_env_kubeconfig_or_data_dir() {
    let s = Server::start().await;
    let kubeconfig = s.data_dir.join("kubeconfig");

    // KUBECONFIG.
    let cwd = tempfile::tempdir().unwrap();
    let r = finish(
        bare(cwd.path())
            .env("KUBECONFIG", &kubeconfig)
            .args(["get", "sc", "-o", "name"]),
    );
    assert_eq!(r.code, 0, "{r:?}");

    // ./stowage-data/kubeconfig, as `stowage serve` writes it with no flags.
    std::fs::create_dir(cwd.path().join("stowage-data")).unwrap();
    std::fs::copy(&kubeconfig, cwd.path().join("stowage-data/kubeconfig")).unwrap();
    let r = finish(bare(cwd.path()).args(["get", "sc", "-o", "name"]));
    assert_eq!(r.code, 0, "{r:?}");

    // Flags beat the kubeconfig: a wrong token from the command line is used, and refused.
    let r = finish(
        bare(cwd.path())
            .args(["--token", "stw_bogus_token"])
            .args(["get", "sc"]),
    );
    assert_eq!(r.code, 7, "{r:?}");
    assert!(r.err.contains("Unauthorized"), "{r:?}");

    // Nothing listening: "unreachable", not a stack trace.
    let r = finish(
        bare(cwd.path())
            .args(["--server", "https://127.0.0.1:1", "--token", "x"])
            .args(["get", "sc"]),
    );
    assert_eq!(r.code, 6, "{r:?}");
    assert!(r.err.contains("127.0.0.1:1"), "{r:?}");

    // A certificate the CLI does not trust is refused rather than silently accepted.
    let empty = tempfile::tempdir().unwrap();
    let r = finish(
        bare(empty.path())
            .args(["--server", &s.base, "--token", &s.token])
            .args(["get", "sc"]),
    );
    assert_eq!(r.code, 6, "{r:?}");
    let r = finish(
        bare(cwd.path())
            .args([
                "--server",
                &s.base,
                "--token",
                &s.token,
                "--insecure-skip-tls-verify",
            ])
            .args(["get", "sc", "-o", "name"]),
    );
    assert_eq!(r.code, 0, "{r:?}");

    // No configuration anywhere.
    let r = finish(bare(empty.path()).args(["get", "sc"]));
    assert_ne!(r.code, 0);
    assert!(
        r.err.contains("kubeconfig") || r.err.contains("--server"),
        "{r:?}"
    );
}

#[test]
fn every_command_has_help_with_examples_and_completions_work() {
    let cwd = tempfile::tempdir().unwrap();
    for command in [
        &["serve"][..],
        &["get"],
        &["describe"],
        &["apply"],
        &["create"],
        &["delete"],
        &["storageclass", "create"],
        &["storageclass", "set-default"],
        &["storageclass", "delete"],
        &["storageclass", "usage"],
        &["pv", "release"],
        &["pvc", "resize"],
        &["wait"],
        &["providers"],
        &["token", "create"],
        &["token", "list"],
        &["token", "revoke"],
        &["completion"],
    ] {
        let r = finish(bare(cwd.path()).args(command).arg("--help"));
        assert_eq!(r.code, 0, "{command:?}: {r:?}");
        assert!(
            r.out.contains("Examples:\n  stowage "),
            "`stowage {} --help` has examples:\n{}",
            command.join(" "),
            r.out
        );
    }
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef stowage"),
        ("fish", "complete -c stowage"),
    ] {
        let r = finish(bare(cwd.path()).args(["completion", shell]));
        assert_eq!(r.code, 0, "{r:?}");
        assert!(
            r.out.contains(marker),
            "{shell}: {}",
            &r.out[..200.min(r.out.len())]
        );
        assert!(
            r.out.contains("storageclass"),
            "{shell} completes subcommands"
        );
    }
    assert_eq!(
        finish(bare(cwd.path()).args(["completion", "tcsh"])).code,
        2
    );
    assert_eq!(finish(bare(cwd.path()).args(["frobnicate"])).code, 2);
}
