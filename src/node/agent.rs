//! The agent's loop: one pass compares what the API wants mounted on this node with what the
//! mount table has, and closes the gap, as the kubelet's volume manager does.
//!
//! A pass:
//! 1. reads the pods on this node, their claims and volumes, and the attachments to this node:
//!    a volume is wanted once its attachment is `attached`;
//! 2. lists every wanted or still-mounted volume in `Node.status.volumesInUse`, before any
//!    mount, so that the attach/detach controller never detaches a volume being mounted;
//! 3. mounts what is wanted and not mounted, staging block devices first (a filesystem is made
//!    only on a blank device, and grown at staging when an expansion is pending);
//! 4. unmounts what is mounted and no longer wanted: the pod's mount, then the staging mount
//!    once no pod uses it. A busy mount is retried with backoff and an event, never detached
//!    lazily;
//! 5. reports `volumesInUse` again, now without what it unmounted, and refreshes the stats.
//!
//! Beside each mount a small JSON record says what it is, written before the mount: after a
//! kill the next pass finds mounts (and half-made mounts) through their records and the mount
//! table, and repairs them. Nothing is ever mounted twice, because a pass checks the table.
//! Passes run when a pod or an attachment on this node changes (watches), after a failure
//! (with backoff), and every `--sync-period`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::NodeArgs;
use super::mounts::{self, MountError};
use super::provision::LocalProvisioner;
use super::stats::{Stats, VolumeStats};
use crate::cli::client::{CliError, Client, exit};
use crate::controllers::attach::unique_volume_name;
use crate::resources::names::CLUSTER_EVENTS_NAMESPACE;

/// The event source, as the kubelet's is `kubelet`.
const COMPONENT: &str = "stowage-node";
/// The same event about the same object is filed at most this often.
const EVENT_INTERVAL: Duration = Duration::from_secs(60);
/// Retry delays after a pass that left work undone.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(16);
/// The least time between the starts of two passes woken by changes.
const MIN_PASS_INTERVAL: Duration = Duration::from_millis(100);
/// How long a mount may take to answer `statvfs` before it is reported stale.
const STATS_DEADLINE: Duration = Duration::from_secs(5);

/// Where things live under the agent's root.
#[derive(Clone, Debug)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root.join("pods").join(uid)
    }
    /// Where a pod finds its volume.
    pub fn target(&self, uid: &str, volume: &str) -> PathBuf {
        self.pod_dir(uid).join("volumes").join(volume)
    }
    fn record(&self, uid: &str, volume: &str) -> PathBuf {
        self.pod_dir(uid)
            .join("records")
            .join(format!("{volume}.json"))
    }
    /// Where a block device's filesystem is mounted once for all the node's pods.
    pub fn staging(&self, pv: &str) -> PathBuf {
        self.root.join("staging").join(pv)
    }
    fn staging_record(&self, pv: &str) -> PathBuf {
        self.root.join("staging").join(format!("{pv}.json"))
    }
}

/// What a pod's volume mount is, written before it is made.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Published {
    unique: String,
    pv: String,
    namespace: String,
    pod: String,
    claim: String,
    /// The volume is published from a staging mount (a block device's filesystem).
    staged: bool,
    /// The target is a file: the device itself (`volumeMode: Block`).
    device: bool,
}

/// What a staging mount is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Staged {
    unique: String,
    pv: String,
    device: PathBuf,
    fs_type: String,
}

/// A pod's volume that should be published now.
#[derive(Clone, Debug)]
struct Want {
    pod_uid: String,
    namespace: String,
    pod: String,
    volume: String,
    claim: String,
    pv: String,
    unique: String,
    /// The attachment's `attachmentMetadata`: how to mount.
    info: BTreeMap<String, String>,
    read_only: bool,
    block_mode: bool,
    fs_type: String,
    /// The claim waits for its filesystem to be grown, and the volume's new size.
    resize: Option<Resize>,
}

#[derive(Clone, Debug)]
struct Resize {
    capacity: String,
    bytes: u64,
    conditions: Vec<Value>,
}

/// A problem to report on an object, for the events of one pass.
struct Problem {
    about: Value,
    namespace: String,
    reason: &'static str,
    message: String,
}

pub struct Agent {
    client: Client,
    node: String,
    layout: Layout,
    dev_dir: PathBuf,
    sync_period: Duration,
    stats: Stats,
    /// When each (object, reason, message) was last reported.
    reported: HashMap<String, Instant>,
    /// Volumes whose online filesystem growth failed: they grow at their next staging.
    online_growth_failed: HashSet<String>,
    /// Volumes whose filesystem this pass has grown (offline, while staging): the claim this
    /// pass read still asks for it, and must not be grown and reported a second time.
    grown_this_pass: HashSet<String>,
    /// The node-local provider, when this agent runs one.
    local: Option<LocalProvisioner>,
    /// Claims and volumes read recently, by path: a mounted volume costs no request per pass,
    /// only one per `sync_period` (the agent lives within its token's rate limit).
    cache: HashMap<String, (Value, Instant)>,
    /// What `volumesInUse` was last set to, and when: unchanged, it is not written again
    /// before a `sync_period` has passed.
    reported_in_use: Option<(BTreeSet<String>, Instant)>,
    /// This pass mounted or unmounted something.
    progress: bool,
}

impl Agent {
    pub fn new(
        client: Client,
        args: &NodeArgs,
        stats: Stats,
        local: Option<LocalProvisioner>,
    ) -> Self {
        Agent {
            client,
            node: args.node_name.clone(),
            layout: Layout {
                root: args.root.clone(),
            },
            dev_dir: args.dev_dir.clone(),
            sync_period: args.sync_period,
            stats,
            reported: HashMap::new(),
            online_growth_failed: HashSet::new(),
            grown_this_pass: HashSet::new(),
            local,
            cache: HashMap::new(),
            reported_in_use: None,
            progress: false,
        }
    }

    /// Runs passes forever.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let wake = Arc::new(Notify::new());
        let pods = format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}&watch=1&allowWatchBookmarks=false",
            self.node
        );
        let attachments = "/apis/storage.k8s.io/v1/volumeattachments?watch=1".to_string();
        let watchers = [pods, attachments]
            .map(|path| tokio::spawn(wake_on_changes(self.client.clone(), path, wake.clone())));
        let mut backoff = BACKOFF_FIRST;
        loop {
            let started = Instant::now();
            self.progress = false;
            self.grown_this_pass.clear();
            let clean = match self.pass().await {
                Ok(clean) => clean,
                Err(e) => {
                    tracing::warn!("node agent pass failed: {e:#}");
                    false
                }
            };
            let delay = if clean {
                backoff = BACKOFF_FIRST;
                self.sync_period
            } else if self.progress {
                // Work left, but work done: go on soon.
                backoff = BACKOFF_FIRST;
                BACKOFF_FIRST
            } else {
                let d = backoff;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                d
            };
            tokio::select! {
                _ = wake.notified() => {
                    // Let a burst of changes (200 pods created at once) settle into one pass,
                    // and keep passes at most ten a second.
                    let pace = MIN_PASS_INTERVAL.saturating_sub(started.elapsed());
                    tokio::time::sleep(pace.max(Duration::from_millis(20))).await;
                }
                _ = tokio::time::sleep(delay) => {}
            }
            if watchers.iter().all(|w| w.is_finished()) {
                anyhow::bail!("the agent's watches ended");
            }
        }
    }

    /// One pass; whether it left nothing undone.
    async fn pass(&mut self) -> anyhow::Result<bool> {
        let mut problems = Vec::new();
        let mut local_busy = false;
        if let Some(local) = &self.local {
            let outcome = local.pass().await;
            // Copies under way (snapshots, restores, clones): come back soon to see them done.
            local_busy = outcome.busy;
            if local_busy {
                self.progress = true;
            }
            for message in outcome.problems {
                problems.push(Problem {
                    about: self.node_ref(),
                    namespace: CLUSTER_EVENTS_NAMESPACE.into(),
                    reason: "LocalProvisioningFailed",
                    message,
                });
            }
        }
        let (wants, complete) = self.desired(&mut problems).await?;
        let mounted = mounts::mount_points().context("reading /proc/self/mountinfo")?;
        let published = self.read_published();
        let staged = self.read_staged();

        // In use before any mount: everything wanted or still mounted.
        let mut in_use: BTreeSet<String> = wants.iter().map(|w| w.unique.clone()).collect();
        in_use.extend(published.iter().map(|(_, _, p)| p.unique.clone()));
        in_use.extend(staged.iter().map(|s| s.unique.clone()));
        self.report_in_use(&in_use).await?;

        let mut clean = problems.is_empty() && complete && !local_busy;
        for w in &wants {
            if let Err(e) = self.publish(w, &mounted).await {
                clean = false;
                problems.push(pod_problem(
                    w,
                    "FailedMount",
                    format!(
                        "MountVolume failed for volume \"{}\" (claim {}): {e}",
                        w.volume, w.claim
                    ),
                ));
            }
        }

        // Unmount what no pod wants any more.
        let wanted: HashSet<(String, String)> = wants
            .iter()
            .map(|w| (w.pod_uid.clone(), w.volume.clone()))
            .collect();
        let mut remaining = Vec::new();
        for (uid, volume, p) in published {
            if wanted.contains(&(uid.clone(), volume.clone())) {
                remaining.push(p);
                continue;
            }
            match self.unpublish(&uid, &volume, &mounted).await {
                Ok(()) => {
                    self.progress = true;
                    tracing::info!(pod = %p.pod, volume = %volume, "unmounted")
                }
                Err(e) => {
                    clean = false;
                    problems.push(Problem {
                        about: self.node_ref(),
                        namespace: CLUSTER_EVENTS_NAMESPACE.into(),
                        reason: "FailedUnmount",
                        message: format!(
                            "UnmountVolume failed for volume \"{volume}\" of pod {}/{} ({}): {e}; retrying",
                            p.namespace, p.pod, p.pv
                        ),
                    });
                    remaining.push(p);
                }
            }
        }
        let staging_needed: HashSet<&str> = remaining
            .iter()
            .filter(|p| p.staged)
            .map(|p| p.pv.as_str())
            .collect();
        let mut still_staged = Vec::new();
        for s in staged {
            if staging_needed.contains(s.pv.as_str()) {
                still_staged.push(s);
                continue;
            }
            if let Err(e) = self.unstage(&s, &mounted).await {
                clean = false;
                problems.push(Problem {
                    about: self.node_ref(),
                    namespace: CLUSTER_EVENTS_NAMESPACE.into(),
                    reason: "FailedUnmount",
                    message: format!("UnmountDevice failed for volume {}: {e}; retrying", s.pv),
                });
                still_staged.push(s);
            }
        }

        // Filesystems to grow while mounted.
        let mounted = mounts::mount_points().context("reading /proc/self/mountinfo")?;
        for w in &wants {
            if let Some(r) = &w.resize
                && mounted.contains(&self.layout.staging(&w.pv))
                && !self.online_growth_failed.contains(&w.pv)
                && !self.grown_this_pass.contains(&w.pv)
                && let Err(e) = self.grow_online(w, r).await
            {
                self.online_growth_failed.insert(w.pv.clone());
                problems.push(pod_problem(w, "FileSystemResizeFailed", format!(
                    "growing the filesystem of volume {} online failed: {e}; it grows the next time the volume is staged (when no pod on this node uses it)",
                    w.pv
                )));
            }
        }

        // In use after: what is still mounted, or wanted.
        let mut in_use: BTreeSet<String> = wants.iter().map(|w| w.unique.clone()).collect();
        in_use.extend(remaining.iter().map(|p| p.unique.clone()));
        in_use.extend(still_staged.iter().map(|s| s.unique.clone()));
        self.report_in_use(&in_use).await?;

        let stale = self.refresh_stats(&wants, &mounted).await;
        problems.extend(stale);
        for p in problems {
            self.report(p).await;
        }
        Ok(clean)
    }

    /// The volumes that should be published now, with problems for those that cannot be.
    async fn desired(&mut self, problems: &mut Vec<Problem>) -> anyhow::Result<(Vec<Want>, bool)> {
        let mut complete = true;
        let pods = self
            .client
            .get(&format!(
                "/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
                self.node
            ))
            .await
            .map_err(cli_error)?;
        let attachments = self
            .client
            .get("/apis/storage.k8s.io/v1/volumeattachments")
            .await
            .map_err(cli_error)?;
        let attached: HashMap<&str, &Value> = attachments["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|va| va["spec"]["nodeName"] == self.node.as_str())
            .filter_map(|va| Some((va["spec"]["source"]["persistentVolumeName"].as_str()?, va)))
            .collect();
        let mut claims: HashMap<(String, String), Option<Value>> = HashMap::new();
        let mut volumes: HashMap<String, Option<Value>> = HashMap::new();
        let mut wants = Vec::new();
        // ReadWriteOncePod: the first pod (by creation) that uses the volume has it.
        let mut once_pod: HashMap<String, String> = HashMap::new();
        let mut pods: Vec<&Value> = pods["items"].as_array().into_iter().flatten().collect();
        pods.sort_by_key(|p| {
            (
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        });
        for pod in pods {
            let meta = &pod["metadata"];
            let phase = pod["status"]["phase"].as_str().unwrap_or_default();
            if !meta["deletionTimestamp"].is_null() || matches!(phase, "Succeeded" | "Failed") {
                continue;
            }
            let (Some(uid), Some(ns), Some(name)) = (
                meta["uid"].as_str(),
                meta["namespace"].as_str(),
                meta["name"].as_str(),
            ) else {
                continue;
            };
            for vol in pod["spec"]["volumes"].as_array().into_iter().flatten() {
                let Some(claim_name) = vol["persistentVolumeClaim"]["claimName"].as_str() else {
                    continue;
                };
                let volume = vol["name"].as_str().unwrap_or(claim_name).to_string();
                let problem = |reason: &'static str, message: String| Problem {
                    about: pod_ref(pod),
                    namespace: ns.to_string(),
                    reason,
                    message,
                };
                let key = (ns.to_string(), claim_name.to_string());
                if !claims.contains_key(&key) {
                    let path =
                        format!("/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim_name}");
                    // Only a bound claim is kept: one still waiting is read again next pass.
                    let bound = |c: &Value| c["status"]["phase"] == "Bound";
                    match self.get_cached(&path, bound).await {
                        Ok(c) => claims.insert(key.clone(), c),
                        Err(e) => {
                            tracing::debug!("reading claim {ns}/{claim_name}: {e}");
                            complete = false;
                            continue;
                        }
                    };
                }
                let Some(claim) = claims[&key].as_ref() else {
                    problems.push(problem(
                        "FailedMount",
                        format!("persistentvolumeclaim \"{claim_name}\" not found"),
                    ));
                    continue;
                };
                let Some(pv_name) = claim["spec"]["volumeName"]
                    .as_str()
                    .filter(|_| claim["status"]["phase"] == "Bound")
                else {
                    // Not bound yet: the binder's and provisioner's events explain why.
                    continue;
                };
                if !volumes.contains_key(pv_name) {
                    let path = format!("/api/v1/persistentvolumes/{pv_name}");
                    match self.get_cached(&path, |_| true).await {
                        Ok(v) => volumes.insert(pv_name.to_string(), v),
                        Err(e) => {
                            tracing::debug!("reading volume {pv_name}: {e}");
                            complete = false;
                            continue;
                        }
                    };
                }
                let Some(pv) = volumes[pv_name].as_ref() else {
                    continue;
                };
                let csi = &pv["spec"]["csi"];
                let (Some(driver), Some(handle)) =
                    (csi["driver"].as_str(), csi["volumeHandle"].as_str())
                else {
                    problems.push(problem(
                        "FailedMount",
                        format!("volume {pv_name} has no provider (spec.csi); the agent mounts only provider volumes"),
                    ));
                    continue;
                };
                let Some(va) = attached.get(pv_name) else {
                    continue;
                };
                if va["status"]["attached"] != true {
                    continue;
                }
                let modes: Vec<&str> = pv["spec"]["accessModes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                if modes.contains(&"ReadWriteOncePod") {
                    let holder = once_pod
                        .entry(pv_name.to_string())
                        .or_insert(uid.to_string());
                    if holder != uid {
                        problems.push(problem(
                            "FailedMount",
                            format!("volume {pv_name} is ReadWriteOncePod and another pod on this node uses it"),
                        ));
                        continue;
                    }
                }
                let info: BTreeMap<String, String> = va["status"]["attachmentMetadata"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect();
                let read_only = vol["persistentVolumeClaim"]["readOnly"] == true
                    || info.get("readOnly").is_some_and(|r| r == "true")
                    || (modes == ["ReadOnlyMany"]);
                let fs_type = csi["fsType"]
                    .as_str()
                    .or(info.get("fsType").map(String::as_str))
                    .filter(|t| !t.is_empty())
                    .unwrap_or("ext4")
                    .to_string();
                let pending = claim["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "FileSystemResizePending" && c["status"] == "True");
                let resize = pending
                    .then(|| {
                        let capacity = pv["spec"]["capacity"]["storage"].as_str()?.to_string();
                        Some(Resize {
                            bytes: stowage_provider::quantity::Quantity::parse(&capacity)
                                .ok()?
                                .bytes()
                                .try_into()
                                .ok()?,
                            capacity,
                            conditions: claim["status"]["conditions"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter(|c| c["type"] != "FileSystemResizePending")
                                .cloned()
                                .collect(),
                        })
                    })
                    .flatten();
                wants.push(Want {
                    pod_uid: uid.to_string(),
                    namespace: ns.to_string(),
                    pod: name.to_string(),
                    volume,
                    claim: claim_name.to_string(),
                    pv: pv_name.to_string(),
                    unique: unique_volume_name(driver, handle),
                    info,
                    read_only,
                    block_mode: pv["spec"]["volumeMode"] == "Block",
                    fs_type,
                    resize,
                });
            }
        }
        // Forget what has not been read for a while.
        let ttl = self.sync_period;
        self.cache.retain(|_, (_, at)| at.elapsed() < ttl);
        Ok((wants, complete))
    }

    /// GET through the cache (fresh for a `sync_period`), with "not found" (or not ours to
    /// see) as `None`; only objects passing `keep` are cached.
    async fn get_cached(
        &mut self,
        path: &str,
        keep: impl Fn(&Value) -> bool,
    ) -> Result<Option<Value>, String> {
        if let Some((v, at)) = self.cache.get(path)
            && at.elapsed() < self.sync_period
        {
            return Ok(Some(v.clone()));
        }
        match self.client.get(path).await {
            Ok(v) => {
                if keep(&v) {
                    self.cache
                        .insert(path.to_string(), (v.clone(), Instant::now()));
                }
                Ok(Some(v))
            }
            Err(e) if e.code == exit::NOT_FOUND || e.code == exit::FORBIDDEN => {
                self.cache.remove(path);
                Ok(None)
            }
            Err(e) => Err(e.message),
        }
    }

    /// Sets `Node.status.volumesInUse` to `in_use`, unless this agent set it so recently.
    async fn report_in_use(&mut self, in_use: &BTreeSet<String>) -> anyhow::Result<()> {
        if let Some((last, at)) = &self.reported_in_use
            && last == in_use
            && at.elapsed() < self.sync_period
        {
            return Ok(());
        }
        let value = if in_use.is_empty() {
            Value::Null
        } else {
            json!(in_use)
        };
        self.client
            .patch(
                &format!("/api/v1/nodes/{}/status", self.node),
                "application/merge-patch+json",
                &json!({"status": {"volumesInUse": value}}),
            )
            .await
            .map_err(cli_error)?;
        self.reported_in_use = Some((in_use.clone(), Instant::now()));
        Ok(())
    }

    /// Publishes one volume for one pod, staging it first if it is a block filesystem.
    async fn publish(&mut self, w: &Want, mounted: &HashSet<PathBuf>) -> anyhow::Result<()> {
        let target = self.layout.target(&w.pod_uid, &w.volume);
        if mounted.contains(&target) {
            return Ok(());
        }
        let kind = w.info.get("type").map(String::as_str).unwrap_or_default();
        let block = kind == "block";
        write_json(
            &self.layout.record(&w.pod_uid, &w.volume),
            &Published {
                unique: w.unique.clone(),
                pv: w.pv.clone(),
                namespace: w.namespace.clone(),
                pod: w.pod.clone(),
                claim: w.claim.clone(),
                staged: block && !w.block_mode,
                device: block && w.block_mode,
            },
        )?;
        let options: Vec<String> = w
            .info
            .get("mountOptions")
            .map(|o| {
                o.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        match kind {
            "local" => {
                let source = w
                    .info
                    .get("path")
                    .context("the attachment gives no path for the local volume")?;
                std::fs::create_dir_all(&target)?;
                mounts::bind(Path::new(source), &target, w.read_only).await?;
            }
            "nfs" => {
                if !mounts::has_nfs_client() {
                    anyhow::bail!(
                        "this node has no NFS client (mount.nfs is not installed: install nfs-common, or nfs-utils)"
                    );
                }
                let source = w
                    .info
                    .get("source")
                    .context("the attachment gives no NFS source")?;
                std::fs::create_dir_all(&target)?;
                let mut options = options;
                if w.read_only && !options.iter().any(|o| o == "ro") {
                    options.push("ro".into());
                }
                mounts::mount(source, &target, "nfs", &options)
                    .await
                    .map_err(|e| match e.to_string() {
                        // The helper is there, the kernel's client is not (and cannot be loaded).
                        m if m.contains("No such device")
                            || m.contains("unknown filesystem type") =>
                        {
                            anyhow::anyhow!(
                                "this node has no NFS client: its kernel cannot mount nfs ({m})"
                            )
                        }
                        m => anyhow::anyhow!(m),
                    })?;
            }
            "block" => {
                let device = self.find_device(&w.info)?;
                if w.block_mode {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&target)?;
                    mounts::bind(&device, &target, w.read_only).await?;
                } else {
                    let staging = self.stage(w, &device, &options, mounted).await?;
                    std::fs::create_dir_all(&target)?;
                    mounts::bind(&staging, &target, w.read_only).await?;
                }
            }
            other => anyhow::bail!(
                "the attachment's volume type {other:?} cannot be mounted by this agent"
            ),
        }
        self.progress = true;
        tracing::info!(pod = %w.pod, namespace = %w.namespace, volume = %w.volume, pv = %w.pv, target = %target.display(), "mounted");
        Ok(())
    }

    /// The device of a block attachment: its `devicePath`, else the hint (an NVMe by-id link).
    fn find_device(&self, info: &BTreeMap<String, String>) -> anyhow::Result<PathBuf> {
        let candidates: Vec<&String> = ["devicePath", "devicePathHint"]
            .iter()
            .filter_map(|k| info.get(*k))
            .collect();
        for c in &candidates {
            let on_node = match c.strip_prefix("/dev/") {
                Some(rest) => self.dev_dir.join(rest),
                None => PathBuf::from(c),
            };
            if let Ok(real) = std::fs::canonicalize(&on_node) {
                return Ok(real);
            }
        }
        anyhow::bail!(
            "no device for the volume on this node yet (looked for {})",
            candidates
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// Mounts a block device's filesystem at its staging path, making it only on a blank
    /// device and growing it first when an expansion waits.
    async fn stage(
        &mut self,
        w: &Want,
        device: &Path,
        options: &[String],
        mounted: &HashSet<PathBuf>,
    ) -> anyhow::Result<PathBuf> {
        let staging = self.layout.staging(&w.pv);
        if mounted.contains(&staging) {
            return Ok(staging);
        }
        write_json(
            &self.layout.staging_record(&w.pv),
            &Staged {
                unique: w.unique.clone(),
                pv: w.pv.clone(),
                device: device.to_path_buf(),
                fs_type: w.fs_type.clone(),
            },
        )?;
        std::fs::create_dir_all(&staging)?;
        match mounts::filesystem_of(device).await? {
            None => {
                tracing::info!(device = %device.display(), fs = %w.fs_type, "making a filesystem on a blank device");
                mounts::make_filesystem(device, &w.fs_type).await?;
            }
            Some(found) if found != w.fs_type => anyhow::bail!(
                "device {} holds a {found} filesystem, not {}; it is never reformatted",
                device.display(),
                w.fs_type
            ),
            Some(_) => {}
        }
        let mut grown = None;
        if let Some(r) = &w.resize
            && device_has_grown(device, r).await
        {
            // Offline growth: this is where a growth refused online finishes.
            let rv = self.node_resize_status(w, "NodeResizeInProgress").await?;
            if let Err(e) = mounts::grow_filesystem(device, &w.fs_type, None).await {
                self.node_resize_failed(w, &e).await;
                return Err(e.into());
            }
            grown = Some(rv);
        }
        let mut options = options.to_vec();
        if w.read_only && !options.iter().any(|o| o == "ro") {
            options.push("ro".into());
        }
        mounts::mount(
            device.to_str().context("device path is not UTF-8")?,
            &staging,
            &w.fs_type,
            &options,
        )
        .await?;
        self.online_growth_failed.remove(&w.pv);
        if let (Some(rv), Some(r)) = (grown, &w.resize) {
            self.grown_this_pass.insert(w.pv.clone());
            self.finish_resize(w, r, &rv).await?;
        }
        Ok(staging)
    }

    /// Grows a mounted filesystem, then tells the claim. Nothing happens until the device
    /// shows its new size (a cloud disk takes a moment to).
    async fn grow_online(&mut self, w: &Want, r: &Resize) -> anyhow::Result<()> {
        let device = self.find_device(&w.info)?;
        if !device_has_grown(&device, r).await {
            return Ok(());
        }
        let staging = self.layout.staging(&w.pv);
        let rv = self.node_resize_status(w, "NodeResizeInProgress").await?;
        if let Err(e) = mounts::grow_filesystem(&device, &w.fs_type, Some(&staging)).await {
            self.node_resize_failed(w, &e).await;
            return Err(e.into());
        }
        self.finish_resize(w, r, &rv).await
    }

    /// Says where the node's part of an expansion stands, in the claim's
    /// `status.allocatedResourceStatuses` (Kubernetes' values); returns the claim's new
    /// resourceVersion.
    async fn node_resize_status(&mut self, w: &Want, status: &str) -> anyhow::Result<String> {
        let path = format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims/{}",
            w.namespace, w.claim
        );
        self.cache.remove(&path);
        let written = self
            .client
            .patch(
                &format!("{path}/status"),
                "application/merge-patch+json",
                &json!({"status": {"allocatedResourceStatuses": {"storage": status}}}),
            )
            .await
            .map_err(cli_error)?;
        Ok(written["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// After a failed growth: `NodeResizeInfeasible` if it can never succeed here, else back to
    /// `NodeResizePending` (an online growth refused is retried offline, at the next staging).
    async fn node_resize_failed(&mut self, w: &Want, e: &mounts::MountError) {
        if let Err(report) = self.node_resize_status(w, status_after_failure(e)).await {
            tracing::warn!(claim = %w.claim, error = %report, "could not record the failed growth");
        }
    }

    /// The claim shows its new capacity, and no longer `FileSystemResizePending` nor
    /// `NodeResizePending`. `rv`: the claim's version the agent last wrote.
    async fn finish_resize(&mut self, w: &Want, r: &Resize, rv: &str) -> anyhow::Result<()> {
        // The claim changes: what the cache holds of it is out of date.
        self.cache.remove(&format!(
            "/api/v1/namespaces/{}/persistentvolumeclaims/{}",
            w.namespace, w.claim
        ));
        let conditions = if r.conditions.is_empty() {
            Value::Null
        } else {
            json!(r.conditions)
        };
        self.client
            .patch(
                &format!(
                    "/api/v1/namespaces/{}/persistentvolumeclaims/{}/status",
                    w.namespace, w.claim
                ),
                "application/merge-patch+json",
                &json!({
                    "metadata": {"resourceVersion": rv},
                    "status": {
                        "capacity": {"storage": r.capacity},
                        "conditions": conditions,
                        // The node's part of the expansion is done (was NodeResizeInProgress).
                        "allocatedResourceStatuses": {"storage": null},
                    },
                }),
            )
            .await
            .map_err(cli_error)?;
        self.report(pod_problem(
            w,
            "FileSystemResizeSuccessful",
            format!(
                "the filesystem of volume {} now fills its {}",
                w.pv, r.capacity
            ),
        ))
        .await;
        Ok(())
    }

    /// Unmounts a pod's volume and forgets it.
    async fn unpublish(
        &self,
        uid: &str,
        volume: &str,
        mounted: &HashSet<PathBuf>,
    ) -> Result<(), MountError> {
        let target = self.layout.target(uid, volume);
        if mounted.contains(&target) {
            mounts::unmount(&target).await?;
        }
        let io = |e: std::io::Error| MountError::Failed(e.to_string());
        match std::fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(&target).map_err(io)?,
            Ok(_) => std::fs::remove_file(&target).map_err(io)?,
            Err(_) => {}
        }
        let _ = std::fs::remove_file(self.layout.record(uid, volume));
        // The pod's directories go with its last volume.
        let pod = self.layout.pod_dir(uid);
        for dir in [pod.join("volumes"), pod.join("records"), pod] {
            let _ = std::fs::remove_dir(dir);
        }
        Ok(())
    }

    /// Unmounts a staging mount no pod uses and forgets it.
    async fn unstage(&mut self, s: &Staged, mounted: &HashSet<PathBuf>) -> Result<(), MountError> {
        let staging = self.layout.staging(&s.pv);
        if mounted.contains(&staging) {
            mounts::unmount(&staging).await?;
        }
        let _ = std::fs::remove_dir(&staging);
        let _ = std::fs::remove_file(self.layout.staging_record(&s.pv));
        tracing::info!(pv = %s.pv, "unstaged");
        Ok(())
    }

    /// Every pod volume record under the root: (pod uid, volume name, record).
    fn read_published(&self) -> Vec<(String, String, Published)> {
        let mut out = Vec::new();
        let Ok(pods) = std::fs::read_dir(self.layout.root.join("pods")) else {
            return out;
        };
        for pod in pods.flatten() {
            let uid = pod.file_name().to_string_lossy().into_owned();
            let Ok(records) = std::fs::read_dir(pod.path().join("records")) else {
                continue;
            };
            for r in records.flatten() {
                let name = r.file_name().to_string_lossy().into_owned();
                let Some(volume) = name.strip_suffix(".json") else {
                    continue;
                };
                match read_json::<Published>(&r.path()) {
                    Some(p) => out.push((uid.clone(), volume.to_string(), p)),
                    None => {
                        tracing::warn!(record = %r.path().display(), "an unreadable mount record is left alone")
                    }
                }
            }
        }
        out
    }

    fn read_staged(&self) -> Vec<Staged> {
        let Ok(entries) = std::fs::read_dir(self.layout.root.join("staging")) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| read_json(&e.path()))
            .collect()
    }

    /// Reads every published volume's usage; problems for the mounts that do not answer.
    async fn refresh_stats(&self, wants: &[Want], mounted: &HashSet<PathBuf>) -> Vec<Problem> {
        let mut figures = Vec::new();
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for w in wants {
            let target = self.layout.target(&w.pod_uid, &w.volume);
            if !mounted.contains(&target) {
                continue;
            }
            let block = w.info.get("type").is_some_and(|t| t == "block");
            let usage = if block && self.find_device(&w.info).is_err() {
                // The device left the node (its link is gone): whatever is mounted from it
                // fails at the next read.
                problems.push(pod_problem(
                    w,
                    "VolumeConditionAbnormal",
                    format!("the device of volume {} is gone from this node", w.pv),
                ));
                None
            } else if w.block_mode {
                // A raw device has no filesystem figures; it is healthy while it is there.
                continue;
            } else {
                match super::stats::usage_of(&target, STATS_DEADLINE).await {
                    Ok(u) => Some(u),
                    Err(e) => {
                        problems.push(pod_problem(
                            w,
                            "VolumeConditionAbnormal",
                            format!("the mount of volume {} does not answer: {e}", w.pv),
                        ));
                        None
                    }
                }
            };
            if seen.insert((w.namespace.clone(), w.claim.clone())) {
                figures.push(VolumeStats {
                    namespace: w.namespace.clone(),
                    claim: w.claim.clone(),
                    usage,
                });
            }
        }
        self.stats.set(figures);
        problems
    }

    fn node_ref(&self) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node})
    }

    /// Files an event, unless the same one was filed within [`EVENT_INTERVAL`].
    async fn report(&mut self, p: Problem) {
        let key = format!("{}|{}|{}", p.about, p.reason, p.message);
        let now = Instant::now();
        if self
            .reported
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < EVENT_INTERVAL)
        {
            return;
        }
        self.reported
            .retain(|_, t| now.duration_since(*t) < EVENT_INTERVAL);
        self.reported.insert(key, now);
        let warning = !matches!(p.reason, "FileSystemResizeSuccessful");
        let ts = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let name = p.about["name"].as_str().unwrap_or("node").to_string();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": p.namespace},
            "involvedObject": p.about,
            "reason": p.reason,
            "message": p.message,
            "type": if warning { "Warning" } else { "Normal" },
            "source": {"component": COMPONENT, "host": self.node},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.node,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        });
        if warning {
            tracing::warn!(reason = p.reason, "{}", p.message);
        }
        if let Err(e) = self
            .client
            .post(
                &format!("/api/v1/namespaces/{}/events", p.namespace),
                &event,
            )
            .await
        {
            tracing::warn!("filing an event: {}", e.message);
        }
    }
}

/// Whether the device is as large as the volume now is.
async fn device_has_grown(device: &Path, r: &Resize) -> bool {
    mounts::device_bytes(device)
        .await
        .is_some_and(|b| b >= r.bytes)
}

fn pod_ref(pod: &Value) -> Value {
    let m = &pod["metadata"];
    json!({"apiVersion": "v1", "kind": "Pod", "namespace": m["namespace"], "name": m["name"], "uid": m["uid"]})
}

fn pod_problem(w: &Want, reason: &'static str, message: String) -> Problem {
    Problem {
        about: json!({"apiVersion": "v1", "kind": "Pod", "namespace": w.namespace, "name": w.pod, "uid": w.pod_uid}),
        namespace: w.namespace.clone(),
        reason,
        message,
    }
}

fn cli_error(e: CliError) -> anyhow::Error {
    anyhow::anyhow!(e.message)
}

/// Writes a record atomically (a new file renamed over the old), so a kill never leaves half.
fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(value)?)?;
    std::fs::rename(&tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Follows a watch and wakes the agent on every event; reconnects after a pause when the
/// watch ends or fails (the agent's own passes list afresh, so nothing is lost between).
async fn wake_on_changes(client: Client, path: String, wake: Arc<Notify>) {
    loop {
        match client.raw(Method::GET, &path, None, None, None).await {
            Ok(mut resp) if resp.status().is_success() => {
                wake.notify_one();
                while let Ok(Some(_chunk)) = resp.chunk().await {
                    wake.notify_one();
                }
            }
            Ok(resp) => tracing::warn!(path = %path, status = %resp.status(), "watch refused"),
            Err(e) => tracing::warn!(path = %path, "watch failed: {}", e.message),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// What a claim's `allocatedResourceStatuses.storage` says after a failed filesystem growth.
fn status_after_failure(e: &mounts::MountError) -> &'static str {
    match e {
        mounts::MountError::Unsupported(_) => "NodeResizeInfeasible",
        _ => "NodeResizePending",
    }
}

#[cfg(test)]
mod resize_status_tests {
    use super::*;

    #[test]
    fn only_what_can_never_grow_is_infeasible() {
        assert_eq!(
            status_after_failure(&mounts::MountError::Unsupported("btrfs".into())),
            "NodeResizeInfeasible"
        );
        assert_eq!(
            status_after_failure(&mounts::MountError::Failed("EPERM".into())),
            "NodeResizePending"
        );
    }
}
