//! A real NFS server for tests and benchmarks: nfs-ganesha (userspace, from Debian's
//! `nfs-ganesha` and `nfs-ganesha-vfs` packages) exporting a fresh directory on loopback.
//!
//! By default it speaks NFSv4 only, on `127.0.0.1` and a free port, which needs no rpcbind.
//! NFSv3 needs rpcbind, which cannot be bound to loopback; [`GaneshaOptions::v3`] is for a
//! private network namespace that has only `lo` (see `scripts/test.sh`).
//!
//! Each instance has its own export, port, recovery directory and log, so tests run in
//! parallel. [`Ganesha::kill`]/[`Ganesha::start_again`] simulate a crash and a restart,
//! [`Ganesha::pause`]/[`Ganesha::resume`] a server that stops answering.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct GaneshaOptions {
    /// Also serve NFSv3 (needs rpcbind running, and a private network namespace).
    pub v3: bool,
    /// The port; default a free one (NFSv3 in a namespace uses 2049).
    pub port: Option<u16>,
}

pub struct Ganesha {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    v3: bool,
}

fn plugins_dir() -> Option<&'static str> {
    [
        "/usr/lib/x86_64-linux-gnu/ganesha",
        "/usr/lib/aarch64-linux-gnu/ganesha",
        "/usr/lib64/ganesha",
        "/usr/lib/ganesha",
    ]
    .into_iter()
    .find(|d| Path::new(d).join("libfsalvfs.so").exists())
}

fn binary() -> Option<PathBuf> {
    ["/usr/bin/ganesha.nfsd", "/usr/sbin/ganesha.nfsd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Ganesha {
    /// Starts a server exporting a new directory under `dir`; NFSv4 on 127.0.0.1.
    pub fn start(dir: &Path) -> io::Result<Ganesha> {
        Self::start_with(
            dir,
            GaneshaOptions {
                v3: false,
                port: None,
            },
        )
    }

    /// Starts a server for a test. A missing nfs-ganesha fails the test, unless the run opted
    /// out of NFS (`STOWAGE_SKIP=nfs`): then `None`, and the test returns early.
    pub fn start_for_test(dir: &Path) -> Option<Ganesha> {
        if binary().is_none() || plugins_dir().is_none() {
            stowage_provider::testing::missing(
                "nfs",
                "install nfs-ganesha (apt-get install nfs-ganesha nfs-ganesha-vfs; ./scripts/test.sh does it)",
            );
            return None;
        }
        Some(Self::start(dir).expect("start nfs-ganesha"))
    }

    pub fn start_with(dir: &Path, options: GaneshaOptions) -> io::Result<Ganesha> {
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        std::fs::create_dir_all(dir.join("export"))?;
        std::fs::create_dir_all(dir.join("recovery"))?;
        let mut g = Ganesha {
            child: None,
            dir: dir.to_path_buf(),
            port,
            v3: options.v3,
        };
        g.start_again()?;
        Ok(g)
    }

    fn config(&self) -> io::Result<String> {
        let plugins = plugins_dir().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "nfs-ganesha-vfs is not installed")
        })?;
        let (protocols, bind, mount_port) = if self.v3 {
            // In a private namespace glibc cannot resolve 127.0.0.1 for Bind_addr; lo is the
            // only interface there anyway.
            ("3, 4", String::new(), "MNT_Port = 20048;")
        } else {
            ("4", "Bind_addr = 127.0.0.1;".to_string(), "")
        };
        let export = self.dir.join("export");
        let recovery = self.dir.join("recovery");
        Ok(format!(
            r#"NFS_CORE_PARAM {{
    NFS_Port = {port}; {mount_port} {bind}
    Protocols = {protocols};
    Enable_UDP = false; Enable_NLM = false; Enable_RQUOTA = false;
    Plugins_Dir = "{plugins}";
}}
NFSv4 {{ Graceless = true; RecoveryRoot = "{recovery}"; Only_Numeric_Owners = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1; Path = "{export}"; Pseudo = "{export}";
    Access_Type = RW; Squash = No_Root_Squash; SecType = sys;
    Protocols = {protocols}; Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
"#,
            port = self.port,
            recovery = recovery.display(),
            export = export.display(),
        ))
    }

    /// (Re)starts the process on the same export and port.
    pub fn start_again(&mut self) -> io::Result<()> {
        let binary = binary().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "nfs-ganesha is not installed")
        })?;
        let conf = self.dir.join("ganesha.conf");
        std::fs::write(&conf, self.config()?)?;
        let log = self.dir.join("ganesha.log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(binary)
            .arg("-F")
            .arg("-f")
            .arg(&conf)
            .arg("-L")
            .arg(&log)
            .arg("-N")
            .arg("NIV_EVENT")
            .arg("-p")
            .arg(self.dir.join("ganesha.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("NFS SERVER INITIALIZED") {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(io::Error::other(format!(
                    "nfs-ganesha exited ({status}); its log:\n{text}"
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "nfs-ganesha did not start within 20 s; its log:\n{text}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process at once (SIGKILL), like a crash.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(signal)
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Freezes the process (SIGSTOP): connections stay open and nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// `127.0.0.1:<port>` (or `127.0.0.1` for the standard port), as a class's `server`.
    pub fn server(&self) -> String {
        if self.port == 2049 {
            "127.0.0.1".to_string()
        } else {
            format!("127.0.0.1:{}", self.port)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The export path, as a class's `share`: the exported directory's own path (NFSv3 mounts
    /// by it, and NFSv4 serves it at the same path).
    pub fn share(&self) -> String {
        self.export_dir().display().to_string()
    }

    /// The exported directory on this machine, for checking what the provider did.
    pub fn export_dir(&self) -> PathBuf {
        self.dir.join("export")
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
