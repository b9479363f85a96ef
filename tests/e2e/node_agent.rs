//! The node agent end to end: a real `stowage serve`, real `stowage node` processes with node
//! tokens, and real mounts (bind mounts, loop devices with real filesystems, NFS where the
//! kernel has a client), checked in the mount table and on disk.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
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
        let token = token(s, &format!("node:{name}"), None).await;
        let tmp = tempfile::tempdir().unwrap();
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

/// A server whose local provider's volumes are on node `node`.
async fn local_server(node: &str) -> (Server, tempfile::TempDir) {
    let (dir, config) = config_file(&format!(
        "providers:\n  local:\n    node: {node}\n    capacity: 10Gi\n"
    ));
    let s = Server::start_with(&["--config", config.as_str()]).await;
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
    let agent = NodeAgent::start(&s, "node-a", &["--zone", "zone-1"]).await;
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

    let pv = bound_claim(&s, "team-a", claim_in_class("data", "1Gi", "local")).await;
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    let uid = pod_on(&s, "team-a", "app", "data", "node-a").await;
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
    let mut agent = NodeAgent::start(&s, "node-a", &[]).await;
    let pv = bound_claim(&s, "team-a", claim_in_class("data", "1Gi", "local")).await;
    let first = pod_on(&s, "team-a", "first", "data", "node-a").await;
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
    let agent = NodeAgent::start(&s, "node-a", &[]).await;
    let pv = bound_claim(&s, "team-a", claim_in_class("data", "1Gi", "local")).await;
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    let uid = pod_on(&s, "team-a", "app", "data", "node-a").await;
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
    let agent = NodeAgent::start(&s, "node-a", &[]).await;
    bound_claim(&s, "team-a", claim_in_class("data", "1Gi", "local")).await;
    let mut pod = pod_using("reader", "data", Some("node-a"));
    pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] = json!(true);
    let (code, v) = s.post(&pods("team-a"), &pod).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let target = agent.target(v["metadata"]["uid"].as_str().unwrap(), "data");
    wait_mounted(&s, &agent, &target).await;
    let err = std::fs::write(target.join("x"), b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
}

#[tokio::test]
async fn the_node_authorizer_lets_a_node_read_only_what_its_pods_use() {
    let (s, _cfg) = local_server("node-a").await;
    for n in ["node-a", "node-b"] {
        let (code, v) = s
            .post(
                NODES,
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    let mine = bound_claim(&s, "team-a", claim_in_class("mine", "1Gi", "local")).await;
    let theirs = bound_claim(&s, "team-b", claim_in_class("theirs", "1Gi", "local")).await;
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
    // No lists: what a node may see follows its pods, one object at a time.
    assert_eq!(node_a.get(&pvcs("team-a")).await, StatusCode::FORBIDDEN);
    assert_eq!(node_a.get(PV).await, StatusCode::FORBIDDEN);
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
