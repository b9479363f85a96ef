//! Admission: rules that need to look at other objects, applied on every create and update
//! before defaulting and validation (Kubernetes does these in admission plugins).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::controllers::finalizers;
use crate::error::ApiResult;
use crate::resources::storageclass::is_default;
use crate::resources::{AnyObject, Kind, PersistentVolumeClaim, StorageClass};
use crate::store::Store;

/// Mutates or refuses `new`; `old` is the current object on update, `None` on create.
pub fn admit(store: &Store, new: &mut AnyObject, old: Option<&AnyObject>) -> ApiResult<()> {
    match (new, old) {
        (AnyObject::PersistentVolumeClaim(pvc), None) => {
            default_storage_class(store, pvc);
            add_finalizer(&mut pvc.metadata, finalizers::PVC_PROTECTION);
        }
        (AnyObject::PersistentVolume(pv), None) => {
            add_finalizer(&mut pv.metadata, finalizers::PV_PROTECTION);
        }
        _ => {}
    }
    Ok(())
}

/// Objects in use are protected from removal by a finalizer from their creation on; the
/// protection controller lifts it once nothing uses them.
fn add_finalizer(meta: &mut ObjectMeta, finalizer: &str) {
    let list = meta.finalizers.get_or_insert_with(Vec::new);
    if !list.iter().any(|f| f == finalizer) {
        list.push(finalizer.to_string());
    }
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
