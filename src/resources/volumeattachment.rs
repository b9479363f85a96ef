//! VolumeAttachment: volume X attached to node N. Cluster-scoped, with a status subresource.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::validate;
use super::{KindInfo, KindStrategy, NameRule, VolumeAttachment};
use crate::machinery::validation::{FieldErrors, Path, qualified_name};

pub fn is_attached(va: &VolumeAttachment) -> bool {
    va.status.as_ref().is_some_and(|s| s.attached)
}

pub fn volume_name(va: &VolumeAttachment) -> Option<&str> {
    va.spec.source.persistent_volume_name.as_deref()
}

impl KindStrategy for VolumeAttachment {
    const INFO: KindInfo = KindInfo {
        kind: "VolumeAttachment",
        list_kind: "VolumeAttachmentList",
        plural: "volumeattachments",
        singular: "volumeattachment",
        group: "storage.k8s.io",
        version: "v1",
        api_version: "storage.k8s.io/v1",
        namespaced: false,
        short_names: &["va"],
        categories: &[],
        has_status: true,
        allow_create_on_update: false,
        name_rule: NameRule::Subdomain,
        field_labels: &[
            "spec.nodeName",
            "spec.attacher",
            "spec.source.persistentVolumeName",
            "status.attached",
        ],
    };

    fn prepare_for_create(&mut self) {
        self.status = None;
    }

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("spec");
        if self.spec.attacher.is_empty() {
            errs.required(&p.child("attacher"), "");
        } else {
            errs.syntax(
                &p.child("attacher"),
                &self.spec.attacher,
                qualified_name(&self.spec.attacher.to_ascii_lowercase()),
            );
        }
        if self.spec.node_name.is_empty() {
            errs.required(&p.child("nodeName"), "");
        } else {
            validate::optional_name(Some(&self.spec.node_name), &p.child("nodeName"), errs);
        }
        let source = &self.spec.source;
        match (&source.persistent_volume_name, &source.inline_volume_spec) {
            (None, None) => errs.required(
                &p.child("source"),
                "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
            ),
            (Some(_), Some(_)) => errs.forbidden(
                &p.child("source"),
                "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
            ),
            (Some(pv), None) => validate::optional_name(
                Some(pv),
                &p.child("source").child("persistentVolumeName"),
                errs,
            ),
            (None, Some(_)) => {}
        }
    }

    fn validate_update(&self, old: &Self, errs: &mut FieldErrors) {
        if self.spec != old.spec {
            errs.immutable(&Path::root("spec"));
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        match field {
            "spec.nodeName" => Some(self.spec.node_name.clone()),
            "spec.attacher" => Some(self.spec.attacher.clone()),
            "spec.source.persistentVolumeName" => self.spec.source.persistent_volume_name.clone(),
            "status.attached" => Some(is_attached(self).to_string()),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::name_column(),
            Column::new(
                "Attacher",
                "string",
                "Name of the attacher which will handle attach/detach.",
            ),
            Column::new(
                "PV",
                "string",
                "Name of the persistent volume to be attached.",
            ),
            Column::new(
                "Node",
                "string",
                "The node that the volume should be attached to.",
            ),
            Column::new(
                "Attached",
                "boolean",
                "Indicates the volume is successfully attached.",
            ),
            Column::age(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        vec![
            table::name(&self.metadata),
            json!(self.spec.attacher),
            json!(volume_name(self).unwrap_or_default()),
            json!(self.spec.node_name),
            json!(is_attached(self)),
            table::meta_age(&self.metadata, now),
        ]
    }
}
