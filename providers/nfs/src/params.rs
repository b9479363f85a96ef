//! StorageClass parameters: everything about a share lives in its class, so a new server or
//! export needs a new class and nothing else (no restart, no server configuration).
//!
//! | parameter | meaning |
//! |---|---|
//! | `server` | host name or address, optionally with `:port` (`[v6]:port` for IPv6) |
//! | `share` | the export path, e.g. `/exports/k8s` |
//! | `nfsvers` | `4.1` (default) or `3` (`4` means 4.1) |
//! | `subDir` | where a volume goes in the share; a template, default `${pv.metadata.name}` |
//! | `onDelete` | `delete` (default), `retain`, or `archive` (renamed to `archived-<dir>`) |
//! | `mountPermissions` | octal mode of the new directory, default `0777` |
//! | `capacity` | at most this much may be provisioned on the share (all classes together) |
//!
//! Anything else is refused, so a typo is an error on the claim rather than a silent default.

use std::collections::BTreeMap;

use stowage_provider::params::{
    ClassParameter, MOUNT_PERMISSIONS_PARAMETER, ON_DELETE_PARAMETER, QUANTITY_PATTERN,
    refuse_undescribed,
};
use stowage_provider::quantity::parse_bytes;
use stowage_provider::{ProviderError, Result};

use crate::subdir::Template;

/// The NFS protocol version spoken to a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Version {
    V3,
    V41,
}

impl Version {
    pub fn parse(s: &str) -> Result<Version> {
        match s {
            "3" => Ok(Version::V3),
            "4" | "4.1" => Ok(Version::V41),
            other => Err(ProviderError::invalid(format!(
                "nfsvers {other:?} is not supported: use 4.1 or 3"
            ))),
        }
    }

    /// As in `mount -o nfsvers=`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V3 => "3",
            Version::V41 => "4.1",
        }
    }
}

pub use stowage_provider::params::OnDelete;

/// An NFS server's address: a host and, when not the standard 2049, a port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Server {
    pub host: String,
    pub port: Option<u16>,
}

impl Server {
    pub fn parse(s: &str) -> Result<Server> {
        let bad = || {
            ProviderError::invalid(format!(
                "server {s:?} is not a host name or address, optionally with :port"
            ))
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            // [IPv6]:port or [IPv6]
            let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (format!("[{addr}]"), port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
                Some(_) => return Err(bad()), // a bare IPv6 address needs brackets
                None => (s.to_string(), None),
            }
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c));
        if !host_ok {
            return Err(bad());
        }
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?),
        };
        Ok(Server { host, port })
    }

    /// `host` or `host:port`, as written in handles and attributes.
    pub fn display(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.clone(),
        }
    }
}

/// Checks an export path: absolute, no `.`/`..` or empty segments, nothing that could be read
/// as URL syntax or as our handle separator. Returns it without a trailing slash.
pub fn parse_share(s: &str) -> Result<String> {
    let bad = |why: &str| ProviderError::invalid(format!("share {s:?}: {why}"));
    let trimmed = s.trim_end_matches('/');
    if !s.starts_with('/') {
        return Err(bad("must be an absolute export path like /exports/data"));
    }
    if trimmed.is_empty() {
        return Ok("/".to_string());
    }
    for segment in trimmed[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(bad("no empty, '.' or '..' segments"));
        }
    }
    if trimmed
        .chars()
        .any(|c| c.is_control() || "#?%\\".contains(c))
    {
        return Err(bad("no control characters, '#', '?', '%' or '\\'"));
    }
    Ok(trimmed.to_string())
}

/// A class's parameters, checked.
#[derive(Clone, Debug)]
pub struct ClassParams {
    pub server: Server,
    pub share: String,
    pub version: Version,
    pub sub_dir: Template,
    pub on_delete: OnDelete,
    pub mode: u32,
    pub capacity_cap: Option<i64>,
}

/// The parameters this provider takes, described for people; a name not here is refused.
pub const CLASS_PARAMETERS: [ClassParameter; 7] = [
    ClassParameter::new(
        "server",
        "The NFS server: a host name or address, optionally with :port ([v6]:port for IPv6)",
    )
    .pattern("(\\[[0-9A-Fa-f:.]+\\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")
    .required(),
    ClassParameter::new("share", "The exported path, e.g. /exports/k8s")
        .pattern("/.*")
        .required(),
    ClassParameter::new("nfsvers", "The NFS version spoken to the server (4 means 4.1)")
        .values(&["4.1", "4", "3"])
        .default("4.1"),
    ClassParameter::new(
        "subDir",
        "Where a volume goes in the share; may use ${pvc.metadata.name}, ${pvc.metadata.namespace} and ${pv.metadata.name}",
    )
    .default(crate::subdir::DEFAULT),
    ON_DELETE_PARAMETER,
    MOUNT_PERMISSIONS_PARAMETER,
    ClassParameter::new(
        "capacity",
        "At most this much may be provisioned on the share, by all classes together",
    )
    .pattern(QUANTITY_PATTERN),
];

impl ClassParams {
    pub fn parse(params: &BTreeMap<String, String>) -> Result<ClassParams> {
        refuse_undescribed(params, &CLASS_PARAMETERS, "NFS")?;
        let required = |key: &str| {
            params
                .get(key)
                .ok_or_else(|| ProviderError::invalid(format!("parameter {key:?} is required")))
        };
        let mode = stowage_provider::params::mount_permissions(params)?;
        let capacity_cap = match params.get("capacity") {
            None => None,
            Some(c) => Some(parse_bytes(c).filter(|b| *b > 0).ok_or_else(|| {
                ProviderError::invalid(format!("capacity {c:?} is not a size like 500Gi"))
            })?),
        };
        Ok(ClassParams {
            server: Server::parse(required("server")?)?,
            share: parse_share(required("share")?)?,
            version: params
                .get("nfsvers")
                .map_or(Ok(Version::V41), |v| Version::parse(v))?,
            sub_dir: Template::parse(
                params
                    .get("subDir")
                    .map_or(crate::subdir::DEFAULT, String::as_str),
            )?,
            on_delete: OnDelete::of(params)?,
            mode,
            capacity_cap,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use stowage_provider::params::from_pairs as params;

    #[test]
    fn servers_are_hosts_with_optional_ports() {
        assert_eq!(
            Server::parse("nfs.example.com").unwrap(),
            Server {
                host: "nfs.example.com".into(),
                port: None
            }
        );
        assert_eq!(Server::parse("127.0.0.1:2050").unwrap().port, Some(2050));
        assert_eq!(Server::parse("[::1]:2050").unwrap().host, "[::1]");
        for bad in [
            "",
            "::1",
            "a b",
            "host/x",
            "host:0",
            "host:99999",
            "h#x",
            "user@host",
        ] {
            assert!(Server::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shares_are_clean_absolute_paths() {
        assert_eq!(parse_share("/exports/k8s/").unwrap(), "/exports/k8s");
        assert_eq!(parse_share("/").unwrap(), "/");
        for bad in [
            "exports", "/a/../b", "/a//b", "/a/./b", "/a#b", "/a?b", "/a%2e",
        ] {
            assert!(parse_share(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classes_need_server_and_share_and_refuse_unknown_parameters() {
        let ok = ClassParams::parse(&params(&[("server", "h"), ("share", "/e")])).unwrap();
        assert_eq!(ok.version, Version::V41);
        assert_eq!(ok.on_delete, OnDelete::Delete);
        assert_eq!(ok.mode, 0o777);
        assert_eq!(ok.capacity_cap, None);
        let full = ClassParams::parse(&params(&[
            ("server", "h:2050"),
            ("share", "/e"),
            ("nfsvers", "3"),
            ("onDelete", "archive"),
            ("mountPermissions", "0750"),
            ("capacity", "10Gi"),
            ("subDir", "${pvc.metadata.namespace}/${pvc.metadata.name}"),
        ]))
        .unwrap();
        assert_eq!(full.version, Version::V3);
        assert_eq!(full.on_delete, OnDelete::Archive);
        assert_eq!(full.mode, 0o750);
        assert_eq!(full.capacity_cap, Some(10 << 30));
        for bad in [
            vec![("share", "/e")],
            vec![("server", "h")],
            vec![("server", "h"), ("share", "/e"), ("nfsvers", "4.2")],
            vec![("server", "h"), ("share", "/e"), ("onDelete", "shred")],
            vec![
                ("server", "h"),
                ("share", "/e"),
                ("mountPermissions", "999"),
            ],
            vec![("server", "h"), ("share", "/e"), ("capacity", "-1Gi")],
            vec![("server", "h"), ("share", "/e"), ("sever", "typo")],
            vec![
                ("server", "h"),
                ("share", "/e"),
                ("subDir", "${pvc.spec.x}"),
            ],
        ] {
            assert!(ClassParams::parse(&params(&bad)).is_err(), "{bad:?}");
        }
    }
}
