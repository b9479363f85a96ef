//! A provider that misbehaves on purpose, wrapped around a real one: for the conformance kit
//! and for tests of the controllers. The calls of each operation are numbered from 1 (the
//! first `create_volume`, the second `attach`, ...); a plan says which call fails, hangs, is
//! cut off at an await point, or "crashes" after the backend did its work. Numbering per
//! operation keeps a plan about creates true whatever else a controller calls first (its
//! orphan sweep lists volumes, say).
//!
//! Cutting a call off at its N-th await point ([`Fault::CancelAtPending`]) is what a process
//! crash does to an operation in flight, at every point it could happen, which no timeout can
//! reach for a provider that answers in microseconds.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use crate::{
    AttachRequest, Capabilities, CapacityReport, CreateVolumeRequest, DeleteVolumeRequest,
    DetachRequest, ErrorKind, ExpandRequest, Expanded, ModifyRequest, NodeDriverInfo, NodeInfo,
    Provider, ProviderError, PublishInfo, Result, Snapshot, SnapshotRequest, Volume, VolumeInfo,
};

/// What happens to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fails at once with this kind; the backend is not called.
    Fail(ErrorKind),
    /// Never answers; the backend is not called.
    Hang,
    /// The backend call is dropped at its N-th `Pending` (N ≥ 1), as a crash would leave it;
    /// the caller gets a Temporary error. A call that finishes sooner is not cut off.
    CancelAtPending(usize),
    /// The backend call completes, then the answer is lost, as if the process crashed right
    /// after it: the caller gets a Temporary error.
    CrashAfter,
}

pub struct Faulty {
    inner: Arc<dyn Provider>,
    plan: Mutex<BTreeMap<(&'static str, usize), Fault>>,
    calls: Mutex<BTreeMap<&'static str, usize>>,
}

impl Faulty {
    pub fn new(inner: Arc<dyn Provider>) -> Self {
        Faulty {
            inner,
            plan: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(BTreeMap::new()),
        }
    }

    /// The `n`-th call (from 1) of `operation` (a [`Provider`] method's name, such as
    /// `"create_volume"`) meets `fault`.
    pub fn on_call(self, operation: &'static str, n: usize, fault: Fault) -> Self {
        self.plan.lock().insert((operation, n), fault);
        self
    }

    /// Calls of `operation` made so far.
    pub fn calls(&self, operation: &str) -> usize {
        self.calls.lock().get(operation).copied().unwrap_or(0)
    }

    async fn call<T>(
        &self,
        what: &'static str,
        f: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let n = {
            let mut calls = self.calls.lock();
            let n = calls.entry(what).or_insert(0);
            *n += 1;
            *n
        };
        let fault = self.plan.lock().get(&(what, n)).copied();
        let lost = || {
            Err(ProviderError::temporary(format!(
                "{what}: call {n} was cut off"
            )))
        };
        match fault {
            None => f.await,
            Some(Fault::Fail(kind)) => Err(ProviderError::new(
                kind,
                format!("{what}: call {n} failed on purpose"),
            )),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::CancelAtPending(at)) => match (CutOff {
                inner: Box::pin(f),
                pendings: 0,
                at,
            })
            .await
            {
                Some(r) => r,
                None => lost(),
            },
            Some(Fault::CrashAfter) => {
                let _ = f.await;
                lost()
            }
        }
    }
}

/// A future dropped at its `at`-th `Pending`: `None` then.
struct CutOff<'a, T> {
    inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
    pendings: usize,
    at: usize,
}

impl<T> Future for CutOff<'_, T> {
    type Output = Option<T>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.inner.as_mut().poll(cx) {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending => {
                self.pendings += 1;
                if self.pendings >= self.at {
                    Poll::Ready(None)
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Provider for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn class_parameters(&self) -> Vec<crate::params::ClassParameter> {
        self.inner.class_parameters()
    }

    fn check_class_parameters(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        self.inner.check_class_parameters(parameters)
    }

    async fn create_volume(&self, req: &CreateVolumeRequest) -> Result<Volume> {
        self.call("create_volume", self.inner.create_volume(req))
            .await
    }

    async fn delete_volume(&self, req: &DeleteVolumeRequest) -> Result<()> {
        self.call("delete_volume", self.inner.delete_volume(req))
            .await
    }

    async fn attach(&self, req: &AttachRequest) -> Result<PublishInfo> {
        self.call("attach", self.inner.attach(req)).await
    }

    async fn detach(&self, req: &DetachRequest) -> Result<()> {
        self.call("detach", self.inner.detach(req)).await
    }

    async fn expand_volume(&self, req: &ExpandRequest) -> Result<Expanded> {
        self.call("expand_volume", self.inner.expand_volume(req))
            .await
    }

    async fn modify_volume(&self, req: &ModifyRequest) -> Result<()> {
        self.call("modify_volume", self.inner.modify_volume(req))
            .await
    }

    fn node_driver_info(&self, node: &NodeInfo) -> NodeDriverInfo {
        self.inner.node_driver_info(node)
    }

    async fn capacity(&self, parameters: &BTreeMap<String, String>) -> Result<Vec<CapacityReport>> {
        self.call("capacity", self.inner.capacity(parameters)).await
    }

    async fn list_volumes(&self) -> Result<Vec<VolumeInfo>> {
        self.call("list_volumes", self.inner.list_volumes()).await
    }

    fn backend_requests(&self) -> BTreeMap<(String, String), u64> {
        self.inner.backend_requests()
    }

    async fn create_snapshot(&self, req: &SnapshotRequest) -> Result<Snapshot> {
        self.call("create_snapshot", self.inner.create_snapshot(req))
            .await
    }

    async fn snapshot_info(&self, id: &str) -> Result<Snapshot> {
        self.call("snapshot_info", self.inner.snapshot_info(id))
            .await
    }

    async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.call("delete_snapshot", self.inner.delete_snapshot(id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryProvider;

    fn request(name: &str) -> CreateVolumeRequest {
        CreateVolumeRequest {
            name: name.into(),
            capacity_bytes: 1 << 20,
            access_modes: vec![crate::AccessMode::ReadWriteOnce],
            block: false,
            parameters: BTreeMap::new(),
            mount_options: vec![],
            topology: Default::default(),
            claim: Default::default(),
            content_source: None,
            mutable_parameters: Default::default(),
        }
    }

    #[tokio::test]
    async fn planned_faults_happen_on_their_call_and_only_there() {
        let memory = MemoryProvider::new("memory.test");
        let state = memory.state();
        let p = Faulty::new(Arc::new(memory))
            .on_call("create_volume", 1, Fault::Fail(ErrorKind::Temporary))
            .on_call("create_volume", 3, Fault::CrashAfter);
        assert_eq!(
            p.create_volume(&request("pvc-a")).await.unwrap_err().kind,
            ErrorKind::Temporary
        );
        assert!(p.create_volume(&request("pvc-a")).await.is_ok());
        assert!(
            p.create_volume(&request("pvc-b")).await.is_err(),
            "answer lost"
        );
        let again = MemoryProvider::new("memory.test").with_state(state);
        assert_eq!(
            again.list_volumes().await.unwrap().len(),
            2,
            "but the work was done"
        );
        assert_eq!(p.calls("create_volume"), 3);
        assert!(
            p.list_volumes().await.is_ok(),
            "other operations count apart"
        );
        assert_eq!(p.calls("list_volumes"), 1);
    }

    #[tokio::test]
    async fn a_hung_call_never_answers() {
        let p = Faulty::new(Arc::new(MemoryProvider::new("memory.test"))).on_call(
            "create_volume",
            1,
            Fault::Hang,
        );
        let r = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            p.create_volume(&request("pvc-h")),
        )
        .await;
        assert!(r.is_err());
    }
}
