//! `stowage apply`, `create` and `delete`: objects from files (YAML or JSON, several documents
//! per file, directories, or `-` for standard input), or by name.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{CliError, CliResult, Client, ConnectionArgs, exit};
use super::kinds;
use crate::resources::Kind;

#[derive(Debug, clap::Args)]
pub struct FileArgs {
    /// Files or directories to read (`-` for standard input). Repeatable.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for objects that do not name one.
    #[arg(short, long)]
    pub namespace: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Resource type, optionally `type/name`.
    pub resource: Option<String>,
    pub names: Vec<String>,
    /// Delete the objects described in these files.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Wait until the objects are gone (their finalizers done).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait, e.g. `60s`.
    #[arg(long, default_value = "60s")]
    pub timeout: String,
}

/// Every document in the given files, in order.
pub fn read_documents(files: &[PathBuf]) -> CliResult<Vec<Value>> {
    let mut docs = Vec::new();
    for f in files {
        let paths: Vec<PathBuf> = if f == Path::new("-") {
            vec![f.clone()]
        } else if f.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(f)
                .map_err(|e| CliError::usage(format!("reading {}: {e}", f.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("yaml" | "yml" | "json")
                    )
                })
                .collect();
            entries.sort();
            entries
        } else {
            vec![f.clone()]
        };
        for path in paths {
            let text = if path == Path::new("-") {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| CliError::usage(format!("reading standard input: {e}")))?
            } else {
                std::fs::read_to_string(&path)
                    .map_err(|e| CliError::usage(format!("reading {}: {e}", path.display())))?
            };
            for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| {
                    CliError::new(
                        exit::INVALID,
                        format!("{}: not valid YAML or JSON: {e}", path.display()),
                    )
                })?;
                match v {
                    Value::Null => {}
                    Value::Object(ref m)
                        if m.get("kind")
                            .and_then(Value::as_str)
                            .is_some_and(|k| k.ends_with("List")) =>
                    {
                        docs.extend(
                            m.get("items")
                                .and_then(Value::as_array)
                                .cloned()
                                .unwrap_or_default(),
                        );
                    }
                    other => docs.push(other),
                }
            }
        }
    }
    if docs.is_empty() {
        return Err(CliError::usage("no objects in the given files"));
    }
    Ok(docs)
}

/// The kind, namespace and name a document describes.
fn locate(doc: &Value, default_ns: &str) -> CliResult<(Kind, String, String)> {
    let kind_name = doc["kind"].as_str().unwrap_or_default();
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = Kind::ALL
        .iter()
        .copied()
        .find(|k| k.info().kind == kind_name && k.info().api_version == api_version)
        .ok_or_else(|| {
            CliError::new(
                exit::INVALID,
                format!("unknown kind {api_version:?} {kind_name:?} in the file"),
            )
        })?;
    let name = doc["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            CliError::new(
                exit::INVALID,
                format!("a {kind_name} in the file has no metadata.name"),
            )
        })?;
    let ns = doc["metadata"]["namespace"]
        .as_str()
        .unwrap_or(default_ns)
        .to_string();
    Ok((kind, ns, name.to_string()))
}

pub async fn apply(conn: &ConnectionArgs, args: FileArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let default_ns = super::namespace_of(args.namespace.as_deref(), &client);
    let mut failed = None;
    for doc in read_documents(&args.files)? {
        let (kind, ns, name) = locate(&doc, &default_ns)?;
        let path = kinds::item(kind, &ns, &name);
        let before = client.get(&path).await.ok();
        let result = client
            .patch(
                &format!("{path}?fieldManager=stowage&force=true"),
                "application/apply-patch+yaml",
                &doc,
            )
            .await;
        match result {
            Ok(after) => {
                let verb = match &before {
                    None => "created",
                    Some(b)
                        if b["metadata"]["resourceVersion"]
                            == after["metadata"]["resourceVersion"] =>
                    {
                        "unchanged"
                    }
                    Some(_) => "configured",
                };
                println!("{} {verb}", kinds::display_name(kind, &name));
            }
            Err(e) => {
                eprintln!("{}: {}", kinds::display_name(kind, &name), e.message);
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

pub async fn create(conn: &ConnectionArgs, args: FileArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let default_ns = super::namespace_of(args.namespace.as_deref(), &client);
    let mut failed = None;
    for doc in read_documents(&args.files)? {
        let (kind, ns, name) = locate(&doc, &default_ns)?;
        let collection = kinds::collection(kind, kind.info().namespaced.then_some(ns.as_str()));
        match client.post(&collection, &doc).await {
            Ok(_) => println!("{} created", kinds::display_name(kind, &name)),
            Err(e) => {
                eprintln!("{}", e.message);
                failed = Some(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

pub async fn delete(conn: &ConnectionArgs, args: DeleteArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let ns = super::namespace_of(args.namespace.as_deref(), &client);
    let timeout = crate::config::parse_duration(&args.timeout).ok_or_else(|| {
        CliError::usage(format!(
            "--timeout {:?} is not a duration like 60s",
            args.timeout
        ))
    })?;
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        for doc in read_documents(&args.files)? {
            targets.push(locate(&doc, &ns)?);
        }
    }
    if let Some(resource) = &args.resource {
        let (kind, names) = kinds::parse_target(resource, &args.names)?;
        if names.is_empty() {
            return Err(CliError::usage(
                "name the objects to delete: stowage delete <type> <name>...",
            ));
        }
        targets.extend(names.into_iter().map(|n| (kind, ns.clone(), n)));
    }
    if targets.is_empty() {
        return Err(CliError::usage(
            "nothing to delete: give a type and names, or -f FILE",
        ));
    }
    let mut failed = None;
    for (kind, ns, name) in &targets {
        match client.delete(&kinds::item(*kind, ns, name)).await {
            Ok(_) => {
                let info = kind.info();
                let scope = if info.namespaced {
                    format!(" from {ns} namespace")
                } else {
                    String::new()
                };
                println!("{} \"{name}\" deleted{scope}", info.singular);
            }
            Err(e) => {
                eprintln!("{}", e.message);
                failed = Some(e);
            }
        }
    }
    if args.wait {
        let deadline = Instant::now() + timeout;
        for (kind, ns, name) in &targets {
            loop {
                match client.get(&kinds::item(*kind, ns, name)).await {
                    Err(e) if e.code == exit::NOT_FOUND => break,
                    Err(e) => return Err(e),
                    Ok(_) if Instant::now() > deadline => {
                        return Err(CliError::new(
                            exit::TIMEOUT,
                            format!(
                                "timed out waiting for {} to be deleted (finalizers still pending)",
                                kinds::display_name(*kind, name)
                            ),
                        ));
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
    failed.map_or(Ok(()), Err)
}
