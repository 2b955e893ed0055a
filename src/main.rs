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
    let code = pipe::cli::main();
    // The supervision server and its idle supervisors end and are reaped (a second at
    // most: nothing runs any more).
    pipe_reap::client::shutdown(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
