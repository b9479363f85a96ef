//! Durability: acknowledged writes survive crashes and restarts; resourceVersions only grow;
//! shutdown finishes in-flight writes.

use std::collections::HashSet;

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn objects_survive_a_restart_and_versions_keep_growing() {
    let mut s = Server::start().await;
    let (_, c) = s.post(&pvcs("d"), &pvc("kept", "1Gi")).await;
    s.post(SC, &storage_class("kept", "a.io/b")).await;
    let (_, deleted) = s.post(&pvcs("d"), &pvc("gone", "1Gi")).await;
    s.delete(&format!("{}/gone", pvcs("d"))).await;
    let before = rv_of(&deleted);
    assert!(s.terminate(), "clean shutdown");
    s.restart().await;
    let (code, again) = s.get(&format!("{}/kept", pvcs("d"))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(again, c);
    let (code, _) = s.get(&format!("{SC}/kept")).await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s.get(&format!("{}/gone", pvcs("d"))).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (_, fresh) = s.post(&pvcs("d"), &pvc("fresh", "1Gi")).await;
    assert!(
        rv_of(&fresh) > before + 1,
        "the delete's version is not reused"
    );
}

#[tokio::test]
async fn every_acknowledged_write_survives_a_crash() {
    let mut s = Server::start().await;
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..2000 {
        let client = s.client.clone();
        let url = s.url(&pvcs("crash"));
        let acks = acks.clone();
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&pvc(&format!("c{i}"), "1Gi"))
                .send()
                .await;
            let r = r.map(|r| r.status());
            if matches!(r, Ok(StatusCode::CREATED)) {
                acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            (i, r)
        }));
    }
    // Crash in the middle of the burst, once some writes have been acknowledged.
    while acks.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    s.kill();
    let mut acked = HashSet::new();
    for t in tasks {
        if let (i, Ok(StatusCode::CREATED)) = t.await.unwrap() {
            acked.insert(format!("c{i}"));
        }
    }
    assert!(
        acked.len() >= 100 && acked.len() < 2000,
        "the crash landed mid-burst: {}",
        acked.len()
    );
    s.restart().await;
    let (_, list) = s.get(&pvcs("crash")).await;
    let present: HashSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_writes() {
    let mut s = Server::start().await;
    let mut tasks = Vec::new();
    for i in 0..300 {
        let client = s.client.clone();
        let url = s.url(&pvcs("term"));
        tasks.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .json(&pvc(&format!("c{i}"), "1Gi"))
                .send()
                .await;
            (i, r.map(|r| r.status()))
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert!(s.terminate(), "exit status after SIGTERM");
    let mut acked = HashSet::new();
    for t in tasks {
        match t.await.unwrap() {
            (i, Ok(StatusCode::CREATED)) => {
                acked.insert(format!("c{i}"));
            }
            // Refused cleanly (connection refused or 503) is fine; a 500 is not.
            (_, Ok(code)) => assert!(code == StatusCode::SERVICE_UNAVAILABLE, "{code}"),
            (_, Err(_)) => {}
        }
    }
    s.restart().await;
    let (_, list) = s.get(&pvcs("term")).await;
    let present: HashSet<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(acked.is_subset(&present));
}

#[tokio::test]
async fn a_watch_resumes_across_a_restart() {
    let mut s = Server::start().await;
    let (_, first) = s.post(&pvcs("wr"), &pvc("a", "1Gi")).await;
    s.post(&pvcs("wr"), &pvc("b", "1Gi")).await;
    s.restart().await;
    let text = s
        .client
        .get(s.url(&format!(
            "{}?watch=1&timeoutSeconds=1&resourceVersion={}",
            pvcs("wr"),
            rv_of(&first)
        )))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 1, "{text}");
    assert_eq!(events[0]["object"]["metadata"]["name"], "b");
}
