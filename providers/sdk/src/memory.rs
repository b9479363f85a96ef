//! An in-memory provider: volumes are entries in a map, attachments are sets of node names.
//!
//! It is a complete implementation of the contract, not a mock: it enforces capacity,
//! idempotency, attachment limits and delete-while-attached, so the controllers can be tested
//! and benchmarked against a provider whose volumes move between nodes (like a network disk)
//! without any infrastructure. It is also the SDK's own conformance subject. State lives in a
//! shared handle, so a second instance over the same state stands for a restarted provider.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::{
    AccessMode, AttachRequest, Capabilities, CapacityReport, ContentSource, CreateVolumeRequest,
    DeleteVolumeRequest, DetachRequest, ExpandRequest, Expanded, ModifyRequest, Progress, Provider,
    ProviderError, PublishInfo, Result, Snapshot, SnapshotRequest, Volume, VolumeInfo,
    validate_volume_name,
};

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    capacity_bytes: i64,
    parameters: BTreeMap<String, String>,
    /// Its mutable attributes (a VolumeAttributesClass's parameters), as last set.
    mutable: BTreeMap<String, String>,
    /// The snapshot (`snapshot:<id>`) or volume (`volume:<handle>`) the volume was copied from.
    restored_from: Option<String>,
}

#[derive(Debug, Default)]
pub struct MemoryState {
    volumes: HashMap<String, Entry>,
    attachments: HashMap<String, HashSet<String>>,
    snapshots: HashMap<String, Snapshot>,
    /// The class parameters each snapshot was made with, by snapshot id.
    snapshot_parameters: HashMap<String, BTreeMap<String, String>>,
    /// Volumes being copied from a source: how many more `create_volume` calls answer
    /// `InProgress` before the copy is done.
    copying: HashMap<String, u32>,
}

impl MemoryState {
    /// The ids of the snapshots there are.
    pub fn snapshot_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.snapshots.values().map(|s| s.id.clone()).collect();
        ids.sort();
        ids
    }

    /// The class parameters a snapshot was made with.
    pub fn snapshot_parameters(&self, id: &str) -> Option<BTreeMap<String, String>> {
        self.snapshot_parameters.get(id).cloned()
    }

    /// Where a volume's data came from: `snapshot:<id>` or `volume:<handle>`.
    pub fn copied_from(&self, name: &str) -> Option<String> {
        self.volumes.get(name).and_then(|e| e.restored_from.clone())
    }
}

/// Shared state: clone it into several providers to simulate restarts.
pub type SharedState = Arc<Mutex<MemoryState>>;

#[derive(Clone)]
pub struct MemoryProvider {
    name: String,
    state: SharedState,
    /// Total bytes all volumes may use (`None`: unlimited).
    capacity_bytes: Option<i64>,
    max_attachments_per_node: Option<u32>,
    /// Simulated latency of attach and detach.
    attach_delay: Duration,
    /// A volume made from a snapshot or another volume answers `InProgress` this many times
    /// before it is done, and a snapshot is not ready for this many calls, as a provider
    /// copying data does.
    copy_rounds: u32,
}

/// The provisioner name of the server's in-memory provider.
pub const NAME: &str = "memory.stowage.dev";

/// `providers.memory` in the server's config file.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Simulated attach/detach latency, e.g. `50ms`.
    pub attach_delay: Option<String>,
    /// Total capacity, as a quantity (default: unlimited).
    pub capacity: Option<String>,
}

/// An in-memory provider in a server: volumes that behave like network disks, for trying
/// Stowage out and for testing; never for data.
impl crate::factory::Build for MemoryProvider {
    const SECTION: &'static str = "memory";
    type Config = Config;

    async fn build(
        config: Config,
        _env: &crate::factory::Env,
    ) -> std::result::Result<Self, crate::factory::BuildError> {
        use crate::factory::BuildError;
        let mut p = MemoryProvider::new(NAME);
        if let Some(d) = &config.attach_delay {
            p = p.with_attach_delay(
                crate::duration::parse_duration(d)
                    .ok_or_else(|| BuildError(format!("attachDelay {d:?} is not a duration")))?,
            );
        }
        if let Some(c) = &config.capacity {
            p = p.with_capacity(
                crate::quantity::parse_bytes(c)
                    .ok_or_else(|| BuildError(format!("capacity {c:?} is not a size")))?,
            );
        }
        Ok(p)
    }
}

/// The mutable attributes the in-memory provider has: `iops`, a whole number from 100 to
/// 64,000, and `tier`, `standard` or `fast`. Anything else can never be reached.
fn check_mutable(parameters: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in parameters {
        let ok = match k.as_str() {
            "iops" => v.parse::<u32>().is_ok_and(|n| (100..=64_000).contains(&n)),
            "tier" => matches!(v.as_str(), "standard" | "fast"),
            _ => {
                return Err(ProviderError::invalid(format!(
                    "unknown mutable parameter {k:?} (known: iops, tier)"
                )));
            }
        };
        if !ok {
            return Err(ProviderError::invalid(format!(
                "{k} {v:?} is out of range (iops: 100 to 64000; tier: standard or fast)"
            )));
        }
    }
    Ok(())
}

impl MemoryProvider {
    pub fn new(name: impl Into<String>) -> Self {
        MemoryProvider {
            name: name.into(),
            state: SharedState::default(),
            capacity_bytes: None,
            max_attachments_per_node: Some(128),
            attach_delay: Duration::ZERO,
            copy_rounds: 0,
        }
    }

    pub fn with_state(mut self, state: SharedState) -> Self {
        self.state = state;
        self
    }

    pub fn with_capacity(mut self, bytes: i64) -> Self {
        self.capacity_bytes = Some(bytes);
        self
    }

    /// Copies (restores and clones) take `rounds` extra calls to finish.
    pub fn with_copy_rounds(mut self, rounds: u32) -> Self {
        self.copy_rounds = rounds;
        self
    }

    pub fn with_attach_delay(mut self, d: Duration) -> Self {
        self.attach_delay = d;
        self
    }

    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// A volume's mutable attributes, as last created or modified.
    pub fn mutable_attributes(&self, handle: &str) -> Option<BTreeMap<String, String>> {
        let state = self.state.lock();
        let e = state
            .volumes
            .values()
            .find(|e| handle_of(&e.name) == handle)?;
        Some(e.mutable.clone())
    }

    /// The nodes a volume is attached to now.
    pub fn attached_nodes(&self, handle: &str) -> Vec<String> {
        let mut nodes: Vec<String> = self
            .state
            .lock()
            .attachments
            .get(handle)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        nodes.sort();
        nodes
    }
}

fn handle_of(name: &str) -> String {
    format!("mem-{name}")
}

#[async_trait::async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: true,
            expansion: true,
            node_expansion: false,
            snapshots: true,
            clones: true,
            access_modes: AccessMode::ALL.to_vec(),
            topology: false,
            max_attachments_per_node: self.max_attachments_per_node,
            volume_modification: true,
            storage_capacity: self.capacity_bytes.is_some(),
        }
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        validate_volume_name(&req.name)?;
        check_mutable(&req.mutable_parameters)?;
        if req.capacity_bytes <= 0 {
            return Err(ProviderError::invalid("capacity must be positive"));
        }
        let mut state = self.state.lock();
        let restored_from = match &req.content_source {
            None => None,
            Some(ContentSource::Snapshot { snapshot_id }) => {
                let snapshot = state
                    .snapshots
                    .values()
                    .find(|s| &s.id == snapshot_id)
                    .ok_or_else(|| {
                        ProviderError::not_found(format!("snapshot {snapshot_id} not found"))
                    })?;
                if req.capacity_bytes < snapshot.size_bytes {
                    return Err(ProviderError::invalid(format!(
                        "{} bytes requested, less than the {} bytes of snapshot {snapshot_id}",
                        req.capacity_bytes, snapshot.size_bytes
                    )));
                }
                if !snapshot.ready {
                    return Err(ProviderError::precondition(format!(
                        "snapshot {snapshot_id} is not ready yet"
                    )));
                }
                Some(format!("snapshot:{snapshot_id}"))
            }
            Some(ContentSource::Volume { handle, .. }) => {
                let source = state
                    .volumes
                    .values()
                    .find(|e| &handle_of(&e.name) == handle)
                    .ok_or_else(|| {
                        ProviderError::not_found(format!("volume {handle} not found"))
                    })?;
                if req.capacity_bytes < source.capacity_bytes {
                    return Err(ProviderError::invalid(format!(
                        "{} bytes requested, less than the {} bytes of volume {handle}",
                        req.capacity_bytes, source.capacity_bytes
                    )));
                }
                Some(format!("volume:{handle}"))
            }
        };
        if let Some(e) = state.volumes.get(&req.name) {
            if e.capacity_bytes != req.capacity_bytes
                || e.parameters != req.parameters
                || e.restored_from != restored_from
            {
                return Err(ProviderError::already_exists(format!(
                    "volume {} exists with other parameters",
                    req.name
                )));
            }
        } else {
            let used: i64 = state.volumes.values().map(|e| e.capacity_bytes).sum();
            if let Some(cap) = self.capacity_bytes
                && used.saturating_add(req.capacity_bytes) > cap
            {
                return Err(ProviderError::exhausted(format!(
                    "{} bytes requested, {} of {cap} free",
                    req.capacity_bytes,
                    cap - used
                )));
            }
            state.volumes.insert(
                req.name.clone(),
                Entry {
                    name: req.name.clone(),
                    capacity_bytes: req.capacity_bytes,
                    parameters: req.parameters.clone(),
                    mutable: req.mutable_parameters.clone(),
                    restored_from,
                },
            );
        }
        if req.content_source.is_some() && self.copy_rounds > 0 {
            let left = state
                .copying
                .entry(req.name.clone())
                .or_insert(self.copy_rounds);
            if *left > 0 {
                let done = self.copy_rounds - *left;
                *left -= 1;
                return Err(ProviderError::in_progress(
                    &format!("copying into volume {}", req.name),
                    Progress {
                        done_bytes: req.capacity_bytes / self.copy_rounds as i64 * done as i64,
                        total_bytes: req.capacity_bytes,
                    },
                ));
            }
        }
        Ok(Volume {
            handle: handle_of(&req.name),
            capacity_bytes: req.capacity_bytes,
            attributes: BTreeMap::new(),
            accessible_topology: Vec::new(),
        })
    }

    /// One pool reachable from every node (a network disk's).
    async fn capacity(
        &self,
        _parameters: &BTreeMap<String, String>,
    ) -> Result<Vec<CapacityReport>> {
        let Some(cap) = self.capacity_bytes else {
            return Err(ProviderError::unsupported("no capacity is set"));
        };
        let used: i64 = self
            .state
            .lock()
            .volumes
            .values()
            .map(|e| e.capacity_bytes)
            .sum();
        Ok(vec![CapacityReport {
            topology: Default::default(),
            available_bytes: (cap - used).max(0),
            maximum_volume_bytes: None,
        }])
    }

    async fn modify_volume(&self, req: &ModifyRequest) -> Result<()> {
        check_mutable(&req.parameters)?;
        let mut state = self.state.lock();
        let entry = state
            .volumes
            .values_mut()
            .find(|e| handle_of(&e.name) == req.handle)
            .ok_or_else(|| ProviderError::not_found(format!("volume {} not found", req.handle)))?;
        entry.mutable = req.parameters.clone();
        Ok(())
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()> {
        let mut state = self.state.lock();
        if state
            .attachments
            .get(&req.handle)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ProviderError::precondition(format!(
                "volume {} is still attached",
                req.handle
            )));
        }
        if let Some(name) = req.handle.strip_prefix("mem-") {
            state.copying.remove(name);
        }
        state
            .volumes
            .retain(|name, _| handle_of(name) != req.handle);
        state.attachments.remove(&req.handle);
        Ok(())
    }

    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo> {
        if !self.attach_delay.is_zero() {
            tokio::time::sleep(self.attach_delay).await;
        }
        if req.node.name.is_empty() {
            return Err(ProviderError::not_found("node has no name"));
        }
        let mut state = self.state.lock();
        if !state
            .volumes
            .values()
            .any(|e| handle_of(&e.name) == req.handle)
        {
            return Err(ProviderError::not_found(format!(
                "volume {} not found",
                req.handle
            )));
        }
        let on_node = state
            .attachments
            .values()
            .filter(|nodes| nodes.contains(&req.node.name))
            .count() as u32;
        let already = state
            .attachments
            .get(&req.handle)
            .is_some_and(|n| n.contains(&req.node.name));
        let limit = req.node.max_attachments.or(self.max_attachments_per_node);
        if !already && limit.is_some_and(|l| on_node >= l) {
            return Err(ProviderError::exhausted(format!(
                "node {} has {on_node} volumes attached, its limit",
                req.node.name
            )));
        }
        state
            .attachments
            .entry(req.handle.clone())
            .or_default()
            .insert(req.node.name.clone());
        Ok(BTreeMap::from([
            ("type".to_string(), "memory".to_string()),
            (
                "devicePath".to_string(),
                format!("/dev/memory/{}", req.handle),
            ),
        ]))
    }

    async fn detach(&self, req: &DetachRequest) -> Result<()> {
        if !self.attach_delay.is_zero() {
            tokio::time::sleep(self.attach_delay).await;
        }
        if let Some(nodes) = self.state.lock().attachments.get_mut(&req.handle) {
            nodes.remove(&req.node.name);
        }
        Ok(())
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> Result<Expanded> {
        let mut state = self.state.lock();
        let used: i64 = state.volumes.values().map(|e| e.capacity_bytes).sum();
        let entry = state
            .volumes
            .values_mut()
            .find(|e| handle_of(&e.name) == req.handle)
            .ok_or_else(|| ProviderError::not_found(format!("volume {} not found", req.handle)))?;
        let more = req.capacity_bytes.saturating_sub(entry.capacity_bytes);
        if let Some(cap) = self.capacity_bytes
            && more > 0
            && used.saturating_add(more) > cap
        {
            return Err(ProviderError::exhausted(format!(
                "{more} more bytes asked for, {} of {cap} free",
                cap - used
            )));
        }
        entry.capacity_bytes = entry.capacity_bytes.max(req.capacity_bytes);
        Ok(Expanded {
            capacity_bytes: entry.capacity_bytes,
            in_progress: None,
        })
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        Ok(self
            .state
            .lock()
            .volumes
            .values()
            .map(|e| VolumeInfo {
                name: e.name.clone(),
                handle: handle_of(&e.name),
                capacity_bytes: e.capacity_bytes,
            })
            .collect())
    }

    /// Snapshot class parameters: `tag`, any value. Anything else is `InvalidArgument`.
    async fn create_snapshot(&self, req: &SnapshotRequest) -> Result<Snapshot> {
        validate_volume_name(&req.name)?;
        if let Some(k) = req.parameters.keys().find(|k| *k != "tag") {
            return Err(ProviderError::invalid(format!(
                "unknown snapshot parameter {k:?} (known: tag)"
            )));
        }
        let mut state = self.state.lock();
        let size = state
            .volumes
            .values()
            .find(|e| handle_of(&e.name) == req.source_handle)
            .map(|e| e.capacity_bytes)
            .ok_or_else(|| {
                ProviderError::not_found(format!("volume {} not found", req.source_handle))
            })?;
        // Cut like a copying provider's: not ready for `copy_rounds` calls.
        let rounds = self.copy_rounds;
        let left = state
            .copying
            .entry(format!("snapshot/{}", req.name))
            .or_insert(rounds);
        let copying = *left > 0;
        let progress = copying.then(|| Progress {
            done_bytes: size / rounds.max(1) as i64 * (rounds - *left) as i64,
            total_bytes: size,
        });
        if copying {
            *left -= 1;
        }
        let snapshot = state
            .snapshots
            .entry(req.name.clone())
            .or_insert_with(|| Snapshot {
                id: format!("snap-{}", req.name),
                source_handle: req.source_handle.clone(),
                size_bytes: size,
                ready: false,
                progress: None,
            });
        snapshot.ready = !copying;
        snapshot.progress = progress;
        let snapshot = snapshot.clone();
        state
            .snapshot_parameters
            .insert(snapshot.id.clone(), req.parameters.clone());
        Ok(snapshot)
    }

    async fn snapshot_info(&self, id: &str) -> Result<Snapshot> {
        self.state
            .lock()
            .snapshots
            .values()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| ProviderError::not_found(format!("snapshot {id} not found")))
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        let mut state = self.state.lock();
        if let Some(name) = id.strip_prefix("snap-") {
            state.copying.remove(&format!("snapshot/{name}"));
        }
        state.snapshots.retain(|_, s| s.id != id);
        state.snapshot_parameters.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeInfo;
    use crate::conformance::{Fixture, Probed, probe_with, run};

    #[tokio::test]
    async fn the_memory_provider_passes_the_conformance_kit() {
        let state = SharedState::default();
        let shared = state.clone();
        let make = move || -> Arc<dyn Provider> {
            Arc::new(
                MemoryProvider::new(NAME)
                    .with_state(shared.clone())
                    .with_capacity(64 << 30),
            )
        };
        let mut fixture = Fixture::new(NodeInfo {
            name: "node-1".into(),
            ..Default::default()
        });
        fixture.too_large_bytes = Some(65 << 30);
        fixture.other_parameters = Some(BTreeMap::from([("tier".into(), "fast".into())]));
        fixture.probe = Some(probe_with(move |v| {
            let state = state.clone();
            async move {
                let state = state.lock();
                state
                    .volumes
                    .values()
                    .find(|e| handle_of(&e.name) == v.handle)
                    .map(|e| Probed {
                        size_bytes: Some(e.capacity_bytes),
                    })
            }
        }));
        fixture.skips = vec![
            (
                "bad_parameters_are_invalid_and_create_nothing",
                "the memory provider takes any parameters",
            ),
            (
                "attach_to_an_unknown_node_is_not_found",
                "the memory provider has no list of nodes",
            ),
        ];
        run(make, fixture).await.assert_passed();
    }

    #[tokio::test]
    async fn the_kit_fails_a_provider_that_breaks_the_contract() {
        // A provider that loses every answer after doing the work: the kit must notice.
        let state = SharedState::default();
        let make = move || -> Arc<dyn Provider> {
            Arc::new(
                crate::faults::Faulty::new(Arc::new(
                    MemoryProvider::new(NAME).with_state(state.clone()),
                ))
                .on_call(
                    "create_volume",
                    1,
                    crate::faults::Fault::Fail(crate::ErrorKind::Temporary),
                ),
            )
        };
        let fixture = Fixture::new(NodeInfo::default());
        let report = run(make, fixture).await;
        assert!(!report.failed.is_empty(), "{}", report.summary());
        let undeclared = report.skipped.iter().filter(|(_, _, d)| !d).count();
        assert!(undeclared > 0, "fixture gaps must show as undeclared skips");
    }
}
