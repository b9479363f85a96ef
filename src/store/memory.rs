//! A backend that keeps nothing: every commit "succeeds" at once. For tests of controllers and
//! the registry, where the subject is the logic above the store and everything must run on
//! the test's own (paused) runtime. Never for data.

use super::Rv;
use super::backend::{Backend, Loaded, Row};

pub struct MemoryBackend;

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    async fn load(&mut self) -> anyhow::Result<Loaded> {
        Ok(Loaded::default())
    }

    async fn commit(&mut self, _rows: &[Row]) -> anyhow::Result<()> {
        Ok(())
    }

    async fn compact(&mut self, _up_to: Rv, _released: &[Rv]) -> anyhow::Result<()> {
        Ok(())
    }
}
