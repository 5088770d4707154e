//! `cemwatch`: the coordinator; see the library.

/// mimalloc instead of glibc's allocator: a coordinator holding many connections allocates and
/// frees small buffers for every packet, frame and report across threads, and glibc's malloc
/// spent a sixth of its CPU in its own bookkeeping under ingest (measured with `perf`; see
/// BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cemwatch_coordinator::cli::main_with_args(std::env::args_os())
}
