//! The resource model: the kinds Stowage serves, and per kind the rules the API applies to it
//! (scope, defaults, validation, immutability, status split, field labels, table columns).
//!
//! Everything generic (HTTP handlers, the registry, the store) works over [`Kind`] and
//! [`AnyObject`], and reaches the per-kind rules through [`KindStrategy`]. Adding a kind means one
//! module here and one line in [`for_each_kind!`]; no handler is written per kind.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::machinery::validation::FieldErrors;

pub mod csidriver;
pub mod csinode;
pub mod csistoragecapacity;
pub mod event;
pub mod lease;
pub mod names;
pub mod node;
pub mod pod;
pub mod pv;
pub mod pvc;
pub mod resourcequota;
pub mod schema;
pub mod storageclass;
pub mod table;
pub mod target;
pub mod validate;
pub mod volumeattachment;
pub mod volumeattributesclass;
pub mod volumesnapshot;
pub mod volumesnapshotclass;
pub mod volumesnapshotcontent;

pub use k8s_openapi::api::coordination::v1::Lease;
pub use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim, Pod};
pub use k8s_openapi::api::storage::v1::{
    CSIDriver, CSINode, CSIStorageCapacity, StorageClass, VolumeAttachment, VolumeAttributesClass,
};

pub use resourcequota::ResourceQuota;
pub use table::Column;
pub use volumesnapshot::VolumeSnapshot;
pub use volumesnapshotclass::VolumeSnapshotClass;
pub use volumesnapshotcontent::VolumeSnapshotContent;

/// The one list of every kind the API serves: `Variant => Type [shape]`. Everything that must
/// name every kind (the [`Kind`] enum, [`AnyObject`], [`with_kind!`], the schemas) is derived
/// from it. The shape says how the kind splits between its main resource and `/status`:
/// - `spec_status`: a `spec` and a `status`, written through the main resource and `/status`;
/// - `spec_only`: a `spec` and no status;
/// - `whole`: its fields at the top level, no status;
/// - `record`: a record of something that happened, with no desired state.
///
/// `for_each_kind!(m)` calls `m! { Variant => Type [shape], ... }`.
#[macro_export]
macro_rules! for_each_kind {
    (@list $($callback:tt)*) => {
        $crate::for_each_kind! { @expand [$($callback)*]
            StorageClass => $crate::resources::StorageClass [whole],
            PersistentVolume => $crate::resources::PersistentVolume [spec_status],
            PersistentVolumeClaim => $crate::resources::PersistentVolumeClaim [spec_status],
            VolumeAttachment => $crate::resources::VolumeAttachment [spec_status],
            Node => $crate::resources::Node [spec_status],
            Pod => $crate::resources::Pod [spec_status],
            Event => $crate::resources::Event [record],
            Lease => $crate::resources::Lease [spec_only],
            VolumeSnapshot => $crate::resources::VolumeSnapshot [spec_status],
            VolumeSnapshotClass => $crate::resources::VolumeSnapshotClass [whole],
            VolumeSnapshotContent => $crate::resources::VolumeSnapshotContent [spec_status],
            ResourceQuota => $crate::resources::ResourceQuota [spec_status],
            CSIDriver => $crate::resources::CSIDriver [spec_only],
            CSINode => $crate::resources::CSINode [spec_status],
            VolumeAttributesClass => $crate::resources::VolumeAttributesClass [whole],
            CSIStorageCapacity => $crate::resources::CSIStorageCapacity [whole],
        }
    };
    (@expand [call $m:ident] $($v:ident => $ty:ty [$shape:ident],)*) => {
        $m! { $($v => $ty [$shape],)* }
    };
    (@expand [match $kind:expr, $t:ident, $body:expr] $($v:ident => $ty:ty [$shape:ident],)*) => {
        match $kind {
            $($crate::resources::Kind::$v => {
                type $t = $ty;
                $body
            })*
        }
    };
    ($m:ident) => {
        $crate::for_each_kind! { @list call $m }
    };
}

/// Runs `$body` with `$t` bound to the concrete type of `$kind`: generic code, dynamic kind.
#[macro_export]
macro_rules! with_kind {
    ($kind:expr, $t:ident => $body:expr) => {
        $crate::for_each_kind!(@list match $kind, $t, $body)
    };
}

/// How a kind splits between its main resource and `/status`, from its shape.
pub trait StatusSplit {
    /// For a write to the main resource: the status stays as it was in `old`.
    fn keep_status(&mut self, old: &Self);
    /// For a write to `/status`: everything but status (and metadata, handled generically)
    /// stays as it was in `old`.
    fn keep_all_but_status(&mut self, old: &Self);
    /// Whether the desired state (everything but metadata and status) differs: bumps
    /// `generation`.
    fn spec_changed(&self, old: &Self) -> bool;
}

macro_rules! status_split {
    ($ty:ty, spec_status) => {
        impl StatusSplit for $ty {
            fn keep_status(&mut self, old: &Self) {
                self.status = old.status.clone();
            }
            fn keep_all_but_status(&mut self, old: &Self) {
                self.spec = old.spec.clone();
            }
            fn spec_changed(&self, old: &Self) -> bool {
                self.spec != old.spec
            }
        }
    };
    ($ty:ty, spec_only) => {
        impl StatusSplit for $ty {
            fn keep_status(&mut self, _old: &Self) {}
            fn keep_all_but_status(&mut self, _old: &Self) {}
            fn spec_changed(&self, old: &Self) -> bool {
                self.spec != old.spec
            }
        }
    };
    ($ty:ty, whole) => {
        impl StatusSplit for $ty {
            fn keep_status(&mut self, _old: &Self) {}
            fn keep_all_but_status(&mut self, _old: &Self) {}
            fn spec_changed(&self, old: &Self) -> bool {
                let without_meta = |o: &Self| {
                    let mut o = o.clone();
                    o.metadata = Default::default();
                    o
                };
                without_meta(self) != without_meta(old)
            }
        }
    };
    ($ty:ty, record) => {
        impl StatusSplit for $ty {
            fn keep_status(&mut self, _old: &Self) {}
            fn keep_all_but_status(&mut self, _old: &Self) {}
            fn spec_changed(&self, _old: &Self) -> bool {
                false
            }
        }
    };
}

macro_rules! define_kinds {
    ($($variant:ident => $ty:ty [$shape:ident],)*) => {
        /// A kind of object the API serves.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($variant,)*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            pub fn info(self) -> &'static KindInfo {
                match self {
                    $(Kind::$variant => &<$ty as KindStrategy>::INFO,)*
                }
            }

            /// How the kind splits between its main resource and `/status`.
            pub fn shape(self) -> &'static str {
                match self {
                    $(Kind::$variant => stringify!($shape),)*
                }
            }
        }

        $(status_split!($ty, $shape);)*

        /// An object of any kind, typed. Boxed: some kinds are kilobytes in size.
        #[derive(Clone, Debug, PartialEq)]
        pub enum AnyObject {
            $($variant(Box<$ty>),)*
        }

        impl AnyObject {
            pub fn kind(&self) -> Kind {
                match self {
                    $(AnyObject::$variant(_) => Kind::$variant,)*
                }
            }

            pub fn meta(&self) -> &ObjectMeta {
                match self {
                    $(AnyObject::$variant(o) => &o.metadata,)*
                }
            }

            pub fn meta_mut(&mut self) -> &mut ObjectMeta {
                match self {
                    $(AnyObject::$variant(o) => &mut o.metadata,)*
                }
            }

            /// The wire form: JSON with `apiVersion` and `kind`.
            pub fn to_json(&self) -> Vec<u8> {
                let result = match self {
                    $(AnyObject::$variant(o) => serde_json::to_vec(o),)*
                };
                // Serializing these types cannot fail: they hold only strings, numbers and maps.
                result.expect("k8s-openapi types always serialize")
            }

            /// Writes the wire form into `w` (a meter, a buffer) without building it first.
            pub fn write_json<W: std::io::Write>(&self, w: W) {
                let result = match self {
                    $(AnyObject::$variant(o) => serde_json::to_writer(w, o),)*
                };
                // Only the writer can fail, and the meters and buffers used here never do.
                let _ = result;
            }

            pub fn to_value(&self) -> serde_json::Value {
                let result = match self {
                    $(AnyObject::$variant(o) => serde_json::to_value(o),)*
                };
                result.expect("k8s-openapi types always serialize")
            }

            pub fn from_json(kind: Kind, bytes: &[u8]) -> serde_json::Result<Self> {
                Ok(match kind {
                    $(Kind::$variant => AnyObject::$variant(Box::new(serde_json::from_slice(bytes)?)),)*
                })
            }

            /// The value of a field label, for field selectors.
            pub fn field_value(&self, field: &str) -> String {
                match field {
                    "metadata.name" => return self.meta().name.clone().unwrap_or_default(),
                    "metadata.namespace" => return self.meta().namespace.clone().unwrap_or_default(),
                    _ => {}
                }
                match self {
                    $(AnyObject::$variant(o) => o.field_value(field).unwrap_or_default(),)*
                }
            }
        }

        $(
            impl Typed for $ty {
                const KIND: Kind = Kind::$variant;
                fn into_any(self) -> AnyObject {
                    AnyObject::$variant(Box::new(self))
                }
                fn from_any(obj: &AnyObject) -> Option<&Self> {
                    match obj {
                        AnyObject::$variant(o) => Some(o),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
                fn from_any_owned(obj: AnyObject) -> Option<Self> {
                    match obj {
                        AnyObject::$variant(o) => Some(*o),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*
    };
}

for_each_kind!(define_kinds);

/// Conversion between a concrete type and [`AnyObject`].
pub trait Typed: Sized {
    const KIND: Kind;
    fn into_any(self) -> AnyObject;
    fn from_any(obj: &AnyObject) -> Option<&Self>;
    fn from_any_owned(obj: AnyObject) -> Option<Self>;
}

/// How names of a kind are validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameRule {
    Subdomain,
    Label,
}

/// The static facts about a kind: where it lives in the API and how it is addressed.
#[derive(Debug)]
pub struct KindInfo {
    pub kind: &'static str,
    pub list_kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub api_version: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether the kind has a `/status` subresource (and the main resource ignores status).
    pub has_status: bool,
    /// Whether PUT on a missing object creates it.
    pub allow_create_on_update: bool,
    pub name_rule: NameRule,
    /// Field labels accepted in `fieldSelector`, besides `metadata.name` and `metadata.namespace`.
    pub field_labels: &'static [&'static str],
}

impl KindInfo {
    pub fn supported_field_labels(&self) -> Vec<&'static str> {
        let mut v = vec!["metadata.name", "metadata.namespace"];
        v.extend_from_slice(self.field_labels);
        v
    }
}

/// Which part of an object a write may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// The main resource: spec and metadata; status changes are ignored.
    Main,
    /// `/status`: status only; spec and most metadata changes are ignored.
    Status,
    /// Spec, metadata and status together: for the server's own controllers (a bind writes a
    /// claim's `volumeName` and its phase in one step). No URL names it.
    All,
}

/// The per-kind rules, in the manner of Kubernetes' REST strategies.
pub trait KindStrategy:
    StatusSplit
    + k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Typed
    + Clone
    + PartialEq
    + Serialize
    + DeserializeOwned
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    const INFO: KindInfo;

    /// Clears what a client may not set on create (the status of kinds with a status subresource).
    fn prepare_for_create(&mut self) {}

    /// Fills in defaults. Runs before validation, on create and on update.
    fn default(&mut self) {}

    /// Sets what the server keeps on an update, from the version it replaces (a timestamp of a
    /// phase change). Runs after defaulting, before validation.
    fn prepare_for_update(&mut self, _old: &Self) {}

    /// Validates the object's own fields (metadata is validated generically).
    fn validate(&self, errs: &mut FieldErrors);

    /// Validates a change: immutability and allowed transitions.
    fn validate_update(&self, _old: &Self, _errs: &mut FieldErrors) {}

    /// Value of a kind-specific field label (see [`KindInfo::field_labels`]).
    fn field_value(&self, _field: &str) -> Option<String> {
        None
    }

    /// Columns of the `Table` form, in the order Kubernetes prints them.
    fn table_columns() -> &'static [Column];

    /// One table row, matching [`KindStrategy::table_columns`].
    fn table_row(&self, now: jiff::Timestamp) -> Vec<serde_json::Value>;
}

/// The labels of an object, empty if it has none.
pub fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

/// Finds the kind served at `plural` in `group`.
pub fn kind_for_plural(group: &str, version: &str, plural: &str) -> Option<Kind> {
    Kind::ALL.iter().copied().find(|k| {
        let i = k.info();
        i.plural == plural && i.group == group && i.version == version
    })
}

/// Finds a kind by a name a person might type: plural, singular, short name or Kind.
pub fn kind_by_any_name(name: &str) -> Option<Kind> {
    let lower = name.to_ascii_lowercase();
    Kind::ALL.iter().copied().find(|k| {
        let i = k.info();
        i.plural == lower
            || i.singular == lower
            || i.kind.to_ascii_lowercase() == lower
            || i.short_names.contains(&lower.as_str())
            || format!("{}.{}", i.plural, i.group) == lower
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_kinds_shaped_spec_and_status_have_a_status_subresource() {
        for k in Kind::ALL {
            assert_eq!(k.info().has_status, k.shape() == "spec_status", "{k:?}");
        }
    }
}
