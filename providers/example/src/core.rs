//! The records: what each volume was created as, one JSON file per volume beside its image.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use stowage_provider::{ProviderError, Result};

/// What a volume was created as. Compared with every later create of the same name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub capacity_bytes: i64,
    pub parameters: BTreeMap<String, String>,
}

pub struct Core {
    pub root: PathBuf,
}

/// Filesystem errors are worth retrying: the disk may be back, the directory remade.
pub fn temporary(what: &str, e: io::Error) -> ProviderError {
    ProviderError::temporary(format!("example provider: {what}: {e}"))
}

impl Core {
    /// Paths are built only from names that passed `validate_volume_name`.
    pub fn image(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.img"))
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.json"))
    }

    pub async fn record(&self, name: &str) -> Result<Option<Record>> {
        read_record(&self.record_path(name)).await
    }

    /// Publishes a record if the name is free: written to a private file, then hard-linked
    /// into place, which fails if another instance got there first. Readers never see a
    /// half-written record. Returns the record that holds the name afterwards.
    pub async fn publish(&self, name: &str, record: &Record) -> Result<Record> {
        let tmp = self.write_private(name, record).await?;
        let linked = tokio::fs::hard_link(&tmp, self.record_path(name)).await;
        let _ = tokio::fs::remove_file(&tmp).await;
        match linked {
            Ok(()) => Ok(record.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                self.record(name).await?.ok_or_else(|| {
                    ProviderError::temporary(format!("the record of {name} vanished; retry"))
                })
            }
            Err(e) => Err(temporary("publishing a record", e)),
        }
    }

    /// Replaces a record (an expansion): a private file renamed over the old one.
    pub async fn replace(&self, name: &str, record: &Record) -> Result<()> {
        let tmp = self.write_private(name, record).await?;
        tokio::fs::rename(&tmp, self.record_path(name))
            .await
            .map_err(|e| temporary("replacing a record", e))
    }

    /// Writes a record to a file no other writer uses (dot-named: never listed).
    async fn write_private(&self, name: &str, record: &Record) -> Result<PathBuf> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .root
            .join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let body = serde_json::to_vec(record)
            .map_err(|e| temporary("encoding a record", io::Error::other(e)))?;
        tokio::fs::write(&tmp, body)
            .await
            .map_err(|e| temporary("writing a record", e))?;
        Ok(tmp)
    }

    /// Every volume's name and record.
    pub async fn records(&self) -> Result<Vec<(String, Record)>> {
        let mut out = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.root)
            .await
            .map_err(|e| temporary("listing the root", e))?;
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(|e| temporary("listing the root", e))?
        {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some(name) = file.strip_suffix(".json") else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            if let Some(r) = read_record(&entry.path()).await? {
                out.push((name.to_string(), r));
            }
        }
        Ok(out)
    }
}

async fn read_record(path: &Path) -> Result<Option<Record>> {
    match tokio::fs::read(path).await {
        Ok(body) => serde_json::from_slice(&body).map(Some).map_err(|e| {
            ProviderError::precondition(format!(
                "the record {} is damaged ({e}); an admin must repair or remove it",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(temporary("reading a record", e)),
    }
}
