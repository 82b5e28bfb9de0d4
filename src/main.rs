// jemalloc leaves the untouched parts of the buffers every connection reserves untouched, and
// hands freed memory back within a second: thousands of parked long polls stay small (measured
// in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read at start-up (`MALLOC_CONF` in the environment still wins).
#[unsafe(export_name = "malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:1000".as_ptr());

/// A C string pointer jemalloc reads, made shareable: it points at a constant.
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a `'static` constant that nothing writes.
unsafe impl Sync for MallocConf {}

fn main() -> std::process::ExitCode {
    hoopbot::install_crypto_provider();
    hoopbot::cli::main()
}
