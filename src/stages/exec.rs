//! `exec`: the user's own command as a stage.
//!
//! The command runs in the pipeline file's folder with `PIPE_OUT` (the folder to write
//! into), `PIPE_INPUT_<SLOT>` (each input artifact's folder), `PIPE_THREADS`, `PIPE_KEY`
//! and `PIPE_POINT` (the sweep point as JSON) set. Its stdout and stderr go to the log.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use serde_json::Value as Json;

use crate::spec::template;
use crate::stage::{
    CheckEnv, DeclaredFile, Inputs, ParamError, ParamSpec, ParamType, Params, RunContext, StageKind,
};

/// The `exec` stage kind.
pub struct Exec;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "cmd",
        ParamType::List(&ParamType::Scalar),
        "the command and its arguments, e.g. [\"python3\", \"fit.py\", \"--noise\", \"${noise}\"]",
    ),
    ParamSpec::default(
        "files",
        ParamType::List(&ParamType::Str),
        "[]",
        "files (relative to the pipeline file) whose content goes into the key: scripts, configs",
    ),
    ParamSpec::default(
        "env",
        ParamType::Map(&ParamType::Scalar),
        "{}",
        "extra environment variables for the command",
    ),
    ParamSpec::default(
        "tables",
        ParamType::List(&ParamType::Str),
        "[]",
        "Parquet tables the command writes (NAME for $PIPE_OUT/NAME.parquet) that `pipe export` gathers",
    ),
    ParamSpec::default(
        "threads",
        ParamType::Int,
        "1",
        "threads the command uses (scheduling only; not in the key)",
    )
    .not_in_key(),
];

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

fn args(params: &Params) -> Vec<String> {
    match params.get("cmd") {
        Some(Json::Array(a)) => a.iter().map(template::display).collect(),
        _ => Vec::new(),
    }
}

impl StageKind for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "runs your own command; upstream artifacts come in as PIPE_INPUT_<SLOT>, output goes to PIPE_OUT"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Any
    }
    fn check(&self, params: &Params, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if args(params).first().is_none_or(|a| a.is_empty()) {
            return Err(ParamError::param("cmd", "the command is empty"));
        }
        if params.int("threads").is_some_and(|t| t < 1) {
            return Err(ParamError::param("threads", "must be at least 1"));
        }
        Ok(())
    }
    fn files(&self, params: &Params, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        params
            .strings("files")
            .into_iter()
            .map(|f| DeclaredFile {
                path: env.base_dir.join(&f),
                name: f,
            })
            .collect()
    }
    fn tables(&self, params: &Params) -> Vec<String> {
        params.strings("tables")
    }
    fn threads(&self, params: &Params) -> usize {
        params.int("threads").unwrap_or(1).max(1) as usize
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        let argv = args(ctx.params);
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
        if let Some(Json::Object(env)) = ctx.params.get("env") {
            for (k, v) in env {
                cmd.env(k, template::display(v));
            }
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
