//! Building an [`ExampleProvider`] from its configuration, and `impl Provider`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage_provider::factory::{Build, BuildError, Env};
use stowage_provider::params::ClassParameter;
use stowage_provider::{
    AccessMode, AttachRequest, Capabilities, CreateVolumeRequest, DeleteVolumeRequest,
    DetachRequest, ExpandRequest, Expanded, Provider, ProviderError, PublishInfo, Result, Volume,
    VolumeInfo, validate_volume_name,
};

use crate::config::Config;
use crate::core::Core;

/// The example provider. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct ExampleProvider {
    core: Arc<Core>,
}

impl ExampleProvider {
    /// Opens the provider on `root`, making it if needed.
    pub fn open(root: &Path) -> std::result::Result<ExampleProvider, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create root {}: {e}", root.display()))?;
        Ok(ExampleProvider {
            core: Arc::new(Core {
                root: root.to_path_buf(),
            }),
        })
    }
}

/// How the server builds it from `providers.example` in its config file.
impl Build for ExampleProvider {
    const SECTION: &'static str = "example";
    type Config = Config;

    async fn build(config: Config, env: &Env) -> std::result::Result<Self, BuildError> {
        let root = config
            .root
            .unwrap_or_else(|| env.data_dir.join("example-volumes"));
        ExampleProvider::open(&root).map_err(BuildError)
    }
}

#[async_trait::async_trait]
impl Provider for ExampleProvider {
    fn name(&self) -> &str {
        crate::NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dynamic_provisioning: true,
            attach_required: false,
            expansion: true,
            node_expansion: false,
            snapshots: false,
            clones: false,
            access_modes: vec![AccessMode::ReadWriteOnce],
            topology: false,
            max_attachments_per_node: None,
            volume_modification: false,
            storage_capacity: false,
        }
    }

    fn class_parameters(&self) -> Vec<ClassParameter> {
        crate::create::CLASS_PARAMETERS.to_vec()
    }

    fn check_class_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        crate::create::validate_parameters(parameters)
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        crate::create::create(&self.core, req).await
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()> {
        crate::delete::delete(&self.core, req).await
    }

    /// Nothing to attach for a file: the check is that it exists, the answer where it is.
    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo> {
        validate_volume_name(&req.handle)?;
        if self.core.record(&req.handle).await?.is_none() {
            return Err(ProviderError::not_found(format!(
                "volume {} does not exist",
                req.handle
            )));
        }
        Ok(BTreeMap::from([
            ("type".to_string(), "file".to_string()),
            (
                "path".to_string(),
                self.core.image(&req.handle).display().to_string(),
            ),
        ]))
    }

    async fn detach(&self, req: &DetachRequest) -> Result<()> {
        validate_volume_name(&req.handle)
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> Result<Expanded> {
        crate::expand::expand(&self.core, req).await
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        crate::create::list(&self.core).await
    }
}
