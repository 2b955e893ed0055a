//! `pipe completions`: a shell completion script on stdout.

use clap::CommandFactory;

use super::{Cli, CompletionsArgs};

/// Runs `pipe completions`; returns its exit code.
pub fn completions(args: &CompletionsArgs) -> i32 {
    clap_complete::generate(
        args.shell,
        &mut Cli::command(),
        "pipe",
        &mut std::io::stdout(),
    );
    0
}
