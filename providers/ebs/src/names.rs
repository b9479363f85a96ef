//! The name index: this installation's volumes by name, read once from EC2 and kept current,
//! asked by tag after an uncertain create, and how racing creators of one name settle on one
//! volume.

use std::collections::HashMap;

use aws_sdk_ec2::types::Filter;
use stowage_provider::{Result, VolumeInfo};

use crate::backend::EbsProvider;
use crate::create::CLONE_PREFIX;
use crate::ec2::{classify, is_gone};
use crate::params::{GIB, NAME_TAG, OWNER_TAG};
use crate::poller::VolumeView;

impl EbsProvider {
    /// This installation's volumes, from EC2 (tag `stowage.dev/installation`), by name.
    pub(crate) async fn owned_volumes(&self) -> Result<Vec<(String, VolumeView)>> {
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

    pub(crate) fn replace_index(&self, volumes: &[(String, VolumeView)]) {
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

    pub(crate) async fn ensure_index(&self) -> Result<()> {
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
    pub(crate) fn named(&self, name: &str) -> Vec<Filter> {
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
    pub(crate) async fn lookup_by_tag(&self, name: &str) -> Result<Option<String>> {
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
    pub(crate) async fn settle_racing_creates(
        &self,
        name: &str,
        mine: &VolumeView,
    ) -> Result<String> {
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
    pub(crate) async fn earliest_named(&self, name: &str, mine: &VolumeView) -> Result<String> {
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

    /// This installation's volumes, for the orphan sweep; and clones still in the making. A
    /// clone is cut through a temporary snapshot (`clone-<volume>`) before its volume exists,
    /// so a claim deleted meanwhile would leave that snapshot behind: it is listed as the
    /// volume it was for, with the snapshot's id as handle, and the sweep deletes it like any
    /// other orphan ([`EbsProvider::delete`] takes such a handle).
    pub(crate) async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let volumes = self.owned_volumes().await?;
        self.replace_index(&volumes);
        let live: Vec<(String, VolumeView)> = volumes
            .into_iter()
            .filter(|(_, v)| v.state != "deleting" && v.state != "deleted")
            .collect();
        let unfinished = self.clone_snapshots().await?;
        let made: std::collections::HashSet<&str> =
            live.iter().map(|(name, _)| name.as_str()).collect();
        let unfinished: Vec<VolumeInfo> = unfinished
            .into_iter()
            .filter(|c| !made.contains(c.name.as_str()))
            .collect();
        Ok(live
            .into_iter()
            .map(|(name, v)| VolumeInfo {
                name,
                handle: v.id,
                capacity_bytes: v.size_gib * GIB,
            })
            .chain(unfinished)
            .collect())
    }

    /// This installation's clone snapshots, as the volumes they are for.
    async fn clone_snapshots(&self) -> Result<Vec<VolumeInfo>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let resp = self
                .client
                .describe_snapshots()
                .owner_ids("self")
                .filters(
                    Filter::builder()
                        .name(format!("tag:{OWNER_TAG}"))
                        .values(&self.owner)
                        .build(),
                )
                .filters(
                    Filter::builder()
                        .name(format!("tag:{NAME_TAG}"))
                        .values(format!("{CLONE_PREFIX}*"))
                        .build(),
                )
                .max_results(1000)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify("listing this installation's clone snapshots", &e))?;
            for s in resp.snapshots() {
                let volume = s
                    .tags()
                    .iter()
                    .find(|t| t.key() == Some(NAME_TAG))
                    .and_then(|t| t.value())
                    .and_then(|n| n.strip_prefix(CLONE_PREFIX));
                if let (Some(volume), Some(id)) = (volume, s.snapshot_id()) {
                    out.push(VolumeInfo {
                        name: volume.to_string(),
                        handle: id.to_string(),
                        capacity_bytes: s.volume_size().map_or(0, i64::from) * GIB,
                    });
                }
            }
            match resp.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Whether snapshot `id` is one of this installation's clone snapshots.
    pub(crate) async fn is_our_clone_snapshot(&self, id: &str) -> Result<bool> {
        let found = match self
            .client
            .describe_snapshots()
            .owner_ids("self")
            .snapshot_ids(id)
            .send()
            .await
        {
            Ok(found) => found,
            Err(e) if is_gone(&e) => return Ok(false),
            Err(e) => return Err(classify(&format!("looking for snapshot {id}"), &e)),
        };
        let tag = |s: &aws_sdk_ec2::types::Snapshot, key: &str| {
            s.tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
                .map(str::to_string)
        };
        Ok(found.snapshots().iter().any(|s| {
            tag(s, OWNER_TAG).as_deref() == Some(self.owner.as_str())
                && tag(s, NAME_TAG).is_some_and(|n| n.starts_with(CLONE_PREFIX))
        }))
    }
}
