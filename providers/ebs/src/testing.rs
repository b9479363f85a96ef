//! A real EC2 API for tests and benchmarks: moto's server mode (`moto[server,ec2]` from PyPI)
//! on loopback, one process per test so tests run in parallel without resetting each other.
//!
//! moto is looked for in `$STOWAGE_MOTO_SERVER`, then in the venv `scripts/test.sh` makes
//! (`.cache/moto/bin/moto_server`), then on `PATH`. It accepts things AWS refuses (see
//! `../shared/TESTING.md`), so the provider's own checks are what the tests exercise.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The SDK, for tests that look at what the provider made.
pub use aws_sdk_ec2;
use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types::{InstanceType, Placement};

/// An AMI moto knows, for RunInstances.
pub const IMAGE: &str = "ami-03cf127a";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    port: u16,
}

fn moto_server() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("STOWAGE_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/moto/bin/moto_server");
    if venv.exists() {
        return Some(venv);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.exists())
    })
}

fn http(port: u16, method: &str, path: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

impl Moto {
    /// Starts moto for a test. A missing moto fails the test, unless the run opted out of EBS
    /// (`STOWAGE_SKIP=ebs`): then `None`, and the test returns early.
    pub fn start_for_test() -> Option<Moto> {
        if moto_server().is_none() {
            stowage_provider::testing::missing(
                "ebs",
                "install moto's EC2 server (./scripts/test.sh installs moto[server,ec2] into .cache/moto)",
            );
            return None;
        }
        Some(Moto::start().expect("start moto_server"))
    }

    pub fn start() -> io::Result<Moto> {
        let bin = moto_server()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "moto_server not found"))?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if http(port, "GET", "/moto-api/").is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
                return Ok(moto);
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                return Err(io::Error::other(format!("moto_server exited: {status}")));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other("moto_server did not answer within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Forgets every volume, instance and snapshot.
    pub fn reset(&self) -> io::Result<()> {
        http(self.port, "POST", "/moto-api/reset").map(|_| ())
    }

    /// An EC2 client for the test itself (dummy credentials).
    pub fn client(&self) -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }

    /// Starts an instance in `zone`; returns its id.
    pub async fn run_instance(&self, zone: &str) -> String {
        let out = self
            .client()
            .run_instances()
            .image_id(IMAGE)
            .instance_type(InstanceType::T3Micro)
            .placement(Placement::builder().availability_zone(zone).build())
            .min_count(1)
            .max_count(1)
            .send()
            .await
            .expect("RunInstances");
        out.instances()[0]
            .instance_id()
            .expect("an instance id")
            .to_string()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
