//! `stowage get`: tables with the columns an admin needs, or YAML, JSON, names; `-w` follows.

use std::collections::HashMap;

use futures::StreamExt;
use serde_json::{Value, json};

use super::client::{CliResult, Client, ConnectionArgs};
use super::kinds;
use super::output::{self, Extra, Format};
use crate::resources::Kind;

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Resource type (sc, pv, pvc, va, nodes, pods, events, leases), optionally `type/name`.
    pub resource: String,
    /// Names to show (default: all).
    pub names: Vec<String>,
    /// Namespace (default: the kubeconfig's, else `default`).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=db,tier in (gold,silver)`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `status.phase=Bound`.
    #[arg(long)]
    pub field_selector: Option<String>,
    /// Output format (default: a table).
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
    /// After listing, print changes as they happen.
    #[arg(short, long)]
    pub watch: bool,
    /// Omit the table header.
    #[arg(long)]
    pub no_headers: bool,
}

fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Per-class usage counts for the StorageClass table.
async fn class_usage(client: &Client) -> CliResult<HashMap<String, (usize, usize)>> {
    let claims = client
        .get(&kinds::collection(Kind::PersistentVolumeClaim, None))
        .await?;
    let volumes = client
        .get(&kinds::collection(Kind::PersistentVolume, None))
        .await?;
    let mut usage: HashMap<String, (usize, usize)> = HashMap::new();
    for c in claims["items"].as_array().into_iter().flatten() {
        let class = c["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        usage.entry(class).or_default().0 += 1;
    }
    for v in volumes["items"].as_array().into_iter().flatten() {
        let class = v["spec"]["storageClassName"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        usage.entry(class).or_default().1 += 1;
    }
    Ok(usage)
}

async fn extra_columns(client: &Client, kind: Kind) -> CliResult<Extra> {
    if kind != Kind::StorageClass {
        return Ok(Vec::new());
    }
    let usage = std::sync::Arc::new(class_usage(client).await?);
    let (u1, u2) = (usage.clone(), usage);
    Ok(vec![
        (
            "CLAIMS".to_string(),
            Box::new(move |o: &Value| {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                u1.get(name).map_or(0, |u| u.0).to_string()
            }),
        ),
        (
            "VOLUMES".to_string(),
            Box::new(move |o: &Value| {
                let name = o["metadata"]["name"].as_str().unwrap_or_default();
                u2.get(name).map_or(0, |u| u.1).to_string()
            }),
        ),
    ])
}

fn print_rows(rows: Vec<Vec<String>>, headers: bool) {
    let rows = if headers {
        rows
    } else {
        rows.into_iter().skip(1).collect()
    };
    print!("{}", output::align(&rows));
}

pub async fn run(conn: &ConnectionArgs, args: GetArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let (kind, names) = kinds::parse_target(&args.resource, &args.names)?;
    let namespaced = kind.info().namespaced;
    let ns = super::namespace_of(args.namespace.as_deref(), &client);
    let list_ns = (namespaced && !args.all_namespaces).then_some(ns.as_str());
    let all_namespaces = namespaced && args.all_namespaces;
    let mut query = Vec::new();
    if let Some(l) = &args.selector {
        query.push(format!("labelSelector={}", encode(l)));
    }
    if let Some(f) = &args.field_selector {
        query.push(format!("fieldSelector={}", encode(f)));
    }
    let suffix = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let table_output = matches!(args.output, None | Some(Format::Wide));
    let wide = args.output == Some(Format::Wide);

    // Objects or tables, one request per name or one list.
    let mut tables = Vec::new();
    let mut objects = Vec::new();
    let mut list_rv = None;
    if names.is_empty() {
        let path = format!("{}{suffix}", kinds::collection(kind, list_ns));
        if table_output {
            let t = client.get_table(&path).await?;
            list_rv = t["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            tables.push(t);
        } else {
            let l = client.get(&path).await?;
            list_rv = l["metadata"]["resourceVersion"]
                .as_str()
                .map(str::to_string);
            objects.extend(l["items"].as_array().cloned().unwrap_or_default());
        }
    } else {
        for name in &names {
            let path = kinds::item(kind, &ns, name);
            if table_output {
                tables.push(client.get_table(&path).await?);
            } else {
                objects.push(client.get(&path).await?);
            }
        }
    }

    if table_output {
        let extra = extra_columns(&client, kind).await?;
        let mut rows: Vec<Vec<String>> = Vec::new();
        for t in &tables {
            let r = output::table_rows(t, wide, all_namespaces, &extra);
            if rows.is_empty() {
                rows = r;
            } else {
                rows.extend(r.into_iter().skip(1));
            }
        }
        if rows.len() <= 1 && !args.watch {
            match list_ns {
                Some(ns) => eprintln!("No resources found in {ns} namespace."),
                None => eprintln!("No resources found"),
            }
        } else if rows.len() > 1 {
            print_rows(rows, !args.no_headers);
        }
    } else {
        match args.output {
            Some(Format::Name) => {
                for o in &objects {
                    println!(
                        "{}",
                        kinds::display_name(
                            kind,
                            o["metadata"]["name"].as_str().unwrap_or_default()
                        )
                    );
                }
            }
            Some(f @ (Format::Yaml | Format::Json)) => {
                let doc = if names.len() == 1 {
                    objects[0].clone()
                } else {
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": objects})
                };
                print!(
                    "{}",
                    if f == Format::Yaml {
                        output::yaml(&doc)
                    } else {
                        output::json(&doc)
                    }
                );
            }
            _ => {}
        }
    }

    if args.watch {
        let rv = list_rv.unwrap_or_default();
        let sep = if suffix.is_empty() { "?" } else { "&" };
        let path = format!(
            "{}{suffix}{sep}watch=1&resourceVersion={rv}",
            kinds::collection(kind, list_ns)
        );
        let accept =
            table_output.then_some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json");
        let resp = client
            .raw(reqwest::Method::GET, &path, None, None, accept)
            .await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(super::client::status_error(status, &body));
        }
        let extra = extra_columns(&client, kind).await?;
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        let mut columns = tables.first().map(|t| t["columnDefinitions"].clone());
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                let Ok(mut event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                output::clean_value(&mut event);
                let mut obj = event["object"].clone();
                if event["type"] == "BOOKMARK" || event["type"] == "ERROR" {
                    continue;
                }
                if table_output {
                    if obj["columnDefinitions"].is_array() {
                        columns = Some(obj["columnDefinitions"].clone());
                    } else if let Some(c) = &columns {
                        obj["columnDefinitions"] = c.clone();
                    }
                    let rows = output::table_rows(&obj, wide, all_namespaces, &extra);
                    print!("{}", output::align(&rows[1..]));
                } else {
                    match args.output {
                        Some(Format::Name) => println!(
                            "{}",
                            kinds::display_name(
                                kind,
                                obj["metadata"]["name"].as_str().unwrap_or_default()
                            )
                        ),
                        Some(Format::Json) => print!("{}", output::json(&obj)),
                        _ => print!("---\n{}", output::yaml(&obj)),
                    }
                }
                use std::io::Write as _;
                let _ = std::io::stdout().flush();
            }
        }
    }
    Ok(())
}
