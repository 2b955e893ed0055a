//! The `pipe` binary: parses arguments, runs the command, maps errors to exit codes.

/// Planning a large sweep allocates millions of small values; mimalloc does that faster
/// than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Started as the server that supervises `exec` commands (`pipe __reap ...`): nothing else runs.
    if let Some(code) = pipe_reap::main_if_server() {
        std::process::exit(code);
    }
    std::process::exit(pipe::cli::main());
}
