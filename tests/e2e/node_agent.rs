//! The node agent end to end: a real `stowage serve`, real `stowage node` processes with node
//! tokens, and real mounts (bind mounts, loop devices with real filesystems, NFS where the
//! kernel has a client), checked in the mount table and on disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// Mounts need root (CAP_SYS_ADMIN); a run without it fails unless it opted out (`mounts`).
macro_rules! need_mounts {
    () => {
        if !can_mount() {
            stowage_provider::testing::missing(
                "mounts",
                "the node agent's tests mount for real: run them as root",
            );
            return;
        }
    };
}

fn can_mount() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// How many times `path` is a mount point now.
fn mount_count(path: &Path) -> usize {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    table
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(p))
        .count()
}

/// Whether the mount at `path` is read-only (its per-mount options start with `ro`).
fn mounted_read_only(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    table.lines().any(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        fields.get(4) == Some(&p)
            && fields
                .get(5)
                .is_some_and(|o| o.split(',').any(|o| o == "ro"))
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `stowage node` process with its own node token and root.
pub struct NodeAgent {
    child: Option<Child>,
    pub root: PathBuf,
    _tmp: tempfile::TempDir,
    args: Vec<String>,
    pub metrics: String,
}

impl NodeAgent {
    pub async fn start(s: &Server, name: &str, extra: &[&str]) -> NodeAgent {
        Self::start_in(tempfile::tempdir().unwrap(), s, name, extra).await
    }

    /// The agent of a node whose volumes of class `local` a test mounts. On one SQLite server,
    /// the server's local provider makes them; replicas refuse that provider (see
    /// [`local_server`]), so there this agent makes them on its own disk, under its directory.
    pub async fn start_local(s: &Server, name: &str, extra: &[&str]) -> NodeAgent {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("disk");
        let mut args = extra.to_vec();
        if !on_sqlite() {
            args.extend([
                "--local-root",
                disk.to_str().unwrap(),
                "--local-capacity",
                "10Gi",
            ]);
        }
        Self::start_in(tmp, s, name, &args).await
    }

    async fn start_in(tmp: tempfile::TempDir, s: &Server, name: &str, extra: &[&str]) -> NodeAgent {
        let token = token(s, &format!("node:{name}"), None).await;
        let root = tmp.path().join("root");
        let port = free_port();
        let mut args: Vec<String> = [
            "node",
            "--node-name",
            name,
            "--server",
            &s.base,
            "--token",
            &token,
            "--root",
            root.to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{port}"),
            "--sync-period",
            "1s",
            "--lease-duration",
            "8s",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if let Some(ca) = [s.data_dir.join("tls").join("ca.crt")]
            .into_iter()
            .find(|p| p.exists())
        {
            args.extend(["--certificate-authority".into(), ca.display().to_string()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut agent = NodeAgent {
            child: None,

            root,
            _tmp: tmp,
            args,
            metrics: format!("http://127.0.0.1:{port}/metrics"),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self._tmp.path().join("agent.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stowage"))
            .args(&self.args)
            .env("STOWAGE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting stowage node");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._tmp.path().join("agent.log")).unwrap_or_default()
    }

    /// SIGKILL: a crash, at whatever point the agent was.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn target(&self, pod_uid: &str, volume: &str) -> PathBuf {
        self.root
            .join("pods")
            .join(pod_uid)
            .join("volumes")
            .join(volume)
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.kill();
        // Leave no mount behind: the deepest first.
        let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let root = self.root.to_str().unwrap_or("/nonexistent").to_string();
        let mut ours: Vec<&str> = table
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&root))
            .collect();
        ours.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in ours {
            let _ = Command::new("umount").arg(p).status();
        }
    }
}

/// A server with a class `local` whose volumes are directories on node `node`. On SQLite the
/// server's local provider makes them as soon as they are claimed. Replicas refuse that
/// provider (the controllers may run on any machine), so there the class waits for a consumer
/// and the agent of its node makes them ([`NodeAgent::start_local`]): the agent then mounts
/// them by the same path.
async fn local_server(node: &str) -> (Server, tempfile::TempDir) {
    if on_sqlite() {
        let (dir, config) = config_file(&format!(
            "providers:\n  local:\n    node: {node}\n    capacity: 10Gi\n"
        ));
        let s = Server::start_with(&["--config", config.as_str()]).await;
        return (s, dir);
    }
    let (dir, config) = config_file("providers:\n  local:\n    enabled: false\n");
    let s = Server::start_with(&["--config", config.as_str()]).await;
    let mut class = storage_class("local", "local.stowage.dev");
    class["volumeBindingMode"] = json!("WaitForFirstConsumer");
    let (code, v) = s.post(SC, &class).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    (s, dir)
}

async fn pod_on(s: &Server, ns: &str, name: &str, claim: &str, node: &str) -> String {
    let (code, v) = s.post(&pods(ns), &pod_using(name, claim, Some(node))).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    v["metadata"]["uid"].as_str().unwrap().to_string()
}

async fn bound_claim(s: &Server, ns: &str, claim: Value) -> Value {
    let name = claim["metadata"]["name"].as_str().unwrap().to_string();
    let (code, v) = s.post(&pvcs(ns), &claim).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    volume_of(s, ns, &name).await
}

/// The volume claim `name` is bound to, once it is.
async fn volume_of(s: &Server, ns: &str, name: &str) -> Value {
    let c = s
        .wait_for_phase(&format!("{}/{name}", pvcs(ns)), "Bound")
        .await;
    let (_, pv) = s
        .get(&format!(
            "{PV}/{}",
            c["spec"]["volumeName"].as_str().unwrap()
        ))
        .await;
    pv
}

/// Claims `claim` (of class `local`), starts `pod` (which uses it) on its node, and returns
/// the bound volume and the pod's uid. The pod comes before the binding: a class that waits
/// for its first consumer (on replicas, see [`local_server`]) binds only then.
async fn local_claim_and_pod(s: &Server, ns: &str, claim: Value, pod: Value) -> (Value, String) {
    let name = claim["metadata"]["name"].as_str().unwrap().to_string();
    let (code, v) = s.post(&pvcs(ns), &claim).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let (code, v) = s.post(&pods(ns), &pod).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let uid = v["metadata"]["uid"].as_str().unwrap().to_string();
    (volume_of(s, ns, &name).await, uid)
}

/// [`local_claim_and_pod`] for the usual case: claim `data` (1Gi) in `team-a`, used by pod
/// `pod` on node-a.
async fn data_and_pod(s: &Server, pod: &str) -> (Value, String) {
    local_claim_and_pod(
        s,
        "team-a",
        claim_in_class("data", "1Gi", "local"),
        pod_using(pod, "data", Some("node-a")),
    )
    .await
}

fn unique_of(pv: &Value) -> String {
    format!(
        "kubernetes.io/csi/{}^{}",
        pv["spec"]["csi"]["driver"].as_str().unwrap(),
        pv["spec"]["csi"]["volumeHandle"].as_str().unwrap()
    )
}

async fn in_use(s: &Server, node: &str) -> Vec<String> {
    let (_, n) = s.get(&format!("{NODES}/{node}")).await;
    n["status"]["volumesInUse"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

async fn attachments_of(s: &Server, pv: &str) -> Vec<Value> {
    let (_, list) = s.get(VA).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|va| va["spec"]["source"]["persistentVolumeName"] == pv)
        .cloned()
        .collect()
}

async fn wait_mounted(s: &Server, agent: &NodeAgent, target: &Path) {
    s.eventually(
        Duration::from_secs(30),
        &format!("{} mounted; agent log:\n{}", target.display(), agent.log()),
        || async { (mount_count(target) == 1).then_some(()) },
    )
    .await;
}

async fn wait_unmounted(s: &Server, target: &Path) {
    s.eventually(
        Duration::from_secs(30),
        &format!("{} unmounted and removed", target.display()),
        || async { (mount_count(target) == 0 && !target.exists()).then_some(()) },
    )
    .await;
}

/// The events in `namespace` with `reason`, as (involved object name, message).
async fn events_with(s: &Server, namespace: &str, reason: &str) -> Vec<(String, String)> {
    let (_, list) = s.get(&events(namespace)).await;
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .map(|e| {
            (
                e["involvedObject"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["message"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn wait_event(s: &Server, namespace: &str, reason: &str, about: &str) -> String {
    s.eventually(
        Duration::from_secs(30),
        &format!("a {reason} event about {about}"),
        || async {
            events_with(s, namespace, reason)
                .await
                .into_iter()
                .find(|(n, _)| n == about)
                .map(|(_, m)| m)
        },
    )
    .await
}

#[tokio::test]
async fn a_pods_local_volume_is_mounted_written_through_and_unmounted_before_detach() {
    need_mounts!();
    let (s, _cfg) = local_server("node-a").await;
    let agent = NodeAgent::start_local(&s, "node-a", &["--zone", "zone-1"]).await;
    // The agent registers its node and heartbeats.
    let node = s
        .wait_for(&format!("{NODES}/node-a"), "node-a registered", |n| {
            n["metadata"]["labels"]["kubernetes.io/hostname"] == "node-a"
        })
        .await;
    assert_eq!(
        node["metadata"]["labels"]["topology.kubernetes.io/zone"],
        "zone-1"
    );
    s.wait_for(
        &format!("{}/node-a", leases("stowage-node-lease")),
        "node-a's lease",
        |l| l["spec"]["holderIdentity"] == "node-a" && !l["spec"]["renewTime"].is_null(),
    )
    .await;

    let (pv, uid) = data_and_pod(&s, "app").await;
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    let target = agent.target(&uid, "data");
    wait_mounted(&s, &agent, &target).await;
    assert!(in_use(&s, "node-a").await.contains(&unique_of(&pv)));

    // A file written through the mount lands in the volume's directory.
    std::fs::write(target.join("hello.txt"), b"through the mount").unwrap();
    let va = &attachments_of(&s, &pv_name).await[0];
    let dir = PathBuf::from(va["status"]["attachmentMetadata"]["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read(dir.join("hello.txt")).unwrap(),
        b"through the mount"
    );

    // Stats under the kubelet's names.
    let metrics = s
        .eventually(Duration::from_secs(10), "volume stats", || async {
            let text = reqwest::get(&agent.metrics).await.ok()?.text().await.ok()?;
            text.contains(
                "kubelet_volume_stats_capacity_bytes{namespace=\"team-a\",persistentvolumeclaim=\"data\"}",
            )
            .then_some(text)
        })
        .await;
    assert!(metrics.contains(
        "kubelet_volume_stats_health_status_abnormal{namespace=\"team-a\",persistentvolumeclaim=\"data\"} 0"
    ));

    // Pod gone: unmounted, then no longer in use, then detached.
    s.delete(&format!("{}/app", pods("team-a"))).await;
    wait_unmounted(&s, &target).await;
    s.eventually(Duration::from_secs(20), "volumesInUse cleared", || async {
        in_use(&s, "node-a").await.is_empty().then_some(())
    })
    .await;
    s.eventually(
        Duration::from_secs(20),
        "the attachment removed",
        || async { attachments_of(&s, &pv_name).await.is_empty().then_some(()) },
    )
    .await;
    assert!(
        dir.join("hello.txt").exists(),
        "unmounting keeps the volume's data"
    );
    assert!(
        !agent.root.join("pods").join(&uid).exists(),
        "the pod's directory is gone with its last volume"
    );
}

#[tokio::test]
async fn a_killed_agent_restarts_without_mounting_twice_and_cleans_up_after_gone_pods() {
    need_mounts!();
    let (s, _cfg) = local_server("node-a").await;
    let mut agent = NodeAgent::start_local(&s, "node-a", &[]).await;
    let (pv, first) = data_and_pod(&s, "first").await;
    let first_target = agent.target(&first, "data");
    wait_mounted(&s, &agent, &first_target).await;

    // kill -9 with the volume mounted: the restarted agent adopts the mount.
    agent.kill();
    agent.restart();
    // Several passes (the sync period is 1 s) later it is still mounted exactly once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mount_count(&first_target), 1, "{}", agent.log());
    assert!(in_use(&s, "node-a").await.contains(&unique_of(&pv)));

    // kill -9 again; while the agent is down the pod goes and another comes.
    agent.kill();
    s.delete(&format!("{}/first", pods("team-a"))).await;
    let second = pod_on(&s, "team-a", "second", "data", "node-a").await;
    agent.restart();
    let second_target = agent.target(&second, "data");
    wait_mounted(&s, &agent, &second_target).await;
    wait_unmounted(&s, &first_target).await;
    assert!(in_use(&s, "node-a").await.contains(&unique_of(&pv)));
}

#[tokio::test]
async fn a_busy_mount_is_retried_with_an_event_and_never_lazily_detached() {
    need_mounts!();
    let (s, _cfg) = local_server("node-a").await;
    let agent = NodeAgent::start_local(&s, "node-a", &[]).await;
    let (pv, uid) = data_and_pod(&s, "app").await;
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    let target = agent.target(&uid, "data");
    wait_mounted(&s, &agent, &target).await;

    let open = std::fs::File::create(target.join("open.log")).unwrap();
    s.delete(&format!("{}/app", pods("team-a"))).await;
    let message = wait_event(&s, "default", "FailedUnmount", "node-a").await;
    assert!(message.contains("busy"), "{message}");
    // Still mounted, still in use, still attached: nothing was pulled from under the file.
    assert_eq!(mount_count(&target), 1);
    assert!(in_use(&s, "node-a").await.contains(&unique_of(&pv)));
    assert_eq!(attachments_of(&s, &pv_name).await.len(), 1);

    drop(open);
    wait_unmounted(&s, &target).await;
    s.eventually(
        Duration::from_secs(30),
        "the attachment removed",
        || async { attachments_of(&s, &pv_name).await.is_empty().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_read_only_claim_is_mounted_read_only() {
    need_mounts!();
    let (s, _cfg) = local_server("node-a").await;
    let agent = NodeAgent::start_local(&s, "node-a", &[]).await;
    let mut pod = pod_using("reader", "data", Some("node-a"));
    pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
    let (_, uid) =
        local_claim_and_pod(&s, "team-a", claim_in_class("data", "1Gi", "local"), pod).await;
    let target = agent.target(&uid, "data");
    wait_mounted(&s, &agent, &target).await;
    // A bind mount becomes read-only in a second step (a remount): wait for that step.
    s.eventually(
        Duration::from_secs(30),
        &format!("{} remounted read-only", target.display()),
        || async { mounted_read_only(&target).then_some(()) },
    )
    .await;
    let err = std::fs::write(target.join("x"), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
}

#[tokio::test]
async fn the_node_authorizer_lets_a_node_read_only_what_its_pods_use() {
    // Network-disk-like volumes (the in-memory provider): not pinned to any node, so only the
    // graph of pods decides what a node sees. Local volumes are the nodes' own (node-local
    // provisioning), so the server does not run the local provider.
    let (_cfg, config) =
        config_file("providers:\n  memory:\n    enabled: true\n  local:\n    enabled: false\n");
    let s = Server::start_with(&["--config", config.as_str()]).await;
    assert_eq!(
        s.post(SC, &storage_class("mem", "memory.stowage.dev"))
            .await
            .0,
        StatusCode::CREATED
    );
    for n in ["node-a", "node-b"] {
        let (code, v) = s
            .post(
                NODES,
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    let mine = bound_claim(&s, "team-a", claim_in_class("mine", "1Gi", "mem")).await;
    let theirs = bound_claim(&s, "team-b", claim_in_class("theirs", "1Gi", "mem")).await;
    pod_on(&s, "team-a", "app", "mine", "node-a").await;
    let node_a = As::new(&s, &token(&s, "node:node-a", None).await);

    assert_eq!(
        node_a.get(&format!("{}/mine", pvcs("team-a"))).await,
        StatusCode::OK
    );
    assert_eq!(
        node_a
            .get(&format!(
                "{PV}/{}",
                mine["metadata"]["name"].as_str().unwrap()
            ))
            .await,
        StatusCode::OK
    );
    // Not used by its pods: refused, exactly like a claim that does not exist.
    assert_eq!(
        node_a.get(&format!("{}/theirs", pvcs("team-b"))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        node_a.get(&format!("{}/nothing", pvcs("team-b"))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        node_a
            .get(&format!(
                "{PV}/{}",
                theirs["metadata"]["name"].as_str().unwrap()
            ))
            .await,
        StatusCode::FORBIDDEN
    );
    // A node makes only volumes of a provider it runs itself: one of the server's, pinned to
    // it, would have the server snapshot, clone or delete whatever handle it named.
    let theirs_handle = theirs["spec"]["csi"]["volumeHandle"].as_str().unwrap();
    let forged = json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "forged"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "csi": {"driver": "memory.stowage.dev", "volumeHandle": theirs_handle},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-a"]}]}]}}}});
    assert_eq!(node_a.create(PV, &forged).await, StatusCode::FORBIDDEN);

    // Lists show only what a node provisions itself: claims placed on it, volumes pinned to
    // it. What its pods use it reads one object at a time.
    assert!(
        node_a
            .list_names("/api/v1/persistentvolumeclaims")
            .await
            .is_empty()
    );
    assert!(node_a.list_names(PV).await.is_empty());
    // A pod on node-b is another node's business, and so is its claim.
    pod_on(&s, "team-b", "other", "theirs", "node-b").await;
    assert_eq!(
        node_a.get(&format!("{}/theirs", pvcs("team-b"))).await,
        StatusCode::FORBIDDEN
    );
    // Its claim's status is writable (to finish a filesystem expansion); another's is not.
    let patch = |ns: &str, name: &str| {
        let path = format!("{}/{name}/status", pvcs(ns));
        let client = node_a.client.clone();
        let url = s.url(&path);
        async move {
            client
                .patch(url)
                .header("content-type", "application/merge-patch+json")
                .body(r#"{"metadata":{"annotations":{"x":"y"}}}"#)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(patch("team-a", "mine").await, StatusCode::OK);
    assert_eq!(patch("team-b", "theirs").await, StatusCode::FORBIDDEN);
    // Volumes it makes must be pinned to itself, and may be bound only to claims placed on it.
    let volume = |name: &str, node: &str, claim: Option<(&str, &str)>| {
        let mut pv = json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "csi": {"driver": "local.stowage.dev", "volumeHandle": name},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}});
        if let Some((ns, c)) = claim {
            pv["spec"]["claimRef"] = json!({"namespace": ns, "name": c});
        }
        pv
    };
    assert_eq!(
        node_a.create(PV, &volume("on-b", "node-b", None)).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        node_a
            .create(PV, &volume("steal", "node-a", Some(("team-b", "theirs"))))
            .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        node_a.create(PV, &volume("on-a", "node-a", None)).await,
        StatusCode::CREATED
    );
    assert_eq!(node_a.list_names(PV).await, ["on-a"]);
    // Events about its pods, yes; about another node's pod, no.
    let event = |ns: &str, pod: &str| {
        json!({"apiVersion": "v1", "kind": "Event", "metadata": {"generateName": "e.", "namespace": ns},
               "involvedObject": {"kind": "Pod", "namespace": ns, "name": pod},
               "reason": "FailedMount", "message": "m", "type": "Warning"})
    };
    assert_eq!(
        node_a
            .create(&events("team-a"), &event("team-a", "app"))
            .await,
        StatusCode::CREATED
    );
    assert_eq!(
        node_a
            .create(&events("team-b"), &event("team-b", "other"))
            .await,
        StatusCode::FORBIDDEN
    );
}

/// A loop device over a sparse file: a disk, as a cloud attaches it. Detached when dropped.
struct LoopDisk {
    image: PathBuf,
    device: String,
}

impl LoopDisk {
    fn new(image: PathBuf, bytes: u64) -> LoopDisk {
        std::fs::File::create(&image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        LoopDisk {
            image,
            device: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        }
    }

    /// The disk grows, as EBS's does after ModifyVolume.
    fn grow(&self, bytes: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&self.image)
            .unwrap()
            .set_len(bytes)
            .unwrap();
        assert!(
            Command::new("losetup")
                .args(["-c", &self.device])
                .status()
                .unwrap()
                .success()
        );
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

fn filesystem_type(device: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-s", "TYPE", "-o", "value", device])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn filesystem_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks() * st.fragment_size()
}

async fn claim_of(s: &Server, ns: &str, name: &str) -> Value {
    s.get(&format!("{}/{name}", pvcs(ns))).await.1
}

fn has_condition(claim: &Value, type_: &str) -> bool {
    claim["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

const GIB: u64 = 1 << 30;

/// A server with the EBS provider on moto, and an agent on an EC2 instance of moto's whose
/// devices appear under a directory of the test's (`--dev-dir`).
struct EbsNode {
    server: Server,
    agent: NodeAgent,
    dev: tempfile::TempDir,
    _config: tempfile::TempDir,
    _moto: stowage_provider_ebs::testing::Moto,
}

impl EbsNode {
    async fn start(node: &str, expansion: bool) -> Option<EbsNode> {
        let moto = stowage_provider_ebs::testing::Moto::start_for_test()?;
        let (config_dir, config) = config_file(&format!(
            "providers:\n  ebs:\n    region: us-east-1\n    endpoint: {}\n    defaultZone: us-east-1a\n    accessKeyId: AKIASTOWAGETEST7KEY1\n    secretAccessKey: stowage-test-secret\n",
            moto.endpoint()
        ));
        let server = Server::start_with(&["--config", config.as_str()]).await;
        let mut class = storage_class("ebs", "ebs.stowage.dev");
        class["parameters"] = json!({"type": "gp3"});
        class["allowVolumeExpansion"] = json!(expansion);
        assert_eq!(server.post(SC, &class).await.0, StatusCode::CREATED);
        let instance = moto.run_instance("us-east-1a").await;
        let dev = tempfile::tempdir().unwrap();
        let provider_id = format!("aws:///us-east-1a/{instance}");
        let agent = NodeAgent::start(
            &server,
            node,
            &[
                "--zone",
                "us-east-1a",
                "--provider-id",
                &provider_id,
                "--dev-dir",
                dev.path().to_str().unwrap(),
            ],
        )
        .await;
        server
            .wait_for(&format!("{NODES}/{node}"), "the node registered", |n| {
                n["spec"]["providerID"] == provider_id.as_str()
            })
            .await;
        Some(EbsNode {
            server,
            agent,
            dev,
            _config: config_dir,
            _moto: moto,
        })
    }
}

/// Plays the cloud and udev for an attached volume: its disk is a loop device, and the NVMe
/// by-id link that EBS gets on Nitro instances points at it, under `dev` (the agent's
/// `--dev-dir`). Returns the disk and the link.
fn disk_for(dev: &tempfile::TempDir, volume_id: &str, name: &str) -> (LoopDisk, PathBuf) {
    let disk = LoopDisk::new(dev.path().join(format!("{name}.img")), GIB);
    let by_id = dev.path().join("disk/by-id");
    std::fs::create_dir_all(&by_id).unwrap();
    let link = by_id.join(format!(
        "nvme-Amazon_Elastic_Block_Store_{}",
        volume_id.replace('-', "")
    ));
    std::os::unix::fs::symlink(&disk.device, &link).unwrap();
    (disk, link)
}

#[tokio::test]
async fn an_ebs_volume_is_formatted_once_staged_shared_and_grown_offline_after_an_online_refusal() {
    need_mounts!();
    let Some(ebs) = EbsNode::start("node-b", true).await else {
        return;
    };
    let EbsNode {
        server: s,
        agent,
        dev,
        _config,
        _moto,
    } = ebs;

    let pv = bound_claim(&s, "team-a", claim_in_class("disk", "1Gi", "ebs")).await;
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    let volume_id = pv["spec"]["csi"]["volumeHandle"]
        .as_str()
        .unwrap()
        .to_string();
    // Play the cloud and udev: the volume's disk is a loop device, and the NVMe by-id link
    // that EBS gets on Nitro instances points at it.
    let (disk, _link) = disk_for(&dev, &volume_id, "disk");

    let first = pod_on(&s, "team-a", "first", "disk", "node-b").await;
    let target = agent.target(&first, "data");
    wait_mounted(&s, &agent, &target).await;
    let staging = agent.root.join("staging").join(&pv_name);
    assert_eq!(
        mount_count(&staging),
        1,
        "a block filesystem is staged once"
    );
    assert_eq!(
        filesystem_type(&disk.device),
        "ext4",
        "made on the blank device"
    );
    std::fs::write(target.join("keep.txt"), b"data on the disk").unwrap();

    // A second pod on the node shares the staged filesystem.
    let second = pod_on(&s, "team-a", "second", "disk", "node-b").await;
    let second_target = agent.target(&second, "data");
    wait_mounted(&s, &agent, &second_target).await;
    assert_eq!(
        std::fs::read(second_target.join("keep.txt")).unwrap(),
        b"data on the disk"
    );
    assert_eq!(mount_count(&staging), 1);

    // Both pods go: both mounts, then the staging mount; staging again never reformats.
    s.delete(&format!("{}/first", pods("team-a"))).await;
    wait_unmounted(&s, &target).await;
    assert_eq!(
        mount_count(&staging),
        1,
        "the other pod still uses the staged filesystem"
    );
    s.delete(&format!("{}/second", pods("team-a"))).await;
    wait_unmounted(&s, &second_target).await;
    s.eventually(Duration::from_secs(30), "unstaged", || async {
        (mount_count(&staging) == 0).then_some(())
    })
    .await;
    let third = pod_on(&s, "team-a", "third", "disk", "node-b").await;
    let target = agent.target(&third, "data");
    wait_mounted(&s, &agent, &target).await;
    assert_eq!(
        std::fs::read(target.join("keep.txt")).unwrap(),
        b"data on the disk"
    );

    // Expansion: EC2 grows the volume, the claim waits for its filesystem.
    let (code, v) = s
        .patch(
            &format!("{}/disk", pvcs("team-a")),
            "application/merge-patch+json",
            &json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    s.wait_for(
        &format!("{}/disk", pvcs("team-a")),
        "FileSystemResizePending",
        |c| {
            has_condition(c, "FileSystemResizePending")
                && c["status"]["capacity"]["storage"] == "1Gi"
                && c["status"]["allocatedResources"]["storage"] == "2Gi"
                && c["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending"
        },
    )
    .await;
    disk.grow(2 * GIB);
    // Growing a mounted ext4 needs CAP_SYS_RESOURCE, which this sandbox lacks: the agent says
    // so with an event instead of hanging. (Where the kernel allows it, it grows online.)
    let grown_online = s
        .eventually(
            Duration::from_secs(30),
            "an online growth or its refusal",
            || async {
                if claim_of(&s, "team-a", "disk").await["status"]["capacity"]["storage"] == "2Gi" {
                    return Some(true);
                }
                events_with(&s, "team-a", "FileSystemResizeFailed")
                    .await
                    .iter()
                    .any(|(pod, m)| pod == "third" && m.contains("online"))
                    .then_some(false)
            },
        )
        .await;
    if !grown_online {
        // The refused online growth is pending again (it was in progress), for the offline one.
        s.wait_for(
            &format!("{}/disk", pvcs("team-a")),
            "NodeResizePending again",
            |c| c["status"]["allocatedResourceStatuses"]["storage"] == "NodeResizePending",
        )
        .await;
        // Offline, at the next staging.
        s.delete(&format!("{}/third", pods("team-a"))).await;
        wait_unmounted(&s, &target).await;
        s.eventually(Duration::from_secs(30), "unstaged", || async {
            (mount_count(&staging) == 0).then_some(())
        })
        .await;
        let fourth = pod_on(&s, "team-a", "fourth", "disk", "node-b").await;
        let target = agent.target(&fourth, "data");
        wait_mounted(&s, &agent, &target).await;
        assert!(
            filesystem_bytes(&target) > 3 * GIB / 2,
            "the filesystem fills the grown disk"
        );
        assert_eq!(
            std::fs::read(target.join("keep.txt")).unwrap(),
            b"data on the disk"
        );
    }
    let claim = s
        .wait_for(
            &format!("{}/disk", pvcs("team-a")),
            "the claim's new capacity",
            |c| c["status"]["capacity"]["storage"] == "2Gi",
        )
        .await;
    assert!(!has_condition(&claim, "FileSystemResizePending"), "{claim}");
    assert!(
        claim["status"]["allocatedResourceStatuses"]
            .get("storage")
            .is_none(),
        "the node's part is done: {claim}"
    );
}

#[tokio::test]
async fn an_nfs_volume_is_mounted_by_the_kernel_or_the_pod_is_told_why_not() {
    need_mounts!();
    let ganesha_dir = tempfile::tempdir().unwrap();
    let Some(g) = stowage_provider_nfs::testing::Ganesha::start_for_test(ganesha_dir.path()) else {
        return;
    };
    let s = Server::start().await;
    let mut class = storage_class("nfs", "nfs.stowage.dev");
    class["parameters"] = json!({"server": g.server(), "share": g.share()});
    assert_eq!(s.post(SC, &class).await.0, StatusCode::CREATED);
    let agent = NodeAgent::start(&s, "node-c", &[]).await;
    let mut claim = claim_in_class("shared", "1Gi", "nfs");
    claim["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    bound_claim(&s, "team-a", claim).await;
    let uid = pod_on(&s, "team-a", "app", "shared", "node-c").await;
    let target = agent.target(&uid, "data");
    let has_client = ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"]
        .iter()
        .any(|p| Path::new(p).exists())
        && std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("nfs"));
    if has_client {
        wait_mounted(&s, &agent, &target).await;
        std::fs::write(target.join("hello.txt"), b"over nfs").unwrap();
        let found = walk(&g.export_dir())
            .into_iter()
            .any(|p| p.ends_with("hello.txt"));
        assert!(found, "the file lands in the export");
    } else {
        // No kernel client on this node: a clear event on the pod, quickly, not a hang.
        let message = wait_event(&s, "team-a", "FailedMount", "app").await;
        assert!(message.contains("no NFS client"), "{message}");
        assert_eq!(mount_count(&target), 0);
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn wait_for_first_consumer_local_claims_are_provisioned_by_the_agent_of_the_selected_node() {
    need_mounts!();
    // The server runs no local provider: node disks are the agents' business.
    let (_cfg, config) = config_file("providers:\n  local:\n    enabled: false\n");
    let s = Server::start_with(&["--config", config.as_str()]).await;
    let mut class = storage_class("node-local", "local.stowage.dev");
    class["volumeBindingMode"] = json!("WaitForFirstConsumer");
    assert_eq!(s.post(SC, &class).await.0, StatusCode::CREATED);
    let disks = tempfile::tempdir().unwrap();
    let (disk_a, disk_b) = (disks.path().join("a"), disks.path().join("b"));
    let _a = NodeAgent::start(
        &s,
        "node-a",
        &[
            "--local-root",
            disk_a.to_str().unwrap(),
            "--local-capacity",
            "5Gi",
        ],
    )
    .await;
    let b = NodeAgent::start(
        &s,
        "node-b",
        &[
            "--local-root",
            disk_b.to_str().unwrap(),
            "--local-capacity",
            "5Gi",
        ],
    )
    .await;
    for n in ["node-a", "node-b"] {
        s.wait_for(&format!("{NODES}/{n}"), "registered", |_| true)
            .await;
    }
    // Each agent publishes its own disk's room for the class, selecting its node alone.
    for n in ["node-a", "node-b"] {
        assert_eq!(node_capacity(&s, n, "node-local").await, "5Gi");
    }
    let capacities = "/apis/storage.k8s.io/v1/namespaces/stowage-system/csistoragecapacities";
    let (_, list) = s.get(capacities).await;
    let of_b = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["nodeTopology"]["matchLabels"]["kubernetes.io/hostname"] == "node-b")
        .unwrap()
        .clone();
    assert_eq!(
        of_b["metadata"]["labels"]["csi.storage.k8s.io/managed-by"],
        "stowage-node"
    );
    assert_eq!(
        of_b["metadata"]["labels"]["csi.storage.k8s.io/drivername"],
        "local.stowage.dev"
    );
    // A node writes only its own: not another node's, not one for another node, not one
    // relabelled as the server's.
    let node_a = As::new(&s, &token(&s, "node:node-a", None).await);
    let b_name = of_b["metadata"]["name"].as_str().unwrap();
    let (code, _) = node_a
        .send(
            Method::PATCH,
            &format!("{capacities}/{b_name}"),
            Some(&json!({"capacity": "1Ti"})),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    let mut forged = of_b.clone();
    forged["metadata"] = json!({"name": "forged",
        "labels": {"csi.storage.k8s.io/managed-by": "stowage-node"}});
    assert_eq!(
        node_a.create(capacities, &forged).await,
        StatusCode::FORBIDDEN
    );
    forged["nodeTopology"] = json!({"matchLabels": {"kubernetes.io/hostname": "node-a"}});
    forged["metadata"]["labels"] = json!({"csi.storage.k8s.io/managed-by": "stowage"});
    assert_eq!(
        node_a.create(capacities, &forged).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(node_a.list_names(capacities).await.len(), 1, "its own only");
    assert_eq!(
        node_a.delete(&format!("{capacities}/{b_name}")).await,
        StatusCode::FORBIDDEN
    );

    let (code, v) = s
        .post(
            &pvcs("team-a"),
            &claim_in_class("data", "1Gi", "node-local"),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(
        claim_of(&s, "team-a", "data").await["status"]["phase"],
        "Bound",
        "nothing is provisioned before a pod is placed"
    );

    let uid = pod_on(&s, "team-a", "app", "data", "node-b").await;
    let claim = s
        .wait_for_phase(&format!("{}/data", pvcs("team-a")), "Bound")
        .await;
    assert_eq!(
        claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"],
        "node-b"
    );
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let (_, pv) = s.get(&format!("{PV}/{pv_name}")).await;
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["node-b"])
    );
    let target = b.target(&uid, "data");
    wait_mounted(&s, &b, &target).await;
    assert_eq!(node_capacity(&s, "node-b", "node-local").await, "4Gi");
    assert_eq!(node_capacity(&s, "node-a", "node-local").await, "5Gi");
    std::fs::write(target.join("made-here.txt"), b"on node-b's disk").unwrap();
    let on_b = walk(&disk_b);
    assert!(
        on_b.iter().any(|p| p.ends_with("made-here.txt")),
        "the volume is on node-b's disk: {on_b:?}"
    );
    assert!(
        !walk(&disk_a).iter().any(|p| p.ends_with("made-here.txt")),
        "and not on node-a's"
    );

    // Pod and claim gone: unmounted, detached, and the Released volume deleted by its node.
    s.delete(&format!("{}/app", pods("team-a"))).await;
    wait_unmounted(&s, &target).await;
    s.delete(&format!("{}/data", pvcs("team-a"))).await;
    s.wait_gone(&format!("{PV}/{pv_name}")).await;
    assert!(
        !walk(&disk_b).iter().any(|p| p.ends_with("made-here.txt")),
        "the directory went with the volume"
    );
    assert_eq!(node_capacity(&s, "node-b", "node-local").await, "5Gi");
    // A class that goes takes its capacity objects with it.
    s.delete(&format!("{SC}/node-local")).await;
    s.eventually(Duration::from_secs(20), "capacity objects gone", || async {
        let (_, list) = s.get(capacities).await;
        list["items"].as_array().unwrap().is_empty().then_some(())
    })
    .await;
}

/// The capacity `node`'s agent publishes for `class`, once it settles on a value (waits for
/// the value to appear; returns what it is then, after it stayed for a pass).
async fn node_capacity(s: &Server, node: &str, class: &str) -> String {
    let path = "/apis/storage.k8s.io/v1/namespaces/stowage-system/csistoragecapacities";
    let read = || async {
        let (_, list) = s.get(path).await;
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| {
                c["storageClassName"] == class
                    && c["nodeTopology"]["matchLabels"]["kubernetes.io/hostname"] == node
            })
            .and_then(|c| c["capacity"].as_str().map(str::to_string))
    };
    // Settled: the same value over two reads a pass (1 s) apart.
    s.eventually(Duration::from_secs(20), "published capacity", || async {
        let first = read().await?;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        (read().await? == first).then_some(first)
    })
    .await
}

#[tokio::test]
async fn a_read_write_once_pod_volume_is_published_to_one_pod_only() {
    need_mounts!();
    let (s, _cfg) = local_server("node-a").await;
    let agent = NodeAgent::start_local(&s, "node-a", &[]).await;
    let mut claim = claim_in_class("solo", "1Gi", "local");
    claim["spec"]["accessModes"] = json!(["ReadWriteOncePod"]);
    let (_, first) = local_claim_and_pod(
        &s,
        "team-a",
        claim,
        pod_using("first", "solo", Some("node-a")),
    )
    .await;
    wait_mounted(&s, &agent, &agent.target(&first, "data")).await;
    let second = pod_on(&s, "team-a", "second", "solo", "node-a").await;
    let message = wait_event(&s, "team-a", "FailedMount", "second").await;
    assert!(message.contains("ReadWriteOncePod"), "{message}");
    assert_eq!(mount_count(&agent.target(&second, "data")), 0);
    // The first pod goes: the second gets the volume.
    s.delete(&format!("{}/first", pods("team-a"))).await;
    wait_mounted(&s, &agent, &agent.target(&second, "data")).await;
}

#[tokio::test]
async fn a_block_mode_claim_gets_the_device_itself_and_a_vanished_device_is_reported() {
    need_mounts!();
    let Some(ebs) = EbsNode::start("node-d", false).await else {
        return;
    };
    let EbsNode {
        server: s,
        agent,
        dev,
        _config,
        _moto,
    } = ebs;
    let mut claim = claim_in_class("raw", "1Gi", "ebs");
    claim["spec"]["volumeMode"] = json!("Block");
    let pv = bound_claim(&s, "team-a", claim).await;
    let volume_id = pv["spec"]["csi"]["volumeHandle"]
        .as_str()
        .unwrap()
        .to_string();
    let (disk, link) = disk_for(&dev, &volume_id, "raw");

    let uid = pod_on(&s, "team-a", "app", "raw", "node-d").await;
    let target = agent.target(&uid, "data");
    wait_mounted(&s, &agent, &target).await;
    // The pod's path is the device itself: bytes written there are on the disk, unformatted.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&target)
            .unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.write_all(b"raw block bytes").unwrap();
        f.sync_all().unwrap();
    }
    let mut image = vec![0u8; 15];
    {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&disk.device).unwrap();
        f.seek(SeekFrom::Start(4096)).unwrap();
        f.read_exact(&mut image).unwrap();
    }
    assert_eq!(&image, b"raw block bytes");
    assert_eq!(
        filesystem_type(&disk.device),
        "",
        "a Block volume is never formatted"
    );
    assert!(
        !agent
            .root
            .join("staging")
            .join(pv["metadata"]["name"].as_str().unwrap())
            .exists(),
        "nor staged"
    );

    // The device vanishes from the node (udev removes its link): the pod is told, and the
    // volume is abnormal in the stats.
    std::fs::remove_file(&link).unwrap();
    let message = wait_event(&s, "team-a", "VolumeConditionAbnormal", "app").await;
    assert!(message.contains("device"), "{message}");
    s.eventually(Duration::from_secs(10), "the abnormal figure", || async {
        let text = reqwest::get(&agent.metrics).await.ok()?.text().await.ok()?;
        text.contains(
            "kubelet_volume_stats_health_status_abnormal{namespace=\"team-a\",persistentvolumeclaim=\"raw\"} 1",
        )
        .then_some(())
    })
    .await;
    s.delete(&format!("{}/app", pods("team-a"))).await;
    wait_unmounted(&s, &target).await;
}

#[tokio::test]
async fn node_local_volumes_are_snapshotted_restored_and_cloned_by_their_nodes_agent() {
    need_mounts!();
    let (_cfg, config) = config_file("providers:\n  local:\n    enabled: false\n");
    let s = Server::start_with(&["--config", config.as_str()]).await;
    let mut class = storage_class("node-local", "local.stowage.dev");
    class["volumeBindingMode"] = json!("WaitForFirstConsumer");
    assert_eq!(s.post(SC, &class).await.0, StatusCode::CREATED);
    let disks = tempfile::tempdir().unwrap();
    let (disk_a, disk_b) = (disks.path().join("a"), disks.path().join("b"));
    let agent_args = |disk: &Path| {
        vec![
            "--local-root".to_string(),
            disk.to_str().unwrap().to_string(),
            "--local-capacity".to_string(),
            "5Gi".to_string(),
        ]
    };
    let args_a = agent_args(&disk_a);
    let args_b = agent_args(&disk_b);
    let a = NodeAgent::start(
        &s,
        "node-a",
        &args_a.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let _b = NodeAgent::start(
        &s,
        "node-b",
        &args_b.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let ns = "team-a";
    let claims = pvcs(ns);
    let snapshots = format!("/apis/snapshot.storage.k8s.io/v1/namespaces/{ns}/volumesnapshots");
    let contents = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents";

    // A volume on node-a with a file in it.
    s.post(&claims, &claim_in_class("data", "1Gi", "node-local"))
        .await;
    let uid = pod_on(&s, ns, "app", "data", "node-a").await;
    s.wait_for_phase(&format!("{claims}/data"), "Bound").await;
    let target = a.target(&uid, "data");
    wait_mounted(&s, &a, &target).await;
    std::fs::write(target.join("kept.txt"), b"written on node-a").unwrap();

    // Its snapshot is taken by node-a's agent, on node-a's disk.
    let (code, v) = s
        .post(
            &snapshots,
            &json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
                "metadata": {"name": "snap"},
                "spec": {"source": {"persistentVolumeClaimName": "data"}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let snap = s
        .wait_for(&format!("{snapshots}/snap"), "the snapshot ready", |v| {
            v["status"]["readyToUse"] == true
        })
        .await;
    let content_name = snap["status"]["boundVolumeSnapshotContentName"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, content) = s.get(&format!("{contents}/{content_name}")).await;
    assert_eq!(
        content["metadata"]["labels"]["snapshot.storage.kubernetes.io/managed-by"],
        "node-a"
    );
    let handle = content["status"]["snapshotHandle"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        walk(&disk_a)
            .iter()
            .any(|p| p.to_string_lossy().contains(&handle) && p.ends_with("kept.txt")),
        "the snapshot is on node-a's disk: {:?}",
        walk(&disk_a)
    );
    assert!(!walk(&disk_b).iter().any(|p| p.ends_with("kept.txt")));

    // Restored and cloned on node-a: the file is there.
    for (name, source) in [
        (
            "restored",
            json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"}),
        ),
        (
            "cloned",
            json!({"kind": "PersistentVolumeClaim", "name": "data"}),
        ),
    ] {
        let mut c = claim_in_class(name, "1Gi", "node-local");
        c["spec"]["dataSource"] = source;
        let (code, v) = s.post(&claims, &c).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
        let pod = pod_on(&s, ns, &format!("{name}-app"), name, "node-a").await;
        s.wait_for_phase(&format!("{claims}/{name}"), "Bound").await;
        let target = a.target(&pod, "data");
        wait_mounted(&s, &a, &target).await;
        assert_eq!(
            std::fs::read(target.join("kept.txt")).unwrap(),
            b"written on node-a",
            "{name}"
        );
    }

    // A restore placed on node-b cannot read node-a's disk: it is told so, and stays Pending.
    let mut elsewhere = claim_in_class("elsewhere", "1Gi", "node-local");
    elsewhere["spec"]["dataSource"] =
        json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snap"});
    s.post(&claims, &elsewhere).await;
    pod_on(&s, ns, "elsewhere-app", "elsewhere", "node-b").await;
    let message = wait_event(&s, "default", "LocalProvisioningFailed", "node-b").await;
    assert!(
        message.contains("is not on node node-b's disk"),
        "{message}"
    );
    let (_, c) = s.get(&format!("{claims}/elsewhere")).await;
    assert_eq!(c["status"]["phase"], "Pending");

    // Node-a reads its content and records progress on it, nothing more; node-b sees none.
    let node_a = As::new(&s, &token(&s, "node:node-a", None).await);
    let node_b = As::new(&s, &token(&s, "node:node-b", None).await);
    let content_path = format!("{contents}/{content_name}");
    assert_eq!(node_a.get(&content_path).await, StatusCode::OK);
    assert_eq!(node_b.get(&content_path).await, StatusCode::FORBIDDEN);
    assert!(node_b.list_names(contents).await.is_empty());
    let merge = |who: &As<'_>, body: Value| {
        who.client
            .patch(s.url(&content_path))
            .header("content-type", "application/merge-patch+json")
            .body(body.to_string())
            .send()
    };
    for forbidden in [
        json!({"spec": {"deletionPolicy": "Retain"}}),
        json!({"metadata": {"annotations": {
            "snapshot.storage.kubernetes.io/allow-volume-mode-change": "true"}}}),
        json!({"metadata": {"labels": {"snapshot.storage.kubernetes.io/managed-by": "node-b"}}}),
    ] {
        let code = merge(&node_a, forbidden.clone()).await.unwrap().status();
        assert_eq!(code, StatusCode::FORBIDDEN, "{forbidden}");
    }
    let code = merge(
        &node_a,
        json!({"metadata": {"annotations": {
        "snapshot.storage.kubernetes.io/volumesnapshot-being-created": "yes"}}}),
    )
    .await
    .unwrap()
    .status();
    assert_eq!(code, StatusCode::OK);

    // Deleting the snapshot deletes it from node-a's disk, and its content goes.
    s.delete(&format!("{snapshots}/snap")).await;
    s.wait_gone(&format!("{contents}/{content_name}")).await;
    assert!(
        !walk(&disk_a)
            .iter()
            .any(|p| p.to_string_lossy().contains(&handle)),
        "the snapshot's copy went with it"
    );
}
