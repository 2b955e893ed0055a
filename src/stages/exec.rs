//! `exec`: the user's own command as a stage.
//!
//! The command runs in the pipeline file's folder with `PIPE_OUT` (the folder to write
//! into), `PIPE_INPUT_<SLOT>` (each input artifact's folder), `PIPE_THREADS`, `PIPE_KEY`
//! and `PIPE_POINT` (the sweep point as JSON) set. Its stdout and stderr go to the log.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use crate::spec::template;
use crate::stage::{CheckEnv, DeclaredFile, Inputs, Kind, ParamError, RunContext, Scalar};

/// The kind's name, as written `kind = "exec"`.
pub const NAME: &str = "exec";

crate::stage_params! {
    /// The parameters of `exec`.
    pub struct ExecParams {
        cmd: Vec<Scalar>, required, "the command and its arguments, e.g. [\"python3\", \"fit.py\", \"--noise\", \"${noise}\"]";
        files: Vec<String>, default "[]", "files (relative to the pipeline file) whose content goes into the key: scripts, configs";
        env: BTreeMap<String, Scalar>, default "{}", "extra environment variables for the command";
        tables: Vec<String>, default "[]", "Parquet tables the command writes (NAME for $PIPE_OUT/NAME.parquet) that `pipe export` gathers";
        threads: i64, default "1", not_in_key, "threads the command uses (scheduling only; not in the key)";
    }
}

impl ExecParams {
    /// The command line, each value as text.
    fn argv(&self) -> Vec<String> {
        self.cmd.iter().map(|a| template::display(&a.0)).collect()
    }
}

/// The `exec` stage kind.
pub struct Exec;

/// The environment variable name for an input slot: `PIPE_INPUT_` + slot in upper case.
pub fn input_var(slot: &str) -> String {
    let s: String = slot
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("PIPE_INPUT_{s}")
}

impl Kind for Exec {
    type Params = ExecParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "runs your own command; upstream artifacts come in as PIPE_INPUT_<SLOT>, output goes to PIPE_OUT";

    fn inputs(&self) -> Inputs {
        Inputs::Any
    }
    fn check(&self, p: &ExecParams, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if p.argv().first().is_none_or(|a| a.is_empty()) {
            return Err(ParamError::param("cmd", "the command is empty"));
        }
        if p.threads < 1 {
            return Err(ParamError::param("threads", "must be at least 1"));
        }
        Ok(())
    }
    fn files(&self, p: &ExecParams, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        p.files
            .iter()
            .map(|f| DeclaredFile {
                path: env.base_dir.join(f),
                name: f.clone(),
            })
            .collect()
    }
    fn tables(&self, p: &ExecParams) -> Vec<String> {
        p.tables.clone()
    }
    fn threads(&self, p: &ExecParams) -> usize {
        p.threads.max(1) as usize
    }
    fn run(&self, p: &ExecParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        let argv = p.argv();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(ctx.base_dir)
            .stdin(Stdio::null())
            .stdout(ctx.log.try_clone()?)
            .stderr(ctx.log.try_clone()?)
            .env("PIPE_OUT", std::path::absolute(ctx.out)?)
            .env("PIPE_THREADS", ctx.threads.to_string())
            .env("PIPE_KEY", ctx.key)
            .env("PIPE_POINT", ctx.point.to_string());
        for input in ctx.inputs {
            cmd.env(input_var(&input.slot), std::path::absolute(&input.dir)?);
        }
        if let Some(v) = ctx.visible_gpus {
            cmd.env("CUDA_VISIBLE_DEVICES", v);
        }
        for (k, v) in &p.env {
            cmd.env(k, template::display(&v.0));
        }
        // If pipe dies (even by kill -9), the command dies with it instead of writing on.
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // Its own process group, so that a timeout stops everything the command started.
        cmd.process_group(0);
        let mut child = cmd.spawn().with_context(|| {
            format!("cannot start `{}` (in {})", argv[0], ctx.base_dir.display())
        })?;
        let status = crate::stage::wait_until(&mut child, ctx.deadline, true)?;
        if !status.success() {
            match status.code() {
                Some(c) => bail!("command `{}` exited with status {c}", argv.join(" ")),
                None => bail!(
                    "command `{}` was killed by a signal ({status})",
                    argv.join(" ")
                ),
            }
        }
        Ok(())
    }
}
