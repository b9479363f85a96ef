//! `delete_volume`: dispose of the directory as the record says (delete, archive or retain),
//! then of the record. A restore or clone still copying is stopped first, and its unfinished
//! copy removed.

use stowage_provider::{DeleteVolumeRequest, ProviderError, Result};

use crate::backend::{NfsProvider, synced};
use crate::handle::VolumeHandle;
use crate::params::{self};
use crate::records::Record;
use crate::share::{Failure, Share};

impl NfsProvider {
    pub(crate) async fn delete(&self, req: &DeleteVolumeRequest) -> Result<()> {
        let h = match VolumeHandle::parse(&req.handle) {
            Ok(h) => h,
            Err(_) => {
                tracing::warn!(
                    handle = req.handle,
                    "not an NFS volume handle: nothing to delete"
                );
                return Ok(());
            }
        };
        let share = self.share_of(&h, &req.attributes);
        let on = synced(&share).await?;
        let _one_at_a_time = share.volume_locks.lock(&h.name).await;
        let Some(record) = self.record_of(&share, &h.name).await? else {
            return Ok(());
        };
        if record.sub_dir != h.sub_dir {
            tracing::warn!(
                volume = h.name,
                handle_dir = h.sub_dir,
                record_dir = record.sub_dir,
                "the handle and the record disagree; following the record"
            );
        }
        if record.retained {
            return Ok(());
        }
        if record.source.is_some() && (record.pending || record.filling) {
            // Stop the copy first, so it cannot move a directory into place after this.
            self.abandon_fill(&share, &h.name).await?;
        }
        if record.pending {
            // A create that never finished: its directory, if it made one, is empty; one that
            // holds anything is not provably this volume's, so it stays.
            self.remove_if_empty(&share, &record).await?;
            share
                .remove_record(&h.name)
                .await
                .map_err(|f| f.into_error(&format!("removing the record of {} on {on}", h.name)))?;
            share.ledger.lock().remove(&h.name);
            return Ok(());
        }
        // Never remove or move a directory that another volume's lies in or around. New
        // overlaps are refused when they are made; records from before that rule could still
        // have them, and the ledger has read every record on the share.
        if let Some(o) = share.ledger.lock().overlapping(&record.sub_dir, &h.name) {
            tracing::warn!(
                volume = h.name,
                directory = record.sub_dir,
                other_volume = o.volume,
                other_directory = o.sub_dir,
                "not disposing of a directory that overlaps another volume's"
            );
            return Err(ProviderError::precondition(format!(
                "the directory of {} on {on} overlaps another volume's; it is left for an admin",
                h.name
            )));
        }
        self.dispose_directory(&share, &record).await?;
        if record.on_delete == params::OnDelete::Retain {
            // The directory stays, and so does a record of whose it was: nothing else may
            // take or nest in it, and only its own namespace may adopt it.
            let retained = Record {
                retained: true,
                ..record
            };
            share
                .replace_record(&h.name, &retained)
                .await
                .map_err(|f| f.into_error(&format!("recording {} as retained on {on}", h.name)))?;
            share.ledger.lock().put(&h.name, retained);
            return Ok(());
        }
        share
            .remove_record(&h.name)
            .await
            .map_err(|f| f.into_error(&format!("removing the record of {} on {on}", h.name)))?;
        share.ledger.lock().remove(&h.name);
        Ok(())
    }

    /// Removes a pending create's directory if it is there and empty (RMDIR refuses otherwise).
    pub(crate) async fn remove_if_empty(&self, share: &Share, record: &Record) -> Result<()> {
        let what = format!("removing {} on {}", record.sub_dir, share.key.describe());
        let (parent_path, last) = record
            .sub_dir
            .rsplit_once('/')
            .unwrap_or(("", record.sub_dir.as_str()));
        let parent = match share.dir(parent_path, None).await {
            Ok(p) => p,
            Err(Failure::NotFound) => return Ok(()),
            Err(f) => return Err(f.into_error(&what)),
        };
        match share.rmdir(&parent, last).await {
            Ok(()) | Err(Failure::NotFound | Failure::NotEmpty | Failure::Exists) => Ok(()),
            Err(f) => Err(f.into_error(&what)),
        }
    }

    /// Deletes, archives or keeps a volume's directory. Touches nothing but that directory.
    pub(crate) async fn dispose_directory(&self, share: &Share, record: &Record) -> Result<()> {
        let what = |verb: &str| format!("{verb} {} on {}", record.sub_dir, share.key.describe());
        let (parent_path, last) = record
            .sub_dir
            .rsplit_once('/')
            .unwrap_or(("", record.sub_dir.as_str()));
        let parent = match share.dir(parent_path, None).await {
            Ok(p) => p,
            Err(Failure::NotFound) => return Ok(()),
            Err(f) => return Err(f.into_error(&what("finding"))),
        };
        match record.on_delete {
            params::OnDelete::Retain => Ok(()),
            params::OnDelete::Delete => {
                let dir = match share.lookup(&parent, last).await {
                    Ok(d) => d,
                    Err(Failure::NotFound) => return Ok(()),
                    Err(f) => return Err(f.into_error(&what("finding"))),
                };
                share
                    .empty_dir(&dir.fh, 0)
                    .await
                    .map_err(|f| f.into_error(&what("emptying")))?;
                match share.rmdir(&parent, last).await {
                    Ok(()) | Err(Failure::NotFound) => Ok(()),
                    Err(f) => Err(f.into_error(&what("removing"))),
                }
            }
            params::OnDelete::Archive => {
                match share.lookup(&parent, last).await {
                    Ok(_) => {}
                    Err(Failure::NotFound) => return Ok(()),
                    Err(f) => return Err(f.into_error(&what("finding"))),
                }
                // Never over an earlier archive: RENAME would silently replace an empty one.
                for target in stowage_provider::params::archive_names(last) {
                    match share.lookup(&parent, &target).await {
                        Ok(_) => continue,
                        Err(Failure::NotFound) => {}
                        Err(f) => return Err(f.into_error(&what("archiving"))),
                    }
                    match share.rename(&parent, last, &target).await {
                        Ok(()) => {
                            tracing::info!(
                                share = share.key.describe(),
                                from = record.sub_dir,
                                to = target,
                                "archived a deleted volume's directory"
                            );
                            return Ok(());
                        }
                        // Someone made that name meanwhile: try the next one.
                        Err(Failure::Exists | Failure::NotEmpty) => continue,
                        Err(f) => return Err(f.into_error(&what("archiving"))),
                    }
                }
                unreachable!("the archive name loop only ends by returning")
            }
        }
    }
}
