// mimalloc rather than glibc's malloc: a store of many small, long-lived allocations next to
// short-lived request buffers fragments glibc's arenas (memory freed after start-up or a burst
// stays resident), and malloc and free are a tenth of the CPU under write load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stowage::cli::main()
}
