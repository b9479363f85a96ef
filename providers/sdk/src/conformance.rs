//! The conformance kit: one behaviour suite that every provider runs against itself.
//!
//! A provider crate calls [`run`] from its own tests with a factory that builds a fresh
//! provider instance (a second instance stands for "after a restart") and a [`Fixture`] that
//! says what its environment offers. Checks are gated on the provider's [`Capabilities`] and on
//! the fixture, and look at what the backend is left with, not only at what calls return: the
//! provider's own listing, and where the fixture has one, a [`Probe`] that looks at the
//! backend directly. Every volume and snapshot a check makes is deleted afterwards, whether
//! the check passed or failed (or panicked), and each run uses its own name prefix.
//!
//! Skips: a check that does not apply to the provider's capabilities is skipped and reported
//! as such. A check that applies but that the fixture cannot support (no topology to test
//! against, no bad parameters given) must be declared in [`Fixture::skips`]; the report's
//! strict [`Report::assert_passed`] fails on any other.
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

/// Fails the check with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

use crate::faults::{Fault, Faulty};
use crate::{
    AccessMode, AttachRequest, Capabilities, ClaimRef, ContentSource, CreateVolumeRequest,
    DeleteVolumeRequest, DetachRequest, ErrorKind, ExpandRequest, ModifyRequest, NodeInfo,
    Provider, TopologyRequirement, Volume,
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
    /// Class parameters the provider must refuse with InvalidArgument, creating nothing.
    pub bad_parameters: Vec<BTreeMap<String, String>>,
    /// Valid parameters other than [`Fixture::parameters`]: the same name with these must be
    /// AlreadyExists.
    pub other_parameters: Option<BTreeMap<String, String>>,
    /// Where volumes can and cannot be, for providers with topology.
    pub topology_fixture: Option<TopologyFixture>,
    /// A look at the backend itself, past the provider.
    pub probe: Option<Arc<dyn Probe>>,
    /// Checks this fixture cannot support, by name, with why (see the module docs).
    pub skips: Vec<(&'static str, &'static str)>,
}

/// Topology for the checks: a requirement and a node inside it, and ones outside.
#[derive(Clone, Debug)]
pub struct TopologyFixture {
    /// A requirement the provider can meet; volumes made for it are reachable from `inside`.
    pub inside: TopologyRequirement,
    pub inside_node: NodeInfo,
    /// A requirement the provider cannot meet (a node or zone it does not serve): create
    /// fails with InvalidArgument and makes nothing.
    pub outside: TopologyRequirement,
    /// A node outside the volumes' topology: attach fails with InvalidArgument.
    pub outside_node: NodeInfo,
}

/// What a probe sees of a volume in the backend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Probed {
    /// Its size, where the backend has one (a directory's accounted size, a disk's size).
    pub size_bytes: Option<i64>,
}

/// A look at the backend itself, to check what a provider left there.
#[async_trait::async_trait]
pub trait Probe: Send + Sync {
    /// The volume as the backend has it; `None` if it is not there.
    async fn volume(&self, v: &Volume) -> Option<Probed>;
}

/// A probe from an async function of the volume.
pub fn probe_with<F, Fut>(f: F) -> Arc<dyn Probe>
where
    F: Fn(Volume) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Probed>> + Send + 'static,
{
    struct FnProbe<F>(F);
    #[async_trait::async_trait]
    impl<F, Fut> Probe for FnProbe<F>
    where
        F: Fn(Volume) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<Probed>> + Send + 'static,
    {
        async fn volume(&self, v: &Volume) -> Option<Probed> {
            (self.0)(v.clone()).await
        }
    }
    Arc::new(FnProbe(f))
}

impl std::fmt::Debug for dyn Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
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
            bad_parameters: Vec::new(),
            other_parameters: None,
            topology_fixture: None,
            probe: None,
            skips: Vec::new(),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<&'static str>,
    /// Skipped checks, why, and whether the skip was declared (by a capability the provider
    /// lacks, or in [`Fixture::skips`]).
    pub skipped: Vec<(&'static str, String, bool)>,
    pub failed: Vec<(&'static str, String)>,
}

impl Report {
    /// Panics unless every applicable check passed and every skip was declared: for a
    /// provider's `#[test]`.
    pub fn assert_passed(&self) {
        self.assert(true);
    }

    /// Like [`Report::assert_passed`], but undeclared skips only print (for a provider in
    /// development).
    pub fn assert_passed_allowing_skips(&self) {
        self.assert(false);
    }

    fn assert(&self, strict: bool) {
        // Shown with `--nocapture`, and with the test's output when it fails.
        println!("{}", self.summary());
        let undeclared: Vec<String> = self
            .skipped
            .iter()
            .filter(|(_, _, declared)| !declared)
            .map(|(n, why, _)| format!("  {n}: {why} (not declared in Fixture::skips)"))
            .collect();
        let mut problems = Vec::new();
        if !self.failed.is_empty() {
            problems.push(format!(
                "{} conformance check(s) failed:\n{}",
                self.failed.len(),
                self.failed
                    .iter()
                    .map(|(n, e)| format!("  {n}: {e}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        if strict && !undeclared.is_empty() {
            problems.push(format!(
                "{} check(s) skipped without being declared:\n{}",
                undeclared.len(),
                undeclared.join("\n")
            ));
        }
        if self.passed.is_empty() {
            problems.push("no conformance check ran".to_string());
        }
        assert!(
            problems.is_empty(),
            "{}\n{}",
            problems.join("\n"),
            self.summary()
        );
    }

    /// One line per check, for a person reading test output.
    pub fn summary(&self) -> String {
        let mut lines = vec![format!(
            "conformance: {} passed, {} skipped, {} failed",
            self.passed.len(),
            self.skipped.len(),
            self.failed.len()
        )];
        for n in &self.passed {
            lines.push(format!("  passed {n}"));
        }
        for (n, why, declared) in &self.skipped {
            let how = if *declared { "declared" } else { "UNDECLARED" };
            lines.push(format!("  skipped ({how}) {n}: {why}"));
        }
        for (n, why) in &self.failed {
            lines.push(format!("  FAILED {n}: {why}"));
        }
        lines.join("\n")
    }
}

/// Why a check does not run.
enum Skip {
    /// The provider lacks a capability the check is about: declared by the provider itself.
    Capability(&'static str),
    /// The fixture lacks what the check needs: must be declared in [`Fixture::skips`].
    Fixture(&'static str),
}

type Factory = Arc<dyn Fn() -> Arc<dyn Provider> + Send + Sync>;
type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct Ctx {
    make: Factory,
    provider: Arc<dyn Provider>,
    caps: Capabilities,
    fixture: Fixture,
    /// Volumes and snapshots made by the check running now, deleted after it.
    made: parking_lot::Mutex<(Vec<Volume>, Vec<String>)>,
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
            mutable_parameters: Default::default(),
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
        self.create_with(p, self.request(name, bytes)).await
    }

    /// Creates a volume, remembered for the cleanup after the check.
    async fn create_with(
        &self,
        p: &Arc<dyn Provider>,
        req: CreateVolumeRequest,
    ) -> Result<Volume, String> {
        // A copy (restore, clone) may answer InProgress until it is done: ask again, as the
        // controllers do, within the call timeout.
        let deadline = tokio::time::Instant::now() + self.fixture.call_timeout;
        let v = loop {
            match self.timed("create_volume", p.create_volume(&req)).await? {
                Err(e) if e.kind == ErrorKind::InProgress => {
                    ensure!(
                        tokio::time::Instant::now() < deadline,
                        "create_volume({}) still in progress after {:?}: {e}",
                        req.name,
                        self.fixture.call_timeout
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                r => break r.map_err(|e| format!("create_volume({}) failed: {e}", req.name))?,
            }
        };
        self.made.lock().0.push(v.clone());
        Ok(v)
    }

    /// Tries a create that must fail; a volume it made anyway is remembered for the cleanup.
    async fn try_create(&self, req: &CreateVolumeRequest) -> Result<crate::Result<Volume>, String> {
        self.try_create_on(&self.provider, req).await
    }

    async fn try_create_on(
        &self,
        p: &Arc<dyn Provider>,
        req: &CreateVolumeRequest,
    ) -> Result<crate::Result<Volume>, String> {
        let r = self.timed("create_volume", p.create_volume(req)).await?;
        if let Ok(v) = &r {
            self.made.lock().0.push(v.clone());
        }
        Ok(r)
    }

    fn snapshot_request(&self, name: &str, v: &Volume) -> crate::SnapshotRequest {
        crate::SnapshotRequest {
            name: name.to_string(),
            source_handle: v.handle.clone(),
            source_attributes: v.attributes.clone(),
            parameters: BTreeMap::new(),
        }
    }

    async fn snapshot(&self, name: &str, v: &Volume) -> Result<crate::Snapshot, String> {
        let s = self
            .timed(
                "create_snapshot",
                self.provider
                    .create_snapshot(&self.snapshot_request(name, v)),
            )
            .await?
            .map_err(|e| format!("create_snapshot({name}) failed: {e}"))?;
        self.made.lock().1.push(s.id.clone());
        Ok(s)
    }

    /// Snapshots `v` and waits until the snapshot is ready (EBS: pending → completed; a
    /// provider that copies: the copy is done).
    async fn ready_snapshot(&self, name: &str, v: &Volume) -> Result<crate::Snapshot, String> {
        let deadline = tokio::time::Instant::now() + self.fixture.call_timeout;
        loop {
            let s = self.snapshot(name, v).await?;
            if s.ready {
                return Ok(s);
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "snapshot {} not ready within {:?}",
                s.id,
                self.fixture.call_timeout
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What the probe sees of `v`; `Ok(None)` without a probe.
    async fn probe(&self, v: &Volume) -> Option<Option<Probed>> {
        match &self.fixture.probe {
            Some(p) => Some(p.volume(v).await),
            None => None,
        }
    }

    /// Deletes what the last check made (detaching from the fixture's nodes first), ignoring
    /// what is already gone.
    async fn clean_up(&self) {
        let (volumes, snapshots) = std::mem::take(&mut *self.made.lock());
        let mut nodes = vec![self.fixture.node.clone()];
        if let Some(t) = &self.fixture.topology_fixture {
            nodes.push(t.inside_node.clone());
        }
        for v in volumes.iter().rev() {
            for node in &nodes {
                let _ = self
                    .timed(
                        "detach",
                        self.provider.detach(&self.detach_request(v, node)),
                    )
                    .await;
            }
            let _ = self.delete(v).await;
        }
        for id in snapshots {
            let _ = self
                .timed("delete_snapshot", self.provider.delete_snapshot(&id))
                .await;
        }
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

/// A check: its name, the reason to skip it (if it does not apply), and its body.
struct Check {
    name: &'static str,
    skip: fn(&Capabilities, &Fixture) -> Option<Skip>,
    run: fn(Arc<Ctx>) -> CheckFuture,
}

fn provisioning(c: &Capabilities, _: &Fixture) -> Option<Skip> {
    (!c.dynamic_provisioning).then_some(Skip::Capability("no dynamic provisioning"))
}

/// Skips unless the provider provisions and has `capability`.
fn provisioning_and(
    has: bool,
    lacks: &'static str,
) -> impl Fn(&Capabilities, &Fixture) -> Option<Skip> {
    move |c, f| provisioning(c, f).or((!has).then_some(Skip::Capability(lacks)))
}

/// Cut points tried by the crash check: the N-th time the create waits on its backend.
/// Sparse past the first few, so a provider with a long create (EBS) stays affordable.
const CUT_POINTS: [usize; 9] = [1, 2, 3, 4, 6, 9, 14, 22, 35];

fn checks() -> Vec<Check> {
    vec![
        Check {
            name: "class_parameters_are_checked_as_described",
            skip: |_, _| None,
            run: |cx| {
                Box::pin(async move {
                    let p = &cx.provider;
                    let base = &cx.fixture.parameters;
                    p.check_class_parameters(base)
                        .map_err(|e| format!("the fixture's parameters are refused: {e}"))?;
                    let described = p.class_parameters();
                    if described.is_empty() {
                        return Ok(());
                    }
                    let with = |name: &str, value: &str| {
                        let mut m = base.clone();
                        m.insert(name.to_string(), value.to_string());
                        m
                    };
                    expect_kind(
                        p.check_class_parameters(&with("notAParameter", "x")),
                        ErrorKind::InvalidArgument,
                        "a parameter the provider does not describe",
                    )?;
                    for d in described.iter().filter(|d| !d.numbered) {
                        // A default is what leaving the parameter out means, so writing it out
                        // where the fixture leaves it out must be taken.
                        if let (Some(default), false) = (d.default, base.contains_key(d.name)) {
                            p.check_class_parameters(&with(d.name, default))
                                .map_err(|e| {
                                    format!(
                                        "{}'s described default {default:?} is refused: {e}",
                                        d.name
                                    )
                                })?;
                        }
                        if d.required {
                            let mut without = base.clone();
                            without.remove(d.name);
                            expect_kind(
                                p.check_class_parameters(&without),
                                ErrorKind::InvalidArgument,
                                &format!("no {}, which is described as required", d.name),
                            )?;
                        }
                    }
                    Ok(())
                })
            },
        },
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
                    if let Some(seen) = cx.probe(&v).await {
                        let Some(seen) = seen else {
                            return Err(format!("the backend has no volume {}", v.handle));
                        };
                        if let Some(size) = seen.size_bytes {
                            ensure!(
                                size >= cx.fixture.volume_bytes,
                                "the backend's volume has {size} bytes, {} were asked for",
                                cx.fixture.volume_bytes
                            );
                        }
                    }
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
                        a.attributes == c.attributes && a.capacity_bytes == c.capacity_bytes,
                        "a restarted provider describes the volume differently: {a:?} vs {c:?}"
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
            name: "attributes_survive_a_restart",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    // The server keeps only the handle and attributes a create returned (on the
                    // PersistentVolume); another instance must manage the volume from those.
                    let v = cx
                        .create(&cx.provider, &cx.name("attrs"), cx.fixture.volume_bytes)
                        .await?;
                    let restarted = (cx.make)();
                    let node = cx.fixture.node.clone();
                    let first = cx
                        .timed("attach", cx.provider.attach(&cx.attach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("attach: {e}"))?;
                    let again = cx
                        .timed("attach", restarted.attach(&cx.attach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("attach from a restarted provider: {e}"))?;
                    ensure!(
                        first == again,
                        "a restarted provider attaches differently: {first:?} vs {again:?}"
                    );
                    cx.timed("detach", restarted.detach(&cx.detach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("detach from a restarted provider: {e}"))?;
                    cx.timed(
                        "delete_volume",
                        restarted.delete_volume(&DeleteVolumeRequest {
                            handle: v.handle.clone(),
                            attributes: v.attributes.clone(),
                        }),
                    )
                    .await?
                    .map_err(|e| format!("delete from a restarted provider: {e}"))?;
                    ensure!(
                        cx.listed(&cx.name("attrs")).await? == 0,
                        "still listed after a restarted provider deleted it"
                    );
                    Ok(())
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
                        .try_create(&cx.request(&name, cx.fixture.volume_bytes * 2))
                        .await?;
                    expect_kind(r, ErrorKind::AlreadyExists, "create with a different size")?;
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "same_name_with_other_parameters_is_already_exists",
            skip: |c, f| {
                provisioning(c, f).or(f
                    .other_parameters
                    .is_none()
                    .then_some(Skip::Fixture("no other parameters in the fixture")))
            },
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("params");
                    let v = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
                        .await?;
                    let mut req = cx.request(&name, cx.fixture.volume_bytes);
                    req.parameters = cx.fixture.other_parameters.clone().unwrap_or_default();
                    let r = cx.try_create(&req).await?;
                    expect_kind(r, ErrorKind::AlreadyExists, "create with other parameters")?;
                    ensure!(cx.listed(&name).await? == 1, "not exactly one {name}");
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "bad_parameters_are_invalid_and_create_nothing",
            skip: |c, f| {
                provisioning(c, f).or(f
                    .bad_parameters
                    .is_empty()
                    .then_some(Skip::Fixture("no bad parameters in the fixture")))
            },
            run: |cx| {
                Box::pin(async move {
                    for (i, bad) in cx.fixture.bad_parameters.iter().enumerate() {
                        let name = cx.name(&format!("bad{i}"));
                        let mut req = cx.request(&name, cx.fixture.volume_bytes);
                        req.parameters = bad.clone();
                        let r = cx.try_create(&req).await?;
                        expect_kind(
                            r,
                            ErrorKind::InvalidArgument,
                            &format!("parameters {bad:?}"),
                        )?;
                        ensure!(
                            cx.listed(&name).await? == 0,
                            "a create refused for {bad:?} left a volume behind"
                        );
                    }
                    Ok(())
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
                    if let Some(seen) = cx.probe(&v).await {
                        ensure!(seen.is_none(), "the backend still has {}", v.handle);
                    }
                    Ok(())
                })
            },
        },
        Check {
            name: "delete_leaves_a_neighbour_untouched",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let doomed = cx
                        .create(&cx.provider, &cx.name("doomed"), cx.fixture.volume_bytes)
                        .await?;
                    let neighbour = cx
                        .create(&cx.provider, &cx.name("neighbour"), cx.fixture.volume_bytes)
                        .await?;
                    let before = cx.probe(&neighbour).await;
                    cx.delete(&doomed).await?;
                    let all = cx
                        .timed("list_volumes", cx.provider.list_volumes())
                        .await?
                        .map_err(|e| format!("list_volumes failed: {e}"))?;
                    ensure!(
                        all.iter().any(|i| i.handle == neighbour.handle
                            && i.capacity_bytes == neighbour.capacity_bytes),
                        "the neighbour {} is no longer listed as it was",
                        neighbour.handle
                    );
                    let after = cx.probe(&neighbour).await;
                    ensure!(
                        before == after,
                        "deleting {} changed the neighbour in the backend: {before:?} → {after:?}",
                        doomed.handle
                    );
                    if let Some(seen) = after {
                        ensure!(seen.is_some(), "the backend lost the neighbour");
                    }
                    cx.delete(&neighbour).await
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
                            .try_create(&cx.request(bad, cx.fixture.volume_bytes))
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
                    .then_some(Skip::Fixture("no capacity limit in the fixture")))
            },
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("huge");
                    let bytes = cx.fixture.too_large_bytes.unwrap_or(i64::MAX);
                    let r = cx.try_create(&cx.request(&name, bytes)).await?;
                    expect_kind(r, ErrorKind::ResourceExhausted, "oversized create")?;
                    ensure!(cx.listed(&name).await? == 0, "a refused volume was listed");
                    Ok(())
                })
            },
        },
        Check {
            name: "a_crash_in_the_middle_of_a_create_converges",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    // Cut the create off at each of its first await points, as a crash would,
                    // then retry from a fresh instance: one volume, whatever was left half-made.
                    for at in CUT_POINTS {
                        let name = cx.name(&format!("cut{at}"));
                        let faulty: Arc<dyn Provider> = Arc::new(Faulty::new((cx.make)()).on_call(
                            "create_volume",
                            1,
                            Fault::CancelAtPending(at),
                        ));
                        let first = cx
                            .try_create_on(&faulty, &cx.request(&name, cx.fixture.volume_bytes))
                            .await?;
                        let v = cx
                            .create(&(cx.make)(), &name, cx.fixture.volume_bytes)
                            .await
                            .map_err(|e| format!("after a cut at await point {at}: {e}"))?;
                        ensure!(
                            cx.listed(&name).await? == 1,
                            "not exactly one {name} after a cut at await point {at}"
                        );
                        cx.delete(&v).await?;
                        if first.is_ok() {
                            // The create finished before the cut: later points are not reached.
                            break;
                        }
                    }
                    // And crash after the backend did all the work, before the answer.
                    let name = cx.name("lost");
                    let faulty: Arc<dyn Provider> = Arc::new(Faulty::new((cx.make)()).on_call(
                        "create_volume",
                        1,
                        Fault::CrashAfter,
                    ));
                    let lost = cx
                        .try_create_on(&faulty, &cx.request(&name, cx.fixture.volume_bytes))
                        .await?;
                    ensure!(lost.is_err(), "a crashed create answered");
                    let v = cx
                        .create(&(cx.make)(), &name, cx.fixture.volume_bytes)
                        .await?;
                    ensure!(cx.listed(&name).await? == 1, "not exactly one {name}");
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
            name: "attach_of_a_missing_volume_is_not_found",
            skip: provisioning,
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("vanished"), cx.fixture.volume_bytes)
                        .await?;
                    cx.delete(&v).await?;
                    let r = cx
                        .timed(
                            "attach",
                            cx.provider.attach(&cx.attach_request(&v, &cx.fixture.node)),
                        )
                        .await?;
                    expect_kind(r, ErrorKind::NotFound, "attach of a deleted volume")
                })
            },
        },
        Check {
            name: "delete_while_attached_is_failed_precondition",
            skip: |c, f| {
                provisioning(c, f)
                    .or((!c.attach_required).then_some(Skip::Capability("attach is not required")))
            },
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("busy");
                    let v = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
                        .await?;
                    let node = cx.fixture.node.clone();
                    cx.timed("attach", cx.provider.attach(&cx.attach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("attach: {e}"))?;
                    let r = cx
                        .timed(
                            "delete_volume",
                            cx.provider.delete_volume(&DeleteVolumeRequest {
                                handle: v.handle.clone(),
                                attributes: v.attributes.clone(),
                            }),
                        )
                        .await?;
                    expect_kind(r, ErrorKind::FailedPrecondition, "delete while attached")?;
                    ensure!(
                        cx.listed(&name).await? == 1,
                        "an attached volume was deleted"
                    );
                    cx.timed("detach", cx.provider.detach(&cx.detach_request(&v, &node)))
                        .await?
                        .map_err(|e| format!("detach: {e}"))?;
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
                    cx.timed(
                        "detach",
                        cx.provider.detach(&cx.detach_request(&v, &cx.fixture.node)),
                    )
                    .await?
                    .map_err(|e| format!("detach of an unattached volume: {e}"))?;
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "attach_to_an_unknown_node_is_not_found",
            skip: |c, f| {
                provisioning(c, f).or(f
                    .unknown_node
                    .is_none()
                    .then_some(Skip::Fixture("no unknown node in the fixture")))
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
                    expect_kind(r, ErrorKind::NotFound, "attach to an unknown node")?;
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "attachment_limit_is_resource_exhausted",
            skip: |c, f| {
                provisioning(c, f).or(c
                    .max_attachments_per_node
                    .is_none()
                    .then_some(Skip::Capability("no attachment limit")))
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
                    for (i, v) in volumes.iter().enumerate() {
                        let r = cx
                            .timed("attach", cx.provider.attach(&cx.attach_request(v, &node)))
                            .await?;
                        if i < 2 {
                            r.map_err(|e| format!("attach {i} under the limit failed: {e}"))?;
                        } else {
                            expect_kind(r, ErrorKind::ResourceExhausted, "attach over the limit")?;
                        }
                    }
                    for v in &volumes {
                        let _ = cx.provider.detach(&cx.detach_request(v, &node)).await;
                        cx.delete(v).await?;
                    }
                    Ok(())
                })
            },
        },
        Check {
            name: "topology_outside_is_invalid_argument",
            skip: |c, f| {
                provisioning(c, f)
                    .or((!c.topology).then_some(Skip::Capability("no topology")))
                    .or(f
                        .topology_fixture
                        .is_none()
                        .then_some(Skip::Fixture("no topology in the fixture")))
            },
            run: |cx| {
                Box::pin(async move {
                    let Some(t) = cx.fixture.topology_fixture.clone() else {
                        return Err("no topology fixture".into());
                    };
                    let name = cx.name("inside");
                    let mut req = cx.request(&name, cx.fixture.volume_bytes);
                    req.topology = t.inside.clone();
                    let v = cx.create_with(&cx.provider, req).await?;
                    ensure!(
                        v.accessible_topology.is_empty()
                            || v.accessible_topology
                                .iter()
                                .any(|a| a.admits(&t.inside_node.labels)),
                        "the volume's topology {:?} does not reach the node inside it",
                        v.accessible_topology
                    );
                    cx.timed(
                        "attach",
                        cx.provider.attach(&cx.attach_request(&v, &t.inside_node)),
                    )
                    .await?
                    .map_err(|e| format!("attach inside the topology: {e}"))?;
                    cx.timed(
                        "detach",
                        cx.provider.detach(&cx.detach_request(&v, &t.inside_node)),
                    )
                    .await?
                    .map_err(|e| format!("detach: {e}"))?;
                    let r = cx
                        .timed(
                            "attach",
                            cx.provider.attach(&cx.attach_request(&v, &t.outside_node)),
                        )
                        .await?;
                    expect_kind(r, ErrorKind::InvalidArgument, "attach outside the topology")?;
                    cx.delete(&v).await?;

                    let name = cx.name("outside");
                    let mut req = cx.request(&name, cx.fixture.volume_bytes);
                    req.topology = t.outside.clone();
                    let r = cx.try_create(&req).await?;
                    expect_kind(r, ErrorKind::InvalidArgument, "create outside the topology")?;
                    ensure!(
                        cx.listed(&name).await? == 0,
                        "a create refused for its topology left a volume behind"
                    );
                    Ok(())
                })
            },
        },
        Check {
            name: "modify_refuses_unknown_attributes_and_missing_volumes",
            skip: |c, f| {
                provisioning(c, f).or_else(|| {
                    (!c.volume_modification).then_some(Skip::Capability("no volume_modification"))
                })
            },
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("modify"), cx.fixture.volume_bytes)
                        .await?;
                    let modify = |handle: &str, parameters: &[(&str, &str)]| ModifyRequest {
                        handle: handle.to_string(),
                        attributes: v.attributes.clone(),
                        parameters: crate::params::from_pairs(parameters),
                    };
                    // To what it already is (no attributes asked): success, nothing to do.
                    cx.timed(
                        "modify_volume",
                        cx.provider.modify_volume(&modify(&v.handle, &[])),
                    )
                    .await?
                    .map_err(|e| format!("modify to the same attributes: {e}"))?;
                    let r = cx
                        .timed(
                            "modify_volume",
                            cx.provider.modify_volume(&modify(
                                &v.handle,
                                &[("conformance-unknown-attribute", "1")],
                            )),
                        )
                        .await?;
                    expect_kind(
                        r,
                        ErrorKind::InvalidArgument,
                        "modify with an unknown attribute",
                    )?;
                    cx.delete(&v).await?;
                    let r = cx
                        .timed(
                            "modify_volume",
                            cx.provider.modify_volume(&modify(&v.handle, &[])),
                        )
                        .await?;
                    expect_kind(r, ErrorKind::NotFound, "modify of a deleted volume")
                })
            },
        },
        Check {
            name: "capacity_falls_by_what_a_volume_takes",
            skip: |c, f| {
                provisioning(c, f).or_else(|| {
                    (!c.storage_capacity).then_some(Skip::Capability("no storage_capacity"))
                })
            },
            run: |cx| {
                Box::pin(async move {
                    let room = |reports: Vec<crate::CapacityReport>| -> i64 {
                        reports.iter().map(|r| r.available_bytes).sum()
                    };
                    let ask = || async {
                        cx.timed("capacity", cx.provider.capacity(&cx.fixture.parameters))
                            .await?
                            .map_err(|e| format!("capacity: {e}"))
                    };
                    let reports = ask().await?;
                    ensure!(!reports.is_empty(), "no capacity reported");
                    ensure!(
                        reports.iter().all(|r| r.available_bytes >= 0),
                        "a negative room: {reports:?}"
                    );
                    let before = room(reports);
                    let v = cx
                        .create(&cx.provider, &cx.name("room"), cx.fixture.volume_bytes)
                        .await?;
                    let after = room(ask().await?);
                    ensure!(
                        before - after >= cx.fixture.volume_bytes.min(before),
                        "{before} bytes free before a volume of {}, {after} after",
                        cx.fixture.volume_bytes
                    );
                    cx.delete(&v).await?;
                    let again = room(ask().await?);
                    ensure!(
                        again >= before,
                        "{before} bytes free before, {again} after the volume was deleted"
                    );
                    Ok(())
                })
            },
        },
        Check {
            name: "missing_capabilities_are_unsupported",
            skip: |c, _| {
                (c.dynamic_provisioning
                    && c.expansion
                    && c.snapshots
                    && c.volume_modification
                    && c.storage_capacity)
                    .then_some(Skip::Capability("every optional capability is on"))
            },
            run: |cx| {
                Box::pin(async move {
                    let handle = "conformance-not-a-volume".to_string();
                    if !cx.caps.dynamic_provisioning {
                        let r = cx
                            .try_create(&cx.request(&cx.name("unsup"), cx.fixture.volume_bytes))
                            .await?;
                        expect_kind(
                            r,
                            ErrorKind::Unsupported,
                            "create without dynamic provisioning",
                        )?;
                    }
                    if !cx.caps.expansion {
                        let r = cx
                            .timed(
                                "expand_volume",
                                cx.provider.expand_volume(&ExpandRequest {
                                    handle: handle.clone(),
                                    attributes: BTreeMap::new(),
                                    capacity_bytes: cx.fixture.volume_bytes,
                                }),
                            )
                            .await?;
                        expect_kind(r, ErrorKind::Unsupported, "expand without expansion")?;
                    }
                    if !cx.caps.volume_modification {
                        let r = cx
                            .timed(
                                "modify_volume",
                                cx.provider.modify_volume(&ModifyRequest {
                                    handle: handle.clone(),
                                    attributes: BTreeMap::new(),
                                    parameters: BTreeMap::new(),
                                }),
                            )
                            .await?;
                        expect_kind(r, ErrorKind::Unsupported, "modify without modification")?;
                    }
                    if !cx.caps.storage_capacity {
                        let r = cx
                            .timed("capacity", cx.provider.capacity(&cx.fixture.parameters))
                            .await?;
                        expect_kind(
                            r,
                            ErrorKind::Unsupported,
                            "capacity without storage_capacity",
                        )?;
                    }
                    if !cx.caps.snapshots {
                        let r = cx
                            .timed(
                                "create_snapshot",
                                cx.provider.create_snapshot(&crate::SnapshotRequest {
                                    name: cx.name("unsup-snap"),
                                    source_handle: handle.clone(),
                                    source_attributes: BTreeMap::new(),
                                    parameters: BTreeMap::new(),
                                }),
                            )
                            .await?;
                        expect_kind(r, ErrorKind::Unsupported, "snapshot without snapshots")?;
                        let r = cx
                            .timed("delete_snapshot", cx.provider.delete_snapshot(&handle))
                            .await?;
                        expect_kind(
                            r,
                            ErrorKind::Unsupported,
                            "snapshot delete without snapshots",
                        )?;
                    }
                    Ok(())
                })
            },
        },
        Check {
            name: "expansion_grows_and_never_shrinks",
            skip: |c, f| provisioning_and(c.expansion, "no expansion")(c, f),
            run: |cx| {
                Box::pin(async move {
                    let name = cx.name("grow");
                    let v = cx
                        .create(&cx.provider, &name, cx.fixture.volume_bytes)
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
                    // The backend agrees: the listing, and the probe where there is one.
                    let all = cx
                        .timed("list_volumes", cx.provider.list_volumes())
                        .await?
                        .map_err(|e| format!("list_volumes failed: {e}"))?;
                    let listed = all.iter().find(|i| i.handle == v.handle);
                    ensure!(
                        listed.is_some_and(|i| i.capacity_bytes >= bigger),
                        "after expansion the listing says {:?}",
                        listed.map(|i| i.capacity_bytes)
                    );
                    if let Some(Some(Probed {
                        size_bytes: Some(size),
                    })) = cx.probe(&v).await
                    {
                        ensure!(
                            size >= bigger,
                            "after expansion the backend has {size} bytes"
                        );
                    }
                    let again = cx
                        .timed("expand_volume", cx.provider.expand_volume(&req(bigger)))
                        .await?
                        .map_err(|e| format!("repeated expand: {e}"))?;
                    ensure!(
                        again.capacity_bytes == grown.capacity_bytes,
                        "a repeated expansion changed the size to {}",
                        again.capacity_bytes
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
            name: "expansion_of_a_missing_volume_is_not_found",
            skip: |c, f| provisioning_and(c.expansion, "no expansion")(c, f),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("nogrow"), cx.fixture.volume_bytes)
                        .await?;
                    cx.delete(&v).await?;
                    let r = cx
                        .timed(
                            "expand_volume",
                            cx.provider.expand_volume(&ExpandRequest {
                                handle: v.handle.clone(),
                                attributes: v.attributes.clone(),
                                capacity_bytes: cx.fixture.volume_bytes * 2,
                            }),
                        )
                        .await?;
                    expect_kind(r, ErrorKind::NotFound, "expansion of a deleted volume")
                })
            },
        },
        Check {
            name: "snapshots_are_idempotent_and_deletable",
            skip: |c, f| provisioning_and(c.snapshots, "no snapshots")(c, f),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("snap"), cx.fixture.volume_bytes)
                        .await?;
                    let name = cx.name("snapshot");
                    let a = cx.snapshot(&name, &v).await?;
                    let b = cx.snapshot(&name, &v).await?;
                    ensure!(a.id == b.id, "snapshot create is not idempotent");
                    ensure!(
                        a.source_handle == v.handle,
                        "the snapshot's source is {}, not {}",
                        a.source_handle,
                        v.handle
                    );
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
            skip: |c, f| provisioning_and(c.snapshots, "no snapshots")(c, f),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(&cx.provider, &cx.name("origin"), cx.fixture.volume_bytes)
                        .await?;
                    let snapshot = cx.ready_snapshot(&cx.name("restore-snapshot"), &v).await?;
                    let info = cx
                        .timed("snapshot_info", cx.provider.snapshot_info(&snapshot.id))
                        .await?
                        .map_err(|e| format!("snapshot_info({}): {e}", snapshot.id))?;
                    ensure!(
                        info.id == snapshot.id
                            && info.ready
                            && info.size_bytes == snapshot.size_bytes,
                        "snapshot_info says {info:?}, create_snapshot said {snapshot:?}"
                    );
                    let r = cx
                        .timed(
                            "snapshot_info",
                            cx.provider
                                .snapshot_info(&format!("{}-missing", snapshot.id)),
                        )
                        .await?;
                    expect_kind(
                        r,
                        ErrorKind::NotFound,
                        "snapshot_info of a missing snapshot",
                    )?;
                    let small_name = cx.name("restore-small");
                    let mut small = cx.request(&small_name, snapshot.size_bytes / 2);
                    small.content_source = Some(ContentSource::Snapshot {
                        snapshot_id: snapshot.id.clone(),
                    });
                    let r = cx.try_create(&small).await?;
                    expect_kind(
                        r,
                        ErrorKind::InvalidArgument,
                        "a restore into a smaller volume",
                    )?;
                    ensure!(
                        cx.listed(&small_name).await? == 0,
                        "a refused restore left a volume behind"
                    );
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
                        .create_with(&cx.provider, req)
                        .await
                        .map_err(|e| format!("restore from {}: {e}", snapshot.id))?;
                    ensure!(
                        restored.capacity_bytes >= snapshot.size_bytes,
                        "restored volume has {} bytes, the snapshot {}",
                        restored.capacity_bytes,
                        snapshot.size_bytes
                    );
                    ensure!(
                        restored.handle != v.handle,
                        "the restore returned the origin volume"
                    );
                    ensure!(
                        cx.listed(&cx.name("restored")).await? == 1,
                        "the restored volume is not listed"
                    );
                    if let Some(seen) = cx.probe(&restored).await {
                        ensure!(seen.is_some(), "the backend has no restored volume");
                    }
                    let missing_name = cx.name("from-missing");
                    let mut missing = cx.request(&missing_name, snapshot.size_bytes);
                    missing.content_source = Some(ContentSource::Snapshot {
                        snapshot_id: format!("{}-missing", snapshot.id),
                    });
                    let refused = cx.try_create(&missing).await?;
                    ensure!(
                        refused.is_err(),
                        "a volume was made from a snapshot that does not exist"
                    );
                    ensure!(
                        cx.listed(&missing_name).await? == 0,
                        "a refused restore left a volume behind"
                    );
                    cx.delete(&restored).await?;
                    cx.timed("delete_snapshot", cx.provider.delete_snapshot(&snapshot.id))
                        .await?
                        .map_err(|e| e.to_string())?;
                    cx.delete(&v).await
                })
            },
        },
        Check {
            name: "volumes_clone_other_volumes",
            skip: |c, f| provisioning_and(c.clones, "no clones")(c, f),
            run: |cx| {
                Box::pin(async move {
                    let v = cx
                        .create(
                            &cx.provider,
                            &cx.name("clone-origin"),
                            cx.fixture.volume_bytes,
                        )
                        .await?;
                    let source = ContentSource::Volume {
                        handle: v.handle.clone(),
                        attributes: v.attributes.clone(),
                    };
                    let mut req = cx.request(&cx.name("clone"), cx.fixture.volume_bytes * 2);
                    req.content_source = Some(source.clone());
                    let clone = cx
                        .create_with(&cx.provider, req.clone())
                        .await
                        .map_err(|e| format!("clone of {}: {e}", v.handle))?;
                    ensure!(
                        clone.handle != v.handle,
                        "the clone returned the origin volume"
                    );
                    ensure!(
                        clone.capacity_bytes >= cx.fixture.volume_bytes * 2,
                        "a clone into a bigger volume has {} bytes",
                        clone.capacity_bytes
                    );
                    let again = cx.create_with(&cx.provider, req).await?;
                    ensure!(
                        again.handle == clone.handle,
                        "clone create is not idempotent"
                    );
                    if let Some(seen) = cx.probe(&clone).await {
                        ensure!(seen.is_some(), "the backend has no cloned volume");
                    }
                    let small_name = cx.name("clone-small");
                    let mut small = cx.request(&small_name, cx.fixture.volume_bytes / 2);
                    small.content_source = Some(source);
                    let r = cx.try_create(&small).await?;
                    expect_kind(
                        r,
                        ErrorKind::InvalidArgument,
                        "a clone into a smaller volume",
                    )?;
                    let missing_name = cx.name("clone-missing");
                    let mut missing = cx.request(&missing_name, cx.fixture.volume_bytes);
                    missing.content_source = Some(ContentSource::Volume {
                        handle: format!("{}-missing", v.handle),
                        attributes: v.attributes.clone(),
                    });
                    let r = cx.try_create(&missing).await?;
                    ensure!(
                        r.is_err(),
                        "a volume was cloned from one that does not exist"
                    );
                    for name in [&small_name, &missing_name] {
                        ensure!(
                            cx.listed(name).await? == 0,
                            "a refused clone left a volume behind"
                        );
                    }
                    cx.delete(&clone).await?;
                    cx.delete(&v).await
                })
            },
        },
    ]
}

/// The names of every check, for [`Fixture::skips`].
pub fn check_names() -> Vec<&'static str> {
    checks().iter().map(|c| c.name).collect()
}

/// Runs every applicable check against providers built by `make`. Each check runs in its own
/// task (a panic fails that check only), and what it made is deleted after it either way.
pub async fn run<F>(make: F, fixture: Fixture) -> Report
where
    F: Fn() -> Arc<dyn Provider> + Send + Sync + 'static,
{
    let make: Factory = Arc::new(make);
    let provider = make();
    let caps = provider.capabilities();
    let mut report = Report::default();
    let checks = checks();
    for (name, _) in &fixture.skips {
        if !checks.iter().any(|c| c.name == *name) {
            report.failed.push((
                *name,
                "declared as skipped, but there is no such check".into(),
            ));
        }
    }
    let cx = Arc::new(Ctx {
        make,
        provider,
        caps,
        fixture,
        made: parking_lot::Mutex::new((Vec::new(), Vec::new())),
    });
    for check in checks {
        match (check.skip)(&cx.caps, &cx.fixture) {
            Some(Skip::Capability(why)) => {
                report.skipped.push((check.name, why.to_string(), true));
                continue;
            }
            Some(Skip::Fixture(why)) => {
                let declared = cx.fixture.skips.iter().find(|(n, _)| *n == check.name);
                let why = match declared {
                    Some((_, because)) => format!("{why}: {because}"),
                    None => why.to_string(),
                };
                report.skipped.push((check.name, why, declared.is_some()));
                continue;
            }
            None => {}
        }
        let outcome = match tokio::spawn((check.run)(cx.clone())).await {
            Ok(r) => r,
            Err(e) => Err(format!("the check panicked: {e}")),
        };
        cx.clean_up().await;
        match outcome {
            Ok(()) => report.passed.push(check.name),
            Err(e) => report.failed.push((check.name, e)),
        }
    }
    report
}
