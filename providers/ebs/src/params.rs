//! StorageClass parameters, checked against AWS's real limits before any EC2 call (EC2
//! emulators accept sizes and IOPS that AWS refuses, and AWS's own errors come late and
//! vague).
//!
//! | parameter | meaning |
//! |---|---|
//! | `type` | `gp3` (default), `gp2`, `io1`, `io2`, `st1`, `sc1`, `standard` |
//! | `iops` | provisioned IOPS (gp3, io1, io2) |
//! | `iopsPerGB` | IOPS per GiB of the requested size (io1, io2, gp3), capped at the type's maximum |
//! | `throughput` | MiB/s (gp3 only) |
//! | `encrypted` | `true` or `false` (default) |
//! | `kmsKeyId` | the KMS key for encryption (needs `encrypted: "true"`) |
//! | `fsType` | the filesystem a node should make: `ext4` (default), `xfs`, `ext3` |
//! | `tagSpecification_N` | `key=value` tags; values may use `{{ .PVCName }}`, `{{ .PVCNamespace }}`, `{{ .PVName }}` |

use std::collections::BTreeMap;

use stowage_provider::params::ClassParameter;
use stowage_provider::{ClaimRef, ProviderError, Result};

pub const GIB: i64 = 1 << 30;

/// One EBS volume type's limits, as AWS documents them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeLimits {
    pub name: &'static str,
    pub min_gib: i64,
    pub max_gib: i64,
    /// (min, max, max per GiB) when IOPS can be provisioned.
    pub iops: Option<(i64, i64, i64)>,
    /// (min, max) MiB/s when throughput can be provisioned, and the most MiB/s per IOPS ×1000.
    pub throughput: Option<(i64, i64)>,
}

pub const TYPES: [TypeLimits; 7] = [
    TypeLimits {
        name: "gp3",
        min_gib: 1,
        max_gib: 65536,
        iops: Some((3000, 80000, 500)),
        throughput: Some((125, 2000)),
    },
    TypeLimits {
        name: "gp2",
        min_gib: 1,
        max_gib: 16384,
        iops: None,
        throughput: None,
    },
    TypeLimits {
        name: "io1",
        min_gib: 4,
        max_gib: 16384,
        iops: Some((100, 64000, 50)),
        throughput: None,
    },
    TypeLimits {
        name: "io2",
        min_gib: 4,
        max_gib: 65536,
        iops: Some((100, 256000, 1000)),
        throughput: None,
    },
    TypeLimits {
        name: "st1",
        min_gib: 125,
        max_gib: 16384,
        iops: None,
        throughput: None,
    },
    TypeLimits {
        name: "sc1",
        min_gib: 125,
        max_gib: 16384,
        iops: None,
        throughput: None,
    },
    TypeLimits {
        name: "standard",
        min_gib: 1,
        max_gib: 1024,
        iops: None,
        throughput: None,
    },
];

pub fn limits_of(volume_type: &str) -> Option<&'static TypeLimits> {
    TYPES.iter().find(|t| t.name == volume_type)
}

/// Tag keys Stowage sets itself; classes may not set them.
pub const NAME_TAG: &str = "stowage.dev/volume-name";
pub const OWNER_TAG: &str = "stowage.dev/installation";
/// The class's `fsType`, which EC2 does not keep: an existing volume is compared with it.
pub const FS_TYPE_TAG: &str = "stowage.dev/fs-type";

/// What CreateVolume gets, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    pub volume_type: &'static str,
    pub size_gib: i64,
    pub iops: Option<i64>,
    pub throughput: Option<i64>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub fs_type: String,
    pub tags: BTreeMap<String, String>,
}

/// The parameters this provider takes, described for people; a name not here (or a
/// `tagSpecification_N`) is refused.
pub const CLASS_PARAMETERS: [ClassParameter; 8] = [
    ClassParameter::new("type", "The EBS volume type")
        .values(&["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"])
        .default("gp3"),
    ClassParameter::new(
        "iops",
        "Provisioned IOPS (gp3, io1, io2); io1 and io2 need this or iopsPerGB",
    )
    .pattern("[0-9]+"),
    ClassParameter::new(
        "iopsPerGB",
        "IOPS per GiB of the requested size (gp3, io1, io2), capped at the type's maximum",
    )
    .pattern("[0-9]+"),
    ClassParameter::new("throughput", "Provisioned throughput in MiB/s (gp3 only)")
        .pattern("[0-9]+"),
    ClassParameter::new("encrypted", "Encrypt the volume")
        .values(&["true", "false"])
        .default("false"),
    ClassParameter::new(
        "kmsKeyId",
        "The KMS key to encrypt with (needs encrypted: true); the account's default key when absent",
    ),
    ClassParameter::new("fsType", "The filesystem a node makes on the volume")
        .values(&["ext4", "xfs", "ext3"])
        .default("ext4"),
    ClassParameter::new(
        "tagSpecification_",
        "A tag, key=value; values may use {{ .PVCName }}, {{ .PVCNamespace }} and {{ .PVName }}",
    )
    .pattern("[^=]{1,128}=.*")
    .numbered(),
];

/// Checks a class's parameters without a claim: refuses what no size could be provisioned
/// with (the largest size of the type is tried, so only size-independent rules refuse).
pub fn check_class(params: &BTreeMap<String, String>) -> Result<()> {
    let type_name = params.get("type").map_or("gp3", String::as_str);
    let bytes = limits_of(type_name).map_or(GIB, |l| l.max_gib * GIB);
    // Empty names render tag templates at their shortest, as the shortest claim would.
    VolumeSpec::parse(params, bytes, &ClaimRef::default(), "").map(|_| ())
}

fn number(params: &BTreeMap<String, String>, key: &str) -> Result<Option<i64>> {
    params
        .get(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    ProviderError::invalid(format!("{key} {v:?} is not a positive whole number"))
                })
        })
        .transpose()
}

/// The size in GiB for a request in bytes (EBS sizes are whole GiB; never smaller).
pub fn gib_for(bytes: i64) -> i64 {
    // Rounding up by remainder cannot overflow where `bytes + GIB - 1` did, near i64::MAX.
    let bytes = bytes.max(1);
    bytes / GIB + i64::from(bytes % GIB != 0)
}

impl VolumeSpec {
    /// How an existing volume differs from this request (one phrase per difference), for a
    /// create that finds the name taken. What EC2 does not report is not compared; what EC2
    /// chose itself (a gp3's baseline IOPS) is not a difference unless the class named it.
    pub fn differences(
        &self,
        existing: &crate::poller::VolumeView,
        zone: &str,
        snapshot: Option<&str>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut differ = |what: &str, have: String, want: String| {
            if have != want {
                out.push(format!("{what} {have}, not {want}"));
            }
        };
        differ(
            "size (GiB)",
            existing.size_gib.to_string(),
            self.size_gib.to_string(),
        );
        differ("zone", existing.zone.clone(), zone.to_string());
        if !existing.volume_type.is_empty() {
            differ(
                "type",
                existing.volume_type.clone(),
                self.volume_type.to_string(),
            );
        }
        if let (Some(want), Some(have)) = (self.iops, existing.iops) {
            differ("iops", have.to_string(), want.to_string());
        }
        if let (Some(want), Some(have)) = (self.throughput, existing.throughput) {
            differ("throughput", have.to_string(), want.to_string());
        }
        differ(
            "encrypted",
            existing.encrypted.to_string(),
            self.encrypted.to_string(),
        );
        if let (Some(want), Some(have)) = (&self.kms_key_id, &existing.kms_key_id) {
            differ("kmsKeyId", have.clone(), want.clone());
        }
        differ(
            "snapshot",
            existing
                .snapshot_id
                .clone()
                .unwrap_or_else(|| "none".into()),
            snapshot.unwrap_or("none").to_string(),
        );
        if let Some(have) = &existing.fs_type {
            differ("fsType", have.clone(), self.fs_type.clone());
        }
        out
    }
}

fn render_tag(value: &str, claim: &ClaimRef, volume_name: &str) -> String {
    value
        .replace("{{ .PVCName }}", &claim.name)
        .replace("{{ .PVCNamespace }}", &claim.namespace)
        .replace("{{ .PVName }}", volume_name)
}

impl VolumeSpec {
    pub fn parse(
        params: &BTreeMap<String, String>,
        bytes: i64,
        claim: &ClaimRef,
        volume_name: &str,
    ) -> Result<VolumeSpec> {
        stowage_provider::params::refuse_undescribed(params, &CLASS_PARAMETERS, "EBS")?;
        let type_name = params.get("type").map_or("gp3", String::as_str);
        let limits = limits_of(type_name).ok_or_else(|| {
            ProviderError::invalid(format!(
                "type {type_name:?} is not an EBS volume type: use gp3, gp2, io1, io2, st1, sc1 or standard"
            ))
        })?;
        let size_gib = gib_for(bytes).max(limits.min_gib);
        if size_gib > limits.max_gib {
            return Err(ProviderError::invalid(format!(
                "{type_name} volumes are {}–{} GiB; {size_gib} GiB requested",
                limits.min_gib, limits.max_gib
            )));
        }
        let iops = number(params, "iops")?;
        let per_gb = number(params, "iopsPerGB")?;
        if iops.is_some() && per_gb.is_some() {
            return Err(ProviderError::invalid("give iops or iopsPerGB, not both"));
        }
        let iops = match (
            limits.iops,
            iops.or(per_gb.map(|p| p.saturating_mul(size_gib))),
        ) {
            (None, Some(_)) => {
                return Err(ProviderError::invalid(format!(
                    "{type_name} volumes have no provisioned IOPS"
                )));
            }
            (Some((min, max, per_gib)), Some(wanted)) => {
                // iopsPerGB scales with the size and is capped, as the AWS EBS CSI driver does;
                // an explicit iops must fit as given.
                let wanted = if per_gb.is_some() {
                    // Never below the type's baseline, even on a volume too small for the
                    // ratio to reach it (gp3's 3,000 on 1 GiB).
                    wanted.clamp(min, max.min(per_gib * size_gib).max(min))
                } else {
                    wanted
                };
                if wanted < min || wanted > max {
                    return Err(ProviderError::invalid(format!(
                        "{type_name} IOPS are {min}–{max}; {wanted} requested"
                    )));
                }
                // The ratio bounds IOPS above the type's baseline (gp3 has 3,000 at any size).
                if wanted > per_gib * size_gib && wanted > min {
                    return Err(ProviderError::invalid(format!(
                        "{type_name} allows at most {per_gib} IOPS per GiB: {wanted} IOPS need at least {} GiB, the volume has {size_gib}",
                        (wanted + per_gib - 1) / per_gib
                    )));
                }
                Some(wanted)
            }
            (Some(_), None) if matches!(type_name, "io1" | "io2") => {
                return Err(ProviderError::invalid(format!(
                    "{type_name} volumes need iops or iopsPerGB"
                )));
            }
            (_, None) => None,
        };
        let throughput = match (limits.throughput, number(params, "throughput")?) {
            (None, Some(_)) => {
                return Err(ProviderError::invalid(format!(
                    "{type_name} volumes have no provisioned throughput (gp3 only)"
                )));
            }
            (Some((min, max)), Some(t)) => {
                if t < min || t > max {
                    return Err(ProviderError::invalid(format!(
                        "gp3 throughput is {min}–{max} MiB/s; {t} requested"
                    )));
                }
                // At most 0.25 MiB/s per provisioned IOPS (3000 IOPS when none are given).
                let with_iops = iops.unwrap_or(3000);
                if t * 4 > with_iops {
                    return Err(ProviderError::invalid(format!(
                        "gp3 allows 0.25 MiB/s per IOPS: {t} MiB/s needs at least {} IOPS, the volume has {with_iops}",
                        t * 4
                    )));
                }
                Some(t)
            }
            (_, None) => None,
        };
        let encrypted = match params.get("encrypted").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ProviderError::invalid(format!(
                    "encrypted {other:?}: use \"true\" or \"false\""
                )));
            }
        };
        let kms_key_id = params.get("kmsKeyId").cloned();
        if kms_key_id.is_some() && !encrypted {
            return Err(ProviderError::invalid("kmsKeyId needs encrypted: \"true\""));
        }
        let fs_type = params
            .get("fsType")
            .cloned()
            .unwrap_or_else(|| "ext4".into());
        if !matches!(fs_type.as_str(), "ext4" | "ext3" | "xfs") {
            return Err(ProviderError::invalid(format!(
                "fsType {fs_type:?}: use ext4, ext3 or xfs"
            )));
        }
        let mut tags = BTreeMap::new();
        for (key, spec) in params
            .iter()
            .filter(|(k, _)| k.starts_with("tagSpecification_"))
        {
            let (k, v) = spec.split_once('=').ok_or_else(|| {
                ProviderError::invalid(format!("{key} {spec:?} is not key=value"))
            })?;
            let (k, v) = (k.trim(), render_tag(v.trim(), claim, volume_name));
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                return Err(ProviderError::invalid(format!(
                    "{key}: tag keys are 1–128 characters and values at most 256"
                )));
            }
            if k.starts_with("aws:") || k.starts_with("stowage.dev/") {
                return Err(ProviderError::invalid(format!(
                    "{key}: tag keys starting with aws: or stowage.dev/ are reserved"
                )));
            }
            tags.insert(k.to_string(), v);
        }
        if tags.len() > 40 {
            return Err(ProviderError::invalid("at most 40 tags per class"));
        }
        Ok(VolumeSpec {
            volume_type: limits.name,
            size_gib,
            iops,
            throughput,
            encrypted,
            kms_key_id,
            fs_type,
            tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)], bytes: i64) -> Result<VolumeSpec> {
        let params = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let claim = ClaimRef {
            namespace: "team-a".into(),
            name: "data".into(),
            ..Default::default()
        };
        VolumeSpec::parse(&params, bytes, &claim, "pvc-1")
    }

    #[test]
    fn defaults_are_a_gp3_volume_of_whole_gib() {
        let s = parse(&[], 1).unwrap();
        assert_eq!(s.volume_type, "gp3");
        assert_eq!(s.size_gib, 1);
        assert_eq!(parse(&[], GIB + 1).unwrap().size_gib, 2);
        assert_eq!(s.fs_type, "ext4");
        assert!(!s.encrypted);
        assert_eq!(
            parse(&[("type", "st1")], GIB).unwrap().size_gib,
            125,
            "raised to the type's minimum"
        );
    }

    #[test]
    fn sizes_and_rates_near_the_integer_limits_are_refused_not_wrapped() {
        assert_eq!(gib_for(i64::MAX), i64::MAX / GIB + 1);
        assert!(parse(&[], i64::MAX).is_err(), "far over the type's maximum");
        assert!(
            parse(
                &[("type", "io2"), ("iopsPerGB", &i64::MAX.to_string())],
                10 * GIB
            )
            .is_ok()
        );
    }

    #[test]
    fn a_class_is_checked_by_the_rules_no_size_can_meet() {
        let check = |pairs: &[(&str, &str)]| {
            check_class(&stowage_provider::params::from_pairs(pairs)).map_err(|e| e.message)
        };
        // Too many IOPS for a small claim, but a large one can have them: left to the claim.
        assert!(check(&[("type", "io1"), ("iops", "64000")]).is_ok());
        assert!(check(&[("type", "gp3"), ("throughput", "1000"), ("iops", "4000")]).is_ok());
        assert!(check(&[("tagSpecification_1", "team={{ .PVCNamespace }}")]).is_ok());
        for (pairs, says) in [
            (vec![("type", "gp4")], "not an EBS volume type"),
            (
                vec![("type", "gp2"), ("iops", "100")],
                "no provisioned IOPS",
            ),
            (vec![("type", "io1")], "need iops or iopsPerGB"),
            (vec![("type", "io2"), ("iops", "999999")], "IOPS are"),
            (vec![("kmsKeyId", "k")], "needs encrypted"),
            (vec![("fsType", "zfs")], "fsType"),
            (vec![("tyep", "gp3")], "unknown parameter"),
            (vec![("tagSpecification_1", "no-equals")], "not key=value"),
        ] {
            let e = check(&pairs).expect_err(says);
            assert!(e.contains(says), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn aws_limits_are_enforced_before_any_call() {
        for (pairs, bytes, why) in [
            (vec![("type", "gp4")], GIB, "unknown type"),
            (
                vec![("type", "standard")],
                2000 * GIB,
                "standard is at most 1 TiB",
            ),
            (vec![("type", "gp2")], 20000 * GIB, "gp2 is at most 16 TiB"),
            (vec![("type", "io1")], 10 * GIB, "io1 needs iops"),
            (
                vec![("type", "io1"), ("iops", "1000")],
                10 * GIB,
                "io1: 50 IOPS/GiB",
            ),
            (
                vec![("type", "io2"), ("iops", "300000")],
                1000 * GIB,
                "io2 max",
            ),
            (
                vec![("type", "gp2"), ("iops", "3000")],
                GIB,
                "gp2 has no iops",
            ),
            (vec![("iops", "1000")], 100 * GIB, "gp3 min 3000"),
            (vec![("iops", "4000")], GIB, "gp3: 500 IOPS/GiB"),
            (vec![("throughput", "100")], GIB, "gp3 min 125"),
            (
                vec![("throughput", "1000")],
                100 * GIB,
                "0.25 MiB/s per IOPS",
            ),
            (
                vec![("type", "io1"), ("throughput", "200")],
                100 * GIB,
                "gp3 only",
            ),
            (
                vec![("iops", "3000"), ("iopsPerGB", "10")],
                100 * GIB,
                "not both",
            ),
            (vec![("encrypted", "yes")], GIB, "boolean"),
            (vec![("kmsKeyId", "k")], GIB, "needs encrypted"),
            (vec![("fsType", "ntfs")], GIB, "fs"),
            (vec![("tagSpecification_1", "novalue")], GIB, "key=value"),
            (vec![("tagSpecification_1", "aws:x=1")], GIB, "reserved"),
            (
                vec![("tagSpecification_1", "stowage.dev/volume-name=x")],
                GIB,
                "reserved",
            ),
            (vec![("iops", "-5")], GIB, "positive"),
            (vec![("typo", "x")], GIB, "unknown parameter"),
        ] {
            assert!(parse(&pairs, bytes).is_err(), "{why}: {pairs:?}");
        }
    }

    #[test]
    fn valid_performance_settings_pass() {
        let s = parse(&[("iops", "6000"), ("throughput", "500")], 100 * GIB).unwrap();
        assert_eq!((s.iops, s.throughput), (Some(6000), Some(500)));
        let s = parse(&[("type", "io2"), ("iopsPerGB", "100")], 50 * GIB).unwrap();
        assert_eq!(s.iops, Some(5000));
        let s = parse(&[("type", "io1"), ("iopsPerGB", "100")], 10 * GIB).unwrap();
        assert_eq!(
            s.iops,
            Some(500),
            "iopsPerGB is capped at the type's per-GiB maximum"
        );
        let s = parse(&[("iopsPerGB", "10")], GIB).unwrap();
        assert_eq!(s.iops, Some(3000), "gp3's baseline, on a volume of 1 GiB");
        let s = parse(&[("iops", "3000")], GIB).unwrap();
        assert_eq!(s.iops, Some(3000), "the baseline is allowed at any size");
        let s = parse(
            &[
                ("encrypted", "true"),
                ("kmsKeyId", "arn:aws:kms:us-east-1:1:key/k"),
            ],
            GIB,
        )
        .unwrap();
        assert!(s.encrypted);
    }

    #[test]
    fn tags_render_claim_and_volume_names() {
        let s = parse(
            &[
                (
                    "tagSpecification_1",
                    "owner={{ .PVCNamespace }}/{{ .PVCName }}",
                ),
                ("tagSpecification_2", "volume = {{ .PVName }}"),
            ],
            GIB,
        )
        .unwrap();
        assert_eq!(s.tags["owner"], "team-a/data");
        assert_eq!(s.tags["volume"], "pvc-1");
    }
}
