//! Batched volume state: everyone waiting for a volume to become available, attached or
//! detached asks here, and one DescribeVolumes call (in chunks of at most 500 ids) answers all
//! of them at once. A thousand volumes being attached cost a handful of describes, not a
//! thousand, and far less of the account's EC2 request budget.
//!
//! Volumes are selected with a `volume-id` filter rather than `VolumeIds`, so one unknown id
//! does not fail the whole batch (with `VolumeIds`, EC2 refuses every id if one is unknown).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use parking_lot::Mutex;
use stowage_provider::ProviderError;
use tokio::sync::{Notify, oneshot};

use crate::ec2::classify;

/// What the provider needs to know about a volume's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeView {
    pub id: String,
    /// `creating`, `available`, `in-use`, `deleting`, `deleted`, `error`.
    pub state: String,
    pub size_gib: i64,
    pub zone: String,
    /// (instance id, device name, state: `attaching`, `attached`, `detaching`, ...).
    pub attachments: Vec<(String, String, String)>,
}

impl VolumeView {
    pub fn from_ec2(v: &aws_sdk_ec2::types::Volume) -> VolumeView {
        VolumeView {
            id: v.volume_id().unwrap_or_default().to_string(),
            state: v
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            size_gib: v.size().map_or(0, i64::from),
            zone: v.availability_zone().unwrap_or_default().to_string(),
            attachments: v
                .attachments()
                .iter()
                .map(|a| {
                    (
                        a.instance_id().unwrap_or_default().to_string(),
                        a.device().unwrap_or_default().to_string(),
                        a.state()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }

    /// The attachment to `instance`, if any: (device, state).
    pub fn attachment_to(&self, instance: &str) -> Option<(&str, &str)> {
        self.attachments
            .iter()
            .find(|(i, _, _)| i == instance)
            .map(|(_, d, s)| (d.as_str(), s.as_str()))
    }
}

type Reply = oneshot::Sender<Result<Option<VolumeView>, ProviderError>>;

pub struct Poller {
    client: aws_sdk_ec2::Client,
    waiting: Mutex<Vec<(String, Reply)>>,
    wake: Notify,
}

/// How long the poller waits for more askers before it calls EC2.
const GATHER: Duration = Duration::from_millis(10);
/// Most ids per DescribeVolumes call.
const CHUNK: usize = 500;

impl Poller {
    pub fn start(client: aws_sdk_ec2::Client) -> Arc<Poller> {
        let poller = Arc::new(Poller {
            client,
            waiting: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&poller);
        tokio::spawn(run(weak));
        poller
    }

    /// The volume's current state (`None`: it does not exist), from the next batched call.
    pub async fn describe(&self, id: &str) -> Result<Option<VolumeView>, ProviderError> {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().push((id.to_string(), tx));
        self.wake.notify_one();
        rx.await.unwrap_or_else(|_| {
            Err(ProviderError::temporary(
                "the EBS provider is shutting down",
            ))
        })
    }

    async fn describe_batch(&self, ids: &[String]) -> Result<Vec<VolumeView>, ProviderError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let mut next: Option<String> = None;
            loop {
                let resp = self
                    .client
                    .describe_volumes()
                    .filters(
                        Filter::builder()
                            .name("volume-id")
                            .set_values(Some(chunk.to_vec()))
                            .build(),
                    )
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| classify("describing volumes", &e))?;
                out.extend(resp.volumes().iter().map(VolumeView::from_ec2));
                match resp.next_token() {
                    Some(t) if !t.is_empty() => next = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }
}

async fn run(poller: Weak<Poller>) {
    loop {
        let Some(p) = poller.upgrade() else { return };
        // Wait for someone to ask (re-checking now and then whether the provider is gone).
        let asked = tokio::time::timeout(Duration::from_secs(5), p.wake.notified()).await;
        if asked.is_err() && p.waiting.lock().is_empty() {
            continue;
        }
        tokio::time::sleep(GATHER).await;
        let batch: Vec<(String, Reply)> = std::mem::take(&mut *p.waiting.lock());
        if batch.is_empty() {
            continue;
        }
        let ids: Vec<String> = batch
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let result = p.describe_batch(&ids).await;
        match result {
            Ok(views) => {
                let by_id: HashMap<&str, &VolumeView> =
                    views.iter().map(|v| (v.id.as_str(), v)).collect();
                for (id, reply) in batch {
                    let _ = reply.send(Ok(by_id.get(id.as_str()).map(|v| (*v).clone())));
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
