//! For tests that need a real backend (an NFS server, an EC2 emulator): a missing one fails
//! the test, never skips it silently. A person who cannot run one says so explicitly, with
//! `STOWAGE_SKIP=nfs,ebs` (any of the component names the tests use); those tests then return
//! early, and each skip is appended to the file `STOWAGE_SKIP_LOG` names, so that the test
//! script's summary lists what did not run.

use std::io::Write as _;

/// Whether the run opted out of `component` (`STOWAGE_SKIP=nfs,ebs`).
pub fn opted_out(component: &str) -> bool {
    std::env::var("STOWAGE_SKIP").is_ok_and(|s| s.split(',').map(str::trim).any(|c| c == component))
}

/// A test cannot get `component`: panics with `how_to_get_it`, unless the run opted out of
/// it; then records the skip and returns, and the caller returns early.
pub fn missing(component: &str, how_to_get_it: &str) {
    assert!(
        opted_out(component),
        "{component} is needed and missing: {how_to_get_it} (or opt out with STOWAGE_SKIP={component})"
    );
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if let Ok(path) = std::env::var("STOWAGE_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{component}: {test}");
    }
}
