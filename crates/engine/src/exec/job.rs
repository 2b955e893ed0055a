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
use crate::stamp::{FileStamp, TreeStamp};
use crate::store::{Holder, Manifest, Parts, Store, unix_now};

/// One input of a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobInput {
    /// The slot it fills.
    pub slot: String,
    /// The upstream artifact's key, when known at planning.
    pub key: Option<String>,
    /// Otherwise the upstream's job file: its outcome file says the key once it has run.
    #[serde(default)]
    pub job: Option<PathBuf>,
    /// The upstream parts the instance reads, or `None` for the whole artifact.
    #[serde(default)]
    pub reads: Option<Vec<String>>,
    /// What the key takes from this input, once resolved ([`InstanceJob::resolve`]).
    #[serde(default)]
    pub id: Option<String>,
    /// The upstream parts the instance sees, once resolved (name -> key).
    #[serde(default)]
    pub parts: Vec<(String, String)>,
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
    /// The artifact's key: known at planning unless an input's content was not, else
    /// filled in by [`InstanceJob::resolve`] once the inputs exist.
    pub key: Option<String>,
    /// The instance's recipe (its name before its key is known).
    #[serde(default)]
    pub recipe: String,
    /// Sweep point (every variable the instance depends on, through its inputs too):
    /// recorded in the manifest, for people.
    pub point: Json,
    /// The sweep variables the key holds ([`Plan::key_point_of`]): what the stage is told.
    #[serde(default)]
    pub key_point: Json,
    /// Resolved parameters.
    pub params: serde_json::Map<String, Json>,
    /// The parameters that went into the key.
    pub key_params: serde_json::Map<String, Json>,
    /// Inputs, by slot.
    pub inputs: Vec<JobInput>,
    /// Declared files and their hashes.
    pub files: Vec<(String, String)>,
    /// Where each of `files` is, in the same order (rehashed before the stage runs).
    #[serde(default)]
    pub file_paths: Vec<PathBuf>,
    /// The folder relative paths in parameters are resolved against.
    pub base_dir: PathBuf,
    /// The remote cache to push the artifact to, if any.
    #[serde(default)]
    pub remote: Option<String>,
    /// The stage's `timeout`, in seconds.
    #[serde(default)]
    pub timeout: Option<f64>,
    /// The stage's `retries`.
    #[serde(default)]
    pub retries: u32,
    /// What `CUDA_VISIBLE_DEVICES` the instance's processes get, when the local executor
    /// places instances on GPUs (`--gpus`): its GPU, or `""` for a CPU instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible_gpus: Option<String>,
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
            key: inst.key(),
            recipe: inst.recipe.clone(),
            point: plan.point_of(inst),
            key_point: plan.key_point_of(inst),
            params: inst.params.values(),
            key_params: plan.key_params(inst),
            inputs: inst
                .inputs
                .iter()
                .zip(&inst.reads)
                .map(|((slot, up), reads)| JobInput {
                    slot: slot.clone(),
                    key: plan.key(*up),
                    job: None,
                    reads: reads.clone(),
                    id: None,
                    parts: Vec::new(),
                    label: plan.label(*up),
                })
                .collect(),
            files: inst.files.clone(),
            file_paths: inst.file_paths.clone(),
            base_dir: plan.spec.base_dir.clone(),
            remote: None,
            timeout: stage.timeout.map(|t| t.as_secs_f64()),
            retries: stage.retries,
            visible_gpus: None,
        }
    }

    /// The key, once resolved (empty before).
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("")
    }

    /// Fills in each input's key (from its job's outcome file when planning did not know
    /// it) and identity (its content digest, or the keys of the parts read, from its
    /// manifest), then the job's key. Every input must be complete in the cache. A key
    /// known at planning must come out the same.
    pub fn resolve(&mut self, store: &Store, kind: &dyn StageKind) -> Result<(), String> {
        if self.key.is_some() && self.inputs.iter().all(|i| i.id.is_some()) {
            return Ok(());
        }
        for input in &mut self.inputs {
            if input.key.is_none()
                && let Some(job) = input.job.as_deref()
            {
                input.key = super::job_outcome::upstream_key(store, job)?;
            }
            let Some(key) = input.key.as_deref() else {
                return Err(format!(
                    "the key of input {} is not known (its job recorded none)",
                    input.label
                ));
            };
            let manifest = store.complete_manifest(key).ok_or_else(|| {
                format!(
                    "input {} ({}) is missing or damaged in the cache",
                    input.label,
                    crate::key::short(key, 12)
                )
            })?;
            let (id, seen) = match &input.reads {
                None => (manifest.digest(), manifest.parts.into_iter().collect()),
                Some(names) => {
                    let chosen: Vec<(String, String)> = names
                        .iter()
                        .map(|n| {
                            (
                                n.clone(),
                                manifest.parts.get(n).cloned().unwrap_or_default(),
                            )
                        })
                        .collect();
                    (crate::key::parts_id(&chosen), chosen)
                }
            };
            input.id = Some(id);
            input.parts = seen;
        }
        let ids = self.input_ids();
        let key = crate::key::compute_key(
            &self.kind,
            kind.version(),
            &self.key_params,
            &ids,
            &self.files,
        );
        match &self.key {
            Some(k) if *k != key => Err(format!(
                "its inputs in the cache are not what the run planned with (key {} planned, {} now); run again",
                crate::key::short(k, 12),
                crate::key::short(&key, 12)
            )),
            _ => {
                self.key = Some(key);
                Ok(())
            }
        }
    }

    /// Slot -> identity of each input (empty identities before [`InstanceJob::resolve`]).
    pub fn input_ids(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .map(|i| (i.slot.clone(), i.id.clone().unwrap_or_default()))
            .collect()
    }

    /// Slot -> the upstream parts each input shows (empty before [`InstanceJob::resolve`]).
    pub fn input_parts(&self) -> Vec<crate::stage::InputParts> {
        self.inputs
            .iter()
            .map(|i| (i.slot.clone(), i.parts.clone()))
            .collect()
    }

    /// Every artifact the job reads: its inputs' keys and the keys of the inputs' parts
    /// it sees (once resolved).
    pub fn reads(&self) -> Vec<String> {
        let mut keys: Vec<String> = self
            .inputs
            .iter()
            .flat_map(|i| {
                i.key
                    .iter()
                    .cloned()
                    .chain(i.parts.iter().map(|(_, k)| k.clone()))
            })
            .filter(|k| !k.is_empty())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The keys of the job's parts (once resolved).
    pub fn part_keys(&self, kind: &dyn StageKind) -> Vec<String> {
        let params = Params::new(self.params.clone());
        kind.parts(&params, &self.input_ids(), &self.input_parts())
            .into_iter()
            .map(|p| p.key)
            .collect()
    }

    /// The manifest every artifact of this job starts from.
    fn template(&self, store: &Store, kind: &dyn StageKind, params: &Params) -> Manifest {
        Manifest {
            key: self.key().to_string(),
            kind: self.kind.clone(),
            version: self.version,
            stage: self.stage.clone(),
            pipeline: self.pipeline.clone(),
            point: self.point.clone(),
            params: Json::Object(self.key_params.clone()),
            inputs: self
                .inputs
                .iter()
                .map(|i| (i.slot.clone(), i.key.clone().unwrap_or_default()))
                .collect::<BTreeMap<_, _>>(),
            declared_files: self.files.iter().cloned().collect(),
            files: Vec::new(),
            parts: kind
                .parts(params, &self.input_ids(), &self.input_parts())
                .into_iter()
                .map(|p| (p.name, p.key))
                .collect(),
            started: 0.0,
            seconds: 0.0,
            pipe_version: env!("CARGO_PKG_VERSION").to_string(),
            host: store.host().to_string(),
        }
    }
}

/// Computes a job under its key's lock and stores the artifact on success; a failed job
/// leaves nothing in the cache but its log. The job is resolved first
/// ([`InstanceJob::resolve`]): an instance whose key turns out cached is done at once.
pub fn compute_instance(
    job: &mut InstanceJob,
    kind: &dyn StageKind,
    store: &Store,
    threads: usize,
    on_wait: &mut dyn FnMut(&Holder),
    on_sealed: &mut dyn FnMut(),
) -> Outcome {
    if let Err(message) = check_version(job, kind) {
        return failed(
            message,
            store.log_path(job.key.as_deref().unwrap_or(&job.recipe)),
        );
    }
    if let Err(message) = job.resolve(store, kind) {
        return failed(
            message,
            store.log_path(job.key.as_deref().unwrap_or(&job.recipe)),
        );
    }
    let job: &InstanceJob = job;
    let key = job.key();
    let log_path = store.log_path(key);
    if store.is_complete(key) {
        return Outcome::Cached;
    }
    // The lock lists what the instance reads, so that no command removes it meanwhile.
    let _lock = match store.lock_reading(key, &job.reads(), on_wait) {
        Ok(l) => l,
        Err(e) => {
            return failed(
                format!(
                    "cannot take the lock for key {}: {e}",
                    crate::key::short(key, 12)
                ),
                log_path,
            );
        }
    };
    if store.is_complete(key) {
        return Outcome::Cached;
    }
    // A damaged artifact (a file missing or of the wrong size) is replaced.
    if store.artifact_dir(key).exists()
        && let Err(e) = store.remove(key)
    {
        return failed(
            format!("cannot remove the damaged artifact {key}: {e}"),
            log_path,
        );
    }
    match Ready::new(job, kind, store, threads, log_path.clone()) {
        Ok(ready) => ready.run(on_sealed),
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
    /// What it reads as it was when the stage started.
    seen: Seen,
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
        let log = crate::store::create_log(&log_path)
            .map_err(|e| format!("cannot create log {}: {e}", log_path.display()))?;
        let inputs = input_artifacts(job, store)?;
        let seen = Seen::take(job, store, &inputs)?;
        let params = Params::new(job.params.clone());
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
                template: job.template(store, kind, &params),
            },
            params,
            seen,
        })
    }

    /// Runs the stage, again after a failure while retries are left (never after bad
    /// data, nor once pipe is stopping on a signal), and stores the output of the attempt
    /// that succeeds. `on_sealed` is called once the output is sealed, before it waits
    /// for the group commit (the instance needs no CPU from then on).
    fn run(mut self, on_sealed: &mut dyn FnMut()) -> Outcome {
        let retries = self.job.retries;
        let mut attempt = 0;
        loop {
            let (message, bad_data, seconds) = match self.run_once(attempt) {
                Err(message) => return failed(message, self.log_path),
                Ok(Attempt::Done {
                    tmp,
                    started,
                    seconds,
                }) => {
                    // Nothing is stored from inputs or declared files that changed while
                    // the stage read them.
                    if let Err(message) = self.seen.unchanged(self.store) {
                        self.store.discard(&tmp);
                        let _ = self.log.write_all(
                            format!("# failed after {seconds:.3}s: {message}\n").as_bytes(),
                        );
                        return failed(message, self.log_path);
                    }
                    return self.commit(&tmp, started, seconds, on_sealed);
                }
                Ok(Attempt::Failed {
                    message,
                    bad_data,
                    seconds,
                }) => (message, bad_data, seconds),
            };
            // After SIGINT or SIGTERM the attempt was most likely killed by pipe itself:
            // no retry starts while the run is being stopped.
            if !bad_data && attempt < retries && !crate::stage::stopping() {
                attempt += 1;
                let _ = writeln!(
                    self.log,
                    "# attempt {attempt} failed after {seconds:.3}s: {message}; retrying ({} of {} retries left)",
                    retries - attempt + 1,
                    retries
                );
                continue;
            }
            let _ = self
                .log
                .write_all(format!("# failed after {seconds:.3}s: {message}\n").as_bytes());
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
            .begin(job.key())
            .map_err(|e| format!("cannot create a temp folder in the cache: {e}"))?;
        // One write: the log is unbuffered, and `writeln!` writes each piece on its own.
        let header = format!(
            "# pipe {}: stage {} ({}), key {}, point {}, {} thread(s) on {}{}\n",
            env!("CARGO_PKG_VERSION"),
            job.stage,
            job.kind,
            job.key(),
            job.point,
            self.threads,
            self.store.host(),
            if attempt > 0 {
                format!(", attempt {} of {}", attempt + 1, job.retries + 1)
            } else {
                String::new()
            }
        );
        let _ = self.log.write_all(header.as_bytes());
        let started = unix_now();
        let clock = Instant::now();
        let timeout = job
            .timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(std::time::Duration::from_secs_f64);
        let label = match crate::plan::point_label(&job.point).as_str() {
            "-" => job.stage.clone(),
            point => format!("{}[{point}]", job.stage),
        };
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
                key: job.key(),
                label: &label,
                point: &job.key_point,
                deadline: timeout.map(|t| clock + t),
                visible_gpus: job.visible_gpus.as_deref(),
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

    /// Stores the output in `tmp` as the instance's artifact, with the attempt's timing:
    /// seals it, calls `on_sealed`, then publishes it (group commit, rename).
    fn commit(
        mut self,
        tmp: &Path,
        started: f64,
        seconds: f64,
        on_sealed: &mut dyn FnMut(),
    ) -> Outcome {
        let mut draft = self.parts.template.clone();
        draft.started = started;
        draft.seconds = seconds;
        let stored = self.store.seal(tmp, draft).and_then(|sealed| {
            on_sealed();
            self.store.publish(tmp, &sealed)
        });
        match stored {
            Ok(()) => {
                let _ = self
                    .log
                    .write_all(format!("# done in {seconds:.3}s\n").as_bytes());
                Outcome::Executed { seconds }
            }
            Err(e) => {
                let message = format!("could not store the artifact: {e}");
                let _ = self
                    .log
                    .write_all(format!("# failed: {message}\n").as_bytes());
                failed(message, self.log_path)
            }
        }
    }
}

/// Each input's artifact; an input that is not complete in the cache is an error (after a
/// short wait while another process holds its lock: it may be putting it back).
fn input_artifacts(job: &InstanceJob, store: &Store) -> Result<Vec<InputArtifact>, String> {
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        let key = input.key.clone().unwrap_or_default();
        if !store.is_complete(&key) {
            store.wait_while_locked(&key, std::time::Duration::from_secs(10));
        }
        if !store.is_complete(&key) {
            return Err(format!(
                "input {} ({}) is missing or damaged in the cache",
                input.label,
                crate::key::short(&key, 12)
            ));
        }
        inputs.push(InputArtifact {
            slot: input.slot.clone(),
            id: input.id.clone().unwrap_or_default(),
            parts: input.parts.clone(),
            dir: store.artifact_dir(&key),
            key,
        });
    }
    Ok(inputs)
}

/// What an instance reads, as it was when it started: the stamp of every input artifact
/// and part it sees, and of every declared file (rehashed then, so a file edited since
/// planning is caught before the stage runs).
struct Seen {
    /// (what it is, for messages; its folder; its stamp).
    trees: Vec<(String, PathBuf, TreeStamp)>,
    /// (declared file name; where it is; its stamp).
    files: Vec<(String, PathBuf, FileStamp)>,
}

impl Seen {
    /// Stamps what `job` reads, and checks that each declared file still has the content
    /// its key was computed from.
    fn take(job: &InstanceJob, store: &Store, inputs: &[InputArtifact]) -> Result<Seen, String> {
        let mut trees = Vec::new();
        for (input, art) in job.inputs.iter().zip(inputs) {
            let mut dirs = vec![(format!("input {}", input.label), art.dir.clone())];
            for (name, key) in &art.parts {
                dirs.push((
                    format!("part {name} of input {}", input.label),
                    store.artifact_dir(key),
                ));
            }
            for (what, dir) in dirs {
                let stamp = TreeStamp::of(&dir)
                    .map_err(|e| format!("cannot read {what} ({}): {e}", dir.display()))?;
                trees.push((what, dir, stamp));
            }
        }
        let mut files = Vec::new();
        for ((name, planned), path) in job.files.iter().zip(&job.file_paths) {
            let (hash, stamp) = crate::stamp::hash_file(path)
                .map_err(|e| format!("cannot read declared file {name}: {e}"))?;
            if &hash != planned {
                return Err(format!(
                    "declared file {name} changed after the run planned this instance (its key holds the earlier content); nothing was run: run again"
                ));
            }
            files.push((name.clone(), path.clone(), stamp));
        }
        Ok(Seen { trees, files })
    }

    /// Fails, naming what changed, unless everything stamped is as it was: an input or
    /// part written, replaced, added to or removed (by the stage itself or by another
    /// process), or a declared file changed. An input found damaged is removed, so the
    /// next run computes it again.
    fn unchanged(&self, store: &Store) -> Result<(), String> {
        for (what, dir, before) in &self.trees {
            let change = match TreeStamp::of(dir) {
                Ok(now) => now.change_since(before),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Some("the folder was removed".to_string())
                }
                Err(e) => Some(format!("it cannot be read now: {e}")),
            };
            let Some(change) = change else { continue };
            let key = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut note = String::new();
            if store.manifest(&key).is_some() && store.check(&key).is_err() {
                let _ = store.remove(&key);
                note = "; it no longer matches its manifest, so it was removed and the next run computes it again".into();
            }
            return Err(format!(
                "{what} changed while the stage ran ({change}), so nothing was stored: a stage must not write its inputs, nor anything change the cache behind pipe's back{note}"
            ));
        }
        for (name, path, before) in &self.files {
            if FileStamp::of(path).ok().as_ref() != Some(before) {
                return Err(format!(
                    "declared file {name} changed while the stage ran; nothing was stored: run again"
                ));
            }
        }
        Ok(())
    }
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
