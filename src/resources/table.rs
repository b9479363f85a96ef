//! Helpers for the `Table` form of objects: column definitions and the cell formats kubectl
//! users know (ages like `2m3s`, access modes like `RWO,RWX`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{Value, json};

/// A column of a `Table` (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub type_: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 shows by default; higher shows with `-o wide`.
    pub priority: i32,
}

impl Column {
    pub const fn new(name: &'static str, type_: &'static str, description: &'static str) -> Self {
        Column {
            name,
            type_,
            format: "",
            description,
            priority: 0,
        }
    }
    pub const fn name_column() -> Self {
        Column {
            name: "Name",
            type_: "string",
            format: "name",
            description: "Name must be unique within a namespace.",
            priority: 0,
        }
    }
    pub const fn age() -> Self {
        Column::new(
            "Age",
            "string",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
        )
    }
    pub const fn wide(mut self) -> Self {
        self.priority = 1;
        self
    }
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// Kubernetes' `HumanDuration`: `45s`, `2m3s`, `10m`, `3h4m`, `2d3h`, `400d`, `2y30d`.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The time since `t`, as an age cell; `<unknown>` when absent.
pub fn age(t: Option<&Time>, now: jiff::Timestamp) -> Value {
    match t {
        Some(t) => json!(human_duration(now.as_second() - t.0.as_second())),
        None => json!("<unknown>"),
    }
}

pub fn meta_age(meta: &ObjectMeta, now: jiff::Timestamp) -> Value {
    age(meta.creation_timestamp.as_ref(), now)
}

pub fn name(meta: &ObjectMeta) -> Value {
    json!(meta.name.clone().unwrap_or_default())
}

/// `ReadWriteOnce` → `RWO`, and so on, joined with commas as kubectl prints them.
pub fn access_modes(modes: Option<&Vec<String>>) -> String {
    modes
        .into_iter()
        .flatten()
        .map(|m| match m.as_str() {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A string cell; `<none>` when empty, as kubectl prints missing values.
pub fn or_none(s: Option<&str>) -> Value {
    match s {
        Some(s) if !s.is_empty() => json!(s),
        _ => json!("<none>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(123), "2m3s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 240), "3h4m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(51 * 3600), "2d3h");
        assert_eq!(human_duration(400 * 86400), "400d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn access_modes_are_abbreviated() {
        let modes = vec!["ReadWriteOnce".to_string(), "ReadWriteMany".to_string()];
        assert_eq!(access_modes(Some(&modes)), "RWO,RWX");
        assert_eq!(access_modes(None), "");
    }
}
