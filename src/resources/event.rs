//! Event: what happened to an object and why. Namespaced; events about cluster-scoped objects
//! live in `default`, as in Kubernetes.

use serde_json::{Value, json};

use super::table::{self, Column};
use super::{Event, KindInfo, KindStrategy, NameRule};
use crate::machinery::validation::{FieldErrors, Path};

const TYPES: &[&str] = &["Normal", "Warning"];
const MAX_MESSAGE_BYTES: usize = 4096;

impl KindStrategy for Event {
    const INFO: KindInfo = KindInfo {
        kind: "Event",
        list_kind: "EventList",
        plural: "events",
        singular: "event",
        group: "",
        version: "v1",
        api_version: "v1",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        allow_create_on_update: true,
        name_rule: NameRule::Subdomain,
        field_labels: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    };

    fn validate(&self, errs: &mut FieldErrors) {
        let p = Path::root("involvedObject");
        let involved = &self.involved_object;
        if involved.kind.as_deref().unwrap_or_default().is_empty() {
            errs.required(&p.child("kind"), "");
        }
        if involved.name.as_deref().unwrap_or_default().is_empty() {
            errs.required(&p.child("name"), "");
        }
        if let Some(ns) = involved.namespace.as_deref().filter(|ns| !ns.is_empty())
            && Some(ns) != self.metadata.namespace.as_deref()
        {
            errs.invalid(&p.child("namespace"), ns, "does not match event.namespace");
        }
        if let Some(t) = &self.type_
            && !TYPES.contains(&t.as_str())
        {
            errs.not_supported(&Path::root("type"), t, TYPES);
        }
        if self.message.as_deref().unwrap_or_default().len() > MAX_MESSAGE_BYTES {
            errs.too_long(&Path::root("message"), MAX_MESSAGE_BYTES);
        }
    }

    fn field_value(&self, field: &str) -> Option<String> {
        let o = &self.involved_object;
        match field {
            "involvedObject.kind" => o.kind.clone(),
            "involvedObject.namespace" => o.namespace.clone(),
            "involvedObject.name" => o.name.clone(),
            "involvedObject.uid" => o.uid.clone(),
            "involvedObject.apiVersion" => o.api_version.clone(),
            "involvedObject.resourceVersion" => o.resource_version.clone(),
            "involvedObject.fieldPath" => o.field_path.clone(),
            "reason" => self.reason.clone(),
            "reportingComponent" => Some(self.reporting_component.clone().unwrap_or_default()),
            "source" => self.source.as_ref().and_then(|s| s.component.clone()),
            "type" => self.type_.clone(),
            _ => None,
        }
    }

    fn table_columns() -> &'static [Column] {
        const COLUMNS: &[Column] = &[
            Column::new(
                "Last Seen",
                "string",
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            Column::new(
                "Type",
                "string",
                "Type of this event (Normal, Warning), new types could be added in the future.",
            ),
            Column::new(
                "Reason",
                "string",
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            Column::new("Object", "string", "The object that this event is about."),
            Column::new("Source", "string", "The component reporting this event.").wide(),
            Column::new(
                "Message",
                "string",
                "A human-readable description of the status of this operation.",
            ),
            Column::new(
                "First Seen",
                "string",
                "The time at which the event was first recorded.",
            )
            .wide(),
            Column::new(
                "Count",
                "string",
                "The number of times this event has occurred.",
            )
            .wide(),
            Column::new("Name", "string", "The name of the event.").wide(),
        ];
        COLUMNS
    }

    fn table_row(&self, now: jiff::Timestamp) -> Vec<Value> {
        let o = &self.involved_object;
        let object = format!(
            "{}/{}",
            o.kind.as_deref().unwrap_or_default().to_ascii_lowercase(),
            o.name.as_deref().unwrap_or_default()
        );
        let last = self
            .last_timestamp
            .as_ref()
            .or(self.first_timestamp.as_ref())
            .or(self.metadata.creation_timestamp.as_ref());
        vec![
            table::age(last, now),
            json!(self.type_.clone().unwrap_or_default()),
            json!(self.reason.clone().unwrap_or_default()),
            json!(object),
            json!(
                self.source
                    .as_ref()
                    .and_then(|s| s.component.clone())
                    .or(self.reporting_component.clone())
                    .unwrap_or_default()
            ),
            json!(self.message.clone().unwrap_or_default()),
            table::age(self.first_timestamp.as_ref(), now),
            json!(self.count.unwrap_or(1).to_string()),
            table::name(&self.metadata),
        ]
    }
}
