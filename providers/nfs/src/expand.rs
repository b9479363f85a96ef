//! `expand_volume` (the record's size, checked against the share's room) and `list_volumes`.

use std::sync::Arc;

use stowage_provider::{ExpandRequest, Expanded, ProviderError, Result, VolumeInfo};

use crate::backend::{NfsProvider, synced};
use crate::handle::VolumeHandle;
use crate::records::Record;
use crate::share::Share;

impl NfsProvider {
    pub(crate) async fn expand(&self, req: &ExpandRequest) -> Result<Expanded> {
        let h = VolumeHandle::parse(&req.handle)?;
        let share = self.share_of(&h, &req.attributes);
        let on = synced(&share).await?;
        let _one_at_a_time = share.volume_locks.lock(&h.name).await;
        let Some(record) = self.record_of(&share, &h.name).await? else {
            return Err(ProviderError::not_found(format!(
                "volume {} has no record on {on}",
                h.name
            )));
        };
        if req.capacity_bytes <= record.bytes {
            return Ok(Expanded {
                capacity_bytes: record.bytes,
                in_progress: None,
            });
        }
        let total = share
            .total_bytes()
            .await
            .map_err(|f| f.into_error(&format!("asking {on} for its size")))?;
        let cap = req
            .attributes
            .get("shareCapacity")
            .and_then(|c| c.parse::<i64>().ok());
        let limit = cap.map_or(total, |c| c.min(total));
        let growth = req.capacity_bytes - record.bytes;
        let used = share.ledger.lock().used();
        if used.saturating_add(growth) > limit {
            return Err(ProviderError::exhausted(format!(
                "{on} has {} of {limit} bytes free for volumes; growing {} needs {growth} more",
                (limit - used).max(0),
                h.name
            )));
        }
        let grown = Record {
            bytes: req.capacity_bytes,
            ..record
        };
        share
            .replace_record(&h.name, &grown)
            .await
            .map_err(|f| f.into_error(&format!("recording the new size of {} on {on}", h.name)))?;
        share.ledger.lock().put(&h.name, grown);
        Ok(Expanded {
            capacity_bytes: req.capacity_bytes,
            in_progress: None,
        })
    }

    pub(crate) async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let shares: Vec<Arc<Share>> = self.shares.lock().values().cloned().collect();
        let mut out = Vec::new();
        for share in shares {
            share.sync_records().await.map_err(|f| {
                f.into_error(&format!(
                    "reading the volume records on {}",
                    share.key.describe()
                ))
            })?;
            let ledger = share.ledger.lock();
            for (name, record) in ledger.records() {
                if record.owner == self.owner && !record.retained {
                    out.push(VolumeInfo {
                        name: name.clone(),
                        handle: Self::handle(&share, &record.sub_dir, name),
                        capacity_bytes: record.bytes,
                    });
                }
            }
        }
        Ok(out)
    }
}
