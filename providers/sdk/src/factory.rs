//! How a server builds providers from its configuration file: each provider crate implements
//! [`Build`] (its config section, its config type, how to build it), and a server is handed a
//! list of [`Factory`]s. Adding a provider is a crate plus one line in that list, and a
//! provider written outside Stowage's repository plugs into a binary of its own that calls
//! Stowage's `main_with` with the built-in factories and its own.
//!
//! The rule for `providers.<section>` in `stowage.yaml` is the same for every provider: a
//! section that is present turns the provider on unless it says `enabled: false`; an absent
//! section leaves it as [`Build::ON_BY_DEFAULT`] says (local and NFS on, EBS and memory off).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::Provider;

/// What a provider may use from the server it runs in.
#[derive(Clone, Debug)]
pub struct Env {
    /// The server's data directory (default places for a provider's own files).
    pub data_dir: PathBuf,
    /// The installation's identity when replicas share it (kept in their database).
    shared_installation_id: Option<String>,
}

impl Env {
    pub fn new(data_dir: impl Into<PathBuf>) -> Env {
        Env {
            data_dir: data_dir.into(),
            shared_installation_id: None,
        }
    }

    /// The environment of one of several replicas of one installation: they all get `id`.
    pub fn replica(data_dir: impl Into<PathBuf>, id: String) -> Env {
        Env {
            data_dir: data_dir.into(),
            shared_installation_id: Some(id),
        }
    }

    /// This installation's identity, made on first start and kept in
    /// `<data-dir>/installation-id` (with replicas: in their database, the same for all).
    /// Providers mark what they create with it, so that two installations sharing a backend
    /// (an NFS export) never take each other's volumes for orphans, while every replica of
    /// one installation recognises what another made.
    pub fn installation_id(&self) -> Result<String, BuildError> {
        match &self.shared_installation_id {
            Some(id) => Ok(id.clone()),
            None => installation_id(&self.data_dir).map_err(BuildError),
        }
    }

    /// A new random installation identity.
    pub fn new_installation_id() -> String {
        new_id()
    }
}

fn installation_id(data_dir: &Path) -> Result<String, String> {
    let path = data_dir.join("installation-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) => Err(format!("{} is empty", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = new_id();
            std::fs::write(&path, format!("{id}\n"))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// A random identifier (128 bits from the system's random source, or the clock and process
/// if it fails).
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    let seeded = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if seeded.is_err() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (now ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a provider could not be built (a bad config value, an unusable directory).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BuildError(pub String);

/// A provider that a server can build from its config section.
pub trait Build: Provider + Sized {
    /// The section of `providers:` in `stowage.yaml` (`local`, `nfs`, `ebs`).
    const SECTION: &'static str;
    /// Whether the provider is on when its section is absent.
    const ON_BY_DEFAULT: bool = false;
    /// Whether its volumes live on the machine the provider runs on (local directories). Such
    /// a provider cannot serve replicas, whose leader may run on any machine: a server with
    /// replicas refuses to enable it.
    const NODE_LOCAL: bool = false;
    /// What the section holds (`enabled` is handled by the server and never reaches it).
    type Config: DeserializeOwned + Default + Send;

    fn build(
        config: Self::Config,
        env: &Env,
    ) -> impl Future<Output = Result<Self, BuildError>> + Send;
}

/// A provider being built.
pub type Building<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<dyn Provider>, BuildError>> + Send + 'a>>;

/// A provider type, erased: what a server's table of providers holds.
pub trait Factory: Send + Sync {
    fn section(&self) -> &'static str;
    fn on_by_default(&self) -> bool;
    fn node_local(&self) -> bool;
    /// Builds the provider from its section (as JSON; `null` when absent).
    fn build<'a>(&'a self, section: serde_json::Value, env: &'a Env) -> Building<'a>;
}

struct TypedFactory<P>(std::marker::PhantomData<fn() -> P>);

impl<P: Build> Factory for TypedFactory<P> {
    fn section(&self) -> &'static str {
        P::SECTION
    }

    fn on_by_default(&self) -> bool {
        P::ON_BY_DEFAULT
    }

    fn node_local(&self) -> bool {
        P::NODE_LOCAL
    }

    fn build<'a>(&'a self, section: serde_json::Value, env: &'a Env) -> Building<'a> {
        Box::pin(async move {
            let config: P::Config = match section {
                serde_json::Value::Null => P::Config::default(),
                v => serde_json::from_value(v)
                    .map_err(|e| BuildError(format!("providers.{}: {e}", P::SECTION)))?,
            };
            let provider = P::build(config, env)
                .await
                .map_err(|e| BuildError(format!("providers.{}: {e}", P::SECTION)))?;
            Ok(Arc::new(provider) as Arc<dyn Provider>)
        })
    }
}

/// The factory of provider type `P`.
pub fn factory<P: Build>() -> Box<dyn Factory> {
    Box::new(TypedFactory::<P>(std::marker::PhantomData))
}

/// Whether a config section turns its provider on, and the section without `enabled`.
pub fn section_switch(
    section: Option<&serde_json::Value>,
    on_by_default: bool,
) -> Result<(bool, serde_json::Value), BuildError> {
    let Some(section) = section else {
        return Ok((on_by_default, serde_json::Value::Null));
    };
    let mut section = match section {
        serde_json::Value::Null => serde_json::Value::Object(Default::default()),
        other => other.clone(),
    };
    let enabled = match section.as_object_mut() {
        Some(m) => match m.remove("enabled") {
            None => true,
            Some(serde_json::Value::Bool(b)) => b,
            Some(other) => {
                return Err(BuildError(format!(
                    "enabled must be true or false, not {other}"
                )));
            }
        },
        None => return Err(BuildError("a provider's section must be a map".into())),
    };
    Ok((enabled, section))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_sections_are_on_unless_disabled_and_absent_ones_follow_the_default() {
        assert!(!section_switch(None, false).unwrap().0);
        assert!(section_switch(None, true).unwrap().0);
        let (on, rest) = section_switch(Some(&serde_json::json!({"x": 1})), false).unwrap();
        assert!(on);
        assert_eq!(rest, serde_json::json!({"x": 1}));
        let (on, rest) =
            section_switch(Some(&serde_json::json!({"enabled": false, "x": 1})), true).unwrap();
        assert!(!on);
        assert_eq!(rest, serde_json::json!({"x": 1}));
        assert!(section_switch(Some(&serde_json::json!({"enabled": "no"})), true).is_err());
        assert!(
            section_switch(Some(&serde_json::Value::Null), false)
                .unwrap()
                .0
        );
    }

    #[test]
    fn the_installation_id_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("stowage-env-{}", new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = Env::new(&dir);
        let id = env.installation_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(env.installation_id().unwrap(), id);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
