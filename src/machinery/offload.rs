//! CPU-heavy request work (large patches, applies, big list encodings) runs here: on the blocking
//! thread pool, at most one job per core at a time. The async workers that serve every other
//! request (and `/healthz`) stay free, and a flood of heavy requests queues instead of taking
//! every core.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| {
    Semaphore::new(
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
    )
});

/// Runs `f` on the bounded pool and returns its result. A panic in `f` resumes here.
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // The semaphore is never closed, so acquiring only waits.
    let _permit = PERMITS.acquire().await;
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
