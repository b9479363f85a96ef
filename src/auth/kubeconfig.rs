//! Kubeconfig files: the standard format kubectl and the client libraries read. The server
//! writes one for its admin token on first start (`<data-dir>/kubeconfig`, mode 0600); the CLI
//! reads any.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    pub current_context: String,
    #[serde(default)]
    pub users: Vec<NamedUser>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_skip_tls_verify: Option<bool>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
}

/// The connection a kubeconfig's current context describes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Connection {
    pub server: String,
    pub token: Option<String>,
    pub ca_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub namespace: Option<String>,
}

impl Kubeconfig {
    /// A kubeconfig with one cluster, user and context named `stowage`.
    pub fn single(server: &str, token: &str, ca_pem: Option<&[u8]>) -> Kubeconfig {
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: "stowage".into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: ca_pem
                        .map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
                    ..Default::default()
                },
            }],
            contexts: vec![NamedContext {
                name: "stowage".into(),
                context: Context {
                    cluster: "stowage".into(),
                    user: "admin".into(),
                    namespace: Some("default".into()),
                },
            }],
            current_context: "stowage".into(),
            users: vec![NamedUser {
                name: "admin".into(),
                user: User {
                    token: Some(token.into()),
                    token_file: None,
                },
            }],
        }
    }

    pub fn read(path: &Path) -> anyhow::Result<Kubeconfig> {
        let text = std::fs::read_to_string(path)?;
        Ok(serde_yaml_ng::from_str(&text)?)
    }

    /// Writes the file readable by its owner only (it holds a credential).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_yaml_ng::to_string(self).map_err(std::io::Error::other)?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    }

    /// Where the current context points, with its credential.
    pub fn connection(&self, context: Option<&str>) -> anyhow::Result<Connection> {
        let name = context.unwrap_or(&self.current_context);
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| anyhow::anyhow!("kubeconfig has no context {name:?}"))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                anyhow::anyhow!("kubeconfig has no cluster {:?}", ctx.context.cluster)
            })?;
        let user = self.users.iter().find(|u| u.name == ctx.context.user);
        let token = match user {
            Some(u) if u.user.token.is_some() => u.user.token.clone(),
            Some(u) => match &u.user.token_file {
                Some(f) => Some(std::fs::read_to_string(f)?.trim().to_string()),
                None => None,
            },
            None => None,
        };
        let ca_pem = match (
            &cluster.cluster.certificate_authority_data,
            &cluster.cluster.certificate_authority,
        ) {
            (Some(data), _) => Some(base64::engine::general_purpose::STANDARD.decode(data.trim())?),
            (None, Some(file)) => Some(std::fs::read(file)?),
            _ => None,
        };
        Ok(Connection {
            server: cluster.cluster.server.clone(),
            token,
            ca_pem,
            insecure: cluster.cluster.insecure_skip_tls_verify.unwrap_or(false),
            namespace: ctx.context.namespace.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_kubeconfig_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        Kubeconfig::single("https://127.0.0.1:8470", "stw_x_y", Some(b"PEM"))
            .write(&path)
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = Kubeconfig::read(&path).unwrap().connection(None).unwrap();
        assert_eq!(c.server, "https://127.0.0.1:8470");
        assert_eq!(c.token.as_deref(), Some("stw_x_y"));
        assert_eq!(c.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert_eq!(c.namespace.as_deref(), Some("default"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("current-context: stowage")
                && text.contains("certificate-authority-data")
        );
    }
}
