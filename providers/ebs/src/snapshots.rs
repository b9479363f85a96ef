//! Snapshots: found by our name tag first (idempotent), made with it.

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
use stowage_provider::{ProviderError, Result, Snapshot, validate_volume_name};

use crate::backend::EbsProvider;
use crate::ec2::{classify, is_gone};
use crate::params::{GIB, NAME_TAG, OWNER_TAG};

impl EbsProvider {
    pub(crate) async fn snapshot(&self, name: &str, source_handle: &str) -> Result<Snapshot> {
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

    pub(crate) async fn delete_snapshot_by_id(&self, id: &str) -> Result<()> {
        match self.client.delete_snapshot().snapshot_id(id).send().await {
            Ok(_) => Ok(()),
            Err(e) if is_gone(&e) => Ok(()),
            Err(e) => Err(classify(&format!("deleting snapshot {id}"), &e)),
        }
    }
}
