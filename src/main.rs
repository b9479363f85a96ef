// mimalloc rather than glibc's malloc: a store of many small, long-lived allocations next to
// short-lived request buffers fragments glibc's arenas (memory freed after start-up or a burst
// stays resident), and malloc and free are a tenth of the CPU under write load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages. mimalloc asks for them on its arenas, and then memory it gave
    // back to the OS and touches again comes as fresh 2 MiB pages that the kernel zeroes inside
    // the request that faulted: 7% of the server's CPU samples under create load, and a p99 of
    // 64-115 ms against 39-62 ms without them, at the same throughput (wrk, 64 connections).
    // Failing to switch them off changes only latency.
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_thp_disable(true);
    stowage::cli::main()
}
