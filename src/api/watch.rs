//! `?watch=1`: a stream of newline-delimited watch events.
//!
//! The stream starts with the current objects as ADDED (no resourceVersion, or `0`), or resumes
//! right after a given resourceVersion. Selectors apply to transitions as in Kubernetes: an
//! object that stops matching is reported DELETED, one that starts matching ADDED.
//! A watcher never slows writers down: if it falls behind the store's change log, or its client
//! reads too slowly, the stream ends and the client resumes from its last resourceVersion.
//!
//! Limits: a watch ends after `timeoutSeconds`, capped (as Kubernetes does) at a random time
//! between 30 and 60 minutes, so that clients reconnect spread out; it ends when its token is
//! revoked or expires; and what it has encoded but its client has not read is bounded in
//! bytes, per watch, per token and across all watches (see [`outbox`](super::outbox)).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::ApiState;
use super::encode;
use super::negotiate::Output;
use super::outbox::Outbox;
use super::query::Query;
use super::resources::{check_selectors, selected};
use crate::auth::{Identity, Visibility, WatchSlot};
use crate::error::{ApiError, ApiResult};
use crate::resources::Kind;
use crate::store::{EventType, Rv, Stored, WatchError, WatchEvent, Watcher};

/// A watch ends after at most this long plus a random share of it again (Kubernetes' 30–60
/// minutes), whatever `timeoutSeconds` asks for.
const MAX_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long this watch may run: what the client asked for, capped at 30 to 60 minutes.
fn watch_timeout(requested: Option<u64>) -> Duration {
    let mut jitter = [0u8; 2];
    let _ = getrandom::fill(&mut jitter);
    let cap = MAX_TIMEOUT + MAX_TIMEOUT.mul_f64(f64::from(u16::from_le_bytes(jitter)) / 65536.0);
    requested.map_or(cap, |s| Duration::from_secs(s).min(cap))
}

/// What a watch is of, and for whom.
pub struct WatchSpec {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub query: Query,
    pub output: Output,
    /// What the caller may see; invisible objects are treated as not matching.
    pub vis: Visibility,
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
                    "metadata": serde_json::to_value(s.object().meta()).unwrap_or(Value::Null),
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
    spec: WatchSpec,
    token_slot: WatchSlot,
    identity: Identity,
) -> ApiResult<Response> {
    check_selectors(spec.kind, &spec.query)?;
    let kind = spec.kind;
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
    let timeout = watch_timeout(spec.query.timeout_seconds);
    let outbox = Outbox::new(state.watch_budgets.clone(), &identity.token_id);
    let body = outbox.reader();
    let bookmarks = spec.query.allow_watch_bookmarks;
    let initial_end_bookmark = bookmarks && spec.query.send_initial_events == Some(true);
    let interval = state.options.bookmark_interval;
    let ends = Ends {
        shutdown: state.shutdown.clone(),
        timeout,
        identity,
        state: state.clone(),
    };
    tokio::spawn(async move {
        let _permit = permit;
        let _token_slot = token_slot;
        // Whatever ends the watch ends it in either phase, even while the initial events wait
        // for a client that does not read.
        let ended = ends.ended();
        tokio::pin!(ended);
        let mut first_table = true;
        let mut initial = initial.iter();
        let mut end_bookmark = initial_end_bookmark;
        loop {
            // One line at a time: a slow client makes this wait, never buffer the whole list.
            let line = match initial.next() {
                Some(s) => spec.encode(EventType::Added, s, &mut first_table),
                None if end_bookmark => {
                    end_bookmark = false;
                    spec.bookmark(start_rv, true)
                }
                None => break,
            };
            let sent = tokio::select! {
                _ = &mut ended => false,
                _ = outbox.gone() => false,
                sent = outbox.send(line) => sent,
            };
            if !sent {
                outbox.close();
                return;
            }
        }
        pump(
            spec,
            watcher,
            start_rv,
            &outbox,
            bookmarks.then_some(interval),
            ended,
            first_table,
        )
        .await;
        outbox.finish();
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(body),
    )
        .into_response())
}

/// Everything that ends a watch besides its client leaving.
struct Ends {
    shutdown: tokio_util::sync::CancellationToken,
    timeout: Duration,
    identity: Identity,
    state: Arc<ApiState>,
}

impl Ends {
    /// When the token stops working by itself, if it ever does.
    fn token_expiry(&self) -> Duration {
        match self.identity.expires_at {
            None => Duration::MAX,
            Some(at) => {
                let left = at.saturating_sub(jiff::Timestamp::now().as_second());
                Duration::from_secs(left.max(0) as u64)
            }
        }
    }

    /// Completes when the watch must end: its time is up, its token expired or was revoked,
    /// or the server is shutting down.
    async fn ended(self) {
        let deadline = tokio::time::sleep(self.timeout.min(self.token_expiry()));
        tokio::pin!(deadline);
        let tokens = &self.state.auth.tokens;
        let mut revocations = tokens.revocations();
        // A revocation between the request's authentication and this subscription.
        if !tokens.is_valid(&self.identity.token_id) {
            return;
        }
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = self.shutdown.cancelled() => return,
                changed = revocations.changed() => {
                    if changed.is_err() || !tokens.is_valid(&self.identity.token_id) {
                        return;
                    }
                }
            }
        }
    }
}

async fn pump(
    spec: WatchSpec,
    mut watcher: Watcher,
    start_rv: Rv,
    out: &Outbox,
    bookmark_every: Option<Duration>,
    mut ended: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    mut first_table: bool,
) {
    let mut ticker = tokio::time::interval(bookmark_every.unwrap_or(Duration::from_secs(3600)));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = &mut ended => return,
            _ = out.gone() => return,
            _ = ticker.tick(), if bookmark_every.is_some() => {
                // Safe only when every change up to the bookmark has reached this watcher.
                let rv = watcher.position();
                if watcher.is_idle() && rv >= start_rv && !out.try_send(spec.bookmark(rv, false)) {
                    out.close();
                    return;
                }
            }
            event = watcher.next() => {
                let event = match event {
                    Ok(e) => e,
                    // Fell behind the change log: the client resumes (or relists on 410).
                    Err(_) => {
                        out.close();
                        return;
                    }
                };
                if event.rv <= start_rv {
                    continue;
                }
                if let Some((type_, obj)) = spec.translate(&event) {
                    // A client that cannot keep up is cut off rather than allowed to buffer
                    // without bound.
                    if !out.try_send(spec.encode(type_, &obj, &mut first_table)) {
                        out.close();
                        return;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_last_at_most_thirty_to_sixty_minutes_whatever_they_ask() {
        for _ in 0..100 {
            let t = watch_timeout(None);
            assert!(t >= MAX_TIMEOUT && t <= 2 * MAX_TIMEOUT, "{t:?}");
            let t = watch_timeout(Some(u64::MAX / 2));
            assert!(t <= 2 * MAX_TIMEOUT, "{t:?}");
        }
        assert_eq!(watch_timeout(Some(10)), Duration::from_secs(10));
    }
}
