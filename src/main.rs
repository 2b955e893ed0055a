//! The `pipe` binary: parses arguments, runs the command, maps errors to exit codes.

fn main() {
    std::process::exit(pipe::cli::main());
}
