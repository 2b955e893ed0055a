//! `pipe completions`: a shell completion script on stdout.

use clap::CommandFactory;

use super::{Cli, out};

/// Arguments of `pipe completions`.
#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

/// Runs `pipe completions`; returns its exit code.
pub fn completions(args: &CompletionsArgs) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "pipe", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    0
}
