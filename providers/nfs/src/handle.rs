//! Volume handles and snapshot ids: everything needed to find a volume's directory, or a
//! snapshot, again from the string alone (the class may be gone by delete time; a snapshot id
//! is all `snapshot_info`, `delete_snapshot` and a restore are given).
//!
//! - a volume: `<server>#<share>#<subDir>#<name>`;
//! - a snapshot: `<server>#<share>#snapshot#<nfsvers>#<name>`, which lives in
//!   `<share>/.stowage/snapshots/<name>` (see the `snapshot` module).
//!
//! None of the parts can contain `#`: servers, shares and rendered subDirs are checked for it,
//! and names are volume names. Anything that does not parse is not ours, and names nothing.

use stowage_provider::{ProviderError, Result, validate_volume_name};

use crate::params::{Server, Version, parse_share};
use crate::subdir::check_relative_path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeHandle {
    pub server: Server,
    pub share: String,
    pub sub_dir: String,
    pub name: String,
}

impl VolumeHandle {
    pub fn encode(&self) -> String {
        format!(
            "{}#{}#{}#{}",
            self.server.display(),
            self.share,
            self.sub_dir,
            self.name
        )
    }

    /// Parses a handle; a string that is not one of ours is `NotFound` (no such volume).
    pub fn parse(handle: &str) -> Result<VolumeHandle> {
        let not_ours =
            || ProviderError::not_found(format!("{handle:?} is not an NFS volume handle"));
        let parts: Vec<&str> = handle.split('#').collect();
        let [server, share, sub_dir, name] = parts.as_slice() else {
            return Err(not_ours());
        };
        let parsed = VolumeHandle {
            server: Server::parse(server).map_err(|_| not_ours())?,
            share: parse_share(share).map_err(|_| not_ours())?,
            sub_dir: sub_dir.to_string(),
            name: name.to_string(),
        };
        check_relative_path(sub_dir).map_err(|_| not_ours())?;
        validate_volume_name(name).map_err(|_| not_ours())?;
        Ok(parsed)
    }
}

/// A snapshot's id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotId {
    pub server: Server,
    pub share: String,
    /// The protocol the snapshot was made over (NFSv3-only servers exist).
    pub version: Version,
    pub name: String,
}

const SNAPSHOT_MARK: &str = "snapshot";

impl SnapshotId {
    pub fn encode(&self) -> String {
        format!(
            "{}#{}#{SNAPSHOT_MARK}#{}#{}",
            self.server.display(),
            self.share,
            self.version.as_str(),
            self.name
        )
    }

    /// Parses an id; a string that is not one of ours is `NotFound` (no such snapshot).
    pub fn parse(id: &str) -> Result<SnapshotId> {
        let not_ours = || ProviderError::not_found(format!("{id:?} is not an NFS snapshot id"));
        let parts: Vec<&str> = id.split('#').collect();
        let [server, share, SNAPSHOT_MARK, version, name] = parts.as_slice() else {
            return Err(not_ours());
        };
        validate_volume_name(name).map_err(|_| not_ours())?;
        Ok(SnapshotId {
            server: Server::parse(server).map_err(|_| not_ours())?,
            share: parse_share(share).map_err(|_| not_ours())?,
            version: Version::parse(version).map_err(|_| not_ours())?,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_provider::ErrorKind;

    #[test]
    fn handles_round_trip_and_foreign_strings_are_not_found() {
        let h = VolumeHandle {
            server: Server::parse("127.0.0.1:2050").unwrap(),
            share: "/export".into(),
            sub_dir: "team-a/data".into(),
            name: "pvc-1".into(),
        };
        assert_eq!(h.encode(), "127.0.0.1:2050#/export#team-a/data#pvc-1");
        assert_eq!(VolumeHandle::parse(&h.encode()).unwrap(), h);
        for foreign in [
            "",
            "vol-0123",
            "h#/e#../x#pvc-1",
            "h#/e#x#PVC",
            "h#e#x#pvc-1",
            "h#/e#x#pvc-1#extra",
        ] {
            assert_eq!(
                VolumeHandle::parse(foreign).unwrap_err().kind,
                ErrorKind::NotFound,
                "{foreign:?}"
            );
        }
    }

    #[test]
    fn snapshot_ids_round_trip_and_anything_else_is_not_found() {
        let id = SnapshotId {
            server: Server::parse("127.0.0.1:2050").unwrap(),
            share: "/export".into(),
            version: Version::V3,
            name: "snapshot-1".into(),
        };
        assert_eq!(id.encode(), "127.0.0.1:2050#/export#snapshot#3#snapshot-1");
        assert_eq!(SnapshotId::parse(&id.encode()).unwrap(), id);
        for foreign in [
            "",
            "snap-0123",
            "127.0.0.1:2050#/export#pvc-1#pvc-1",
            "h#/e#snapshot#4.1#../x",
            "h#/e#snapshot#4.1#a/b",
            "h#/e#snapshot#2#s",
            "h#e#snapshot#3#s",
            "h#/e#other#3#s",
            "h#/e#snapshot#3#s#extra",
        ] {
            assert_eq!(
                SnapshotId::parse(foreign).unwrap_err().kind,
                ErrorKind::NotFound,
                "{foreign:?}"
            );
        }
        // A snapshot id is no volume handle, and the other way round.
        assert!(VolumeHandle::parse(&id.encode()).is_err());
    }
}
