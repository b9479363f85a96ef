//! Test support: a real `stowage serve` process on a free port, with its own data directory,
//! and a small HTTP client for it.
//!
//! With `STOWAGE_E2E_STORE=postgres`, every server is instead `STOWAGE_E2E_REPLICAS` replicas
//! (default 3) on a fresh database of the PostgreSQL cluster `STOWAGE_TEST_POSTGRES` names,
//! and requests go to the replicas in turn: the same tests then check that replicas behave as
//! one server. Tests of what only one SQLite server has (its files) ask [`on_sqlite`].

// Not every test module uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct Server {
    child: Option<Child>,
    /// The first replica's address (the only one, on SQLite).
    pub base: String,
    /// With PostgreSQL: the other replicas (process, address, data directory).
    others: Vec<(Option<Child>, String, PathBuf)>,
    /// With PostgreSQL: the database's URL.
    store: Option<String>,
    /// Which replica the next request goes to.
    turn: std::sync::atomic::AtomicUsize,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// An HTTP client that sends the admin token (from the kubeconfig the server wrote).
    pub client: reqwest::Client,
    extra_args: Vec<String>,
    pub token: String,
}

/// The admin token from the kubeconfig a server wrote into its data directory.
pub fn admin_token(dir: &Path) -> String {
    let text =
        std::fs::read_to_string(dir.join("kubeconfig")).expect("the server writes a kubeconfig");
    text.lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("a token in the kubeconfig")
        .trim()
        .to_string()
}

/// The CA of a server's self-signed certificate, if it made one.
pub fn ca_of(dir: &Path) -> Option<Vec<u8>> {
    std::fs::read(dir.join("tls").join("ca.crt")).ok()
}

/// A client that sends `token`, trusting `ca` (PEM) when given.
pub fn client_for(token: &str, ca: Option<&[u8]>) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .default_headers(headers);
    if let Some(ca) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(ca).expect("CA PEM"));
    }
    b.build().expect("client")
}

/// Whether servers run on SQLite (one process), as opposed to replicas on PostgreSQL.
pub fn on_sqlite() -> bool {
    std::env::var("STOWAGE_E2E_STORE").as_deref() != Ok("postgres")
}

fn replica_count() -> usize {
    std::env::var("STOWAGE_E2E_REPLICAS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// A fresh database for one server, in the test cluster.
async fn fresh_database() -> String {
    use sqlx::Connection as _;
    let base = std::env::var("STOWAGE_TEST_POSTGRES").expect(
        "STOWAGE_E2E_STORE=postgres needs STOWAGE_TEST_POSTGRES (scripts/test.sh sets both)",
    );
    let mut admin = sqlx::PgConnection::connect(&base)
        .await
        .expect("connecting to STOWAGE_TEST_POSTGRES");
    let name = format!("e2e_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("creating a database for the server");
    let mut url = url::Url::parse(&base).expect("a URL");
    url.set_path(&name);
    url.to_string()
}

/// The server under test: this build's, or the one `STOWAGE_BIN` names (to run these tests
/// against another build, such as an earlier release, and see which of them it fails).
fn binary() -> String {
    std::env::var("STOWAGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stowage").to_string())
}

impl Server {
    /// A server on a fresh, empty data directory.
    pub async fn start() -> Server {
        Self::start_with(&[]).await
    }

    pub async fn start_with(args: &[&str]) -> Server {
        Self::start_logged(args, "info").await
    }

    /// A server logging at `log_level` (a `STOWAGE_LOG` filter) into `server.log`.
    pub async fn start_logged(args: &[&str], log_level: &str) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let store = if on_sqlite() {
            None
        } else {
            Some(fresh_database().await)
        };
        let mut s = Self::spawn_all(&dir, args, log_level, store);
        s._tmp = Some(tmp);
        s
    }

    /// `n` replicas on a fresh PostgreSQL database, whatever `STOWAGE_E2E_STORE` says; `None`
    /// when the run opted out of PostgreSQL (`STOWAGE_SKIP=postgres`).
    pub async fn start_replicas(n: usize, args: &[&str]) -> Option<Server> {
        if std::env::var("STOWAGE_TEST_POSTGRES").is_err() {
            stowage_provider::testing::missing(
                "postgres",
                "set STOWAGE_TEST_POSTGRES to a PostgreSQL URL (scripts/test.sh starts a private cluster)",
            );
            return None;
        }
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let store = fresh_database().await;
        let mut s = Self::spawn_n(&dir, args, "info", Some(store), n);
        s._tmp = Some(tmp);
        Some(s)
    }

    /// The server: one process, or the replicas on `store`.
    fn spawn_all(dir: &Path, args: &[&str], log_level: &str, store: Option<String>) -> Server {
        let n = replica_count();
        Self::spawn_n(dir, args, log_level, store, n)
    }

    fn spawn_n(
        dir: &Path,
        args: &[&str],
        log_level: &str,
        store: Option<String>,
        replicas: usize,
    ) -> Server {
        let Some(url) = store else {
            return Self::spawn(dir, args, log_level);
        };
        let mut with_store: Vec<&str> = vec!["--store", &url];
        with_store.extend_from_slice(args);
        let mut first = Self::spawn(dir, &with_store, log_level);
        for i in 1..replicas {
            let other_dir = dir.join(format!("replica-{i}"));
            std::fs::create_dir_all(&other_dir).expect("replica directory");
            let mut r = Self::spawn(&other_dir, &with_store, log_level);
            first
                .others
                .push((r.child.take(), r.base.clone(), other_dir));
        }
        first.store = Some(url.clone());
        first.extra_args = args.iter().map(|s| s.to_string()).collect();
        first
    }

    fn spawn(dir: &Path, args: &[&str], log_level: &str) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("server log");
        let mut child = Command::new(binary())
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .env("STOWAGE_LOG", log_level)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn stowage");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("stowage did not start; log:\n{log}");
            }
        };
        let token = admin_token(dir);
        Server {
            child: Some(child),
            base,
            others: Vec::new(),
            store: None,
            turn: std::sync::atomic::AtomicUsize::new(0),
            data_dir: dir.to_path_buf(),
            _tmp: None,
            client: client_for(&token, ca_of(dir).as_deref()),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            token,
        }
    }

    /// Stops the process (every replica) the hard way (SIGKILL): a crash.
    pub fn kill(&mut self) {
        let others = self.others.iter_mut().map(|(c, _, _)| c);
        for child in std::iter::once(&mut self.child).chain(others) {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Kills one replica (0 is the first) with SIGKILL and takes it out of the rotation; the
    /// others go on serving.
    pub fn kill_replica(&mut self, i: usize) {
        let mut victim = if i == 0 {
            let (child, base, _) = self.others.remove(0);
            self.base = base;
            std::mem::replace(&mut self.child, child)
        } else {
            self.others.remove(i - 1).0
        };
        if let Some(c) = victim.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The replicas' addresses (one, on SQLite).
    pub fn bases(&self) -> Vec<String> {
        std::iter::once(self.base.clone())
            .chain(self.others.iter().map(|(_, b, _)| b.clone()))
            .collect()
    }

    /// Asks the process to stop (SIGTERM) and waits for it; returns its exit status success.
    pub fn terminate(&mut self) -> bool {
        for (other, _, _) in &mut self.others {
            if let Some(c) = other.take() {
                terminate_child(c);
            }
        }
        let Some(c) = self.child.take() else {
            return true;
        };
        terminate_child(c)
    }

    /// Starts new processes on the same data directory and store (after `kill` or
    /// `terminate`).
    pub async fn restart(&mut self) {
        self.kill();
        let args: Vec<String> = self.extra_args.clone();
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let n = self.others.len() + 1;
        let mut fresh = Self::spawn_n(&self.data_dir, &refs, "info", self.store.clone(), n);
        self.child = fresh.child.take();
        self.others = std::mem::take(&mut fresh.others);
        self.base = std::mem::take(&mut fresh.base);
        self.client = fresh.client.clone();
    }

    /// The address a request goes to: the replicas in turn.
    fn next_base(&self) -> &str {
        if self.others.is_empty() {
            return &self.base;
        }
        let n =
            self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % (self.others.len() + 1);
        match n {
            0 => &self.base,
            i => &self.others[i - 1].1,
        }
    }
}

/// Asks a process to stop (SIGTERM) and waits for it; returns its exit status success.
fn terminate_child(mut c: Child) -> bool {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(c.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(Some(status)) = c.try_wait() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// What the server keeps at rest: its SQLite files, or (replicas) every row of the token
    /// and secret tables.
    pub async fn stored_bytes(&self) -> Vec<Vec<u8>> {
        let Some(url) = &self.store else {
            return [
                self.data_dir.join("stowage.db"),
                self.data_dir.join("stowage.db-wal"),
            ]
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_default())
            .collect();
        };
        use sqlx::Connection as _;
        let mut db = sqlx::PgConnection::connect(url).await.expect("the store");
        let mut rows: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT convert_to(id || name || role, 'UTF8') || secret_hash FROM tokens",
        )
        .fetch_all(&mut db)
        .await
        .expect("the token table");
        let secrets: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value FROM secrets")
            .fetch_all(&mut db)
            .await
            .expect("the secret table");
        rows.extend(secrets);
        rows
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.next_base(), path)
    }

    /// Each replica's `/metrics` text (one, on SQLite). Counters are per process.
    pub async fn metrics_of_each(&self) -> Vec<String> {
        let mut texts = Vec::new();
        for base in self.bases() {
            let resp = self
                .client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .expect("metrics request");
            assert_eq!(resp.status(), StatusCode::OK, "/metrics of {base}");
            texts.push(resp.text().await.expect("metrics text"));
        }
        texts
    }

    /// A counter (its name and labels exactly as exposed) summed over the replicas: what the
    /// whole service did, whichever replica did it. 0 when no replica has the series yet.
    pub async fn counter(&self, series: &str) -> u64 {
        let prefix = format!("{series} ");
        self.metrics_of_each()
            .await
            .iter()
            .filter_map(|text| text.lines().find_map(|l| l.strip_prefix(&prefix)))
            .map(|n| n.trim().parse::<u64>().expect("a counter's value"))
            .sum()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("server.log")).unwrap_or_default()
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body");
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).json(body)).await
    }

    /// A POST, and the `Warning` headers of its answer (their quoted texts).
    pub async fn post_warned(&self, path: &str, body: &Value) -> (StatusCode, Vec<String>) {
        let resp = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (resp.status(), warnings)
    }

    pub async fn put(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.put(self.url(path)).json(body)).await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .patch(self.url(path))
                .header("Content-Type", content_type)
                .body(serde_json::to_vec(body).unwrap()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.client.delete(self.url(path))).await
    }

    /// Sends raw bytes with a content type, for malformed-input tests.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        self.send(req).await
    }

    /// Polls `f` until it returns `Some`, or panics after `timeout`.
    pub async fn eventually<T, F, Fut>(&self, timeout: Duration, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\nserver log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const SC: &str = "/apis/storage.k8s.io/v1/storageclasses";
pub const PV: &str = "/api/v1/persistentvolumes";
pub const VA: &str = "/apis/storage.k8s.io/v1/volumeattachments";
pub const NODES: &str = "/api/v1/nodes";

pub fn pvcs(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/persistentvolumeclaims")
}

pub fn pods(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

pub fn events(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/events")
}

pub fn leases(ns: &str) -> String {
    format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases")
}

pub fn pvc(name: &str, size: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
            "storageClassName": "",
        }
    })
}

pub fn storage_class(name: &str, provisioner: &str) -> Value {
    serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": provisioner,
    })
}

pub fn host_path_pv(name: &str, size: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": format!("/srv/{name}")},
        }
    })
}

pub fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {v}"))
}

impl Server {
    /// Waits until the object at `path` satisfies `pred`, returning it.
    pub async fn wait_for(&self, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.eventually(Duration::from_secs(20), what, || async {
            let (code, v) = self.get(path).await;
            (code == StatusCode::OK && pred(&v)).then_some(v)
        })
        .await
    }

    /// Waits until the object at `path` has `status.phase == phase`.
    pub async fn wait_for_phase(&self, path: &str, phase: &str) -> Value {
        self.wait_for(path, &format!("{path} to be {phase}"), |v| {
            v["status"]["phase"] == phase
        })
        .await
    }

    /// Waits until `path` answers 404.
    pub async fn wait_gone(&self, path: &str) {
        self.eventually(
            Duration::from_secs(20),
            &format!("{path} to go"),
            || async {
                let (code, _) = self.get(path).await;
                (code == StatusCode::NOT_FOUND).then_some(())
            },
        )
        .await
    }

    /// Events about an object, by reason.
    pub async fn event_reasons(&self, namespace: &str, name: &str) -> Vec<(String, String)> {
        let (_, list) = self
            .get(&format!(
                "/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name%3D{name}"
            ))
            .await;
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|e| {
                        (
                            e["reason"].as_str().unwrap_or_default().to_string(),
                            e["message"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for an event with `reason` about an object; returns its message.
    pub async fn wait_for_event(&self, namespace: &str, name: &str, reason: &str) -> String {
        self.eventually(
            Duration::from_secs(20),
            &format!("event {reason} on {name}"),
            || async {
                self.event_reasons(namespace, name)
                    .await
                    .into_iter()
                    .find(|(r, _)| r == reason)
                    .map(|(_, m)| m)
            },
        )
        .await
    }
}

pub fn claim_in_class(name: &str, size: &str, class: &str) -> Value {
    let mut c = pvc(name, size);
    c["spec"]["storageClassName"] = serde_json::json!(class);
    c
}

pub fn pod_using(name: &str, claim: &str, node: Option<&str>) -> Value {
    let mut p = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}
    });
    if let Some(n) = node {
        p["spec"]["nodeName"] = serde_json::json!(n);
    }
    p
}

/// Writes a config file into a fresh directory and returns (dir, path).
pub fn config_file(yaml: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.yaml");
    std::fs::write(&path, yaml).expect("config");
    let p = path.display().to_string();
    (dir, p)
}

pub const TOKENS: &str = "/apis/auth.stowage.dev/v1/tokens";

/// Creates a token with `role` through the API; returns the token string.
pub async fn token(s: &Server, role: &str, ttl: Option<i64>) -> String {
    let mut spec = json!({"name": format!("test-{role}"), "role": role});
    if let Some(t) = ttl {
        spec["ttlSeconds"] = json!(t);
    }
    let (code, v) = s.post(TOKENS, &json!({"spec": spec})).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    v["status"]["token"].as_str().unwrap().to_string()
}

pub struct As<'a> {
    pub s: &'a Server,
    pub client: reqwest::Client,
}

impl<'a> As<'a> {
    pub fn new(s: &'a Server, token: &str) -> Self {
        As {
            s,
            client: client_for(token, ca_of(&s.data_dir).as_deref()),
        }
    }
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.s.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let code = resp.status();
        let v = resp.json().await.unwrap_or(Value::Null);
        (code, v)
    }
    pub async fn get(&self, path: &str) -> StatusCode {
        self.send(Method::GET, path, None).await.0
    }
    pub async fn list_names(&self, path: &str) -> Vec<String> {
        let (code, v) = self.send(Method::GET, path, None).await;
        assert_eq!(code, StatusCode::OK, "{path}: {v}");
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }
    pub async fn create(&self, path: &str, body: &Value) -> StatusCode {
        self.send(Method::POST, path, Some(body)).await.0
    }
    pub async fn delete(&self, path: &str) -> StatusCode {
        self.send(Method::DELETE, path, None).await.0
    }
}

impl Server {
    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// The server's resident memory, in bytes (from /proc).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the server process is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS in /proc/<pid>/status")
            * 1024
    }

    /// Checks the server survived: still running, `/healthz` answers within a second, and its
    /// memory stayed under `max_rss` bytes.
    pub async fn assert_alive_within(&mut self, max_rss: u64) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("the server died ({status}); log:\n{}", self.log());
        }
        let started = Instant::now();
        let (code, _) = tokio::time::timeout(Duration::from_secs(1), self.get("/healthz"))
            .await
            .expect("/healthz answers within a second");
        assert_eq!(code, StatusCode::OK);
        assert!(started.elapsed() < Duration::from_secs(1));
        let rss = self.rss_bytes();
        assert!(
            rss < max_rss,
            "the server holds {} MiB, over the {} MiB bound",
            rss >> 20,
            max_rss >> 20
        );
    }
}
