//! `stowage storageclass`: the admin's StorageClass workflow: create, make default (exactly
//! one default afterwards), delete (refusing while claims use the class), and usage.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::client::{CliError, CliResult, Client, ConnectionArgs, exit};
use super::kinds;
use super::output::align;
use crate::machinery::quantity::Quantity;
use crate::resources::Kind;
use crate::resources::storageclass::{BETA_DEFAULT_CLASS_ANNOTATION, DEFAULT_CLASS_ANNOTATION};

#[derive(Debug, clap::Subcommand)]
pub enum StorageClassCommand {
    /// Create a StorageClass.
    #[command(
        after_help = "Examples:\n  stowage storageclass create fast --provisioner local.stowage.dev --param onDelete=archive --allow-expansion --default\n  stowage storageclass create nfs --provisioner nfs.stowage.dev --param server=10.0.0.5 --param share=/exports --reclaim-policy Retain --mount-option nfsvers=4.1"
    )]
    Create(CreateArgs),
    /// Make a class the default (and no other).
    #[command(after_help = "Examples:\n  stowage storageclass set-default fast")]
    SetDefault { name: String },
    /// Delete a class; refused while claims use it, unless --force.
    #[command(
        after_help = "Examples:\n  stowage storageclass delete old\n  stowage storageclass delete old --force"
    )]
    Delete {
        name: String,
        /// Delete even though claims still use the class (they keep their volumes).
        #[arg(long)]
        force: bool,
    },
    /// Claims, volumes and capacity per class.
    #[command(
        after_help = "Examples:\n  stowage storageclass usage\n  stowage storageclass usage fast"
    )]
    Usage { name: Option<String> },
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    pub name: String,
    /// Provisioner (e.g. local.stowage.dev, nfs.stowage.dev, ebs.stowage.dev).
    #[arg(long)]
    pub provisioner: String,
    /// Parameter for the provisioner, `key=value`. Repeatable.
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[arg(long, value_parser = ["Delete", "Retain"], default_value = "Delete")]
    pub reclaim_policy: String,
    #[arg(long, value_parser = ["Immediate", "WaitForFirstConsumer"], default_value = "Immediate")]
    pub binding_mode: String,
    /// Let claims of this class grow.
    #[arg(long)]
    pub allow_expansion: bool,
    /// Mount option for volumes of this class. Repeatable.
    #[arg(long = "mount-option")]
    pub mount_options: Vec<String>,
    /// Make it the default class (and no other).
    #[arg(long)]
    pub default: bool,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

#[derive(Default)]
pub struct Usage {
    pub claims: usize,
    pub bound: usize,
    pub volumes: usize,
    pub capacity_bytes: i64,
    pub requested_bytes: i64,
    /// Room left for new volumes, summed over the class's CSIStorageCapacity objects (every
    /// node's, for node-local storage); `None` when its provider does not say.
    pub free_bytes: Option<i64>,
    /// How many topologies (nodes, or one share) that room is spread over.
    pub free_in: usize,
}

fn bytes_of(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| Quantity::parse(s).ok())
        .map(|q| q.bytes())
        .unwrap_or(0)
}

/// A byte count in binary units, as a person reads it.
pub fn bytes(n: i64) -> String {
    Quantity::from_units(n).canonical()
}

async fn all_usage(client: &Client) -> CliResult<BTreeMap<String, Usage>> {
    let claims = client
        .get(&kinds::collection(Kind::PersistentVolumeClaim, None))
        .await?;
    let volumes = client
        .get(&kinds::collection(Kind::PersistentVolume, None))
        .await?;
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    for c in claims["items"].as_array().into_iter().flatten() {
        let class = c["spec"]["storageClassName"].as_str().unwrap_or_default();
        let u = out.entry(class.to_string()).or_default();
        u.claims += 1;
        if c["status"]["phase"] == "Bound" {
            u.bound += 1;
        }
        u.requested_bytes += bytes_of(&c["spec"]["resources"]["requests"]["storage"]);
    }
    // Where the server publishes them; an admin's view (a tenant may not list them).
    let capacities = client
        .get(&kinds::collection(
            Kind::CSIStorageCapacity,
            Some(crate::resources::names::SYSTEM_NAMESPACE),
        ))
        .await
        .unwrap_or_default();
    for c in capacities["items"].as_array().into_iter().flatten() {
        let class = c["storageClassName"].as_str().unwrap_or_default();
        let u = out.entry(class.to_string()).or_default();
        *u.free_bytes.get_or_insert(0) += bytes_of(&c["capacity"]);
        u.free_in += 1;
    }
    for v in volumes["items"].as_array().into_iter().flatten() {
        let class = v["spec"]["storageClassName"].as_str().unwrap_or_default();
        let u = out.entry(class.to_string()).or_default();
        u.volumes += 1;
        u.capacity_bytes += bytes_of(&v["spec"]["capacity"]["storage"]);
    }
    Ok(out)
}

pub async fn usage_of(client: &Client, name: &str) -> CliResult<Usage> {
    Ok(all_usage(client).await?.remove(name).unwrap_or_default())
}

async fn set_default(client: &Client, name: &str) -> CliResult<()> {
    let path = kinds::item(Kind::StorageClass, "", name);
    client
        .patch(
            &path,
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {DEFAULT_CLASS_ANNOTATION: "true"}}}),
        )
        .await?;
    let classes = client
        .get(&kinds::collection(Kind::StorageClass, None))
        .await?;
    for sc in classes["items"].as_array().into_iter().flatten() {
        let other = sc["metadata"]["name"].as_str().unwrap_or_default();
        let a = &sc["metadata"]["annotations"];
        let marked =
            a[DEFAULT_CLASS_ANNOTATION] == "true" || a[BETA_DEFAULT_CLASS_ANNOTATION] == "true";
        if other != name && marked {
            client
                .patch(
                    &kinds::item(Kind::StorageClass, "", other),
                    "application/merge-patch+json",
                    &json!({"metadata": {"annotations": {DEFAULT_CLASS_ANNOTATION: null, BETA_DEFAULT_CLASS_ANNOTATION: null}}}),
                )
                .await?;
            println!("storageclass.storage.k8s.io/{other} is no longer the default");
        }
    }
    println!("storageclass.storage.k8s.io/{name} is the default");
    Ok(())
}

pub async fn run(conn: &ConnectionArgs, cmd: StorageClassCommand) -> CliResult<()> {
    let client = Client::connect(conn)?;
    match cmd {
        StorageClassCommand::Create(a) => {
            let mut sc = json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": a.name},
                "provisioner": a.provisioner,
                "reclaimPolicy": a.reclaim_policy,
                "volumeBindingMode": a.binding_mode,
                "allowVolumeExpansion": a.allow_expansion,
            });
            if !a.params.is_empty() {
                sc["parameters"] = json!(a.params.iter().cloned().collect::<BTreeMap<_, _>>());
            }
            if !a.mount_options.is_empty() {
                sc["mountOptions"] = json!(a.mount_options);
            }
            client
                .post(&kinds::collection(Kind::StorageClass, None), &sc)
                .await?;
            println!("storageclass.storage.k8s.io/{} created", a.name);
            if a.default {
                set_default(&client, &a.name).await?;
            }
            Ok(())
        }
        StorageClassCommand::SetDefault { name } => {
            client
                .get(&kinds::item(Kind::StorageClass, "", &name))
                .await?;
            set_default(&client, &name).await
        }
        StorageClassCommand::Delete { name, force } => {
            client
                .get(&kinds::item(Kind::StorageClass, "", &name))
                .await?;
            let usage = usage_of(&client, &name).await?;
            if usage.claims > 0 && !force {
                return Err(CliError::new(
                    exit::CONFLICT,
                    format!(
                        "storageclass {name} is used by {} claim(s); delete them first, or pass --force (their volumes stay)",
                        usage.claims
                    ),
                ));
            }
            client
                .delete(&kinds::item(Kind::StorageClass, "", &name))
                .await?;
            println!("storageclass.storage.k8s.io \"{name}\" deleted");
            Ok(())
        }
        StorageClassCommand::Usage { name } => {
            let usage = all_usage(&client).await?;
            let classes = client
                .get(&kinds::collection(Kind::StorageClass, None))
                .await?;
            let mut names: Vec<String> = classes["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            if let Some(n) = &name {
                if !names.contains(n) {
                    return Err(CliError::new(
                        exit::NOT_FOUND,
                        format!("storageclass {n:?} not found"),
                    ));
                }
                names = vec![n.clone()];
            }
            let mut rows = vec![vec![
                "CLASS".to_string(),
                "CLAIMS".into(),
                "BOUND".into(),
                "REQUESTED".into(),
                "VOLUMES".into(),
                "CAPACITY".into(),
                "FREE".into(),
            ]];
            for n in names {
                let u = usage.get(&n);
                rows.push(vec![
                    n.clone(),
                    u.map_or(0, |u| u.claims).to_string(),
                    u.map_or(0, |u| u.bound).to_string(),
                    bytes(u.map_or(0, |u| u.requested_bytes)),
                    u.map_or(0, |u| u.volumes).to_string(),
                    bytes(u.map_or(0, |u| u.capacity_bytes)),
                    match u.and_then(|u| u.free_bytes.map(|b| (b, u.free_in))) {
                        Some((b, 1)) => bytes(b),
                        Some((b, n)) => format!("{} on {n} nodes", bytes(b)),
                        None => "-".into(),
                    },
                ]);
            }
            print!("{}", align(&rows));
            Ok(())
        }
    }
}
