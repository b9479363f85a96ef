//! `stowage wait`: until an object reaches a phase or condition, or is gone.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::client::{CliError, CliResult, Client, ConnectionArgs, exit};
use super::kinds;

#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    /// The object, `type/name`.
    pub target: String,
    /// `phase=<Phase>`, `condition=<Type>[=<Status>]` (status defaults to True), or `delete`.
    #[arg(long = "for")]
    pub condition: String,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// How long to wait, e.g. `60s`.
    #[arg(long, default_value = "30s")]
    pub timeout: String,
}

enum Until {
    Phase(String),
    Condition(String, String),
    Deleted,
}

fn parse(s: &str) -> CliResult<Until> {
    if s == "delete" {
        return Ok(Until::Deleted);
    }
    if let Some(p) = s.strip_prefix("phase=").filter(|p| !p.is_empty()) {
        return Ok(Until::Phase(p.to_string()));
    }
    if let Some(c) = s.strip_prefix("condition=").filter(|c| !c.is_empty()) {
        let (t, status) = c.split_once('=').unwrap_or((c, "True"));
        return Ok(Until::Condition(t.to_string(), status.to_string()));
    }
    Err(CliError::usage(format!(
        "--for={s:?}: use phase=<Phase>, condition=<Type>[=<Status>] or delete"
    )))
}

fn met(obj: &Value, until: &Until) -> bool {
    match until {
        Until::Phase(p) => obj["status"]["phase"].as_str() == Some(p.as_str()),
        Until::Condition(t, st) => obj["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == t.as_str() && c["status"] == st.as_str())
        }),
        Until::Deleted => false,
    }
}

pub async fn run(conn: &ConnectionArgs, args: WaitArgs) -> CliResult<()> {
    let client = Client::connect(conn)?;
    let until = parse(&args.condition)?;
    let (kind, names) = kinds::parse_target(&args.target, &[])?;
    let name = names
        .first()
        .ok_or_else(|| CliError::usage("wait needs type/name, e.g. pvc/data"))?;
    let timeout = crate::config::parse_duration(&args.timeout).ok_or_else(|| {
        CliError::usage(format!(
            "--timeout {:?} is not a duration like 60s",
            args.timeout
        ))
    })?;
    let ns = super::namespace_of(args.namespace.as_deref(), &client);
    let path = kinds::item(kind, &ns, name);
    let deadline = Instant::now() + timeout;
    // Like kubectl: an object that does not exist is an error straight away (waiting for it to
    // be deleted is already done), not a wait until the timeout.
    match client.get(&path).await {
        Err(e) if e.code == exit::NOT_FOUND && !matches!(until, Until::Deleted) => return Err(e),
        _ => {}
    }
    loop {
        match client.get(&path).await {
            Ok(obj) if met(&obj, &until) => break,
            Err(e) if e.code == exit::NOT_FOUND && matches!(until, Until::Deleted) => break,
            Err(e) if e.code != exit::NOT_FOUND => return Err(e),
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(CliError::new(
                exit::TIMEOUT,
                format!(
                    "timed out waiting for {} ({}) after {}",
                    kinds::display_name(kind, name),
                    args.condition,
                    args.timeout
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{} condition met", kinds::display_name(kind, name));
    Ok(())
}
