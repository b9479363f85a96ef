//! Watches: initial state, resume, selectors, bookmarks and expiry.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::*;

/// Reads watch events from a streaming response.
struct EventStream {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
}

impl EventStream {
    async fn open(s: &Server, path: &str) -> EventStream {
        let resp = s.client.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        EventStream {
            stream: resp.bytes_stream().boxed(),
            buf: Vec::new(),
        }
    }

    /// The next event, or None if the stream ended or nothing came within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("event is JSON"));
            }
            match tokio::time::timeout(wait, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    async fn expect(&mut self) -> Value {
        self.next(Duration::from_secs(10)).await.expect("an event")
    }
}

fn summary(e: &Value) -> (String, String) {
    (
        e["type"].as_str().unwrap().to_string(),
        e["object"]["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

fn lease(name: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
           "spec": {"holderIdentity": name}})
}

// Leases: no controller touches them, so the stream holds exactly what the test wrote.
#[tokio::test]
async fn a_watch_sends_current_objects_then_changes() {
    let s = Server::start().await;
    s.post(&leases("w"), &lease("before")).await;
    let mut w = EventStream::open(&s, &format!("{}?watch=1", leases("w"))).await;
    assert_eq!(
        summary(&w.expect().await),
        ("ADDED".into(), "before".into())
    );
    s.post(&leases("w"), &lease("after")).await;
    s.post(&leases("other"), &lease("elsewhere")).await;
    s.patch(
        &format!("{}/after", leases("w")),
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"x": "y"}}}),
    )
    .await;
    s.delete(&format!("{}/before", leases("w"))).await;
    assert_eq!(summary(&w.expect().await), ("ADDED".into(), "after".into()));
    assert_eq!(
        summary(&w.expect().await),
        ("MODIFIED".into(), "after".into())
    );
    let deleted = w.expect().await;
    assert_eq!(summary(&deleted), ("DELETED".into(), "before".into()));
    assert!(
        w.next(Duration::from_millis(300)).await.is_none(),
        "nothing from other namespaces"
    );
}

#[tokio::test]
async fn a_watch_resumes_exactly_after_a_resource_version() {
    let s = Server::start().await;
    let (_, first) = s.post(&pvcs("r"), &pvc("one", "1Gi")).await;
    s.post(&pvcs("r"), &pvc("two", "1Gi")).await;
    s.post(&pvcs("r"), &pvc("three", "1Gi")).await;
    let mut w = EventStream::open(
        &s,
        &format!("{}?watch=true&resourceVersion={}", pvcs("r"), rv_of(&first)),
    )
    .await;
    assert_eq!(summary(&w.expect().await), ("ADDED".into(), "two".into()));
    assert_eq!(summary(&w.expect().await), ("ADDED".into(), "three".into()));
    assert!(w.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn selectors_turn_transitions_into_added_and_deleted() {
    let s = Server::start().await;
    s.post(&pvcs("sel"), &pvc("c", "1Gi")).await;
    let mut w = EventStream::open(
        &s,
        &format!("{}?watch=1&labelSelector=team%3Dblue", pvcs("sel")),
    )
    .await;
    let item = format!("{}/c", pvcs("sel"));
    s.patch(
        &item,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"team": "blue"}}}),
    )
    .await;
    assert_eq!(summary(&w.expect().await), ("ADDED".into(), "c".into()));
    s.patch(
        &item,
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {"n": "1"}}}),
    )
    .await;
    assert_eq!(summary(&w.expect().await), ("MODIFIED".into(), "c".into()));
    s.patch(
        &item,
        "application/merge-patch+json",
        &json!({"metadata": {"labels": {"team": "red"}}}),
    )
    .await;
    assert_eq!(summary(&w.expect().await), ("DELETED".into(), "c".into()));
    s.patch(
        &item,
        "application/merge-patch+json",
        &json!({"metadata": {"annotations": {"n": "2"}}}),
    )
    .await;
    assert!(w.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn bookmarks_and_initial_events_end_marker_are_sent() {
    let s = Server::start_with(&["--no-default-class"]).await;
    s.post(SC, &storage_class("x", "a.io/b")).await;
    let mut w = EventStream::open(
        &s,
        &format!("{SC}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"),
    )
    .await;
    assert_eq!(summary(&w.expect().await), ("ADDED".into(), "x".into()));
    let bookmark = w.expect().await;
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(bookmark["object"]["kind"], "StorageClass");
}

#[tokio::test]
async fn timeout_seconds_ends_the_watch() {
    let s = Server::start().await;
    let started = std::time::Instant::now();
    let mut w = EventStream::open(&s, &format!("{}?watch=1&timeoutSeconds=1", pvcs("t"))).await;
    assert!(w.next(Duration::from_secs(5)).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn a_resource_version_older_than_the_history_is_gone() {
    let s = Server::start_with(&["--watch-history", "10"]).await;
    let (_, first) = s.post(&pvcs("old"), &pvc("c0", "1Gi")).await;
    for i in 1..30 {
        s.post(&pvcs("old"), &pvc(&format!("c{i}"), "1Gi")).await;
    }
    let mut w = EventStream::open(
        &s,
        &format!("{}?watch=1&resourceVersion={}", pvcs("old"), rv_of(&first)),
    )
    .await;
    let e = w.expect().await;
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
}

#[tokio::test]
async fn a_table_watch_sends_column_definitions_once() {
    let s = Server::start().await;
    s.post(&pvcs("tw"), &pvc("a", "1Gi")).await;
    s.post(&pvcs("tw"), &pvc("b", "1Gi")).await;
    let resp = s
        .client
        .get(s.url(&format!("{}?watch=1", pvcs("tw"))))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap();
    let mut w = EventStream {
        stream: resp.bytes_stream().boxed(),
        buf: Vec::new(),
    };
    let first = w.expect().await;
    assert_eq!(first["object"]["kind"], "Table");
    assert!(
        first["object"]["columnDefinitions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
    );
    assert_eq!(first["object"]["rows"][0]["cells"][0], "a");
    let second = w.expect().await;
    assert!(second["object"]["columnDefinitions"].is_null());
    assert_eq!(second["object"]["rows"][0]["cells"][0], "b");
}

#[tokio::test]
async fn many_watchers_do_not_slow_writers_and_all_see_every_change() {
    let s = Server::start().await;
    let mut watchers = Vec::new();
    for _ in 0..20 {
        watchers.push(
            EventStream::open(&s, &format!("{}?watch=1&resourceVersion=0", pvcs("many"))).await,
        );
    }
    let writes = 200;
    let mut tasks = Vec::new();
    for i in 0..writes {
        let client = s.client.clone();
        let url = s.url(&pvcs("many"));
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&pvc(&format!("c{i}"), "1Gi"))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::CREATED);
    }
    for w in &mut watchers {
        let mut n = 0;
        while n < writes {
            let e = w.expect().await;
            assert_eq!(e["type"], "ADDED");
            n += 1;
        }
    }
}
