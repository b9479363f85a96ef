//! Shared by the benchmarks: a release `stowage serve` process, and a lean HTTP/1.1 client
//! (one keep-alive connection per simulated client, no pooling layer) so that the load
//! generator costs as little CPU as possible on the same machine.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub struct Server {
    child: Child,
    pub addr: String,
    pub data_dir: tempfile::TempDir,
}

/// The admin token the newest server wrote into its kubeconfig; every benchmark request
/// carries it (replicas of one database share theirs).
static TOKEN: parking_lot::RwLock<String> = parking_lot::RwLock::new(String::new());

fn token() -> String {
    TOKEN.read().clone()
}

impl Server {
    /// Starts the server this benchmark was built with, or the one `STOWAGE_BIN` names (to
    /// compare two builds with one driver, in one run).
    pub fn start(extra: &[&str]) -> Server {
        Server::start_in(tempfile::tempdir().expect("tempdir"), extra)
    }

    /// Starts a server on an existing data directory (a restart).
    pub fn start_in(data_dir: tempfile::TempDir, extra: &[&str]) -> Server {
        let binary = std::env::var("STOWAGE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_stowage").to_string());
        let mut child = Command::new(binary)
            .args([
                "serve",
                "--plaintext",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir.path())
            .args(extra)
            .env("STOWAGE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn stowage");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines.next().expect("server output").expect("line");
            if let Some(url) = line.strip_prefix("listening on http://") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let kubeconfig = std::fs::read_to_string(data_dir.path().join("kubeconfig"))
            .expect("the server writes a kubeconfig");
        let admin = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("an admin token in the kubeconfig")
            .trim()
            .to_string();
        *TOKEN.write() = admin;
        Server {
            child,
            addr,
            data_dir,
        }
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server the way an operator does (SIGTERM, then waits), keeping its data.
    pub fn stop(mut self) -> tempfile::TempDir {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.data_dir, dir)
    }
}

/// Resident memory of a process, in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).ok();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn {
            sender,
            host: addr.to_string(),
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> (u16, Bytes) {
        self.sender.ready().await.expect("connection ready");
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", token()));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = self
            .sender
            .send_request(req.body(Full::new(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        (status, bytes)
    }

    pub async fn get(&mut self, path: &str) -> (u16, Bytes) {
        self.request("GET", path, None, Bytes::new()).await
    }

    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value) -> (u16, Bytes) {
        self.request(
            "POST",
            path,
            Some("application/json"),
            Bytes::from(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
}

/// Percentile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// A simple flag parser: `--name value`.
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == &format!("--{name}"))
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Counts watch events on a path in the background; `count()` says how many arrived so far.
pub struct EventCounter {
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Opens a watch at `path` on its own connection; the sender keeps the connection open.
async fn open_watch(
    addr: &str,
    path: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    hyper::body::Incoming,
) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {}", token()))
        .body(Full::new(Bytes::new()))
        .expect("a valid watch request");
    let resp = sender.send_request(req).await.expect("watch");
    assert_eq!(resp.status(), 200, "watch refused");
    (sender, resp.into_body())
}

impl EventCounter {
    /// Starts counting the events of `path` (a watch URL).
    pub async fn start(addr: &str, path: &str) -> EventCounter {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (_sender, mut body) = open_watch(addr, path).await;
        let c = count.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    let lines = data.iter().filter(|b| **b == b'\n').count();
                    c.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        EventCounter { count }
    }

    pub fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until at least `n` events arrived; returns when that happened.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Option<std::time::Instant> {
        let deadline = std::time::Instant::now() + timeout;
        while self.count() < n {
            if std::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Some(std::time::Instant::now())
    }
}

/// Runs `total` requests made by `make(i)` over `clients` connections; returns wall time.
pub async fn run_concurrently<F>(addr: &str, clients: usize, total: usize, make: F) -> Duration
where
    F: Fn(usize) -> (String, serde_json::Value) + Send + Sync + 'static,
{
    let make = std::sync::Arc::new(make);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (make, next, addr) = (make.clone(), next.clone(), addr.to_string());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(&addr).await;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let (path, body) = make(i);
                let (status, resp) = conn.post_json(&path, &body).await;
                assert_eq!(
                    status,
                    201,
                    "create failed: {}",
                    String::from_utf8_lossy(&resp)
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

/// The server's current resourceVersion.
pub async fn current_rv(addr: &str) -> String {
    let mut conn = Conn::open(addr).await;
    let (_, body) = conn
        .get("/api/v1/namespaces/none/persistentvolumeclaims?limit=1")
        .await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A tiny deterministic generator (xorshift), so runs are repeatable.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A configuration file for a benchmark server (kept alive by the returned handle).
pub fn server_config(yaml: &str) -> tempfile::NamedTempFile {
    use std::io::Write;
    let mut f = tempfile::NamedTempFile::new().expect("config file");
    f.write_all(yaml.as_bytes()).expect("write config");
    f
}

/// Collects watch events (parsed) with their arrival times.
pub struct EventLog {
    pub events: std::sync::Arc<parking_lot::Mutex<Vec<(std::time::Instant, serde_json::Value)>>>,
}

impl EventLog {
    pub async fn start(addr: &str, path: &str) -> EventLog {
        let events: std::sync::Arc<
            parking_lot::Mutex<Vec<(std::time::Instant, serde_json::Value)>>,
        > = Default::default();
        let (sender, mut body) = open_watch(addr, path).await;
        let log = events.clone();
        tokio::spawn(async move {
            let _sender = sender;
            let mut buf: Vec<u8> = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Ok(v) = serde_json::from_slice(&line) {
                        log.lock().push((std::time::Instant::now(), v));
                    }
                }
            }
        });
        EventLog { events }
    }
}

/// Backend requests a provider made, by request (all outcomes together), from the text of
/// `/metrics` (`stowage_provider_backend_requests_total{provider=..,request=..,outcome=..}`).
pub fn backend_requests(metrics: &str, provider: &str) -> std::collections::BTreeMap<String, u64> {
    let prefix =
        format!(r#"stowage_provider_backend_requests_total{{provider="{provider}",request=""#);
    let mut out = std::collections::BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix(&prefix) else {
            continue;
        };
        let Some((request, rest)) = rest.split_once('"') else {
            continue;
        };
        let Some(value) = rest
            .rsplit(' ')
            .next()
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            continue;
        };
        *out.entry(request.to_string()).or_default() += value;
    }
    out
}
