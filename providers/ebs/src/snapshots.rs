//! Snapshots: found by our name tag first (idempotent), made with it.
//!
//! A VolumeSnapshotClass may add tags as the AWS EBS CSI driver's classes do:
//! `tagSpecification_<n>: "key=value"`. Anything else is refused before any call.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use stowage_provider::{ProviderError, Result, Snapshot, SnapshotRequest, validate_volume_name};

use crate::backend::EbsProvider;
use crate::ec2::{classify, is_gone};
use crate::params::{GIB, NAME_TAG, OWNER_TAG};

/// The tags a snapshot class's parameters add.
pub(crate) fn class_tags(parameters: &BTreeMap<String, String>) -> Result<Vec<(String, String)>> {
    let mut tags = Vec::new();
    for (k, v) in parameters {
        let Some(n) = k.strip_prefix("tagSpecification_") else {
            return Err(ProviderError::invalid(format!(
                "unknown snapshot parameter {k:?} (the EBS provider takes tagSpecification_<n>: \"key=value\")"
            )));
        };
        let (key, value) = v.split_once('=').unwrap_or((v.as_str(), ""));
        let key = key.trim();
        if n.parse::<u32>().is_err() || key.is_empty() || key.len() > 127 || value.len() > 255 {
            return Err(ProviderError::invalid(format!(
                "snapshot parameter {k}: {v:?} is not \"key=value\" (key up to 127 characters, value up to 255)"
            )));
        }
        if key.starts_with("aws:") || key == NAME_TAG || key == OWNER_TAG {
            return Err(ProviderError::invalid(format!(
                "snapshot parameter {k}: tag {key:?} is reserved"
            )));
        }
        tags.push((key.to_string(), value.trim().to_string()));
    }
    Ok(tags)
}

fn as_snapshot(s: &aws_sdk_ec2::types::Snapshot, source_handle: &str) -> Snapshot {
    Snapshot {
        id: s.snapshot_id().unwrap_or_default().to_string(),
        source_handle: s.volume_id().unwrap_or(source_handle).to_string(),
        size_bytes: s.volume_size().map_or(0, i64::from) * GIB,
        ready: s.state().map(|x| x.as_str()) == Some("completed"),
        progress: None,
    }
}

impl EbsProvider {
    pub(crate) async fn snapshot(&self, req: &SnapshotRequest) -> Result<Snapshot> {
        let (name, source_handle) = (req.name.as_str(), req.source_handle.as_str());
        validate_volume_name(name)?;
        let class_tags = class_tags(&req.parameters)?;
        let _one_at_a_time = self.locks.lock(name).await;
        let existing = self
            .client
            .describe_snapshots()
            .set_filters(Some(self.named(name)))
            .send()
            .await
            .map_err(|e| classify(&format!("looking for snapshot {name}"), &e))?;
        if let Some(s) = existing.snapshots().first() {
            if s.volume_id().is_some_and(|v| v != source_handle) {
                return Err(ProviderError::already_exists(format!(
                    "snapshot {name} exists for another volume"
                )));
            }
            // EBS gave up on it: delete it, so that the next call cuts a new one.
            if s.state().map(|x| x.as_str()) == Some("error") {
                let id = s.snapshot_id().unwrap_or_default().to_string();
                self.delete_snapshot_by_id(&id).await?;
                return Err(ProviderError::temporary(format!(
                    "EBS failed snapshot {id} of volume {source_handle} ({}); it is deleted and will be cut again",
                    s.state_message().unwrap_or("no reason given")
                )));
            }
            return Ok(as_snapshot(s, source_handle));
        }
        let mut tags = TagSpecification::builder()
            .resource_type(ResourceType::Snapshot)
            .tags(Tag::builder().key(NAME_TAG).value(name).build())
            .tags(Tag::builder().key(OWNER_TAG).value(&self.owner).build());
        for (k, v) in class_tags {
            tags = tags.tags(Tag::builder().key(k).value(v).build());
        }
        let tags = tags.build();
        let s = self
            .client
            .create_snapshot()
            .volume_id(source_handle)
            .tag_specifications(tags)
            .send()
            .await
            .map_err(|e| classify(&format!("snapshotting volume {source_handle}"), &e))?;
        Ok(Snapshot {
            id: s.snapshot_id().unwrap_or_default().to_string(),
            source_handle: s.volume_id().unwrap_or(source_handle).to_string(),
            size_bytes: s.volume_size().map_or(0, i64::from) * GIB,
            ready: s.state().map(|x| x.as_str()) == Some("completed"),
            progress: None,
        })
    }

    /// A snapshot by id, made by Stowage or not (a pre-provisioned VolumeSnapshotContent).
    pub(crate) async fn snapshot_by_id(&self, id: &str) -> Result<Snapshot> {
        let found = match self
            .client
            .describe_snapshots()
            .snapshot_ids(id)
            .send()
            .await
        {
            Ok(found) => found,
            Err(e) if is_gone(&e) => {
                return Err(ProviderError::not_found(format!("snapshot {id} not found")));
            }
            Err(e) => return Err(classify(&format!("looking for snapshot {id}"), &e)),
        };
        found
            .snapshots()
            .first()
            .map(|s| as_snapshot(s, ""))
            .ok_or_else(|| ProviderError::not_found(format!("snapshot {id} not found")))
    }

    pub(crate) async fn delete_snapshot_by_id(&self, id: &str) -> Result<()> {
        match self.client.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(classify(&format!("deleting snapshot {id}"), &e)),
        }
    }
}
