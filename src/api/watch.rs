//! `?watch=1`: a stream of newline-delimited watch events.
//!
//! The stream starts with the current objects as ADDED (no resourceVersion, or `0`), or resumes
//! right after a given resourceVersion. Selectors apply to transitions as in Kubernetes: an
//! object that stops matching is reported DELETED, one that starts matching ADDED.
//! A watcher never slows writers down: if it falls behind by more than the store's buffer, or
//! its client reads too slowly, the stream ends and the client resumes from its last
//! resourceVersion.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::ApiState;
use super::encode;
use super::negotiate::Output;
use super::query::Query;
use super::resources::{check_selectors, selected};
use crate::auth::{Visibility, WatchSlot};
use crate::error::{ApiError, ApiResult};
use crate::resources::Kind;
use crate::store::{EventType, Rv, Stored, WatchError, WatchEvent, Watcher};

/// Without `timeoutSeconds`, a watch ends after this long (Kubernetes uses 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Chunks a slow client may have unread before its watch is cut off.
const CLIENT_BUFFER: usize = 256;

struct WatchSpec {
    kind: Kind,
    namespace: Option<String>,
    query: Query,
    output: Output,
    /// What the caller may see; invisible objects are treated as not matching.
    vis: Visibility,
}

impl WatchSpec {
    fn in_scope(&self, s: &Stored) -> bool {
        s.kind == self.kind
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| s.key.namespace == ns)
    }

    fn selected(&self, s: &Stored) -> bool {
        selected(s, &self.query) && self.vis.admits(s)
    }

    fn matches(&self, s: &Stored) -> bool {
        self.in_scope(s) && self.selected(s)
    }

    /// The event this change is for this watcher, if any, after selector transitions.
    fn translate(&self, e: &WatchEvent) -> Option<(EventType, Arc<Stored>)> {
        if !self.in_scope(&e.object) {
            return None;
        }
        let now = self.selected(&e.object);
        let before = e.prev.as_ref().map(|p| self.selected(p));
        match (e.type_, before, now) {
            (EventType::Deleted, _, true) => Some((EventType::Deleted, e.object.clone())),
            (EventType::Deleted, _, false) => None,
            (_, Some(true), true) | (EventType::Added, _, true) => {
                Some((e.type_, e.object.clone()))
            }
            // Unknown previous state (log read back after a restart): report it as modified.
            (EventType::Modified, None, true) => Some((EventType::Modified, e.object.clone())),
            (EventType::Modified, Some(false), true) => Some((EventType::Added, e.object.clone())),
            (EventType::Modified, Some(true), false) => {
                Some((EventType::Deleted, e.object.clone()))
            }
            _ => None,
        }
    }

    fn encode(&self, type_: EventType, s: &Stored, first_table: &mut bool) -> Bytes {
        let mut line = Vec::with_capacity(s.json.len() + 32);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(type_.as_str().as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        match self.output {
            Output::Table { beta } => {
                let t = encode::table(
                    self.kind,
                    &[s],
                    Some(s.rv),
                    None,
                    beta,
                    self.query.include_object,
                    *first_table,
                );
                *first_table = false;
                line.extend_from_slice(&serde_json::to_vec(&t).unwrap_or_default());
            }
            Output::Metadata => {
                let v = json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": serde_json::to_value(s.object.meta()).unwrap_or(Value::Null),
                });
                line.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
            }
            Output::Json | Output::Yaml => line.extend_from_slice(&s.json),
        }
        line.extend_from_slice(b"}\n");
        Bytes::from(line)
    }

    fn bookmark(&self, rv: Rv, initial_events_end: bool) -> Bytes {
        let info = self.kind.info();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let v = json!({
            "type": "BOOKMARK",
            "object": {"kind": info.kind, "apiVersion": info.api_version, "metadata": meta},
        });
        let mut b = serde_json::to_vec(&v).unwrap_or_default();
        b.push(b'\n');
        Bytes::from(b)
    }
}

/// Starts a watch and returns the streaming response.
pub fn serve(
    state: Arc<ApiState>,
    kind: Kind,
    namespace: Option<String>,
    query: Query,
    output: Output,
    vis: Visibility,
    token_slot: WatchSlot,
) -> ApiResult<Response> {
    check_selectors(kind, &query)?;
    let spec = WatchSpec {
        kind,
        namespace,
        query,
        output,
        vis,
    };
    let store = state.registry.store();
    let rv = spec
        .query
        .resource_version
        .as_deref()
        .filter(|rv| *rv != "0");
    let send_initial = spec.query.send_initial_events.unwrap_or(rv.is_none());
    let (initial, watcher, start_rv) = match (rv, send_initial) {
        (Some(rv), false) => {
            let rv: Rv = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
            match store.watch_from(rv) {
                Ok(w) => (Vec::new(), w, rv),
                Err(WatchError::Expired { requested, oldest }) => {
                    return Ok(expired_stream(requested, oldest));
                }
                Err(e) => return Err(ApiError::unavailable(e.to_string())),
            }
        }
        _ => {
            let (items, rv, w) = store.list_and_watch(kind, spec.namespace.as_deref());
            let items: Vec<_> = items.into_iter().filter(|s| spec.matches(s)).collect();
            (items, w, rv)
        }
    };
    let Some(permit) = state.watch_permit() else {
        return Err(ApiError::too_many_requests(
            "too many concurrent watches; try again later",
            1,
        ));
    };
    let timeout = spec
        .query
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CLIENT_BUFFER);
    let bookmarks = spec.query.allow_watch_bookmarks;
    let initial_end_bookmark = bookmarks && spec.query.send_initial_events == Some(true);
    let interval = state.options.bookmark_interval;
    let shutdown = state.shutdown.clone();
    let store = store.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _token_slot = token_slot;
        let mut first_table = true;
        for s in &initial {
            let line = spec.encode(EventType::Added, s, &mut first_table);
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if initial_end_bookmark && tx.send(Ok(spec.bookmark(start_rv, true))).await.is_err() {
            return;
        }
        pump(
            spec,
            watcher,
            start_rv,
            tx,
            timeout,
            bookmarks.then_some(interval),
            shutdown,
            store,
            first_table,
        )
        .await;
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    spec: WatchSpec,
    mut watcher: Watcher,
    start_rv: Rv,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    timeout: Duration,
    bookmark_every: Option<Duration>,
    shutdown: tokio_util::sync::CancellationToken,
    store: crate::store::Store,
    mut first_table: bool,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(bookmark_every.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut deadline => return,
            _ = shutdown.cancelled() => return,
            _ = tx.closed() => return,
            _ = ticker.tick(), if bookmark_every.is_some() => {
                // Safe only when every change up to `rv` has reached this watcher.
                let rv = store.current_rv();
                if watcher.is_idle() && rv >= start_rv {
                    match tx.try_send(Ok(spec.bookmark(rv, false))) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => return,
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
            event = watcher.next() => {
                let event = match event {
                    Ok(e) => e,
                    Err(_) => return,
                };
                if event.rv <= start_rv {
                    continue;
                }
                if let Some((type_, obj)) = spec.translate(&event) {
                    let line = spec.encode(type_, &obj, &mut first_table);
                    // A client that cannot keep up is cut off rather than allowed to buffer
                    // without bound.
                    match tx.try_send(Ok(line)) {
                        Ok(()) => {}
                        Err(_) => return,
                    }
                }
            }
        }
    }
}

/// A watch that starts too far back: one ERROR event with a 410 Gone Status, as Kubernetes does.
fn expired_stream(requested: Rv, oldest: Rv) -> Response {
    let status =
        ApiError::gone(format!("too old resource version: {requested} ({oldest})")).to_status();
    let mut body =
        serde_json::to_vec(&json!({"type": "ERROR", "object": status})).unwrap_or_default();
    body.push(b'\n');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
