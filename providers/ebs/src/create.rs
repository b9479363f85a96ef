//! `create_volume` and `delete_volume`: the zone, the name index first, then CreateVolume with
//! our tags; a delete forgets the name.

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification, VolumeType};
use stowage_provider::{
    AccessMode, ContentSource, CreateVolumeRequest, DeleteVolumeRequest, Progress, ProviderError,
    Result, SnapshotRequest, Topology, Volume, validate_volume_name,
};

use crate::ZONE_KEYS;
use crate::backend::EbsProvider;
use crate::ec2::{classify, is_gone};
use crate::params::{FS_TYPE_TAG, GIB, NAME_TAG, OWNER_TAG, VolumeSpec};
use crate::poller::VolumeView;

/// What names a clone's temporary snapshot: `clone-<volume name>`.
pub(crate) const CLONE_PREFIX: &str = "clone-";

/// The temporary snapshot a clone is made through.
fn clone_snapshot_name(volume: &str) -> String {
    format!("{CLONE_PREFIX}{volume}")
}

fn zone_of(t: &Topology) -> Option<&str> {
    ZONE_KEYS
        .iter()
        .find_map(|k| t.0.get(*k).map(String::as_str))
}

impl EbsProvider {
    pub(crate) fn choose_zone(&self, req: &CreateVolumeRequest) -> Result<String> {
        let from_request = req
            .topology
            .preferred
            .iter()
            .chain(req.topology.requisite.iter())
            .find_map(zone_of);
        let zone = from_request
            .map(str::to_string)
            .or_else(|| self.config.default_zone.clone())
            .ok_or_else(|| {
                ProviderError::invalid(
                    "no availability zone: the claim's node has no topology.kubernetes.io/zone label, the class has no allowedTopologies, and providers.ebs.defaultZone is not set",
                )
            })?;
        // A zone outside this provider's region is a topology it cannot reach: refused here,
        // before anything is made (zones are named after their region: us-east-1a).
        if let Some(region) = self.client.config().region()
            && !zone.starts_with(region.as_ref())
        {
            return Err(ProviderError::invalid(format!(
                "zone {zone} is not in region {region}, where this provider makes volumes"
            )));
        }
        Ok(zone)
    }

    pub(crate) async fn create(&self, req: &CreateVolumeRequest) -> Result<Volume> {
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
        // A VolumeAttributesClass's parameters are the volume's from its creation on.
        crate::modify::check_mutable_keys(&req.mutable_parameters)?;
        let mut parameters = req.parameters.clone();
        parameters.extend(req.mutable_parameters.clone());
        let spec = VolumeSpec::parse(&parameters, req.capacity_bytes, &req.claim, &req.name)?;
        let zone = self.choose_zone(req)?;
        // A clone's source must exist and fit, checked before anything is made.
        let clone_of = match &req.content_source {
            Some(ContentSource::Volume { handle, .. }) => {
                let source = self.poller.existing(handle).await?;
                if req.capacity_bytes < source.size_gib as i64 * GIB {
                    return Err(ProviderError::invalid(format!(
                        "{} bytes requested, less than the {} GiB of volume {handle}",
                        req.capacity_bytes, source.size_gib
                    )));
                }
                Some(handle.clone())
            }
            _ => None,
        };
        let snapshot = match &req.content_source {
            Some(ContentSource::Snapshot { snapshot_id }) => {
                // EC2 would round the request up to whole GiB and accept it; the contract is
                // that a source larger than the request is refused.
                let found = self.snapshot_by_id(snapshot_id).await?;
                if req.capacity_bytes < found.size_bytes {
                    return Err(ProviderError::invalid(format!(
                        "{} bytes requested, less than the {} bytes of snapshot {snapshot_id}",
                        req.capacity_bytes, found.size_bytes
                    )));
                }
                Some(snapshot_id.clone())
            }
            _ => None,
        };
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
                    // A clone's snapshot is a temporary one of ours, perhaps deleted by now:
                    // whichever it was made from is right.
                    let snapshot = match &clone_of {
                        Some(_) => view.snapshot_id.clone(),
                        None => snapshot.clone(),
                    };
                    let differences = spec.differences(&view, &zone, snapshot.as_deref());
                    if !differences.is_empty() {
                        return Err(ProviderError::already_exists(format!(
                            "volume {} exists as {id} with {}",
                            req.name,
                            differences.join(", ")
                        )));
                    }
                    if clone_of.is_some() {
                        self.delete_clone_snapshot(&req.name).await?;
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

        let snapshot = match &clone_of {
            Some(source) => Some(self.clone_snapshot(&req.name, source).await?),
            None => snapshot,
        };
        let mut tags = vec![
            (NAME_TAG.to_string(), req.name.clone()),
            (OWNER_TAG.to_string(), self.owner.clone()),
            (FS_TYPE_TAG.to_string(), spec.fs_type.clone()),
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
        let mut mine = VolumeView::from_created(&created);
        if mine.zone.is_empty() {
            mine.zone = zone.clone();
        }
        if mine.size_gib == 0 {
            mine.size_gib = spec.size_gib;
        }
        mine.name = Some(req.name.clone());
        mine.fs_type = Some(spec.fs_type.clone());
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
        if clone_of.is_some() {
            self.delete_clone_snapshot(&req.name).await?;
        }
        Ok(self.volume(&view, &spec))
    }

    /// EBS clones a volume only through a snapshot: `clone-<volume name>` is cut of the source
    /// and its id returned once it is complete (`InProgress` until then). The clone's create
    /// deletes it when the new volume exists.
    async fn clone_snapshot(&self, name: &str, source: &str) -> Result<String> {
        let snapshot = self
            .snapshot(&SnapshotRequest {
                name: clone_snapshot_name(name),
                source_handle: source.to_string(),
                source_attributes: Default::default(),
                parameters: Default::default(),
            })
            .await?;
        if !snapshot.ready {
            return Err(ProviderError::in_progress(
                &format!(
                    "snapshotting volume {source} to clone it (snapshot {})",
                    snapshot.id
                ),
                Progress {
                    done_bytes: 0,
                    total_bytes: snapshot.size_bytes,
                },
            ));
        }
        Ok(snapshot.id)
    }

    /// Deletes a clone's temporary snapshot, if it is still there.
    async fn delete_clone_snapshot(&self, name: &str) -> Result<()> {
        let found = self
            .client
            .describe_snapshots()
            .set_filters(Some(self.named(&clone_snapshot_name(name))))
            .send()
            .await
            .map_err(|e| classify(&format!("looking for the clone snapshot of {name}"), &e))?;
        for s in found.snapshots() {
            if let Some(id) = s.snapshot_id() {
                self.delete_snapshot_by_id(id).await?;
            }
        }
        Ok(())
    }

    /// Deletes a volume; or, for a clone whose claim went before its volume was made, the
    /// clone's temporary snapshot (as [`EbsProvider::list`] reports it). Only this
    /// installation's clone snapshots are deleted that way.
    pub(crate) async fn delete(&self, req: &DeleteVolumeRequest) -> Result<()> {
        let id = req.handle.as_str();
        let _one_at_a_time = self.locks.lock(id).await;
        if id.starts_with("snap-") {
            if !self.is_our_clone_snapshot(id).await? {
                return Err(ProviderError::invalid(format!(
                    "{id} is not a volume, nor a clone snapshot of this installation"
                )));
            }
            return self.delete_snapshot_by_id(id).await;
        }
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
}
