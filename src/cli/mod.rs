//! The `stowage` command line: `stowage serve` runs the server; every other command is the admin
//! CLI, which talks to a server only through the public REST API (the one kubectl uses).
//!
//! One file per command family; [`client`] holds the connection and error handling shared by
//! all of them. Exit codes: 0 ok, 1 failure, 2 usage, 3 not found, 4 conflict, 5 invalid,
//! 6 unreachable, 7 forbidden/unauthorized, 8 timed out.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::server::{self, ServeArgs};

mod apply;
pub mod client;
mod describe;
mod get;
mod kinds;
mod misc;
mod output;
mod storageclass;
mod volume;
mod wait;

use client::{CliError, CliResult, ConnectionArgs};

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "A storage control plane: claims become volumes.",
    long_about = "A storage control plane: claims become volumes.\n\n\
        `stowage serve` runs the server. The other commands manage a running server through its \
        REST API; they find it through --server/--token, STOWAGE_SERVER/STOWAGE_TOKEN, a \
        kubeconfig (--kubeconfig, KUBECONFIG), or ./stowage-data/kubeconfig, which `stowage \
        serve` writes on first start."
)]
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (API, store and controllers).
    #[command(
        after_help = "Examples:\n  stowage serve\n  stowage serve --listen 0.0.0.0:8470 --config stowage.yaml"
    )]
    Serve(ServeArgs),
    /// Run the node agent: mount the volumes of this node's pods (as root, on each node).
    #[command(
        after_help = "Examples:\n  stowage node --node-name node-1 --kubeconfig node-1.kubeconfig\n  stowage node --node-name node-1 --server https://10.0.0.1:8470 --token <node:node-1 token> --root /var/lib/stowage-node"
    )]
    Node(crate::node::NodeArgs),
    /// List or show objects as tables, YAML, JSON or names.
    #[command(
        after_help = "Examples:\n  stowage get sc\n  stowage get pvc -A\n  stowage get pvc data -n team-a -o yaml\n  stowage get pv -l tier=gold -o wide\n  stowage get pvc -w"
    )]
    Get(get::GetArgs),
    /// Show an object with its related objects and events.
    #[command(
        after_help = "Examples:\n  stowage describe pvc data -n team-a\n  stowage describe pv pvc-1234\n  stowage describe sc local"
    )]
    Describe(describe::DescribeArgs),
    /// Create or update objects from files (YAML or JSON, multi-document), with server-side apply.
    #[command(
        after_help = "Examples:\n  stowage apply -f class.yaml\n  stowage apply -f manifests/\n  cat claim.yaml | stowage apply -f -"
    )]
    Apply(apply::FileArgs),
    /// Create objects from files; fails if they exist.
    #[command(after_help = "Examples:\n  stowage create -f claim.yaml")]
    Create(apply::FileArgs),
    /// Delete objects by name or from files.
    #[command(
        after_help = "Examples:\n  stowage delete pvc data -n team-a\n  stowage delete -f claim.yaml\n  stowage delete pv/pvc-1234 --wait=false"
    )]
    Delete(apply::DeleteArgs),
    /// Manage StorageClasses.
    #[command(name = "storageclass", alias = "sc", subcommand)]
    StorageClass(storageclass::StorageClassCommand),
    /// PersistentVolume tasks.
    #[command(subcommand)]
    Pv(volume::PvCommand),
    /// PersistentVolumeClaim tasks.
    #[command(subcommand)]
    Pvc(volume::PvcCommand),
    /// Wait for an object to reach a phase or condition, or to be deleted.
    #[command(
        after_help = "Examples:\n  stowage wait pvc/data --for=phase=Bound --timeout 60s\n  stowage wait node/n1 --for=condition=Ready\n  stowage wait pvc/data --for=delete"
    )]
    Wait(wait::WaitArgs),
    /// List the providers the server has and what they can do.
    #[command(after_help = "Examples:\n  stowage providers")]
    Providers(misc::ProvidersArgs),
    /// Manage API tokens (admin).
    #[command(subcommand)]
    Token(misc::TokenCommand),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  stowage completion bash > /etc/bash_completion.d/stowage\n  stowage completion zsh > \"${fpath[1]}/_stowage\""
    )]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Crates whose debug logs print credentials (the AWS SDK logs its signing identity, access
/// key id included). They never log below info, whatever `STOWAGE_LOG` asks for.
const CREDENTIAL_LOGGERS: [&str; 6] = [
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_runtime",
    "aws_sigv4",
    "aws_config",
    "aws_sdk_ec2",
];

fn init_tracing() {
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("STOWAGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    for target in CREDENTIAL_LOGGERS {
        if let Ok(d) = format!("{target}=info").parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> CliResult<()> {
    let conn = cli.connection;
    match cli.command {
        Command::Serve(_) | Command::Node(_) | Command::Completion { .. } => {
            unreachable!("handled before connecting")
        }
        Command::Get(args) => get::run(&conn, args).await,
        Command::Describe(args) => describe::run(&conn, args).await,
        Command::Apply(args) => apply::apply(&conn, args).await,
        Command::Create(args) => apply::create(&conn, args).await,
        Command::Delete(args) => apply::delete(&conn, args).await,
        Command::StorageClass(cmd) => storageclass::run(&conn, cmd).await,
        Command::Pv(cmd) => volume::run_pv(&conn, cmd).await,
        Command::Pvc(cmd) => volume::run_pvc(&conn, cmd).await,
        Command::Wait(args) => wait::run(&conn, args).await,
        Command::Providers(args) => misc::providers(&conn, args).await,
        Command::Token(cmd) => misc::token(&conn, cmd).await,
    }
}

/// Runs the command line with the built-in providers; returns the process exit code.
pub fn main() -> ExitCode {
    main_with(crate::providers::builtin())
}

/// Runs the command line with these providers: the entry point of a build of Stowage with a
/// provider of its own (the same commands and config file; `providers.<section>` of every
/// factory given is accepted).
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let mut providers = stowage::providers::builtin();
///     providers.push(stowage_provider::factory::factory::<stowage_provider::memory::MemoryProvider>());
///     stowage::cli::main_with(providers)
/// }
/// ```
pub fn main_with(providers: Vec<Box<dyn stowage_provider::factory::Factory>>) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The long-running processes: logs, and a runtime with a thread per core.
        Command::Serve(args) => run_daemon(|| async {
            server::serve(args, &providers)
                .await
                .map_err(|e| CliError::new(client::exit::FAILURE, format!("{e:#}")))
        }),
        Command::Node(args) => run_daemon(|| crate::node::run(&cli.connection, args)),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "stowage",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        _ => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(cli)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{}", e.message);
                    e.exit_code()
                }
            }
        }
    }
}

/// Runs `serve` or `node`: tracing to stderr, a multi-threaded runtime, and `error: ...` with
/// the command's exit code on failure.
fn run_daemon<F, Fut>(start: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = CliResult<()>>,
{
    init_tracing();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.exit_code()
        }
    }
}

/// The namespace a command acts in: `-n`, else the kubeconfig's, else `default`.
pub fn namespace_of(flag: Option<&str>, client: &client::Client) -> String {
    flag.map(str::to_string)
        .or_else(|| client.namespace.clone())
        .unwrap_or_else(|| "default".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
