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
///
/// The job holds its place in the pool until it is done, even if the request that started it
/// is cancelled meanwhile (a client that resets its streams cannot pile up jobs).
pub async fn run<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    // The semaphore lives for the whole process and is never closed, so this only waits; the
    // permit (of a static semaphore) moves into the job.
    let permit = PERMITS.acquire().await.ok();
    let job = tokio::task::spawn_blocking(move || {
        let value = f();
        drop(permit);
        value
    });
    match job.await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // The runtime is shutting down: nothing is waiting for this answer any more.
            Err(_) => std::future::pending().await,
        },
    }
}
