//! Stowage's AWS EBS provider (`ebs.stowage.dev`): a volume is an EBS volume in one
//! availability zone, attached to the EC2 instance of the node that uses it.
//!
//! - Class parameters are checked against AWS's limits before any call ([`params`]).
//! - Every volume is tagged with its name and this installation's id when it is created (the
//!   tags are part of CreateVolume, so there is no untagged moment). The provider keeps an
//!   index of its volumes by name, read once from EC2; a create looks there first, and after a
//!   create whose outcome is unknown (a timeout) it asks EC2 by tag before trying again. So a
//!   crash or a retry never makes a second volume for a claim. The ClientToken is derived from
//!   the name as well, for AWS's own idempotency.
//! - Device names are allocated per instance under a lock, with a per-instance limit
//!   ([`devices`]); zone mismatches are refused before calling AWS.
//! - Waiting for a state is batched ([`poller`]): one DescribeVolumes serves every volume being
//!   waited for at that moment.
//! - Every EC2 HTTP attempt is counted by API and outcome ([`ec2`]); the client retries
//!   adaptively (backing off under `RequestLimitExceeded`).
//!
//! Layout, as in every provider crate: [`config`], `backend` (building it, `impl Provider`),
//! the name index (`names`), the instance cache (`instances`), and one file per operation.

mod attach;
mod backend;
pub mod config;
mod create;
pub mod devices;
pub mod ec2;
mod expand;
mod instances;
mod modify;
mod names;
pub mod params;
pub mod poller;
mod snapshots;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::EbsProvider;
pub use config::Config;
pub use instances::parse_provider_id;

pub const NAME: &str = "ebs.stowage.dev";
/// The topology key volumes and nodes are matched on.
pub const ZONE_KEY: &str = "topology.kubernetes.io/zone";
/// Zone labels read from nodes and topologies (the EBS CSI driver's own, too).
const ZONE_KEYS: [&str; 2] = [ZONE_KEY, "topology.ebs.csi.aws.com/zone"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_ids_name_zone_and_instance() {
        assert_eq!(
            parse_provider_id("aws:///us-east-1a/i-0123abcd"),
            Some(("us-east-1a".into(), "i-0123abcd".into()))
        );
        assert_eq!(
            parse_provider_id("aws:///i-0123abcd"),
            Some((String::new(), "i-0123abcd".into()))
        );
        for bad in [
            "",
            "gce://p/z/n",
            "aws:///us-east-1a/",
            "aws:///us-east-1a/x-1",
        ] {
            assert_eq!(parse_provider_id(bad), None, "{bad}");
        }
    }
}
