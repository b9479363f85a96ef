//! Volume handles: `<server>#<share>#<subDir>#<name>`, everything needed to find a volume's
//! directory again without its StorageClass (which may be gone by delete time). None of the
//! parts can contain `#`: servers, shares and rendered subDirs are checked for it.

use stowage_provider::{ProviderError, Result, validate_volume_name};

use crate::params::{Server, parse_share};
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
}
