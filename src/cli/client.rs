//! The CLI's connection to a server: where it is and which token to send, and turning the
//! server's `Status` errors into messages and exit codes.
//!
//! The connection comes from, in order: `--server`/`--token` (or `STOWAGE_SERVER`/
//! `STOWAGE_TOKEN`), then a kubeconfig (`--kubeconfig`, `KUBECONFIG`, or the one `stowage serve`
//! writes to `./stowage-data/kubeconfig`). The CLI speaks only the public REST API.

use std::path::PathBuf;
use std::process::ExitCode;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::auth::kubeconfig::{Connection, Kubeconfig};

/// Exit codes, so scripts can tell failures apart.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const INVALID: u8 = 5;
    pub const UNREACHABLE: u8 = 6;
    pub const FORBIDDEN: u8 = 7;
    pub const TIMEOUT: u8 = 8;
}

/// A failure the CLI reports: a message and an exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub code: u8,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            code,
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(exit::USAGE, message)
    }
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl From<anyhow::Error> for CliError {
    fn from(e: anyhow::Error) -> Self {
        CliError::new(exit::FAILURE, format!("{e:#}"))
    }
}

pub type CliResult<T> = Result<T, CliError>;

#[derive(Clone, Debug, Default, clap::Args)]
pub struct ConnectionArgs {
    /// The server's URL (e.g. https://127.0.0.1:8470).
    #[arg(long, global = true, env = "STOWAGE_SERVER")]
    pub server: Option<String>,
    /// Bearer token.
    #[arg(long, global = true, env = "STOWAGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, then ./stowage-data/kubeconfig).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// CA certificate (PEM) to trust for the server.
    #[arg(long, global = true, env = "STOWAGE_CA")]
    pub certificate_authority: Option<PathBuf>,
    /// Do not verify the server's certificate (insecure).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub server: String,
    /// The kubeconfig context's default namespace.
    pub namespace: Option<String>,
}

fn kubeconfig_path(args: &ConnectionArgs) -> Option<PathBuf> {
    if let Some(p) = &args.kubeconfig {
        return Some(p.clone());
    }
    if let Ok(k) = std::env::var("KUBECONFIG")
        && let Some(first) = k.split(':').find(|p| !p.is_empty())
    {
        return Some(PathBuf::from(first));
    }
    let local = PathBuf::from("stowage-data/kubeconfig");
    local.exists().then_some(local)
}

impl Client {
    pub fn connect(args: &ConnectionArgs) -> CliResult<Client> {
        let from_file = match kubeconfig_path(args) {
            Some(path) => Some(
                Kubeconfig::read(&path)
                    .and_then(|k| k.connection(args.context.as_deref()))
                    .map_err(|e| {
                        CliError::usage(format!("reading kubeconfig {}: {e:#}", path.display()))
                    })?,
            ),
            None => None,
        };
        let mut conn = from_file.unwrap_or_default();
        if let Some(s) = &args.server {
            conn = Connection {
                server: s.clone(),
                ..conn
            };
        }
        if let Some(t) = &args.token {
            conn.token = Some(t.clone());
        }
        if let Some(ca) = &args.certificate_authority {
            conn.ca_pem = Some(
                std::fs::read(ca)
                    .map_err(|e| CliError::usage(format!("reading {}: {e}", ca.display())))?,
            );
        }
        if conn.server.is_empty() {
            return Err(CliError::usage(
                "no server: pass --server (or STOWAGE_SERVER), --kubeconfig (or KUBECONFIG), \
                 or run from the directory holding stowage-data/",
            ));
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = &conn.token {
            let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| CliError::usage("the token has characters a header cannot carry"))?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("stowage-cli/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &conn.ca_pem {
            let cert = reqwest::Certificate::from_pem(ca)
                .map_err(|e| CliError::usage(format!("the CA certificate is not PEM: {e}")))?;
            builder = builder.add_root_certificate(cert);
        }
        if args.insecure_skip_tls_verify || conn.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(Client {
            http: builder
                .build()
                .map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?,
            server: conn.server.trim_end_matches('/').to_string(),
            namespace: conn.namespace,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// Sends a request; a non-success answer becomes a `CliError` with the server's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        accept: Option<&str>,
    ) -> CliResult<Value> {
        let resp = self.raw(method, path, content_type, body, accept).await?;
        let status = resp.status();
        // As kubectl does: the server's warnings go to stderr, whatever the outcome.
        for w in resp.headers().get_all(reqwest::header::WARNING) {
            eprintln!(
                "Warning: {}",
                super::output::clean_line(&warning_text(w.as_bytes()))
            );
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CliError::new(exit::UNREACHABLE, format!("reading the response: {e}")))?;
        let mut value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        super::output::clean_value(&mut value);
        if status.is_success() {
            Ok(value)
        } else {
            Err(status_error(status, &value))
        }
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        accept: Option<&str>,
    ) -> CliResult<reqwest::Response> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        req.send().await.map_err(|e| {
            CliError::new(
                exit::UNREACHABLE,
                format!(
                    "cannot reach the server at {}: {}",
                    self.server,
                    root_cause(&e)
                ),
            )
        })
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.send(Method::GET, path, None, None, None).await
    }

    pub async fn get_table(&self, path: &str) -> CliResult<Value> {
        self.send(
            Method::GET,
            path,
            None,
            None,
            Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Some(body.to_string().into_bytes()),
            None,
        )
        .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> CliResult<Value> {
        self.send(
            Method::PATCH,
            path,
            Some(content_type),
            Some(body.to_string().into_bytes()),
            None,
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> CliResult<Value> {
        self.send(Method::DELETE, path, None, None, None).await
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    cause
}

/// The server's Status message, with an exit code by kind of failure.
pub fn status_error(status: StatusCode, body: &Value) -> CliError {
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(super::output::clean_line)
        .unwrap_or_else(|| format!("the server answered {status}"));
    let code = match status.as_u16() {
        404 => exit::NOT_FOUND,
        409 => exit::CONFLICT,
        400 | 422 => exit::INVALID,
        401 | 403 => exit::FORBIDDEN,
        408 | 504 => exit::TIMEOUT,
        _ => exit::FAILURE,
    };
    CliError::new(
        code,
        format!("Error from server ({}): {message}", reason_of(body, status)),
    )
}

fn reason_of(body: &Value, status: StatusCode) -> String {
    body.get("reason")
        .and_then(Value::as_str)
        .map(super::output::clean_line)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("Error").to_string())
}

/// The text of a `Warning` header (`299 - "text"`, the text a JSON string); the raw value
/// when it is not in that form.
fn warning_text(value: &[u8]) -> String {
    let raw = String::from_utf8_lossy(value);
    raw.strip_prefix("299 - ")
        .and_then(|quoted| serde_json::from_str::<String>(quoted).ok())
        .unwrap_or_else(|| raw.into_owned())
}
