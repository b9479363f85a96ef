//! `stowage describe`: one object, the objects it relates to (claim ↔ volume ↔ attachments ↔
//! pods), and its events, newest last.

use serde_json::Value;

use super::client::{CliResult, Client, ConnectionArgs};
use super::kinds;
use super::output::align;
use crate::resources::Kind;
use crate::resources::table::human_duration;

#[derive(Debug, clap::Args)]
pub struct DescribeArgs {
    /// Resource type, optionally `type/name`.
    pub resource: String,
    /// Name of the object.
    pub name: Option<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

fn s(v: &Value) -> String {
    super::output::cell(v)
}

fn or_none(v: String) -> String {
    if v.is_empty() { "<none>".into() } else { v }
}

fn map_lines(v: &Value, skip: &[&str]) -> String {
    let Some(m) = v.as_object() else {
        return "<none>".into();
    };
    let lines: Vec<String> = m
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={}", s(v)))
        .collect();
    if lines.is_empty() {
        "<none>".into()
    } else {
        lines.join(NEXT_LINE)
    }
}

fn modes(v: &Value) -> String {
    v.as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    match x.as_str().unwrap_or_default() {
                        "ReadWriteOnce" => "RWO",
                        "ReadOnlyMany" => "ROX",
                        "ReadWriteMany" => "RWX",
                        "ReadWriteOncePod" => "RWOP",
                        other => other,
                    }
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn age(t: &Value) -> String {
    t.as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| human_duration(jiff::Timestamp::now().as_second() - t.as_second()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// Values start in this column; the longest keys ("Reclaim Policy:", "IsDefaultClass:") are 15
/// characters wide and still get a space.
const VALUE_COLUMN: usize = 16;
/// What separates the lines of a multi-line value: a newline and the indent to the value column.
const NEXT_LINE: &str = "\n                ";

struct Out(Vec<(String, String)>);

impl Out {
    fn add(&mut self, k: &str, v: impl Into<String>) {
        self.0.push((k.to_string(), v.into()));
    }
    fn print(&self) {
        for (k, v) in &self.0 {
            let key = format!("{k}:");
            println!("{key:<VALUE_COLUMN$}{v}");
        }
    }
}

async fn list(client: &Client, kind: Kind, ns: Option<&str>, query: &str) -> CliResult<Vec<Value>> {
    let path = format!("{}{query}", kinds::collection(kind, ns));
    Ok(client.get(&path).await?["items"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

/// Attachments of a volume, as `name (node, attached|attaching)`.
async fn attachments(client: &Client, volume: &str) -> CliResult<String> {
    let vas = list(
        client,
        Kind::VolumeAttachment,
        None,
        &format!("?fieldSelector=spec.source.persistentVolumeName%3D{volume}"),
    )
    .await
    .unwrap_or_default();
    let lines: Vec<String> = vas
        .iter()
        .map(|va| {
            let state = if va["status"]["attached"] == true {
                "attached"
            } else {
                "attaching"
            };
            format!(
                "{} (node {}, {state})",
                s(&va["metadata"]["name"]),
                s(&va["spec"]["nodeName"])
            )
        })
        .collect();
    Ok(or_none(lines.join(NEXT_LINE)))
}

pub async fn run(conn: &ConnectionArgs, args: DescribeArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let rest: Vec<String> = args.name.iter().cloned().collect();
    let (kind, names) = kinds::parse_target(&args.resource, &rest)?;
    let Some(name) = names.first() else {
        return Err(super::client::CliError::usage(
            "describe needs a name: stowage describe <type> <name>",
        ));
    };
    let ns = super::namespace_of(args.namespace.as_deref(), &client);
    let obj = client.get(&kinds::item(kind, &ns, name)).await?;
    let meta = &obj["metadata"];
    let mut out = Out(Vec::new());
    out.add("Name", s(&meta["name"]));
    if kind.info().namespaced {
        out.add("Namespace", s(&meta["namespace"]));
    }
    out.add("Labels", map_lines(&meta["labels"], &[]));
    out.add(
        "Annotations",
        map_lines(
            &meta["annotations"],
            &["kubectl.kubernetes.io/last-applied-configuration"],
        ),
    );
    if let Some(f) = meta["finalizers"].as_array() {
        out.add("Finalizers", f.iter().map(s).collect::<Vec<_>>().join(", "));
    }
    if meta["deletionTimestamp"].is_string() {
        out.add(
            "Terminating",
            format!("since {}", s(&meta["deletionTimestamp"])),
        );
    }
    let spec = &obj["spec"];
    let status = &obj["status"];
    match kind {
        Kind::PersistentVolumeClaim => {
            out.add("StorageClass", s(&spec["storageClassName"]));
            out.add("Status", s(&status["phase"]));
            let volume = s(&spec["volumeName"]);
            out.add("Volume", volume.clone());
            out.add("Requested", s(&spec["resources"]["requests"]["storage"]));
            out.add("Capacity", s(&status["capacity"]["storage"]));
            out.add("Access Modes", modes(&status["accessModes"]));
            out.add("VolumeMode", s(&spec["volumeMode"]));
            let pods = list(&client, Kind::Pod, Some(&ns), "").await?;
            let users: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p["spec"]["volumes"].as_array().is_some_and(|v| {
                        v.iter()
                            .any(|v| v["persistentVolumeClaim"]["claimName"] == name.as_str())
                    })
                })
                .map(|p| {
                    let node = s(&p["spec"]["nodeName"]);
                    format!(
                        "{}{}",
                        s(&p["metadata"]["name"]),
                        if node.is_empty() {
                            String::new()
                        } else {
                            format!(" (on {node})")
                        }
                    )
                })
                .collect();
            out.add("Used By", or_none(users.join(", ")));
            if !volume.is_empty() {
                out.add("Attachments", attachments(&client, &volume).await?);
            }
        }
        Kind::PersistentVolume => {
            out.add("StorageClass", s(&spec["storageClassName"]));
            out.add("Status", s(&status["phase"]));
            let claim = &spec["claimRef"];
            out.add(
                "Claim",
                if claim.is_object() {
                    format!("{}/{}", s(&claim["namespace"]), s(&claim["name"]))
                } else {
                    String::new()
                },
            );
            out.add("Reclaim Policy", s(&spec["persistentVolumeReclaimPolicy"]));
            out.add("Access Modes", modes(&spec["accessModes"]));
            out.add("VolumeMode", s(&spec["volumeMode"]));
            out.add("Capacity", s(&spec["capacity"]["storage"]));
            let terms = spec["nodeAffinity"]["required"]["nodeSelectorTerms"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let affinity: Vec<String> = terms
                .iter()
                .flat_map(|t| {
                    t["matchExpressions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                })
                .map(|e| {
                    format!(
                        "{} {} [{}]",
                        s(&e["key"]),
                        s(&e["operator"]),
                        e["values"]
                            .as_array()
                            .map(|v| v.iter().map(s).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default()
                    )
                })
                .collect();
            out.add("Node Affinity", or_none(affinity.join(NEXT_LINE)));
            if spec["csi"].is_object() {
                out.add("Driver", s(&spec["csi"]["driver"]));
                out.add("VolumeHandle", s(&spec["csi"]["volumeHandle"]));
                out.add(
                    "Attributes",
                    map_lines(&spec["csi"]["volumeAttributes"], &[]),
                );
            }
            out.add("Message", s(&status["message"]));
            out.add("Attachments", attachments(&client, name).await?);
        }
        Kind::StorageClass => {
            out.add("Provisioner", s(&obj["provisioner"]));
            out.add("Parameters", map_lines(&obj["parameters"], &[]));
            out.add("ReclaimPolicy", s(&obj["reclaimPolicy"]));
            out.add("VolumeBindingMode", s(&obj["volumeBindingMode"]));
            out.add(
                "AllowVolumeExpansion",
                or_none(s(&obj["allowVolumeExpansion"])),
            );
            out.add(
                "MountOptions",
                or_none(
                    obj["mountOptions"]
                        .as_array()
                        .map(|m| m.iter().map(s).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default(),
                ),
            );
            let default =
                meta["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true";
            out.add("IsDefaultClass", if default { "Yes" } else { "No" });
            let usage = super::storageclass::usage_of(&client, name).await?;
            out.add(
                "Claims",
                format!("{} ({} bound)", usage.claims, usage.bound),
            );
            out.add(
                "Volumes",
                format!(
                    "{} ({} provisioned)",
                    usage.volumes,
                    super::storageclass::bytes(usage.capacity_bytes)
                ),
            );
        }
        Kind::VolumeAttachment => {
            out.add("Attacher", s(&spec["attacher"]));
            out.add("Node", s(&spec["nodeName"]));
            out.add("Volume", s(&spec["source"]["persistentVolumeName"]));
            out.add("Attached", or_none(s(&status["attached"])));
            out.add("Mount", map_lines(&status["attachmentMetadata"], &[]));
            out.add(
                "Attach Error",
                or_none(s(&status["attachError"]["message"])),
            );
            out.add(
                "Detach Error",
                or_none(s(&status["detachError"]["message"])),
            );
        }
        Kind::Node => {
            let conditions: Vec<String> = status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!(
                        "{}={} ({})",
                        s(&c["type"]),
                        s(&c["status"]),
                        s(&c["reason"])
                    )
                })
                .collect();
            out.add("Conditions", or_none(conditions.join(", ")));
            out.add("ProviderID", or_none(s(&spec["providerID"])));
            let taints: Vec<String> = spec["taints"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| format!("{}:{}", s(&t["key"]), s(&t["effect"])))
                .collect();
            out.add("Taints", or_none(taints.join(", ")));
            let attached: Vec<String> = status["volumesAttached"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| s(&v["name"]))
                .collect();
            out.add("Attached", or_none(attached.join(NEXT_LINE)));
            let in_use: Vec<String> = status["volumesInUse"]
                .as_array()
                .into_iter()
                .flatten()
                .map(s)
                .collect();
            out.add("In Use", or_none(in_use.join(NEXT_LINE)));
            let pods = list(
                &client,
                Kind::Pod,
                None,
                &format!("?fieldSelector=spec.nodeName%3D{name}"),
            )
            .await?;
            out.add(
                "Pods",
                or_none(
                    pods.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                s(&p["metadata"]["namespace"]),
                                s(&p["metadata"]["name"])
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
            );
        }
        Kind::Pod => {
            out.add("Node", or_none(s(&spec["nodeName"])));
            out.add("Phase", s(&status["phase"]));
            let mut lines = Vec::new();
            for v in spec["volumes"].as_array().into_iter().flatten() {
                let claim = s(&v["persistentVolumeClaim"]["claimName"]);
                if claim.is_empty() {
                    continue;
                }
                let c = client
                    .get(&kinds::item(Kind::PersistentVolumeClaim, &ns, &claim))
                    .await
                    .ok();
                let volume = c
                    .as_ref()
                    .map(|c| s(&c["spec"]["volumeName"]))
                    .unwrap_or_default();
                lines.push(format!(
                    "{} → claim {claim} → volume {}",
                    s(&v["name"]),
                    or_none(volume)
                ));
            }
            out.add("Volumes", or_none(lines.join(NEXT_LINE)));
        }
        _ => {
            if !spec.is_null() {
                out.add("Spec", serde_json::to_string(spec).unwrap_or_default());
            }
        }
    }
    out.print();

    // Events about the object, newest last.
    let events_ns = meta["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default");
    let info = kind.info();
    let query = format!(
        "?fieldSelector=involvedObject.name%3D{name},involvedObject.kind%3D{}",
        info.kind
    );
    let mut events = list(&client, Kind::Event, Some(events_ns), &query)
        .await
        .unwrap_or_default();
    events.sort_by(|a, b| s(&a["lastTimestamp"]).cmp(&s(&b["lastTimestamp"])));
    if events.is_empty() {
        println!("{:<VALUE_COLUMN$}<none>", "Events:");
    } else {
        println!("Events:");
        let mut rows = vec![vec![
            "Type".to_string(),
            "Reason".into(),
            "Age".into(),
            "From".into(),
            "Message".into(),
        ]];
        rows.push(vec![
            "----".into(),
            "------".into(),
            "----".into(),
            "----".into(),
            "-------".into(),
        ]);
        for e in &events {
            let count = e["count"].as_i64().unwrap_or(1);
            let when = if count > 1 {
                format!("{} (x{count})", age(&e["lastTimestamp"]))
            } else {
                age(&e["lastTimestamp"])
            };
            rows.push(vec![
                s(&e["type"]),
                s(&e["reason"]),
                when,
                s(&e["source"]["component"]),
                s(&e["message"]),
            ]);
        }
        for line in align(&rows).lines() {
            println!("  {line}");
        }
    }
    Ok(())
}
