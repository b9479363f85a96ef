//! Admission: rules that need to look at other objects, applied on every create and update
//! before defaulting and validation (Kubernetes does these in admission plugins).

use crate::error::ApiResult;
use crate::resources::storageclass::is_default;
use crate::resources::{AnyObject, Kind, PersistentVolumeClaim, StorageClass};
use crate::store::Store;

/// Mutates or refuses `new`; `old` is the current object on update, `None` on create.
pub fn admit(store: &Store, new: &mut AnyObject, old: Option<&AnyObject>) -> ApiResult<()> {
    if let (AnyObject::PersistentVolumeClaim(pvc), None) = (new, old) {
        default_storage_class(store, pvc);
    }
    Ok(())
}

/// A claim that names no class (the field is absent, not `""`) gets the default class, if
/// exactly one class is marked default. With none or several, the claim is left without a class
/// rather than guessing.
fn default_storage_class(store: &Store, pvc: &mut PersistentVolumeClaim) {
    let spec = pvc.spec.get_or_insert_with(Default::default);
    if spec.storage_class_name.is_some() {
        return;
    }
    let (classes, _) = store.list(Kind::StorageClass, None);
    let mut defaults = classes
        .iter()
        .map(|s| s.typed::<StorageClass>())
        .filter(|sc| is_default(sc));
    if let (Some(only), None) = (defaults.next(), defaults.next()) {
        spec.storage_class_name = only.metadata.name.clone();
    }
}
