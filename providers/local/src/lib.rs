//! The local provider (`local.stowage.dev`): each volume is a directory under a root on one
//! node.
//!
//! Unlike local-path-provisioner, capacity is enforced: every volume's requested size is
//! recorded in a ledger under the root, and a create that would over-commit the root's capacity
//! (configured, or the filesystem's size) is refused with `ResourceExhausted`. Where the root is
//! on XFS mounted with project quotas, each volume also gets a hard quota.
//!
//! Paths are built only from validated volume names (`pvc-<uid>`): nothing a user types reaches
//! the filesystem, and nothing can escape the root.
//!
//! Layout, as in every provider crate: `config` (what the admin writes), `backend` (building
//! and validating), `core` (shared state and the ledger), and one file per operation.

mod attach;
mod backend;
mod config;
mod copy;
mod core;
mod create;
mod delete;
mod expand;
mod list;
mod quota;
mod snapshot;

pub use backend::LocalProvider;
pub use config::Config;

/// The provisioner name StorageClasses use.
pub const NAME: &str = "local.stowage.dev";
/// The topology key local volumes are pinned with.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
