//! Running a stage in the `pipe-torch` worker process.
//!
//! Stage kinds that need libtorch (training and the analyses on trained networks) run in a
//! separate binary, `pipe-torch`, so that `pipe` itself starts in milliseconds instead of
//! loading libtorch, and so that each instance gets its own libtorch thread pool. The
//! parent sends the instance as a [`WorkerJob`] on the worker's stdin; the worker writes into
//! the same temp folder and store that a local run would use.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::resources::Resources;
use crate::stage::{BadData, InputArtifact, ParamError, RunContext};
use crate::store::Parts;

crate::stage_params! {
    /// The parameters every stage kind that runs in the worker takes (flattened into the
    /// kind's own parameters); neither is in the key.
    pub struct WorkerParams {
        device: String, default "\"auto\"", not_in_key, "auto, cpu, cuda or cuda:N (not in the key)";
        threads: i64, default "1", not_in_key, "libtorch threads (not in the key)";
    }
}

impl WorkerParams {
    /// Checks `threads` and `device` (that a CUDA device exists on this machine).
    pub fn check(&self) -> Result<(), ParamError> {
        if self.threads < 1 {
            return Err(ParamError::param("threads", "must be at least 1"));
        }
        check_device(&self.device).map_err(|m| ParamError::param("device", m))
    }
    /// Threads an instance asks for.
    pub fn threads(&self) -> usize {
        self.threads.max(1) as usize
    }
    /// Cluster resources: the threads as CPUs, and one GPU when `device` names a CUDA
    /// device (`auto` asks for none).
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: Some(self.threads() as u32),
            gpus: Some(u32::from(self.device.starts_with("cuda"))),
            ..Default::default()
        }
    }
}

/// The [`Kind`](crate::stage::Kind) methods every worker kind shares, written inside its
/// `impl Kind` block: threads and cluster resources from its `worker` parameters, and `run`
/// handing the instance to the `pipe-torch` worker under the kind's `NAME`.
macro_rules! worker_kind_methods {
    ($params:ty) => {
        fn threads(&self, p: &$params) -> usize {
            p.worker.threads()
        }
        fn resources(&self, p: &$params) -> $crate::resources::Resources {
            p.worker.resources()
        }
        fn run(&self, _p: &$params, ctx: &mut $crate::stage::RunContext<'_>) -> anyhow::Result<()> {
            $crate::worker::run_in_worker(NAME, ctx)
        }
    };
}
pub(crate) use worker_kind_methods;

/// Checks a `device` value: its form, and for CUDA devices that this machine has them.
pub fn check_device(name: &str) -> Result<(), String> {
    let index = match name {
        "auto" | "cpu" => return Ok(()),
        "cuda" => Some(0),
        _ => name
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    let Some(n) = index else {
        return Err(format!(
            "device \"{name}\" is not one of auto, cpu, cuda, cuda:N"
        ));
    };
    let count = cuda_devices()?;
    if n >= count {
        return Err(format!(
            "device \"{name}\" is not available: this machine has {count} CUDA device{}; use device = \"cpu\" or \"auto\"",
            if count == 1 { "" } else { "s" }
        ));
    }
    Ok(())
}

/// The worker's exit code for "the user's data is at fault" (maps to [`BadData`]).
pub const EXIT_BAD_DATA: i32 = 3;

/// Everything the worker process needs to run one instance (sent on its stdin).
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerJob {
    /// The stage kind.
    pub kind: String,
    /// Resolved parameters.
    pub params: serde_json::Map<String, Json>,
    /// Input artifacts.
    pub inputs: Vec<InputArtifact>,
    /// The temp folder to write the output into.
    pub out: PathBuf,
    /// The instance's log (the worker appends to it).
    pub log: PathBuf,
    /// Threads the instance may use.
    pub threads: usize,
    /// Folder relative paths resolve against.
    pub base_dir: PathBuf,
    /// The instance's key.
    pub key: String,
    /// The instance's sweep point.
    pub point: Json,
    /// Where the instance's parts go.
    pub parts: Parts,
}

/// The worker binary: `$PIPE_TORCH`, else `pipe-torch` next to the running executable.
pub fn worker_path() -> PathBuf {
    if let Some(p) = std::env::var_os("PIPE_TORCH") {
        return PathBuf::from(p);
    }
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("pipe-torch")))
        .unwrap_or_else(|| PathBuf::from("pipe-torch"))
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(worker_path());
    cmd.args(args);
    // SAFETY: prctl is async-signal-safe; the worker dies with pipe instead of writing on.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Runs an instance of `kind` in the worker and waits for it.
pub fn run_in_worker(kind: &str, ctx: &mut RunContext<'_>) -> Result<()> {
    let job = WorkerJob {
        kind: kind.to_string(),
        params: ctx.params.values(),
        inputs: ctx.inputs.to_vec(),
        out: std::path::absolute(ctx.out)?,
        log: std::path::absolute(ctx.log_path)?,
        threads: ctx.threads,
        base_dir: std::path::absolute(ctx.base_dir)?,
        key: ctx.key.to_string(),
        point: ctx.point.clone(),
        parts: Parts {
            cache: std::path::absolute(&ctx.parts.cache)?,
            template: ctx.parts.template.clone(),
        },
    };
    ctx.log.flush()?;
    let mut child = command(&["run"])
        .stdin(Stdio::piped())
        .stdout(ctx.log.try_clone()?)
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!(
                "cannot start the worker {} (build it with `cargo build --release --workspace`)",
                worker_path().display()
            )
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&serde_json::to_vec(&job)?)?;
    }
    let reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let status = crate::stage::wait_until(&mut child, ctx.deadline, false)?;
    let stderr = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    ctx.log.write_all(stderr.as_bytes())?;
    if status.success() {
        return Ok(());
    }
    let message = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("pipe-torch: error: "))
        .map(str::to_string)
        .unwrap_or_else(|| format!("the worker exited with {status}"));
    if status.code() == Some(EXIT_BAD_DATA) {
        return Err(anyhow::Error::new(BadData(message)));
    }
    bail!("{message}")
}

/// Number of CUDA devices libtorch sees on this machine (asks the worker once).
pub fn cuda_devices() -> Result<usize, String> {
    static COUNT: OnceLock<Result<usize, String>> = OnceLock::new();
    COUNT
        .get_or_init(|| {
            let out = command(&["devices"])
                .stderr(Stdio::null())
                .output()
                .map_err(|e| {
                    format!(
                        "cannot ask the worker {} about devices: {e}",
                        worker_path().display()
                    )
                })?;
            let v: Json = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("the worker's device list: {e}"))?;
            v["cuda"]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| "the worker's device list has no `cuda`".to_string())
        })
        .clone()
}
