//! Stowage's AWS EBS provider (`ebs.stowage.dev`): a volume is an EBS volume in one
//! availability zone, attached to the EC2 instance of the node that uses it.
//!
//! - Class parameters are checked against AWS's limits before any call ([`params`]).
//! - Every volume is tagged with its name and this installation's id when it is created (the
//!   tags are part of CreateVolume, so there is no untagged moment). The provider keeps an
//!   index of its volumes by name, read once from EC2; a create looks there first, and after a
//!   create whose outcome is unknown (a timeout) it asks EC2 by tag before trying again. So a
//!   crash or a retry never makes a second volume for a claim. The ClientToken is derived from
//!   the name as well, for AWS's own idempotency.
//! - Device names are allocated per instance under a lock, with a per-instance limit
//!   ([`devices`]); zone mismatches are refused before calling AWS.
//! - Waiting for a state is batched ([`poller`]): one DescribeVolumes serves every volume being
//!   waited for at that moment.
//! - Every EC2 HTTP attempt is counted by API and outcome ([`ec2`]); the client retries
//!   adaptively (backing off under `RequestLimitExceeded`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification, VolumeType};
use parking_lot::Mutex;
use stowage_provider::keyed_lock::KeyedLock;
use stowage_provider::{
    AccessMode, AttachRequest, Capabilities, ContentSource, CreateVolumeRequest,
    DeleteVolumeRequest, DetachRequest, ExpandRequest, Expanded, NodeInfo, Provider, ProviderError,
    PublishInfo, Result, Snapshot, Topology, Volume, VolumeInfo, validate_volume_name,
};

pub mod config;
pub mod devices;
pub mod ec2;
pub mod params;
pub mod poller;
pub mod testing;

pub use aws_sdk_ec2;
pub use config::Config;
use devices::{Devices, attach_limit_for};
use ec2::{CallCounts, classify, code};
use params::{GIB, NAME_TAG, OWNER_TAG, VolumeSpec, gib_for, limits_of};
use poller::{Poller, VolumeView};

pub const NAME: &str = "ebs.stowage.dev";
/// The topology key volumes and nodes are matched on.
pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";
const ZONE_KEYS: [&str; 2] = [ZONE_KEY, "topology.ebs.csi.aws.com/zone"];

/// What the provider knows of an instance.
#[derive(Clone, Debug)]
struct InstanceInfo {
    zone: String,
    instance_type: String,
}

pub struct EbsProvider {
    client: aws_sdk_ec2::Client,
    config: Config,
    owner: String,
    counts: Arc<CallCounts>,
    poller: Arc<Poller>,
    devices: Devices,
    /// Per volume name (creates) and per volume id (everything else).
    locks: KeyedLock,
    /// One DescribeInstances per instance, however many attaches to it start at once.
    instance_locks: KeyedLock,
    /// Our volumes by name; `None` until read from EC2.
    index: Mutex<Option<HashMap<String, String>>>,
    index_loading: tokio::sync::Mutex<()>,
    /// Names whose CreateVolume may or may not have happened (the call timed out).
    uncertain: Mutex<HashSet<String>>,
    instances: Mutex<HashMap<String, InstanceInfo>>,
}

/// `aws:///us-east-1a/i-0123` → (zone, instance id).
pub fn parse_provider_id(id: &str) -> Option<(String, String)> {
    let rest = id.strip_prefix("aws://")?;
    let mut parts = rest.trim_start_matches('/').rsplitn(2, '/');
    let instance = parts.next()?.to_string();
    let zone = parts.next().unwrap_or_default().to_string();
    (instance.starts_with("i-") && instance.len() > 2).then_some((zone, instance))
}

fn node_instance(node: &NodeInfo) -> Result<(String, String)> {
    let parsed = node.provider_id.as_deref().and_then(parse_provider_id);
    let Some((zone, instance)) = parsed else {
        return Err(ProviderError::invalid(format!(
            "node {} has no spec.providerID like aws:///<zone>/<instance-id>",
            node.name
        )));
    };
    let zone = if zone.is_empty() {
        ZONE_KEYS
            .iter()
            .find_map(|k| node.labels.get(*k).cloned())
            .unwrap_or_default()
    } else {
        zone
    };
    Ok((zone, instance))
}

fn zone_of(t: &Topology) -> Option<&str> {
    ZONE_KEYS
        .iter()
        .find_map(|k| t.0.get(*k).map(String::as_str))
}

fn is_gone<E, R>(e: &aws_sdk_ec2::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_ec2::error::ProvideErrorMetadata,
{
    code(e).is_some_and(|c| c.ends_with(".NotFound"))
}

impl EbsProvider {
    /// Builds the EC2 client from the configuration and the AWS environment.
    pub async fn new(config: Config, owner: impl Into<String>) -> EbsProvider {
        let counts = Arc::new(CallCounts::default());
        let client = ec2::client(&config, counts.clone()).await;
        Self::with_client(client, counts, config, owner)
    }

    /// A provider on an existing client (several instances may share one, as tests do to
    /// stand for restarts). `counts` is where the client's interceptor counts calls.
    pub fn with_client(
        client: aws_sdk_ec2::Client,
        counts: Arc<CallCounts>,
        config: Config,
        owner: impl Into<String>,
    ) -> EbsProvider {
        let owner = owner.into();
        EbsProvider {
            poller: Poller::start(client.clone(), owner.clone()),
            client,
            config,
            owner,
            counts,
            devices: Devices::default(),
            locks: KeyedLock::new(),
            instance_locks: KeyedLock::new(),
            index: Mutex::new(None),
            index_loading: tokio::sync::Mutex::new(()),
            uncertain: Mutex::new(HashSet::new()),
            instances: Mutex::new(HashMap::new()),
        }
    }

    /// EC2 calls made so far, by (API, outcome).
    pub fn calls(&self) -> &CallCounts {
        &self.counts
    }

    /// This installation's volumes, from EC2 (tag `stowage.dev/installation`), by name.
    async fn owned_volumes(&self) -> Result<Vec<(String, VolumeView)>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let resp = self
                .client
                .describe_volumes()
                .filters(
                    Filter::builder()
                        .name(format!("tag:{OWNER_TAG}"))
                        .values(&self.owner)
                        .build(),
                )
                .max_results(500)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify("listing this installation's volumes", &e))?;
            for v in resp.volumes() {
                let name = v
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(NAME_TAG))
                    .and_then(|t| t.value());
                if let Some(name) = name {
                    out.push((name.to_string(), VolumeView::from_ec2(v)));
                }
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    fn replace_index(&self, volumes: &[(String, VolumeView)]) {
        let mut live: Vec<&(String, VolumeView)> = volumes
            .iter()
            .filter(|(_, v)| v.state != "deleting" && v.state != "deleted")
            .collect();
        // Should racing creators have left two volumes of one name, the earliest is the one
        // they settle on (see `settle_racing_creates`); the sort is stable, keeping EC2's
        // creation order for ties.
        live.sort_by_key(|(_, v)| v.created);
        let mut index = HashMap::new();
        for (name, v) in live {
            index.entry(name.clone()).or_insert_with(|| v.id.clone());
        }
        *self.index.lock() = Some(index);
    }

    async fn ensure_index(&self) -> Result<()> {
        if self.index.lock().is_some() {
            return Ok(());
        }
        let _one = self.index_loading.lock().await;
        if self.index.lock().is_none() {
            let volumes = self.owned_volumes().await?;
            self.replace_index(&volumes);
        }
        Ok(())
    }

    /// The filters that find this installation's resource (volume or snapshot) named `name`.
    fn named(&self, name: &str) -> Vec<Filter> {
        vec![
            Filter::builder()
                .name(format!("tag:{NAME_TAG}"))
                .values(name)
                .build(),
            Filter::builder()
                .name(format!("tag:{OWNER_TAG}"))
                .values(&self.owner)
                .build(),
        ]
    }

    /// Our volume named `name`, asking EC2 by tag (after an uncertain create).
    async fn lookup_by_tag(&self, name: &str) -> Result<Option<String>> {
        let resp = self
            .client
            .describe_volumes()
            .set_filters(Some(self.named(name)))
            .send()
            .await
            .map_err(|e| classify(&format!("looking for volume {name}"), &e))?;
        Ok(resp
            .volumes()
            .iter()
            .map(VolumeView::from_ec2)
            .filter(|v| v.state != "deleting" && v.state != "deleted")
            .min_by_key(|v| v.created)
            .map(|v| v.id))
    }

    /// Waits (with batched polling) until `done` holds for the volume; `None` if it is gone.
    /// After creating `mine`, settles a race with other creators of the same name (a second
    /// server, or any creator on an EC2 that ignores ClientToken, as emulators do): the
    /// earliest-created of this installation's volumes with the name wins. A loser deletes only
    /// its own volume, never another's, so no creator's answer is deleted under it. The lookup
    /// is batched with every other create in flight, so it costs a fraction of a call each.
    async fn settle_racing_creates(&self, name: &str, mine: &VolumeView) -> Result<String> {
        // Two lookups in a row (a batch cycle apart) must agree before anyone acts: a racing
        // volume can become visible by its tags a moment after it exists (emulators tag after
        // creating), and acting on a view that is about to change could delete an answer.
        let mut winner = self.earliest_named(name, mine).await?;
        for _ in 0..8 {
            let again = self.earliest_named(name, mine).await?;
            if again == winner {
                break;
            }
            winner = again;
        }
        if winner != mine.id {
            tracing::info!(
                volume = name,
                kept = winner,
                deleted = mine.id,
                "another creator made this volume first; deleting ours"
            );
            if let Err(e) = self.client.delete_volume().volume_id(&mine.id).send().await
                && !is_gone(&e)
            {
                // The orphan sweep deletes it later: it belongs to no volume object.
                tracing::warn!(volume = mine.id, error = %classify("deleting a duplicate volume", &e), "could not delete a duplicate volume");
            }
        }
        Ok(winner)
    }

    /// The earliest-created live volume of this installation named `name`, counting `mine`.
    async fn earliest_named(&self, name: &str, mine: &VolumeView) -> Result<String> {
        let mut candidates = self.poller.named(name).await?;
        candidates.retain(|v| v.state != "deleting" && v.state != "deleted");
        if !candidates.iter().any(|v| v.id == mine.id) {
            // Not visible yet (AWS reads are eventually consistent): it is the newest.
            candidates.push(mine.clone());
        }
        // Every creator sees the earliest volume (it existed before each one's own create
        // returned), so "earliest" is an answer they all agree on. Creation times can tie;
        // EC2 lists volumes in creation order, and the sort is stable, so a tie goes to the
        // one listed first.
        candidates.sort_by_key(|v| v.created);
        Ok(candidates[0].id.clone())
    }

    async fn wait_until(
        &self,
        id: &str,
        what: &str,
        done: impl Fn(&VolumeView) -> bool,
    ) -> Result<Option<VolumeView>> {
        let deadline = Instant::now() + self.config.state_timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let Some(view) = self.poller.describe(id).await? else {
                return Ok(None);
            };
            if done(&view) {
                return Ok(Some(view));
            }
            if view.state == "error" {
                return Err(ProviderError::temporary(format!(
                    "volume {id} is in state error while {what}"
                )));
            }
            if Instant::now() > deadline {
                return Err(ProviderError::temporary(format!(
                    "volume {id} is still {} after {:?} {what}",
                    view.state, self.config.state_timeout
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    fn choose_zone(&self, req: &CreateVolumeRequest) -> Result<String> {
        let from_request = req
            .topology
            .preferred
            .iter()
            .chain(req.topology.requisite.iter())
            .find_map(zone_of);
        from_request
            .map(str::to_string)
            .or_else(|| self.config.default_zone.clone())
            .ok_or_else(|| {
                ProviderError::invalid(
                    "no availability zone: the claim's node has no topology.kubernetes.io/zone label, the class has no allowedTopologies, and providers.ebs.defaultZone is not set",
                )
            })
    }

    fn volume(&self, view: &VolumeView, spec: &VolumeSpec) -> Volume {
        let mut attributes = BTreeMap::from([
            ("zone".to_string(), view.zone.clone()),
            ("type".to_string(), spec.volume_type.to_string()),
            ("fsType".to_string(), spec.fs_type.clone()),
        ]);
        if let Some(i) = spec.iops {
            attributes.insert("iops".into(), i.to_string());
        }
        if let Some(t) = spec.throughput {
            attributes.insert("throughput".into(), t.to_string());
        }
        if spec.encrypted {
            attributes.insert("encrypted".into(), "true".into());
        }
        Volume {
            handle: view.id.clone(),
            capacity_bytes: view.size_gib.max(spec.size_gib) * GIB,
            attributes,
            accessible_topology: vec![Topology::one(ZONE_KEY, &view.zone)],
        }
    }

    async fn instance(&self, id: &str) -> Result<InstanceInfo> {
        let cached = || {
            self.instances
                .lock()
                .get(id)
                .cloned()
                .filter(|_| self.devices.knows(id))
        };
        if let Some(i) = cached() {
            return Ok(i);
        }
        let _one_lookup = self.instance_locks.lock(id).await;
        if let Some(i) = cached() {
            return Ok(i);
        }
        let resp = self
            .client
            .describe_instances()
            .instance_ids(id)
            .send()
            .await
            .map_err(|e| classify(&format!("describing instance {id}"), &e))?;
        let instance = resp
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(id))
            .ok_or_else(|| ProviderError::not_found(format!("instance {id} does not exist")))?;
        let info = InstanceInfo {
            zone: instance
                .placement()
                .and_then(|p| p.availability_zone())
                .unwrap_or_default()
                .to_string(),
            instance_type: instance
                .instance_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
        };
        let devices = instance
            .block_device_mappings()
            .iter()
            .filter_map(|m| {
                Some((
                    m.ebs()?.volume_id()?.to_string(),
                    m.device_name()?.to_string(),
                ))
            })
            .collect();
        self.devices.learn(id, devices);
        self.instances.lock().insert(id.to_string(), info.clone());
        Ok(info)
    }
}

#[async_trait::async_trait]
impl Provider for EbsProvider {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: true,
            expansion: true,
            snapshots: true,
            access_modes: vec![AccessMode::ReadWriteOnce, AccessMode::ReadWriteOncePod],
            topology: true,
            max_attachments_per_node: Some(self.config.max_attachments_per_node),
        }
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        validate_volume_name(&req.name)?;
        if let Some(m) = req
            .access_modes
            .iter()
            .find(|m| !matches!(m, AccessMode::ReadWriteOnce | AccessMode::ReadWriteOncePod))
        {
            return Err(ProviderError::invalid(format!(
                "EBS volumes attach to one node: access mode {} is not supported",
                m.as_str()
            )));
        }
        let spec = VolumeSpec::parse(&req.parameters, req.capacity_bytes, &req.claim, &req.name)?;
        let zone = self.choose_zone(req)?;
        let snapshot = req
            .content_source
            .as_ref()
            .map(|ContentSource::Snapshot { snapshot_id }| snapshot_id.clone());
        let _one_at_a_time = self.locks.lock(&req.name).await;
        self.ensure_index().await?;

        let known = self
            .index
            .lock()
            .as_ref()
            .and_then(|i| i.get(&req.name).cloned());
        let known = match known {
            Some(id) => Some(id),
            None if self.uncertain.lock().contains(&req.name) => {
                let found = self.lookup_by_tag(&req.name).await?;
                self.uncertain.lock().remove(&req.name);
                found
            }
            None => None,
        };
        if let Some(id) = known {
            match self
                .wait_until(&id, "being created", |v| v.state != "creating")
                .await?
            {
                Some(view) if view.state == "deleting" || view.state == "deleted" => {}
                Some(view) => {
                    if view.size_gib != spec.size_gib || view.zone != zone {
                        return Err(ProviderError::already_exists(format!(
                            "volume {} exists as {id} with {} GiB in {}, not {} GiB in {zone}",
                            req.name, view.size_gib, view.zone, spec.size_gib
                        )));
                    }
                    return Ok(self.volume(&view, &spec));
                }
                None => {}
            }
            // Gone (deleted outside Stowage): make a new one.
            if let Some(i) = self.index.lock().as_mut() {
                i.remove(&req.name);
            }
        }

        let mut tags = vec![
            (NAME_TAG.to_string(), req.name.clone()),
            (OWNER_TAG.to_string(), self.owner.clone()),
            ("Name".to_string(), req.name.clone()),
            (
                "kubernetes.io/created-for/pvc/name".to_string(),
                req.claim.name.clone(),
            ),
            (
                "kubernetes.io/created-for/pvc/namespace".to_string(),
                req.claim.namespace.clone(),
            ),
            (
                "kubernetes.io/created-for/pv/name".to_string(),
                req.name.clone(),
            ),
        ];
        tags.extend(spec.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        let tag_spec = TagSpecification::builder()
            .resource_type(ResourceType::Volume)
            .set_tags(Some(
                tags.into_iter()
                    .map(|(k, v)| Tag::builder().key(k).value(v).build())
                    .collect(),
            ))
            .build();
        let created = self
            .client
            .create_volume()
            .availability_zone(&zone)
            .size(spec.size_gib as i32)
            .volume_type(VolumeType::from(spec.volume_type))
            .set_iops(spec.iops.map(|i| i as i32))
            .set_throughput(spec.throughput.map(|t| t as i32))
            .encrypted(spec.encrypted)
            .set_kms_key_id(spec.kms_key_id.clone())
            .set_snapshot_id(snapshot)
            .client_token(&req.name)
            .tag_specifications(tag_spec)
            .send()
            .await;
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                let err = classify(&format!("creating volume {} in {zone}", req.name), &e);
                if err.is_temporary() {
                    // It may exist anyway: look it up by tag before trying again.
                    self.uncertain.lock().insert(req.name.clone());
                }
                return Err(err);
            }
        };
        let mine = VolumeView {
            id: created.volume_id().unwrap_or_default().to_string(),
            state: created
                .state()
                .map_or("creating", |s| s.as_str())
                .to_string(),
            size_gib: created.size().map_or(spec.size_gib, i64::from),
            zone: created.availability_zone().unwrap_or(&zone).to_string(),
            attachments: Vec::new(),
            created: created
                .create_time()
                .map_or((0, 0), |t| (t.secs(), t.subsec_nanos())),
            name: Some(req.name.clone()),
        };
        let id = self.settle_racing_creates(&req.name, &mine).await?;
        if let Some(i) = self.index.lock().as_mut() {
            i.insert(req.name.clone(), id.clone());
        }
        let view = if id == mine.id && mine.state == "available" {
            mine
        } else {
            self.wait_until(&id, "being created", |v| v.state != "creating")
                .await?
                .ok_or_else(|| {
                    ProviderError::temporary(format!("volume {id} vanished while being created"))
                })?
        };
        Ok(self.volume(&view, &spec))
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()> {
        let id = req.handle.as_str();
        let _one_at_a_time = self.locks.lock(id).await;
        match self.client.delete_volume().volume_id(id).send().await {
            Ok(_) => {}
            Err(e) if is_gone(&e) => {}
            Err(e) => return Err(classify(&format!("deleting volume {id}"), &e)),
        }
        if let Some(i) = self.index.lock().as_mut() {
            i.retain(|_, v| v != id);
        }
        Ok(())
    }

    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo> {
        let id = req.handle.as_str();
        let (node_zone, instance) = node_instance(&req.node)?;
        if let Some(volume_zone) = req.attributes.get("zone")
            && !node_zone.is_empty()
            && volume_zone != &node_zone
        {
            return Err(ProviderError::invalid(format!(
                "volume {id} is in {volume_zone} and node {} in {node_zone}: EBS volumes attach only within their zone",
                req.node.name
            )));
        }
        let _one_at_a_time = self.locks.lock(id).await;
        let info = self.instance(&instance).await?;
        if let Some(volume_zone) = req.attributes.get("zone")
            && !info.zone.is_empty()
            && volume_zone != &info.zone
        {
            return Err(ProviderError::invalid(format!(
                "volume {id} is in {volume_zone} and instance {instance} in {}",
                info.zone
            )));
        }
        let limit = req
            .node
            .max_attachments
            .or_else(|| attach_limit_for(&info.instance_type))
            .unwrap_or(self.config.max_attachments_per_node);
        let device = self.devices.assign(&instance, id, limit).ok_or_else(|| {
            ProviderError::exhausted(format!(
                "instance {instance} ({}) has {} volumes attached, its limit",
                info.instance_type,
                self.devices.count(&instance)
            ))
        })?;
        let attached = self.poller.describe(id).await?;
        let Some(view) = attached else {
            self.devices.release(&instance, id);
            return Err(ProviderError::not_found(format!(
                "volume {id} does not exist"
            )));
        };
        if let Some((other, _, _)) = view
            .attachments
            .iter()
            .find(|(i, _, s)| i != &instance && s != "detached")
        {
            self.devices.release(&instance, id);
            return Err(ProviderError::precondition(format!(
                "volume {id} is attached to instance {other}"
            )));
        }
        let device = match view.attachment_to(&instance) {
            Some((d, _)) if !d.is_empty() => d.to_string(),
            _ => {
                let sent = self
                    .client
                    .attach_volume()
                    .volume_id(id)
                    .instance_id(&instance)
                    .device(&device)
                    .send()
                    .await;
                if let Err(e) = sent {
                    self.devices.failed(&instance, id);
                    return Err(classify(
                        &format!("attaching volume {id} to {instance} as {device}"),
                        &e,
                    ));
                }
                device
            }
        };
        self.wait_until(id, "being attached", |v| {
            v.attachment_to(&instance)
                .is_some_and(|(_, s)| s == "attached")
        })
        .await?
        .ok_or_else(|| ProviderError::not_found(format!("volume {id} vanished while attaching")))?;
        let fs_type = req
            .fs_type
            .clone()
            .or_else(|| req.attributes.get("fsType").cloned())
            .unwrap_or_else(|| "ext4".into());
        Ok(PublishInfo::from([
            ("type".to_string(), "block".to_string()),
            ("devicePath".to_string(), device),
            (
                "devicePathHint".to_string(),
                format!(
                    "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{}",
                    id.replace('-', "")
                ),
            ),
            ("volumeId".to_string(), id.to_string()),
            ("fsType".to_string(), fs_type),
            ("readOnly".to_string(), req.read_only.to_string()),
        ]))
    }

    async fn detach(&self, req: &DetachRequest) -> Result<()> {
        let id = req.handle.as_str();
        let Ok((_, instance)) = node_instance(&req.node) else {
            // A node without an instance never had anything attached by us.
            return Ok(());
        };
        let _one_at_a_time = self.locks.lock(id).await;
        // EC2 needs the instance id to detach (and moto fails without it).
        match self
            .client
            .detach_volume()
            .volume_id(id)
            .instance_id(&instance)
            .force(req.force)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if is_gone(&e) || code(&e).as_deref() == Some("IncorrectState") => {}
            Err(e) => {
                return Err(classify(
                    &format!("detaching volume {id} from {instance}"),
                    &e,
                ));
            }
        }
        self.wait_until(id, "being detached", |v| {
            v.attachment_to(&instance)
                .is_none_or(|(_, s)| s == "detached")
        })
        .await?;
        self.devices.release(&instance, id);
        Ok(())
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> Result<Expanded> {
        let id = req.handle.as_str();
        let _one_at_a_time = self.locks.lock(id).await;
        let view = self
            .poller
            .describe(id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("volume {id} does not exist")))?;
        let wanted = gib_for(req.capacity_bytes);
        if wanted <= view.size_gib {
            return Ok(Expanded {
                capacity_bytes: view.size_gib * GIB,
                in_progress: None,
            });
        }
        if let Some(limits) = req.attributes.get("type").and_then(|t| limits_of(t))
            && wanted > limits.max_gib
        {
            return Err(ProviderError::invalid(format!(
                "{} volumes are at most {} GiB; {wanted} GiB requested",
                limits.name, limits.max_gib
            )));
        }
        let out = self
            .client
            .modify_volume()
            .volume_id(id)
            .size(wanted as i32)
            .send()
            .await
            .map_err(|e| classify(&format!("growing volume {id} to {wanted} GiB"), &e))?;
        let state = out
            .volume_modification()
            .and_then(|m| m.modification_state())
            .map(|s| s.as_str().to_string());
        Ok(Expanded {
            capacity_bytes: wanted * GIB,
            in_progress: state.filter(|s| s != "completed"),
        })
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        let volumes = self.owned_volumes().await?;
        self.replace_index(&volumes);
        Ok(volumes
            .into_iter()
            .filter(|(_, v)| v.state != "deleting" && v.state != "deleted")
            .map(|(name, v)| VolumeInfo {
                name,
                handle: v.id,
                capacity_bytes: v.size_gib * GIB,
            })
            .collect())
    }

    async fn create_snapshot(&self, name: &str, source_handle: &str) -> Result<Snapshot> {
        validate_volume_name(name)?;
        let _one_at_a_time = self.locks.lock(name).await;
        let existing = self
            .client
            .describe_snapshots()
            .set_filters(Some(self.named(name)))
            .send()
            .await
            .map_err(|e| classify(&format!("looking for snapshot {name}"), &e))?;
        let as_snapshot = |id: Option<&str>,
                           volume: Option<&str>,
                           size: Option<i32>,
                           state: Option<&str>| Snapshot {
            id: id.unwrap_or_default().to_string(),
            source_handle: volume.unwrap_or(source_handle).to_string(),
            size_bytes: size.map_or(0, i64::from) * GIB,
            ready: state == Some("completed"),
        };
        if let Some(s) = existing.snapshots().first() {
            if s.volume_id().is_some_and(|v| v != source_handle) {
                return Err(ProviderError::already_exists(format!(
                    "snapshot {name} exists for another volume"
                )));
            }
            return Ok(as_snapshot(
                s.snapshot_id(),
                s.volume_id(),
                s.volume_size(),
                s.state().map(|x| x.as_str()),
            ));
        }
        let tags = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(Tag::builder().key(NAME_TAG).value(name).build())
            .tags(Tag::builder().key(OWNER_TAG).value(&self.owner).build())
            .build();
        let s = self
            .client
            .create_snapshot()
            .volume_id(source_handle)
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| classify(&format!("snapshotting volume {source_handle}"), &e))?;
        Ok(as_snapshot(
            s.snapshot_id(),
            s.volume_id(),
            s.volume_size(),
            s.state().map(|x| x.as_str()),
        ))
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        match self.client.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(classify(&format!("deleting snapshot {id}"), &e)),
        }
    }

    fn backend_requests(&self) -> BTreeMap<(String, String), u64> {
        self.counts.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_name_zone_and_instance() {
        assert_eq!(
            parse_provider_id("aws:///us-east-1a/i-0123abcd"),
            Some(("us-east-1a".into(), "i-0123abcd".into()))
        );
        assert_eq!(
            parse_provider_id("aws:///i-0123abcd"),
            Some((String::new(), "i-0123abcd".into()))
        );
        for bad in [
            "",
            "gce://p/z/n",
            "aws:///us-east-1a/",
            "aws:///us-east-1a/x-1",
        ] {
            assert_eq!(parse_provider_id(bad), None, "{bad}");
        }
    }
}
