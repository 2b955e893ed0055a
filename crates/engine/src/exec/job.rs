//! One instance as a self-contained job: everything needed to compute it without the
//! pipeline file (what a cluster job reads from the shared cache), and [`compute_instance`], which
//! computes an instance under its key's lock exactly the same way for every executor.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Instant;

use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::Outcome;
use crate::plan::Plan;
use crate::stage::{BadData, InputArtifact, Params, RunContext, StageKind, TimedOut};
use crate::store::{Holder, Manifest, Parts, Store, unix_now};

/// One input of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInput {
    /// The slot it fills.
    pub slot: String,
    /// The upstream artifact's key.
    pub key: String,
    /// The upstream instance, for messages (`stage[point]`).
    pub label: String,
}

/// Everything needed to compute one instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InstanceJob {
    /// Pipeline name (informational, goes into the manifest).
    pub pipeline: String,
    /// Stage name.
    pub stage: String,
    /// Stage kind name.
    pub kind: String,
    /// The kind's code version the key was computed with.
    pub version: u32,
    /// The artifact's key.
    pub key: String,
    /// Sweep point.
    pub point: Json,
    /// Resolved parameters.
    pub params: serde_json::Map<String, Json>,
    /// The parameters that went into the key.
    pub key_params: serde_json::Map<String, Json>,
    /// Inputs, by slot.
    pub inputs: Vec<JobInput>,
    /// Declared files and their hashes.
    pub files: Vec<(String, String)>,
    /// The folder relative paths in parameters are resolved against.
    pub base_dir: PathBuf,
    /// The remote cache to push the artifact to, if any.
    #[serde(default)]
    pub remote: Option<String>,
    /// Keys of the instance's parts (checkpoints), pushed with it.
    #[serde(default)]
    pub parts: Vec<String>,
    /// The stage's `timeout`, in seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// The stage's `retries`.
    #[serde(default)]
    pub retries: u32,
}

impl InstanceJob {
    /// The job of instance `n` of a plan.
    pub fn of(plan: &Plan, n: NodeIndex) -> InstanceJob {
        let inst = &plan.graph[n];
        let stage = &plan.spec.stages[inst.stage];
        InstanceJob {
            pipeline: plan.spec.name.clone(),
            stage: stage.name.clone(),
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            key: inst.key.clone(),
            point: inst.point.clone(),
            params: inst.params.values().clone(),
            key_params: inst.key_params.clone(),
            inputs: inst
                .inputs
                .iter()
                .map(|(slot, up)| JobInput {
                    slot: slot.clone(),
                    key: plan.graph[*up].key.clone(),
                    label: plan.label(*up),
                })
                .collect(),
            files: inst.files.clone(),
            base_dir: plan.spec.base_dir.clone(),
            remote: None,
            parts: Vec::new(),
            timeout: stage.timeout.map(|t| t.as_secs_f64()),
            retries: stage.retries,
        }
    }

    /// The manifest every artifact of this job starts from.
    fn template(&self, store: &Store) -> Manifest {
        Manifest {
            key: self.key.clone(),
            kind: self.kind.clone(),
            version: self.version,
            stage: self.stage.clone(),
            pipeline: self.pipeline.clone(),
            point: self.point.clone(),
            params: Json::Object(self.key_params.clone()),
            inputs: self
                .inputs
                .iter()
                .map(|i| (i.slot.clone(), i.key.clone()))
                .collect::<BTreeMap<_, _>>(),
            declared_files: self.files.iter().cloned().collect(),
            files: Vec::new(),
            started: 0.0,
            seconds: 0.0,
            pipe_version: env!("CARGO_PKG_VERSION").to_string(),
            host: store.host().to_string(),
        }
    }
}

/// Computes a job under its key's lock and stores the artifact on success; a failed job
/// leaves nothing in the cache but its log.
pub fn compute_instance(
    job: &InstanceJob,
    kind: &dyn StageKind,
    store: &Store,
    threads: usize,
    on_wait: &mut dyn FnMut(&Holder),
) -> Outcome {
    let log_path = store.log_path(&job.key);
    if let Err(message) = check_version(job, kind) {
        return failed(message, log_path);
    }
    let _lock = match store.lock(&job.key, on_wait) {
        Ok(l) => l,
        Err(e) => {
            return failed(
                format!("cannot take the lock for key {}: {e}", &job.key[..12]),
                log_path,
            );
        }
    };
    if store.is_complete(&job.key) {
        return Outcome::Cached;
    }
    // A damaged artifact (a file missing or of the wrong size) is replaced.
    if store.artifact_dir(&job.key).exists()
        && let Err(e) = store.remove(&job.key)
    {
        return failed(
            format!("cannot remove the damaged artifact {}: {e}", job.key),
            log_path,
        );
    }
    match Ready::new(job, kind, store, threads, log_path.clone()) {
        Ok(ready) => ready.run(),
        Err(message) => failed(message, log_path),
    }
}

/// A failure that is not the data's fault, with the instance's log.
fn failed(message: String, log: PathBuf) -> Outcome {
    Outcome::Failed {
        message,
        log,
        bad_data: false,
    }
}

/// Fails when this binary's version of the kind is not the one the job was planned with.
fn check_version(job: &InstanceJob, kind: &dyn StageKind) -> Result<(), String> {
    if kind.version() == job.version {
        return Ok(());
    }
    Err(format!(
        "this pipe has version {} of stage kind `{}`, the job was planned with version {}; \
         use the same pipe binary to plan and to run",
        kind.version(),
        job.kind,
        job.version
    ))
}

/// An instance ready to run under its key's lock: its log created and its inputs found
/// complete in the cache.
struct Ready<'a> {
    /// The instance.
    job: &'a InstanceJob,
    /// Its kind.
    kind: &'a dyn StageKind,
    /// The cache.
    store: &'a Store,
    /// How many threads it may use.
    threads: usize,
    /// Its log, open for appending.
    log: File,
    /// Where the log is.
    log_path: PathBuf,
    /// Its input artifacts.
    inputs: Vec<InputArtifact>,
    /// Its parts, and the manifest its artifacts start from.
    parts: Parts,
    /// Its resolved parameters.
    params: Params,
}

/// How one attempt at running the stage ended.
enum Attempt {
    /// The stage wrote its output into `tmp`.
    Done {
        /// The temp folder holding the output.
        tmp: PathBuf,
        /// Unix time the attempt started.
        started: f64,
        /// Seconds the stage ran.
        seconds: f64,
    },
    /// The stage failed (its temp folder is discarded).
    Failed {
        /// What went wrong.
        message: String,
        /// Whether the data was at fault (such failures are not retried).
        bad_data: bool,
        /// Seconds the stage ran.
        seconds: f64,
    },
}

impl<'a> Ready<'a> {
    /// Creates (empties) the log at `log_path` and checks that every input is complete.
    fn new(
        job: &'a InstanceJob,
        kind: &'a dyn StageKind,
        store: &'a Store,
        threads: usize,
        log_path: PathBuf,
    ) -> Result<Ready<'a>, String> {
        // Append mode: a worker process writes into the same log while this one holds it open.
        let log = std::fs::write(&log_path, b"")
            .and_then(|_| std::fs::OpenOptions::new().append(true).open(&log_path))
            .map_err(|e| format!("cannot create log {}: {e}", log_path.display()))?;
        let inputs = input_artifacts(job, store)?;
        Ok(Ready {
            job,
            kind,
            store,
            threads,
            log,
            log_path,
            inputs,
            parts: Parts {
                cache: store.root().to_path_buf(),
                template: job.template(store),
            },
            params: Params::new(job.params.clone()),
        })
    }

    /// Runs the stage, again after a failure while retries are left (never after bad
    /// data), and stores the output of the attempt that succeeds.
    fn run(mut self) -> Outcome {
        let retries = self.job.retries;
        let mut attempt = 0;
        loop {
            let (message, bad_data, seconds) = match self.run_once(attempt) {
                Err(message) => return failed(message, self.log_path),
                Ok(Attempt::Done {
                    tmp,
                    started,
                    seconds,
                }) => return self.commit(&tmp, started, seconds),
                Ok(Attempt::Failed {
                    message,
                    bad_data,
                    seconds,
                }) => (message, bad_data, seconds),
            };
            if !bad_data && attempt < retries {
                attempt += 1;
                let _ = writeln!(
                    self.log,
                    "# attempt {attempt} failed after {seconds:.3}s: {message}; retrying ({} of {} retries left)",
                    retries - attempt + 1,
                    retries
                );
                continue;
            }
            let _ = writeln!(self.log, "# failed after {seconds:.3}s: {message}");
            return Outcome::Failed {
                message: if attempt > 0 {
                    format!("{message} (after {} attempts)", attempt + 1)
                } else {
                    message
                },
                log: self.log_path,
                bad_data,
            };
        }
    }

    /// Runs the stage once (`attempt` counts from 0) into a new temp folder, which is
    /// discarded if the stage fails. Fails only when no temp folder can be made.
    fn run_once(&mut self, attempt: u32) -> Result<Attempt, String> {
        let job = self.job;
        let tmp = self
            .store
            .begin(&job.key)
            .map_err(|e| format!("cannot create a temp folder in the cache: {e}"))?;
        let _ = writeln!(
            self.log,
            "# pipe {}: stage {} ({}), key {}, point {}, {} thread(s) on {}{}",
            env!("CARGO_PKG_VERSION"),
            job.stage,
            job.kind,
            job.key,
            job.point,
            self.threads,
            self.store.host(),
            if attempt > 0 {
                format!(", attempt {} of {}", attempt + 1, job.retries + 1)
            } else {
                String::new()
            }
        );
        let started = unix_now();
        let clock = Instant::now();
        let timeout = job
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(std::time::Duration::from_secs_f64);
        let result = {
            let mut ctx = RunContext {
                params: &self.params,
                inputs: &self.inputs,
                parts: &self.parts,
                out: &tmp,
                log: &mut self.log,
                log_path: &self.log_path,
                threads: self.threads,
                base_dir: &job.base_dir,
                key: &job.key,
                point: &job.point,
                deadline: timeout.map(|t| clock + t),
            };
            let kind = self.kind;
            std::panic::catch_unwind(AssertUnwindSafe(|| kind.run(&mut ctx)))
        };
        let seconds = clock.elapsed().as_secs_f64();
        let Some((message, bad_data)) = failure(result, seconds, job.timeout) else {
            return Ok(Attempt::Done {
                tmp,
                started,
                seconds,
            });
        };
        self.store.discard(&tmp);
        Ok(Attempt::Failed {
            message,
            bad_data,
            seconds,
        })
    }

    /// Stores the output in `tmp` as the instance's artifact, with the attempt's timing.
    fn commit(mut self, tmp: &Path, started: f64, seconds: f64) -> Outcome {
        let mut draft = self.parts.template.clone();
        draft.started = started;
        draft.seconds = seconds;
        match self.store.commit(tmp, draft) {
            Ok(_) => {
                let _ = writeln!(self.log, "# done in {seconds:.3}s");
                Outcome::Executed { seconds }
            }
            Err(e) => {
                let message = format!("could not store the artifact: {e}");
                let _ = writeln!(self.log, "# failed: {message}");
                failed(message, self.log_path)
            }
        }
    }
}

/// Each input's artifact; an input that is not complete in the cache is an error.
fn input_artifacts(job: &InstanceJob, store: &Store) -> Result<Vec<InputArtifact>, String> {
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        if !store.is_complete(&input.key) {
            return Err(format!(
                "input {} ({}) is missing or damaged in the cache",
                input.label,
                &input.key[..12]
            ));
        }
        inputs.push(InputArtifact {
            slot: input.slot.clone(),
            key: input.key.clone(),
            dir: store.artifact_dir(&input.key),
        });
    }
    Ok(inputs)
}

/// What a stage's run (possibly a panic) says went wrong, and whether the data was at
/// fault; `None` if it succeeded. `seconds` is how long it ran, `timeout` its limit.
fn failure(
    result: std::thread::Result<anyhow::Result<()>>,
    seconds: f64,
    timeout: Option<f64>,
) -> Option<(String, bool)> {
    match result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            let bad_data = e.chain().any(|c| c.is::<BadData>());
            if e.chain().any(|c| c.is::<TimedOut>()) {
                Some((
                    format!(
                        "timed out: still running after {:.0}s (timeout = {:?}s), killed",
                        seconds,
                        timeout.unwrap_or(0.0)
                    ),
                    bad_data,
                ))
            } else {
                Some((format!("{e:#}"), bad_data))
            }
        }
        Err(panic) => Some((
            format!(
                "the stage panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            ),
            false,
        )),
    }
}
