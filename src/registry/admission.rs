//! Admission: rules that need to look at other objects, applied on every create and update
//! before defaulting and validation (Kubernetes does these in admission plugins).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::{ApiError, ApiResult};
use crate::resources::names::finalizers;
use crate::resources::storageclass::is_default;
use crate::resources::{
    AnyObject, Kind, PersistentVolumeClaim, StorageClass, pvc, volumeattributesclass,
};
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
        (AnyObject::VolumeSnapshot(s), None) => {
            add_finalizer(&mut s.metadata, finalizers::SNAPSHOT_BOUND);
        }
        (AnyObject::VolumeAttributesClass(c), None) => {
            add_finalizer(&mut c.metadata, volumeattributesclass::PROTECTION_FINALIZER);
        }
        (AnyObject::PersistentVolumeClaim(pvc), Some(AnyObject::PersistentVolumeClaim(old))) => {
            check_resize(store, pvc, old)?;
        }
        (new @ AnyObject::ResourceQuota(_), old) if super::quota::needs_recount(new, old) => {
            if let AnyObject::ResourceQuota(q) = new {
                super::quota::with_current_usage(store, q, old.is_none());
            }
        }
        _ => {}
    }
    Ok(())
}

/// A claim may grow only if its class allows expansion (Kubernetes' PersistentVolumeClaimResize
/// admission): otherwise the request could never be met.
fn check_resize(
    store: &Store,
    new: &PersistentVolumeClaim,
    old: &PersistentVolumeClaim,
) -> ApiResult<()> {
    let (Some(after), Some(before)) = (pvc::request_bytes(new), pvc::request_bytes(old)) else {
        return Ok(());
    };
    if after <= before {
        return Ok(());
    }
    let class = new
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .unwrap_or_default();
    let allowed = store
        .get_typed::<StorageClass>("", &class)
        .is_some_and(|s| s.typed::<StorageClass>().allow_volume_expansion == Some(true));
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "persistentvolumeclaims \"{}\" is forbidden: only claims of a StorageClass with allowVolumeExpansion can be resized (class {class:?} does not allow it)",
            new.metadata.name.as_deref().unwrap_or_default()
        )))
    }
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
        .filter(is_default);
    if let (Some(only), None) = (defaults.next(), defaults.next()) {
        spec.storage_class_name = only.metadata.name.clone();
    }
}
