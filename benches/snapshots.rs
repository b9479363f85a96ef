//! Snapshot and restore throughput of the copying providers, next to `cp -a` of the same tree on
//! the same disk, in the same run.
//!
//! A volume holding `--mib` MiB in `--files` files (default: 1 GiB in 10,000 files, in 100
//! directories) is snapshotted and restored:
//! - local: through the local provider, on this disk;
//! - NFS: through the NFS provider, over NFSv4.1 to nfs-ganesha on loopback, whose export is a
//!   directory on this disk.
//!
//! `cp -a` copies the same tree on the same disk twice, before and after, and the faster run is
//! the reference (so the comparison is never flattered by a cold first run). A provider's copy
//! is on disk when it says it is ready (the local provider `syncfs`es before moving it into
//! place), so the like-for-like reference is `cp -a; sync`; plain `cp -a` is printed too. Each
//! copy is timed from the first call to the one that finds it done, as the controllers see it.
//!
//! Run: `cargo bench --bench snapshots` (`-- --files 10000 --mib 1024`; `--no-nfs` to leave
//! NFS out).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use stowage_provider::{
    AccessMode, ClaimRef, ContentSource, CreateVolumeRequest, ErrorKind, Provider, SnapshotRequest,
    TopologyRequirement,
};
use support::arg;

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// Writes `files` files holding `bytes` in all, in directories of 100, with data that does not
/// compress or deduplicate.
fn make_tree(root: &Path, files: usize, bytes: i64) {
    let per_file = (bytes / files as i64) as usize;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; per_file];
    for i in 0..files {
        let dir = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        for chunk in buf.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let b = seed.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        std::fs::write(dir.join(format!("f{i:05}")), &buf).unwrap();
    }
}

fn sync() {
    Command::new("sync").status().expect("sync");
}

/// Times `cp -a`, and `cp -a` with the `sync` that makes its copy durable (what a provider
/// has done when it says a copy is ready): (cp -a, cp -a + sync).
fn cp_a(from: &Path, to: &Path) -> (Duration, Duration) {
    sync();
    let start = Instant::now();
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success());
    let copied = start.elapsed();
    sync();
    let durable = start.elapsed();
    std::fs::remove_dir_all(to).unwrap();
    sync();
    (copied, durable)
}

/// Prints the faster of two `cp -a` runs (before and after), plain and with `sync`; returns
/// the reference: the faster `cp -a; sync`.
fn report_reference(
    bytes: i64,
    before: (Duration, Duration),
    after: (Duration, Duration),
) -> Duration {
    for (what, a, b) in [
        ("cp -a", before.0, after.0),
        ("cp -a; sync (the reference)", before.1, after.1),
    ] {
        let best = a.min(b);
        println!(
            "  {what:<28} {:>7.2} s  {:>8.1} MB/s  (runs: {:.2} s, {:.2} s)",
            best.as_secs_f64(),
            mb_per_s(bytes, best),
            a.as_secs_f64(),
            b.as_secs_f64()
        );
    }
    before.1.min(after.1)
}

fn mb_per_s(bytes: i64, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn request(name: &str, bytes: i64, parameters: BTreeMap<String, String>) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_bytes: bytes,
        access_modes: vec![AccessMode::ReadWriteOnce],
        block: false,
        parameters,
        mount_options: vec![],
        topology: TopologyRequirement::default(),
        claim: ClaimRef::default(),
        content_source: None,
        mutable_parameters: BTreeMap::new(),
    }
}

/// Snapshots volume `handle`, then restores the snapshot into a new volume; returns both times.
async fn snapshot_and_restore(
    p: &dyn Provider,
    handle: &str,
    attributes: BTreeMap<String, String>,
    parameters: BTreeMap<String, String>,
    size: i64,
) -> (Duration, Duration) {
    sync();
    let poll = Duration::from_millis(10);
    let start = Instant::now();
    let req = SnapshotRequest {
        name: "snapshot-bench".into(),
        source_handle: handle.into(),
        source_attributes: attributes,
        parameters: BTreeMap::new(),
    };
    let snapshot = loop {
        let s = p.create_snapshot(&req).await.expect("snapshot");
        if s.ready {
            break s;
        }
        tokio::time::sleep(poll).await;
    };
    let snapshot_took = start.elapsed();
    sync();
    let mut restore = request("pvc-bench-restored", size, parameters);
    restore.content_source = Some(ContentSource::Snapshot {
        snapshot_id: snapshot.id.clone(),
    });
    let start = Instant::now();
    loop {
        match p.create_volume(&restore).await {
            Ok(_) => break,
            Err(e) if e.kind == ErrorKind::InProgress => tokio::time::sleep(poll).await,
            Err(e) => panic!("restore: {e}"),
        }
    }
    let restore_took = start.elapsed();
    p.delete_snapshot(&snapshot.id)
        .await
        .expect("delete snapshot");
    (snapshot_took, restore_took)
}

fn report(what: &str, bytes: i64, took: Duration, reference: Duration) {
    println!(
        "  {what:<28} {:>7.2} s  {:>8.1} MB/s  {:>5.0}% of cp -a; sync",
        took.as_secs_f64(),
        mb_per_s(bytes, took),
        100.0 * reference.as_secs_f64() / took.as_secs_f64()
    );
}

#[tokio::main]
async fn main() {
    let files: usize = arg("files", 10_000);
    let mib: i64 = arg("mib", 1024);
    let with_nfs = !std::env::args().any(|a| a == "--no-nfs");
    let bytes = mib * MIB;
    // On the project's disk (not a tmpfs /tmp), like the volumes.
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();

    println!(
        "Snapshot and restore benchmark: {mib} MiB in {files} files, on {}",
        work.path().display()
    );

    // Local.
    let root = work.path().join("local");
    std::fs::create_dir_all(&root).unwrap();
    let local = stowage_provider_local::LocalProvider::open(
        &stowage_provider_local::Config {
            root: Some(root.clone()),
            node: Some("bench".into()),
            capacity: Some("100Ti".into()),
        },
        &root,
    )
    .unwrap();
    let size = (bytes * 2).max(GIB);
    local
        .create_volume(&request("pvc-bench", size, BTreeMap::new()))
        .await
        .unwrap();
    make_tree(&root.join("pvc-bench"), files, bytes);
    let copy_to = work.path().join("cp-target");
    let cp_before = cp_a(&root.join("pvc-bench"), &copy_to);
    let (snap, restore) =
        snapshot_and_restore(&local, "pvc-bench", BTreeMap::new(), BTreeMap::new(), size).await;
    let cp_after = cp_a(&root.join("pvc-bench"), &copy_to);
    println!(
        "local provider ({} copy threads):",
        std::thread::available_parallelism()
            .map_or(2, |n| n.get() * 2)
            .clamp(2, 8)
    );
    let cp = report_reference(bytes, cp_before, cp_after);
    report("snapshot", bytes, snap, cp);
    report("restore", bytes, restore, cp);
    drop(local);
    std::fs::remove_dir_all(&root).unwrap();

    if with_nfs {
        nfs(work.path(), files, bytes).await;
    }
}

/// The same through the NFS provider, against nfs-ganesha exporting a directory on this disk.
async fn nfs(work: &Path, files: usize, bytes: i64) {
    use stowage_provider_nfs::testing::Ganesha;
    let ganesha = Ganesha::start(&work.join("ganesha"))
        .expect("nfs-ganesha (apt-get install nfs-ganesha nfs-ganesha-vfs)");
    let p = stowage_provider_nfs::NfsProvider::new(
        stowage_provider_nfs::Config {
            call_timeout: Duration::from_secs(60),
        },
        "bench",
    );
    let parameters = BTreeMap::from([
        ("server".to_string(), ganesha.server()),
        ("share".to_string(), ganesha.share()),
    ]);
    let size = (bytes * 2).max(GIB);
    let volume = p
        .create_volume(&request("pvc-bench", size, parameters.clone()))
        .await
        .expect("NFS volume");
    // Without a subDir, a volume is the directory of its name at the top of the export.
    let dir = ganesha.export_dir().join("pvc-bench");
    make_tree(&dir, files, bytes);
    let copy_to = work.join("cp-target-nfs");
    let cp_before = cp_a(&dir, &copy_to);
    let (snap, restore) = snapshot_and_restore(
        &p,
        &volume.handle,
        volume.attributes.clone(),
        parameters,
        size,
    )
    .await;
    let cp_after = cp_a(&dir, &copy_to);
    println!("NFS provider (NFSv4.1 to nfs-ganesha on loopback; cp -a on the export's disk):");
    let cp = report_reference(bytes, cp_before, cp_after);
    report("snapshot", bytes, snap, cp);
    report("restore", bytes, restore, cp);
}
