//! Running a stage in the `pipe-torch` worker process.
//!
//! Stage kinds that need libtorch (training and the analyses on trained networks) run in a
//! separate binary, `pipe-torch`, so that `pipe` itself starts in milliseconds instead of
//! loading libtorch. The parent sends each instance as a [`WorkerJob`] line on the stdin of a
//! `pipe-torch serve` process and reads a [`WorkerReply`] line back; the worker writes into
//! the same temp folder and store that a local run would use. A worker serves one instance
//! at a time and the next ones of the same `pipe` process afterwards, so libtorch starts
//! once per worker, not once per instance; workers die with `pipe`.

use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, mpsc};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use pipe_engine::resources::Resources;
use pipe_engine::stage::{BadData, InputArtifact, ParamError, RunContext};
use pipe_engine::store::Parts;

pipe_engine::stage_params! {
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
            return Err(ParamError::param(
                WorkerParams::threads,
                "must be at least 1",
            ));
        }
        check_device(&self.device).map_err(|m| ParamError::param(WorkerParams::device, m))
    }
    /// Threads an instance asks for.
    pub fn thread_count(&self) -> usize {
        self.threads.max(1) as usize
    }
    /// Resources: the threads as CPUs, and one GPU when `device` names a CUDA device, or
    /// is `auto` on a machine with one (a cluster's nodes are asked for what the submitting
    /// machine has; `--gpus` places such instances on the GPUs it names).
    pub fn resources(&self) -> Resources {
        let gpu = match self.device.as_str() {
            "cpu" => false,
            "auto" => cuda_devices().unwrap_or(0) > 0,
            _ => true,
        };
        Resources {
            cpus: Some(self.thread_count() as u32),
            gpus: Some(u32::from(gpu)),
            ..Default::default()
        }
    }
}

/// The [`Kind`](pipe_engine::stage::Kind) methods every worker kind shares, written inside its
/// `impl Kind` block: threads and cluster resources from its `worker` parameters, and `run`
/// handing the instance to the `pipe-torch` worker under the kind's `NAME`.
macro_rules! worker_kind_methods {
    ($params:ty) => {
        fn threads(&self, p: &$params) -> usize {
            p.worker.thread_count()
        }
        fn resources(&self, p: &$params) -> pipe_engine::resources::Resources {
            p.worker.resources()
        }
        fn run(
            &self,
            _p: &$params,
            ctx: &mut pipe_engine::stage::RunContext<'_>,
        ) -> anyhow::Result<()> {
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
    /// The instance as people name it (`train[noise=0.4,seed=1]`).
    #[serde(default)]
    pub label: String,
    /// The sweep variables the instance's key holds (`RunContext::point`).
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

/// A worker's answer to one job of `pipe-torch serve` (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerReply {
    /// Whether the job succeeded.
    pub ok: bool,
    /// What went wrong, if it failed.
    #[serde(default)]
    pub message: String,
    /// Whether the user's data was at fault ([`BadData`]).
    #[serde(default)]
    pub bad_data: bool,
    /// Whether the job stopped on SIGINT or SIGTERM ([`Interrupted`]).
    #[serde(default)]
    pub interrupted: bool,
    /// What it kept then, if anything.
    #[serde(default)]
    pub kept: Option<Kept>,
}

/// The resume point a train instance kept when it was stopped: the next run continues
/// from the end of `epoch`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Kept {
    /// The epoch boundary kept.
    pub epoch: i64,
    /// The epochs the instance trains.
    pub epochs: i64,
}

/// How a worker job ends when the worker is stopped (SIGINT or SIGTERM) while it runs,
/// after it kept what it could.
#[derive(Debug)]
pub struct Interrupted {
    /// The resume point kept, if the job keeps them and had reached an epoch boundary.
    pub kept: Option<Kept>,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kept {
            Some(k) => write!(
                f,
                "stopped by a signal; kept epoch {} of {} as a resume point",
                k.epoch, k.epochs
            ),
            None => write!(f, "stopped by a signal"),
        }
    }
}

impl std::error::Error for Interrupted {}

impl WorkerReply {
    /// A job that succeeded.
    pub fn done() -> WorkerReply {
        WorkerReply {
            ok: true,
            message: String::new(),
            bad_data: false,
            interrupted: false,
            kept: None,
        }
    }
    /// A job that failed.
    pub fn failed(message: String, bad_data: bool) -> WorkerReply {
        WorkerReply {
            ok: false,
            message,
            bad_data,
            interrupted: false,
            kept: None,
        }
    }
    /// A job that stopped on a signal, having kept `kept`.
    pub fn interrupted(i: &Interrupted) -> WorkerReply {
        WorkerReply {
            ok: false,
            message: i.to_string(),
            bad_data: false,
            interrupted: true,
            kept: i.kept,
        }
    }
}

/// A running `pipe-torch serve` process.
struct Served {
    /// The process.
    child: Child,
    /// Where jobs go.
    jobs: ChildStdin,
    /// Its reply lines, read by a thread.
    replies: mpsc::Receiver<String>,
}

/// Workers between jobs, each with the `CUDA_VISIBLE_DEVICES` it was started with (`None`:
/// inherited), reused by the next libtorch instance of this process that wants the same.
static IDLE: Mutex<Vec<(Option<String>, Served)>> = Mutex::new(Vec::new());

/// A request to start a worker (with this `CUDA_VISIBLE_DEVICES`, if any), answered on the
/// channel it carries.
type SpawnRequest = (Option<String>, mpsc::Sender<std::io::Result<Child>>);

/// Starts `pipe-torch serve` processes from one thread that lives as long as `pipe`:
/// a worker is killed when the thread that started it ends (PR_SET_PDEATHSIG), so it must
/// not be an instance's thread if it is to serve the next instance, and must die with pipe.
fn spawn_served(visible_gpus: Option<&str>) -> Result<Served> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::spawn(move || {
            for (visible, reply) in rx {
                let mut cmd = command(&["serve"]);
                if std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
                    // cuBLAS's deterministic workspaces (no effect without a GPU).
                    cmd.env("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
                }
                if let Some(v) = visible {
                    cmd.env("CUDA_VISIBLE_DEVICES", v);
                }
                let child = cmd
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn();
                let _ = reply.send(child);
            }
        });
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((visible_gpus.map(str::to_string), tx))
        .map_err(|_| anyhow::anyhow!("the worker starter thread is gone"))?;
    let mut child = rx
        .recv()
        .map_err(|_| anyhow::anyhow!("the worker starter thread is gone"))?
        .with_context(|| {
            format!(
                "cannot start the worker {} (build it with `cargo build --release --workspace`)",
                worker_path().display()
            )
        })?;
    let (Some(jobs), Some(out)) = (child.stdin.take(), child.stdout.take()) else {
        bail!("the worker's pipes are missing");
    };
    let (tx, replies) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(Served {
        child,
        jobs,
        replies,
    })
}

/// Runs an instance of `kind` in a worker and waits for it (up to the instance's
/// deadline). A worker that is idle is reused; one is started otherwise, and kept for the
/// next instance unless it died or was killed at the deadline.
pub fn run_in_worker(kind: &str, ctx: &mut RunContext<'_>) -> Result<()> {
    if pipe_engine::stage::stopping() || KEEPING.load(Ordering::SeqCst) {
        bail!("pipe is stopping (SIGINT or SIGTERM)");
    }
    let job = WorkerJob {
        kind: kind.to_string(),
        params: ctx.params.values(),
        inputs: ctx.inputs.to_vec(),
        out: std::path::absolute(ctx.out)?,
        log: std::path::absolute(ctx.log_path)?,
        threads: ctx.threads,
        base_dir: std::path::absolute(ctx.base_dir)?,
        key: ctx.key.to_string(),
        label: ctx.label.to_string(),
        point: ctx.point.clone(),
        parts: Parts {
            cache: std::path::absolute(&ctx.parts.cache)?,
            template: ctx.parts.template.clone(),
        },
    };
    ctx.log.flush()?;
    let line = serde_json::to_string(&job)? + "\n";
    // An idle worker may have died meanwhile: then its job line cannot be written, and a
    // fresh one takes the job.
    let visible = ctx.visible_gpus.map(str::to_string);
    let mut worker = loop {
        let idle = {
            let mut pool = IDLE.lock().unwrap_or_else(|e| e.into_inner());
            let at = pool.iter().rposition(|(v, _)| *v == visible);
            at.map(|i| pool.remove(i).1)
        };
        let reused = idle.is_some();
        let mut w = match idle {
            Some(w) => w,
            None => spawn_served(ctx.visible_gpus)?,
        };
        match w
            .jobs
            .write_all(line.as_bytes())
            .and_then(|_| w.jobs.flush())
        {
            Ok(()) => break w,
            Err(e) => {
                let _ = w.child.kill();
                let _ = w.child.wait();
                if !reused {
                    bail!("cannot send the job to the worker: {e}");
                }
            }
        }
    };
    let keeps = KEEPS_RESUME_POINTS.contains(&kind);
    let busy = keeps.then(|| Busy::add(worker.child.id() as i32, ctx.label));
    let reply = loop {
        let wait = match ctx.deadline {
            Some(d) => d.saturating_duration_since(std::time::Instant::now()),
            None => std::time::Duration::from_secs(3600),
        };
        match worker.replies.recv_timeout(wait) {
            Ok(line) => break line,
            Err(mpsc::RecvTimeoutError::Timeout) if ctx.deadline.is_some() => {
                if let Some(b) = busy {
                    b.ended(None);
                }
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                return Err(anyhow::Error::new(pipe_engine::stage::TimedOut));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(b) = busy {
                    b.ended(None);
                }
                let status = worker.child.wait()?;
                bail!("the worker exited with {status}");
            }
        }
    };
    let reply: WorkerReply =
        serde_json::from_str(&reply).with_context(|| format!("the worker's reply {reply:?}"))?;
    if let Some(b) = busy {
        b.ended(reply.interrupted.then_some(reply.kept));
    }
    if reply.interrupted && stopping_soon() {
        // pipe's signal handler prints what was kept and ends the process: nothing about
        // this instance is recorded as failed.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    IDLE.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((visible, worker));
    if reply.ok {
        return Ok(());
    }
    if reply.bad_data {
        return Err(anyhow::Error::new(BadData(reply.message)));
    }
    bail!("{}", reply.message)
}

/// The worker kinds that keep a resume point when stopped (see `keep_resume_points`).
const KEEPS_RESUME_POINTS: &[&str] = &[crate::stages::slots::names::TRAIN];

/// Set by [`keep_resume_points`]: pipe is stopping, no job starts, and a job that stopped
/// on the signal waits for the process to end instead of failing.
static KEEPING: AtomicBool = AtomicBool::new(false);

/// The jobs of kinds that keep resume points now running in a worker, and the stopped
/// ones' answers, watched by [`keep_resume_points`].
#[derive(Default)]
struct Jobs {
    /// Running: id, worker pid, instance label.
    running: Vec<(u64, i32, String)>,
    /// Stopped on a signal: label and what it kept (`None`: nothing, or no answer).
    stopped: Vec<(String, Option<Kept>)>,
    /// The last id given.
    last: u64,
}

/// [`Jobs`], and the condition a change signals.
fn jobs() -> &'static (Mutex<Jobs>, Condvar) {
    static JOBS: OnceLock<(Mutex<Jobs>, Condvar)> = OnceLock::new();
    JOBS.get_or_init(Default::default)
}

/// A running job of a kind that keeps resume points.
#[derive(Clone, Copy)]
struct Busy(u64);

impl Busy {
    /// Registers the job of `label` running in worker `pid`.
    fn add(pid: i32, label: &str) -> Busy {
        let (lock, _) = jobs();
        let mut j = lock.lock().unwrap_or_else(|e| e.into_inner());
        j.last += 1;
        let id = j.last;
        j.running.push((id, pid, label.to_string()));
        Busy(id)
    }

    /// The job ended: `stopped` holds what it kept if it stopped on a signal.
    fn ended(self, stopped: Option<Option<Kept>>) {
        let (lock, changed) = jobs();
        let mut j = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = j.running.iter().position(|r| r.0 == self.0) {
            let (_, _, label) = j.running.remove(at);
            if let Some(kept) = stopped {
                j.stopped.push((label, kept));
            }
        }
        changed.notify_all();
    }
}

/// Whether pipe is stopping on a signal: [`keep_resume_points`] has begun, or begins
/// within a second (a worker stopped by the terminal's Ctrl-C may answer before pipe's
/// own handler runs).
fn stopping_soon() -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < until {
        if KEEPING.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    KEEPING.load(Ordering::SeqCst)
}

/// On SIGINT or SIGTERM, first of all: asks every worker running a train instance to keep
/// a resume point (it is sent SIGINT: it keeps its last epoch boundary, or ends the epoch
/// under way when that takes no more than about 2 s, and answers). No worker job starts
/// after this. [`kept_resume_points`] waits for the answers.
pub fn keep_resume_points() {
    KEEPING.store(true, Ordering::SeqCst);
    let (lock, _) = jobs();
    let j = lock.lock().unwrap_or_else(|e| e.into_inner());
    for (_, pid, _) in &j.running {
        // SAFETY: kill(2) on a worker process this process started; no memory is touched.
        unsafe {
            libc::kill(*pid, libc::SIGINT);
        }
    }
}

/// After [`keep_resume_points`]: waits up to `within` for the workers' answers, and
/// returns one line per train instance that was running, saying what was kept.
pub fn kept_resume_points(within: std::time::Duration) -> Vec<String> {
    let (lock, changed) = jobs();
    let mut j = lock.lock().unwrap_or_else(|e| e.into_inner());
    let until = std::time::Instant::now() + within;
    while !j.running.is_empty() {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        j = changed
            .wait_timeout(j, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    let mut lines: Vec<String> = j
        .stopped
        .iter()
        .map(|(label, kept)| match kept {
            Some(k) => format!(
                "kept {label} at epoch {} of {}: the next run continues from there",
                k.epoch, k.epochs
            ),
            None => format!(
                "{label} stopped before its first epoch ended: the next run starts it again"
            ),
        })
        .collect();
    lines.extend(j.running.iter().map(|(_, _, label)| {
        format!(
            "{label} kept no resume point within {}s: the next run continues from its latest stored checkpoint",
            within.as_secs()
        )
    }));
    lines
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
