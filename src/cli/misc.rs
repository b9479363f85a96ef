//! `stowage providers` and `stowage token`.

use serde_json::{Value, json};

use super::client::{CliResult, Client, ConnectionArgs};
use super::output::align;

#[derive(Debug, clap::Args)]
pub struct ProvidersArgs {
    /// Print JSON instead of a table.
    #[arg(short, long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; it is printed once and never shown again.
    #[command(
        after_help = "Examples:\n  stowage token create --role namespace:team-a --name ci --ttl 24h\n  stowage token create --role node:node-1\n  stowage token create --role viewer"
    )]
    Create {
        /// admin, viewer, namespace:<namespace> or node:<node>.
        #[arg(long)]
        role: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "token")]
        name: String,
        /// Lifetime, e.g. 24h (default: no expiry).
        #[arg(long)]
        ttl: Option<String>,
    },
    /// List tokens (never their secrets).
    #[command(after_help = "Examples:\n  stowage token list")]
    List,
    /// Revoke a token, effective for its next request.
    #[command(after_help = "Examples:\n  stowage token revoke 7fk2m9qxab")]
    Revoke { id: String },
}

const TOKENS: &str = "/apis/auth.stowage.dev/v1/tokens";

fn s(v: &Value) -> String {
    super::output::cell(v)
}

fn yes_no(v: &Value) -> String {
    if v == true { "yes".into() } else { "no".into() }
}

pub async fn providers(conn: &ConnectionArgs, args: ProvidersArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let list = client.get("/apis/stowage.dev/v1/providers").await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(());
    }
    let mut rows = vec![vec![
        "NAME".to_string(),
        "PROVISIONING".into(),
        "ATTACH".into(),
        "EXPANSION".into(),
        "SNAPSHOTS".into(),
        "CLONES".into(),
        "TOPOLOGY".into(),
        "ACCESS MODES".into(),
        "MAX PER NODE".into(),
        "PARAMETERS".into(),
    ]];
    for p in list["items"].as_array().into_iter().flatten() {
        let c = &p["capabilities"];
        rows.push(vec![
            s(&p["name"]),
            yes_no(&c["dynamicProvisioning"]),
            if c["attachRequired"] == true {
                "required".into()
            } else {
                "check only".into()
            },
            yes_no(&c["expansion"]),
            yes_no(&c["snapshots"]),
            yes_no(&c["clones"]),
            yes_no(&c["topology"]),
            c["accessModes"]
                .as_array()
                .map(|m| m.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
            c["maxAttachmentsPerNode"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            parameter_names(&p["parameters"]),
        ]);
    }
    print!("{}", align(&rows));
    Ok(())
}

/// A provider's class parameters by name; `*` marks the required ones, `_N` numbered ones.
fn parameter_names(parameters: &Value) -> String {
    let names: Vec<String> = parameters
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let mut name = s(&p["name"]);
            if p["numbered"] == true {
                name.push('N');
            }
            if p["required"] == true {
                name.push('*');
            }
            name
        })
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(",")
    }
}

pub async fn token(conn: &ConnectionArgs, cmd: TokenCommand) -> CliResult<()> {
    let client = Client::connect(conn)?;
    match cmd {
        TokenCommand::Create { role, name, ttl } => {
            let mut spec = json!({"name": name, "role": role});
            if let Some(t) = ttl {
                let d = crate::config::parse_duration(&t).ok_or_else(|| {
                    super::client::CliError::usage(format!(
                        "--ttl {t:?} is not a duration like 24h"
                    ))
                })?;
                spec["ttlSeconds"] = json!(d.as_secs().max(1));
            }
            let created = client.post(TOKENS, &json!({"spec": spec})).await?;
            eprintln!(
                "token {} created for role {}; it is shown only now:",
                s(&created["metadata"]["name"]),
                s(&created["spec"]["role"])
            );
            println!("{}", s(&created["status"]["token"]));
            Ok(())
        }
        TokenCommand::List => {
            let list = client.get(TOKENS).await?;
            let mut rows = vec![vec![
                "ID".to_string(),
                "NAME".into(),
                "ROLE".into(),
                "CREATED".into(),
                "EXPIRES".into(),
                "REVOKED".into(),
            ]];
            for t in list["items"].as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&t["metadata"]["name"]),
                    s(&t["spec"]["name"]),
                    s(&t["spec"]["role"]),
                    s(&t["metadata"]["creationTimestamp"]),
                    t["spec"]["expires"].as_str().unwrap_or("never").to_string(),
                    yes_no(&t["status"]["revoked"]),
                ]);
            }
            print!("{}", align(&rows));
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            client.delete(&format!("{TOKENS}/{id}")).await?;
            println!("token {id} revoked");
            Ok(())
        }
    }
}
