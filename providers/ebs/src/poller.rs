//! Batched volume state: everyone waiting for a volume to become available, attached or
//! detached asks here, and one DescribeVolumes call (in chunks of at most 500 ids) answers all
//! of them at once. A thousand volumes being attached cost a handful of describes, not a
//! thousand, and far less of the account's EC2 request budget.
//!
//! Volumes are selected with a `volume-id` filter rather than `VolumeIds`, so one unknown id
//! does not fail the whole batch (with `VolumeIds`, EC2 refuses every id if one is unknown).
//!
//! The same batching serves lookups by volume name (the name tag), which every create makes
//! once to find volumes a racing creator made for the same name.

use std::collections::BTreeSet;
use std::sync::{Arc, Weak};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use parking_lot::Mutex;
use stowage_provider::ProviderError;
use tokio::sync::{Notify, oneshot};

use crate::ec2::classify;
use crate::params::{FS_TYPE_TAG, NAME_TAG, OWNER_TAG};

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
    /// When EC2 made it (seconds, nanoseconds): the order racing creates are settled by.
    pub created: (i64, u32),
    /// The volume name tag, if it is one of ours.
    pub name: Option<String>,
    /// What it was made as, for comparing a create's request with an existing volume.
    pub volume_type: String,
    pub iops: Option<i64>,
    pub throughput: Option<i64>,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub snapshot_id: Option<String>,
    /// The file system the class asked for, from our tag.
    pub fs_type: Option<String>,
}

fn tag_of(tags: &[aws_sdk_ec2::types::Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
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
            created: v
                .create_time()
                .map_or((0, 0), |t| (t.secs(), t.subsec_nanos())),
            name: tag_of(v.tags(), NAME_TAG),
            volume_type: v
                .volume_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            iops: v.iops().map(i64::from),
            throughput: v.throughput().map(i64::from),
            encrypted: v.encrypted().unwrap_or(false),
            kms_key_id: v.kms_key_id().map(str::to_string),
            snapshot_id: v
                .snapshot_id()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            fs_type: tag_of(v.tags(), FS_TYPE_TAG),
        }
    }

    /// The view of a volume EC2 has just made.
    pub fn from_created(
        c: &aws_sdk_ec2::operation::create_volume::CreateVolumeOutput,
    ) -> VolumeView {
        VolumeView {
            id: c.volume_id().unwrap_or_default().to_string(),
            state: c.state().map_or("creating", |s| s.as_str()).to_string(),
            size_gib: c.size().map_or(0, i64::from),
            zone: c.availability_zone().unwrap_or_default().to_string(),
            attachments: Vec::new(),
            created: c
                .create_time()
                .map_or((0, 0), |t| (t.secs(), t.subsec_nanos())),
            name: tag_of(c.tags(), NAME_TAG),
            volume_type: c
                .volume_type()
                .map(|t| t.as_str().to_string())
                .unwrap_or_default(),
            iops: c.iops().map(i64::from),
            throughput: c.throughput().map(i64::from),
            encrypted: c.encrypted().unwrap_or(false),
            kms_key_id: c.kms_key_id().map(str::to_string),
            snapshot_id: c
                .snapshot_id()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            fs_type: tag_of(c.tags(), FS_TYPE_TAG),
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
type NamedReply = oneshot::Sender<Result<Vec<VolumeView>, ProviderError>>;

pub struct Poller {
    client: aws_sdk_ec2::Client,
    /// This installation's id: name lookups see only its volumes.
    owner: String,
    waiting: Mutex<Vec<(String, Reply)>>,
    named: Mutex<Vec<(String, NamedReply)>>,
    wake: Notify,
}

/// How long the poller waits for more askers before it calls EC2.
const GATHER: Duration = Duration::from_millis(10);
/// Most ids per DescribeVolumes call.
const CHUNK: usize = 500;
/// Most values of one tag filter EC2 accepts.
const NAME_CHUNK: usize = 200;

impl Poller {
    pub fn start(client: aws_sdk_ec2::Client, owner: String) -> Arc<Poller> {
        let poller = Arc::new(Poller {
            client,
            owner,
            waiting: Mutex::new(Vec::new()),
            named: Mutex::new(Vec::new()),
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&poller);
        tokio::spawn(run(weak));
        poller
    }

    /// The volume's current state (`None`: it does not exist), from the next batched call.
    /// The volume as EC2 sees it; one that does not exist is `NotFound`.
    pub async fn existing(&self, id: &str) -> Result<VolumeView, ProviderError> {
        self.describe(id)
            .await?
            .ok_or_else(|| ProviderError::not_found(format!("volume {id} does not exist")))
    }

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

    /// This installation's volumes named `name` (normally one), from the next batched call.
    pub async fn named(&self, name: &str) -> Result<Vec<VolumeView>, ProviderError> {
        let (tx, rx) = oneshot::channel();
        self.named.lock().push((name.to_string(), tx));
        self.wake.notify_one();
        rx.await.unwrap_or_else(|_| {
            Err(ProviderError::temporary(
                "the EBS provider is shutting down",
            ))
        })
    }

    /// Every page of one DescribeVolumes query.
    async fn describe_all(&self, filters: Vec<Filter>) -> Result<Vec<VolumeView>, ProviderError> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let resp = self
                .client
                .describe_volumes()
                .set_filters(Some(filters.clone()))
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| classify("describing volumes", &e))?;
            out.extend(resp.volumes().iter().map(VolumeView::from_ec2));
            match resp.next_token() {
                Some(t) if !t.is_empty() => next = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    async fn describe_batch(&self, ids: &[String]) -> Result<Vec<VolumeView>, ProviderError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let by_id = Filter::builder()
                .name("volume-id")
                .set_values(Some(chunk.to_vec()))
                .build();
            out.extend(self.describe_all(vec![by_id]).await?);
        }
        Ok(out)
    }

    async fn describe_named(&self, names: &[String]) -> Result<Vec<VolumeView>, ProviderError> {
        let mut out = Vec::new();
        for chunk in names.chunks(NAME_CHUNK) {
            let filters = vec![
                Filter::builder()
                    .name(format!("tag:{NAME_TAG}"))
                    .set_values(Some(chunk.to_vec()))
                    .build(),
                Filter::builder()
                    .name(format!("tag:{OWNER_TAG}"))
                    .values(&self.owner)
                    .build(),
            ];
            out.extend(self.describe_all(filters).await?);
        }
        Ok(out)
    }
}

/// Answers everyone in `batch` from one call over their distinct keys.
async fn answer<T, F, Fut>(
    batch: Vec<(String, oneshot::Sender<Result<T, ProviderError>>)>,
    call: F,
    pick: impl Fn(&[VolumeView], &str) -> T,
) where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<VolumeView>, ProviderError>>,
{
    if batch.is_empty() {
        return;
    }
    let keys: Vec<String> = batch
        .iter()
        .map(|(k, _)| k.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    match call(keys).await {
        Ok(views) => {
            for (key, reply) in batch {
                let _ = reply.send(Ok(pick(&views, &key)));
            }
        }
        Err(e) => {
            for (_, reply) in batch {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn run(poller: Weak<Poller>) {
    loop {
        let Some(p) = poller.upgrade() else { return };
        // Wait for someone to ask (re-checking now and then whether the provider is gone).
        let asked = tokio::time::timeout(Duration::from_secs(5), p.wake.notified()).await;
        if asked.is_err() && p.waiting.lock().is_empty() && p.named.lock().is_empty() {
            continue;
        }
        tokio::time::sleep(GATHER).await;
        let by_id: Vec<(String, Reply)> = std::mem::take(&mut *p.waiting.lock());
        let by_name: Vec<(String, NamedReply)> = std::mem::take(&mut *p.named.lock());
        let poller = &p;
        answer(
            by_id,
            |ids| async move { poller.describe_batch(&ids).await },
            |views, id| views.iter().find(|v| v.id == id).cloned(),
        )
        .await;
        answer(
            by_name,
            |names| async move { poller.describe_named(&names).await },
            |views, name| {
                views
                    .iter()
                    .filter(|v| v.name.as_deref() == Some(name))
                    .cloned()
                    .collect()
            },
        )
        .await;
    }
}
