//! An example provider (`example.stowage.dev`): each volume is a sparse image file,
//! `<root>/<name>.img`, described by a record, `<root>/<name>.json`.
//!
//! It is small on purpose, and shows the three things every provider must get right:
//! - **one volume per name, across processes**: the record is published with a hard link,
//!   which fails if the name is taken, so two instances racing on one name agree on one record
//!   (a lock inside one process, like `KeyedLock`, cannot do that);
//! - **retries after a crash**: the record is written first and the image made from it, so a
//!   create cut off anywhere is finished by the next one with the same request;
//! - **the contract's error kinds**: `InvalidArgument` before anything is made,
//!   `AlreadyExists` for the same name with another request, `NotFound` for a missing volume.
//!
//! Layout, as in every provider crate: `config` (what the admin writes under
//! `providers.example`), `backend` (building it, and `impl Provider`), `core` (the records),
//! and one file per operation.

mod backend;
mod config;
mod core;
mod create;
mod delete;
mod expand;

pub use backend::ExampleProvider;
pub use config::Config;

/// The provisioner name StorageClasses use.
pub const NAME: &str = "example.stowage.dev";
