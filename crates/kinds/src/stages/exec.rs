//! `exec`: the user's own command as a stage.
//!
//! The command runs in the pipeline file's folder with `PIPE_OUT` (the folder to write
//! into), `PIPE_INPUT_<SLOT>` (each input artifact's folder), `PIPE_THREADS`, `PIPE_KEY`
//! and `PIPE_POINT` (the sweep variables its key holds, as JSON) set. Its stdout and stderr go
//! to the log.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

use crate::stages::slots;
use pipe_engine::spec::template;
use pipe_engine::stage::{
    CheckEnv, DeclaredFile, Inputs, Kind, NotStarted, ParamError, RunContext, Scalar, Supervised,
};

/// The kind's name, as written `kind = "exec"`.
pub const NAME: &str = slots::names::EXEC;

pipe_engine::stage_params! {
    /// The parameters of `exec`.
    pub struct ExecParams {
        cmd: Vec<Scalar>, required, "the command and its arguments, e.g. [\"python3\", \"fit.py\", \"--noise\", \"${noise}\"]";
        files: Vec<String>, default "[]", "files, folders or glob patterns (relative to the pipeline file) whose content goes into the key: scripts, configs, src/**/*.py";
        env: BTreeMap<String, Scalar>, default "{}", "extra environment variables for the command";
        tables: Vec<String>, default "[]", not_in_key, "Parquet tables the command must write (NAME for $PIPE_OUT/NAME.parquet) that `pipe export` gathers (not in the key)";
        threads: i64, default "1", not_in_key, "threads the command uses (scheduling only; not in the key)";
    }
}

impl ExecParams {
    /// Checks the command, its threads, tables and environment (shared with `import`).
    pub fn check(&self) -> Result<(), ParamError> {
        let p = self;
        if p.argv().first().is_none_or(|a| a.is_empty()) {
            return Err(ParamError::param(ExecParams::cmd, "the command is empty"));
        }
        if p.threads < 1 {
            return Err(ParamError::param(ExecParams::threads, "must be at least 1"));
        }
        for t in &p.tables {
            if !is_table_name(t) {
                return Err(ParamError::param(
                    ExecParams::tables,
                    format!(
                        "\"{t}\" is not a table name: use letters, digits, `_` and `-` (the file is $PIPE_OUT/NAME.parquet)"
                    ),
                ));
            }
        }
        for (k, v) in &p.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(ParamError::param(
                    ExecParams::env,
                    format!("{k:?} is not a variable name"),
                ));
            }
            if k.starts_with("PIPE_") {
                return Err(ParamError::param(
                    ExecParams::env,
                    format!("{k} is set by pipe itself; name your variable otherwise"),
                ));
            }
            if template::display(&v.0).contains('\0') {
                return Err(ParamError::param(
                    ExecParams::env,
                    format!("the value of {k} holds a NUL byte"),
                ));
            }
        }
        if let Some(a) = p.argv().iter().find(|a| a.contains('\0')) {
            return Err(ParamError::param(
                ExecParams::cmd,
                format!("{a:?} holds a NUL byte"),
            ));
        }
        Ok(())
    }

    /// The files `files` declares (shared with `import`).
    pub fn declared_files(&self, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        self.files
            .iter()
            .flat_map(|f| declared(env.base_dir, f))
            .collect()
    }

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
        p.check()
    }
    fn files(&self, p: &ExecParams, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        p.declared_files(env)
    }
    fn tables(&self, p: &ExecParams) -> Vec<String> {
        p.tables.clone()
    }
    fn threads(&self, p: &ExecParams) -> usize {
        p.threads.max(1) as usize
    }
    fn run(&self, p: &ExecParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
        run_command(p, ctx)
    }
}

/// Runs the command of `p` as an `exec` stage does (shared with `import`): under a reaper,
/// with the `PIPE_*` variables, its output into the log; then checks the declared tables.
pub fn run_command(p: &ExecParams, ctx: &mut RunContext<'_>) -> anyhow::Result<()> {
    let argv = p.argv();
    // Started under a reaper: whatever the command starts (in the background, in a new
    // session) is killed when it ends, at the timeout, on Ctrl-C, and if pipe dies.
    let mut supervised = Supervised::new(&argv)?;
    supervised
        .current_dir(ctx.base_dir)
        .output(ctx.log)?
        .env("PIPE_OUT", std::path::absolute(ctx.out)?)
        .env("PIPE_THREADS", ctx.threads.to_string())
        .env("PIPE_KEY", ctx.key)
        .env("PIPE_POINT", ctx.point.to_string());
    for input in ctx.inputs {
        supervised.env(input_var(&input.slot), std::path::absolute(&input.dir)?);
    }
    if let Some(v) = ctx.visible_gpus {
        supervised.env("CUDA_VISIBLE_DEVICES", v);
    }
    for (k, v) in &p.env {
        supervised.env(k, template::display(&v.0));
    }
    let cannot_start = || format!("cannot start `{}` (in {})", argv[0], ctx.base_dir.display());
    let child = supervised.spawn().with_context(cannot_start)?;
    let status = match child.wait_until(ctx.deadline) {
        Err(e) if e.is::<NotStarted>() => return Err(e.context(cannot_start())),
        status => status?,
    };
    if !status.success() {
        match status.code() {
            Some(c) => bail!("command `{}` exited with status {c}", argv.join(" ")),
            None => bail!(
                "command `{}` was killed by a signal ({status})",
                argv.join(" ")
            ),
        }
    }
    unlink_shared(ctx.out)?;
    let missing: Vec<&str> = p
        .tables
        .iter()
        .filter(|t| !ctx.out.join(format!("{t}.parquet")).is_file())
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        bail!(
            "the command declared table(s) {} but wrote no {} in $PIPE_OUT",
            missing.join(", "),
            missing
                .iter()
                .map(|t| format!("{t}.parquet"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// Replaces every output file that has other hard links (`ln ~/data.bin $PIPE_OUT/`) by a
/// copy of its own, so that the artifact cannot change when the outside file does.
fn unlink_shared(out: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // A link put where the folder was is never walked (walkdir follows a root link).
    pipe_engine::store::check_output_folder(out)?;
    for e in walkdir::WalkDir::new(out).into_iter().flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue;
        };
        if meta.is_file() && meta.nlink() > 1 {
            let copy = path.with_file_name(format!(
                ".{}.pipe-copy",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
            ));
            std::fs::copy(path, &copy)
                .with_context(|| format!("copying the hard-linked output {}", path.display()))?;
            std::fs::rename(&copy, path)?;
        }
    }
    Ok(())
}

/// Whether `t` can name a table: letters, digits, `_` and `-`, not starting with `-`.
fn is_table_name(t: &str) -> bool {
    !t.is_empty()
        && !t.starts_with('-')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The files one `files` entry declares: the file itself; every file under a folder (sorted,
/// named by their path from the pipeline's folder); every file a glob pattern matches.
/// A pattern that matches nothing is declared as written, so that planning says it is
/// missing.
fn declared(base: &std::path::Path, entry: &str) -> Vec<DeclaredFile> {
    let path = base.join(entry);
    let one =
        |name: String, path: std::path::PathBuf, meta: Option<std::fs::Metadata>| DeclaredFile {
            name,
            path,
            data: false,
            meta,
        };
    let name_of = |p: &std::path::Path| {
        p.strip_prefix(base)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    // One `stat`, handed on with the file: the planner checks its remembered hash against it.
    let meta = std::fs::metadata(&path).ok();
    if meta.as_ref().is_some_and(|m| m.is_dir()) {
        let mut files: Vec<DeclaredFile> = walkdir::WalkDir::new(&path)
            .sort_by_file_name()
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| one(name_of(e.path()), e.path().to_path_buf(), None))
            .collect();
        if files.is_empty() {
            files.push(one(format!("{entry} (empty folder)"), path, None));
        }
        return files;
    }
    let is_pattern = entry.contains(['*', '?', '[']);
    if !is_pattern {
        return vec![one(entry.to_string(), path, meta)];
    }
    let mut found: Vec<std::path::PathBuf> = glob::glob(&path.to_string_lossy())
        .map(|paths| paths.flatten().filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    found.sort();
    if found.is_empty() {
        return vec![one(entry.to_string(), path, None)];
    }
    found
        .into_iter()
        .map(|p| one(name_of(&p), p, None))
        .collect()
}
