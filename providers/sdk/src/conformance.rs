//! The conformance kit: one behaviour suite that every provider runs against itself.
//!
//! A provider crate calls [`run`] from its own tests with a factory that builds a fresh
//! provider instance (a second instance stands for "after a restart") and a [`Fixture`] that
//! says what its environment offers. Checks are gated on the provider's [`Capabilities`] and on
//! the fixture; each cleans up after itself, and each run uses its own name prefix.
//!
//! ```ignore
//! #[tokio::test]
//! async fn conformance() {
//!     let report = stowage_provider::conformance::run(|| make_provider(), fixture()).await;
//!     report.assert_passed();
//! }
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    AccessMode, AttachRequest, Capabilities, ClaimRef, ContentSource, CreateVolumeRequest,
    DeleteVolumeRequest, DetachRequest, ErrorKind, ExpandRequest, NodeInfo, Provider,
    TopologyRequirement, Volume,
};

/// What the provider's environment offers the checks.
#[derive(Clone, Debug)]
pub struct Fixture {
    /// StorageClass parameters for the volumes the checks create.
    pub parameters: BTreeMap<String, String>,
    /// Topology for the volumes the checks create.
    pub topology: TopologyRequirement,
    /// A node volumes can attach to.
    pub node: NodeInfo,
    /// A node that does not exist for the provider (attach must fail with NotFound), if the
    /// provider can tell.
    pub unknown_node: Option<NodeInfo>,
    /// A size the provider must refuse with ResourceExhausted, if it has a capacity limit.
    pub too_large_bytes: Option<i64>,
    /// Size of the volumes the checks create.
    pub volume_bytes: i64,
    /// Prefix for volume names, unique per run.
    pub name_prefix: String,
    /// Per-call timeout: a provider that hangs fails the check instead of the whole run.
    pub call_timeout: Duration,
}

impl Fixture {
    pub fn new(node: NodeInfo) -> Self {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or(0);
        Fixture {
            parameters: BTreeMap::new(),
            topology: TopologyRequirement::default(),
            node,
            unknown_node: None,
            too_large_bytes: None,
            volume_bytes: 1 << 30,
            name_prefix: format!("conf{unique}"),
            call_timeout: Duration::from_secs(60),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<&'static str>,
    pub skipped: Vec<(&'static str, &'static str)>,
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Panics with every failure, for use in a `#[test]`.
    pub fn assert_passed(&self) {
        for (name, why) in &self.skipped {
            eprintln!("conformance: skipped {name}: {why}");
        }
        if !self.failed.is_empty() {
            let list: Vec<String> = self
                .failed
                .iter()
                .map(|(n, e)| format!("  {n}: {e}"))
                .collect();
            panic!(
                "{} conformance check(s) failed:\n{}",
                self.failed.len(),
                list.join("\n")
            );
        }
        assert!(!self.passed.is_empty(), "no conformance check ran");
    }
}

type Factory = Arc<dyn Fn() -> Arc<dyn Provider> + Send + Sync>;
type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct Ctx {
    make: Factory,
    provider: Arc<dyn Provider>,
    caps: Capabilities,
    fixture: Fixture,
}

impl Ctx {
    fn name(&self, check: &str) -> String {
        format!("{}-{check}", self.fixture.name_prefix)
            .chars()
            .take(63)
            .collect()
    }

    fn request(&self, name: &str, bytes: i64) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.to_string(),
            capacity_bytes: bytes,
            access_modes: vec![
                self.caps
                    .access_modes
                    .first()
                    .copied()
                    .unwrap_or(AccessMode::ReadWriteOnce),
            ],
            block: false,
            parameters: self.fixture.parameters.clone(),
            mount_options: Vec::new(),
            topology: self.fixture.topology.clone(),
            claim: ClaimRef {
                namespace: "conformance".into(),
                name: name.to_string(),
                uid: format!("uid-{name}"),
                annotations: BTreeMap::new(),
            },
            content_source: None,
        }
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl Future<Output = crate::Result<T>>,
    ) -> Result<crate::Result<T>, String> {
        tokio::time::timeout(self.fixture.call_timeout, f)
            .await
            .map_err(|_| {
                format!(
                    "{what} did not answer within {:?}",
                    self.fixture.call_timeout
                )
            })
    }

    async fn create(
        &self,
        p: &Arc<dyn Provider>,
        name: &str,
        bytes: i64,
    ) -> Result<Volume, String> {
        self.timed("create_volume", p.create_volume(&self.request(name, bytes)))
            .await?
            .map_err(|e| format!("create_volume({name}) failed: {e}"))
    }

    async fn delete(&self, v: &Volume) -> Result<(), String> {
        self.timed(
            "delete_volume",
            self.provider.delete_volume(&DeleteVolumeRequest {
                handle: v.handle.clone(),
                attributes: v.attributes.clone(),
            }),
        )
        .await?
        .map_err(|e| format!("delete_volume({}) failed: {e}", v.handle))
    }

    async fn listed(&self, name: &str) -> Result<usize, String> {
        let all = self
            .timed("list_volumes", self.provider.list_volumes())
            .await?
            .map_err(|e| format!("list_volumes failed: {e}"))?;
        Ok(all.iter().filter(|v| v.name == name).count())
    }

    fn attach_request(&self, v: &Volume, node: &NodeInfo) -> AttachRequest {
        AttachRequest {
            handle: v.handle.clone(),
            attributes: v.attributes.clone(),
            node: node.clone(),
            read_only: false,
            access_modes: vec![AccessMode::ReadWriteOnce],
            mount_options: Vec::new(),
            fs_type: None,
        }
    }

    fn detach_request(&self, v: &Volume, node: &NodeInfo) -> DetachRequest {
        DetachRequest {
            handle: v.handle.clone(),
            attributes: v.attributes.clone(),
            node: node.clone(),
            force: false,
        }
    }
}

fn expect_kind<T: std::fmt::Debug>(
    r: crate::Result<T>,
    kind: ErrorKind,
    what: &str,
) -> Result<(), String> {
    match r {
        Err(e) if e.kind == kind => Ok(()),
        Err(e) => Err(format!("{what}: expected {}, got {e}", kind.as_str())),
        Ok(v) => Err(format!(
            "{what}: expected {}, got success {v:?}",
            kind.as_str()
        )),
    }
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// A check: its name, the reason to skip it (if it does not apply), and its body.
struct Check {
    name: &'static str,
    skip: fn(&Capabilities, &Fixture) -> Option<&'static str>,
    run: fn(Arc<Ctx>) -> CheckFuture,
}

fn provisioning(c: &Capabilities, _: &Fixture) -> Option<&'static str> {
    (!c.dynamic_provisioning).then_some("no dynamic provisioning")
}

fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "create_honours_the_requested_capacity",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("cap"), cx.fixture.volume_bytes)
                        .await?;
                    ensure!(
                        v.capacity_bytes >= cx.fixture.volume_bytes,
                        "asked for {} bytes, got {}",
                        cx.fixture.volume_bytes,
                        v.capacity_bytes
                    );
                    ensure!(!v.handle.is_empty(), "empty handle");
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "create_is_idempotent_across_restarts",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("idem");
                    let a = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
                        .await?;
                    let b = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
                        .await?;
                    ensure!(
                        a.handle == b.handle,
                        "second create made {} instead of {}",
                        b.handle,
                        a.handle
                    );
                    let restarted = (cx.make)();
                    let c = cx
                        .create(&restarted, &name, cx.fixture.volume_bytes)
                        .await?;
                    ensure!(
                        a.handle == c.handle,
                        "a restarted provider made {} instead of {}",
                        c.handle,
                        a.handle
                    );
                    ensure!(
                        cx.listed(&name).await? == 1,
                        "more than one volume named {name}"
                    );
                    cx.delete(&a).await
                })
            },
        },
        Check {
            name: "same_name_with_another_size_is_already_exists",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("other");
                    let v = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
                        .await?;
                    let r = cx
                        .timed(
                            "create_volume",
                            cx.provider
                                .create_volume(&cx.request(&name, cx.fixture.volume_bytes * 2)),
                        )
                        .await?;
                    let outcome =
                        expect_kind(r, ErrorKind::AlreadyExists, "create with a different size");
                    cx.delete(&v).await?;
                    outcome
                })
            },
        },
        Check {
            name: "delete_of_a_missing_volume_succeeds",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("gone"), cx.fixture.volume_bytes)
                        .await?;
                    cx.delete(&v).await?;
                    cx.delete(&v)
                        .await
                        .map_err(|e| format!("second delete: {e}"))?;
                    ensure!(
                        cx.listed(&cx.name("gone")).await? == 0,
                        "deleted volume still listed"
                    );
                    Ok(())
                })
            },
        },
        Check {
            name: "concurrent_creates_of_one_name_make_one_volume",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("race");
                    let mut tasks = Vec::new();
                    for i in 0..8 {
                        let cx = cx.clone();
                        let name = name.clone();
                        tasks.push(tokio::spawn(async move {
                            // Half the callers use a second instance, as two server processes would.
                            let p = if i % 2 == 0 {
                                cx.provider.clone()
                            } else {
                                (cx.make)()
                            };
                            cx.create(&p, &name, cx.fixture.volume_bytes).await
                        }));
                    }
                    let mut handles = Vec::new();
                    for t in tasks {
                        handles.push(t.await.map_err(|e| e.to_string())??);
                    }
                    ensure!(
                        handles.iter().all(|v| v.handle == handles[0].handle),
                        "concurrent creates returned different volumes: {:?}",
                        handles.iter().map(|v| &v.handle).collect::<Vec<_>>()
                    );
                    ensure!(
                        cx.listed(&name).await? == 1,
                        "concurrent creates made more than one volume"
                    );
                    cx.delete(&handles[0]).await
                })
            },
        },
        Check {
            name: "list_shows_what_exists",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("list");
                    ensure!(cx.listed(&name).await? == 0, "listed before creation");
                    let v = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
                        .await?;
                    let all = cx
                        .timed("list_volumes", cx.provider.list_volumes())
                        .await?
                        .map_err(|e| e.to_string())?;
                    let found = all.iter().find(|i| i.name == name);
                    ensure!(
                        found.is_some_and(|i| i.handle == v.handle),
                        "created volume not listed with its handle"
                    );
                    cx.delete(&v).await?;
                    ensure!(cx.listed(&name).await? == 0, "still listed after delete");
                    Ok(())
                })
            },
        },
        Check {
            name: "unsafe_names_are_invalid",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    for bad in ["../escape", "a/b", "UPPER", ""] {
                        let r = cx
                            .timed(
                                "create_volume",
                                cx.provider
                                    .create_volume(&cx.request(bad, cx.fixture.volume_bytes)),
                            )
                            .await?;
                        expect_kind(
                            r,
                            ErrorKind::InvalidArgument,
                            &format!("create_volume({bad:?})"),
                        )?;
                    }
                    Ok(())
                })
            },
        },
        Check {
            name: "too_large_is_resource_exhausted_and_creates_nothing",
            skip: |c, f| {
                provisioning(c, f).or(f
                    .too_large_bytes
                    .is_none()
                    .then_some("no capacity limit in the fixture"))
            },
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("huge");
                    let bytes = cx.fixture.too_large_bytes.unwrap_or(i64::MAX);
                    let r = cx
                        .timed(
                            "create_volume",
                            cx.provider.create_volume(&cx.request(&name, bytes)),
                        )
                        .await?;
                    expect_kind(r, ErrorKind::ResourceExhausted, "oversized create")?;
                    ensure!(cx.listed(&name).await? == 0, "a refused volume was listed");
                    Ok(())
                })
            },
        },
        Check {
            name: "restart_in_the_middle_of_a_create_converges",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("crash");
                    // Abandon a create part-way, as a crash would.
                    let first = cx.provider.clone();
                    let req = cx.request(&name, cx.fixture.volume_bytes);
                    let _ = tokio::time::timeout(Duration::from_micros(50), async move {
                        first.create_volume(&req).await
                    })
                    .await;
                    let restarted = (cx.make)();
                    let v = cx
                        .create(&restarted, &name, cx.fixture.volume_bytes)
                        .await?;
                    ensure!(
                        cx.listed(&name).await? == 1,
                        "not exactly one volume after the retry"
                    );
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "attach_is_idempotent_and_detach_undoes_it",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("att"), cx.fixture.volume_bytes)
                        .await?;
                    let node = cx.fixture.node.clone();
                    let a = cx
                        .timed("attach", cx.provider.attach(&cx.attach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("attach: {e}"))?;
                    let b = cx
                        .timed("attach", cx.provider.attach(&cx.attach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("second attach: {e}"))?;
                    ensure!(
                        a == b,
                        "a second attach answered differently: {a:?} vs {b:?}"
                    );
                    ensure!(!a.is_empty(), "attach returned no mount information");
                    cx.timed("detach", cx.provider.detach(&cx.detach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("detach: {e}"))?;
                    cx.timed("detach", cx.provider.detach(&cx.detach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("second detach: {e}"))?;
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "detach_of_a_volume_that_is_not_attached_succeeds",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("det"), cx.fixture.volume_bytes)
                        .await?;
                    let r = cx
                        .timed(
                            "detach",
                            cx.provider.detach(&cx.detach_request(&v, &cx.fixture.node)),
                        )
                        .await?;
                    cx.delete(&v).await?;
                    r.map_err(|e| format!("detach of an unattached volume: {e}"))
                })
            },
        },
        Check {
            name: "attach_to_an_unknown_node_is_not_found",
            skip: |c, f| {
                provisioning(c, f).or(f
                    .unknown_node
                    .is_none()
                    .then_some("no unknown node in the fixture"))
            },
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("nonode"), cx.fixture.volume_bytes)
                        .await?;
                    let node = cx.fixture.unknown_node.clone().unwrap_or_default();
                    let r = cx
                        .timed("attach", cx.provider.attach(&cx.attach_request(&v, &node)))
                        .await?;
                    cx.delete(&v).await?;
                    expect_kind(r, ErrorKind::NotFound, "attach to an unknown node")
                })
            },
        },
        Check {
            name: "attachment_limit_is_resource_exhausted",
            skip: |c, f| {
                provisioning(c, f).or(c
                    .max_attachments_per_node
                    .is_none()
                    .then_some("no attachment limit"))
            },
            run: |cx| {
                Box::pin(async move {
                    let mut node = cx.fixture.node.clone();
                    node.max_attachments = Some(2);
                    let mut volumes = Vec::new();
                    for i in 0..3 {
                        volumes.push(
                            cx.create(
                                &cx.provider,
                                &cx.name(&format!("lim{i}")),
                                cx.fixture.volume_bytes,
                            )
                            .await?,
                        );
                    }
                    let mut outcome = Ok(());
                    for (i, v) in volumes.iter().enumerate() {
                        let r = cx
                            .timed("attach", cx.provider.attach(&cx.attach_request(v, &node)))
                            .await?;
                        if i < 2 {
                            if let Err(e) = r {
                                outcome = Err(format!("attach {i} under the limit failed: {e}"));
                                break;
                            }
                        } else {
                            outcome = expect_kind(
                                r,
                                ErrorKind::ResourceExhausted,
                                "attach over the limit",
                            );
                        }
                    }
                    for v in &volumes {
                        let _ = cx.provider.detach(&cx.detach_request(v, &node)).await;
                        cx.delete(v).await?;
                    }
                    outcome
                })
            },
        },
        Check {
            name: "expansion_grows_and_never_shrinks",
            skip: |c, f| provisioning(c, f).or((!c.expansion).then_some("no expansion")),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("grow"), cx.fixture.volume_bytes)
                        .await?;
                    let bigger = cx.fixture.volume_bytes * 2;
                    let req = |bytes| ExpandRequest {
                        handle: v.handle.clone(),
                        attributes: v.attributes.clone(),
                        capacity_bytes: bytes,
                    };
                    let grown = cx
                        .timed("expand_volume", cx.provider.expand_volume(&req(bigger)))
                        .await?
                        .map_err(|e| format!("expand: {e}"))?;
                    ensure!(
                        grown.capacity_bytes >= bigger,
                        "expanded to {} < {bigger}",
                        grown.capacity_bytes
                    );
                    let same = cx
                        .timed(
                            "expand_volume",
                            cx.provider.expand_volume(&req(cx.fixture.volume_bytes)),
                        )
                        .await?
                        .map_err(|e| format!("shrink request: {e}"))?;
                    ensure!(
                        same.capacity_bytes >= bigger,
                        "a smaller request shrank the volume to {}",
                        same.capacity_bytes
                    );
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "snapshots_are_idempotent_and_deletable",
            skip: |c, f| provisioning(c, f).or((!c.snapshots).then_some("no snapshots")),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("snap"), cx.fixture.volume_bytes)
                        .await?;
                    let name = cx.name("snapshot");
                    let a = cx
                        .timed(
                            "create_snapshot",
                            cx.provider.create_snapshot(&name, &v.handle),
                        )
                        .await?
                        .map_err(|e| e.to_string())?;
                    let b = cx
                        .timed(
                            "create_snapshot",
                            cx.provider.create_snapshot(&name, &v.handle),
                        )
                        .await?
                        .map_err(|e| e.to_string())?;
                    ensure!(a.id == b.id, "snapshot create is not idempotent");
                    cx.timed("delete_snapshot", cx.provider.delete_snapshot(&a.id))
                        .await?
                        .map_err(|e| e.to_string())?;
                    cx.timed("delete_snapshot", cx.provider.delete_snapshot(&a.id))
                        .await?
                        .map_err(|e| format!("second delete: {e}"))?;
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "volumes_restore_from_ready_snapshots_only",
            skip: |c, f| provisioning(c, f).or((!c.snapshots).then_some("no snapshots")),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("origin"), cx.fixture.volume_bytes)
                        .await?;
                    let name = cx.name("restore-snapshot");
                    // Poll until the snapshot is cut (EBS: pending → completed).
                    let deadline = tokio::time::Instant::now() + cx.fixture.call_timeout;
                    let snapshot = loop {
                        let s = cx
                            .timed(
                                "create_snapshot",
                                cx.provider.create_snapshot(&name, &v.handle),
                            )
                            .await?
                            .map_err(|e| e.to_string())?;
                        if s.ready {
                            break s;
                        }
                        ensure!(
                            tokio::time::Instant::now() < deadline,
                            "snapshot {} not ready within {:?}",
                            s.id,
                            cx.fixture.call_timeout
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    };
                    ensure!(
                        snapshot.size_bytes >= cx.fixture.volume_bytes,
                        "snapshot reports {} bytes, the volume has {}",
                        snapshot.size_bytes,
                        cx.fixture.volume_bytes
                    );
                    let mut req = cx.request(&cx.name("restored"), snapshot.size_bytes);
                    req.content_source = Some(ContentSource::Snapshot {
                        snapshot_id: snapshot.id.clone(),
                    });
                    let restored = cx
                        .timed("create_volume", cx.provider.create_volume(&req))
                        .await?
                        .map_err(|e| format!("restore from {}: {e}", snapshot.id))?;
                    ensure!(
                        restored.capacity_bytes >= snapshot.size_bytes,
                        "restored volume has {} bytes, the snapshot {}",
                        restored.capacity_bytes,
                        snapshot.size_bytes
                    );
                    let mut missing = cx.request(&cx.name("from-missing"), snapshot.size_bytes);
                    missing.content_source = Some(ContentSource::Snapshot {
                        snapshot_id: format!("{}-missing", snapshot.id),
                    });
                    let refused = cx
                        .timed("create_volume", cx.provider.create_volume(&missing))
                        .await?;
                    ensure!(
                        refused.is_err(),
                        "a volume was made from a snapshot that does not exist"
                    );
                    cx.delete(&restored).await?;
                    cx.timed("delete_snapshot", cx.provider.delete_snapshot(&snapshot.id))
                        .await?
                        .map_err(|e| e.to_string())?;
                    cx.delete(&v).await
                })
            },
        },
    ]
}

/// Runs every applicable check against providers built by `make`.
pub async fn run<F>(make: F, fixture: Fixture) -> Report
where
    F: Fn() -> Arc<dyn Provider> + Send + Sync + 'static,
{
    let make: Factory = Arc::new(make);
    let provider = make();
    let caps = provider.capabilities();
    let cx = Arc::new(Ctx {
        make,
        provider,
        caps,
        fixture,
    });
    let mut report = Report::default();
    for check in checks() {
        if let Some(reason) = (check.skip)(&cx.caps, &cx.fixture) {
            report.skipped.push((check.name, reason));
            continue;
        }
        match (check.run)(cx.clone()).await {
            Ok(()) => report.passed.push(check.name),
            Err(e) => report.failed.push((check.name, e)),
        }
    }
    report
}
