//! Stowage's NFS provider (`nfs.stowage.dev`): a subdirectory per volume on an NFS export, the
//! way nfs-subdir-external-provisioner and csi-driver-nfs work, spoken from userspace (no
//! kernel mount on the Stowage host) in NFSv4.1 or NFSv3.
//!
//! Everything about a share is in its StorageClass ([`params`]), so the provider needs no
//! configuration and a new server is just a new class. Volume directories are placed by the
//! class's `subDir` template ([`subdir`]), which can never point outside the share. Each
//! volume has a record on the share itself ([`records`]), which makes creates idempotent
//! across restarts, accounts the requested sizes against the share's size and an optional cap,
//! and remembers what to do with the directory on delete (`delete`, `retain`, `archive`) even
//! when the class is gone. [`share`] holds the NFS connection, with per-request timeouts and
//! reconnects, so one dead server never holds up another.
//!
//! There is no attach step: `attach` checks the directory is there and answers with what a
//! node needs to `mount -t nfs` it.
//!
//! Snapshots, restores and clones are copies of a volume's directory tree on the same share
//! (`snapshot`), made through the NFS client in the background, streaming (`copy`), and moved
//! into place only when complete. Snapshot ids name their share ([`handle`]), so an id alone
//! finds its snapshot.
//!
//! Layout, as in every provider crate: [`config`], `backend` (building it, `impl Provider`),
//! the share and its records ([`share`], [`records`]), one file per operation, and for
//! snapshots, restores and clones, `snapshot` and `copy` (as in the local provider).

mod attach;
mod backend;
pub mod config;
mod copy;
mod create;
mod delete;
mod expand;
pub mod handle;
pub mod params;
pub mod records;
pub mod share;
mod snapshot;
pub mod subdir;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::NfsProvider;
pub use config::Config;

pub const NAME: &str = "nfs.stowage.dev";
