//! Volume tasks: `stowage pv release` (make a Released, Retain volume Available again) and
//! `stowage pvc resize`.

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{CliError, CliResult, Client, ConnectionArgs, exit};
use super::kinds;
use crate::machinery::quantity::Quantity;
use crate::resources::Kind;

#[derive(Debug, clap::Subcommand)]
pub enum PvCommand {
    /// Make a Released volume (reclaim policy Retain) Available for new claims: its data becomes
    /// reachable by whichever claim binds it next.
    #[command(
        after_help = "Examples:\n  stowage pv release pvc-0d9c8e7f\n  stowage pv release pvc-0d9c8e7f --yes"
    )]
    Release {
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PvcCommand {
    /// Grow a claim (its class must allow expansion; claims never shrink).
    #[command(after_help = "Examples:\n  stowage pvc resize data 20Gi -n team-a")]
    Resize {
        name: String,
        /// The new size, e.g. 20Gi.
        size: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

/// Asks on stderr and reads one line from stdin; anything but y/yes (including end of input,
/// as when stdin is not a terminal and nothing is piped in) is a no.
fn confirm(question: &str) -> CliResult<bool> {
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::usage(format!("reading the answer: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

pub async fn run_pv(conn: &ConnectionArgs, cmd: PvCommand) -> CliResult<()> {
    let client = Client::connect(conn)?;
    match cmd {
        PvCommand::Release { name, yes } => {
            let path = kinds::item(Kind::PersistentVolume, "", &name);
            let pv = client.get(&path).await?;
            let phase = pv["status"]["phase"].as_str().unwrap_or_default();
            if phase != "Released" {
                return Err(CliError::new(
                    exit::CONFLICT,
                    format!(
                        "persistentvolume {name} is {phase}; only a Released volume can be released"
                    ),
                ));
            }
            if pv["spec"]["persistentVolumeReclaimPolicy"] != "Retain" {
                return Err(CliError::new(
                    exit::CONFLICT,
                    format!(
                        "persistentvolume {name} has reclaim policy Delete: it is being deleted, not kept"
                    ),
                ));
            }
            let claim = &pv["spec"]["claimRef"];
            let former = format!(
                "{}/{}",
                claim["namespace"].as_str().unwrap_or_default(),
                claim["name"].as_str().unwrap_or_default()
            );
            if !yes
                && !confirm(&format!(
                    "Make {name} Available again? The data of its former claim {former} becomes reachable by the next claim bound to it."
                ))?
            {
                return Err(CliError::new(exit::FAILURE, "not released"));
            }
            // The resourceVersion test makes this a no-op if the volume changed since it was read.
            let patch = json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": pv["metadata"]["resourceVersion"]},
                {"op": "remove", "path": "/spec/claimRef"}
            ]);
            client
                .patch(&path, "application/json-patch+json", &patch)
                .await?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                let now = client.get(&path).await?;
                if now["status"]["phase"] != "Released" {
                    println!(
                        "persistentvolume/{name} released: it is {}",
                        now["status"]["phase"].as_str().unwrap_or_default()
                    );
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            println!("persistentvolume/{name} released (claimRef removed)");
            Ok(())
        }
    }
}

pub async fn run_pvc(conn: &ConnectionArgs, cmd: PvcCommand) -> CliResult<()> {
    let client = Client::connect(conn)?;
    match cmd {
        PvcCommand::Resize {
            name,
            size,
            namespace,
        } => {
            let q = Quantity::parse(&size)
                .ok()
                .filter(|q| !q.is_negative() && !q.is_zero())
                .ok_or_else(|| CliError::usage(format!("{size:?} is not a size like 20Gi")))?;
            let ns = super::namespace_of(namespace.as_deref(), &client);
            let path = kinds::item(Kind::PersistentVolumeClaim, &ns, &name);
            let patch = json!({"spec": {"resources": {"requests": {"storage": q.canonical()}}}});
            client
                .patch(&path, "application/merge-patch+json", &patch)
                .await?;
            println!("persistentvolumeclaim/{name} resized to {}", q.canonical());
            Ok(())
        }
    }
}
