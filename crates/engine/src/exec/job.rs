//! One instance as a self-contained job: everything needed to compute it without the
//! pipeline file (what a cluster job reads from the shared cache), and [`run_job`], which
//! computes an instance under its key's lock exactly the same way for every executor.

use std::collections::BTreeMap;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
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
pub struct Job {
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

impl Job {
    /// The job of instance `n` of a plan.
    pub fn of(plan: &Plan, n: NodeIndex) -> Job {
        let inst = &plan.graph[n];
        let stage = &plan.spec.stages[inst.stage];
        Job {
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
pub fn run_job(
    job: &Job,
    kind: &dyn StageKind,
    store: &Store,
    threads: usize,
    on_wait: &mut dyn FnMut(&Holder),
) -> Outcome {
    let log_path = store.log_path(&job.key);
    let fail = |message: String| Outcome::Failed {
        message,
        log: log_path.clone(),
        bad_data: false,
    };
    if kind.version() != job.version {
        return fail(format!(
            "this pipe has version {} of stage kind `{}`, the job was planned with version {}; \
             use the same pipe binary to plan and to run",
            kind.version(),
            job.kind,
            job.version
        ));
    }
    let _lock = match store.lock(&job.key, on_wait) {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "cannot take the lock for key {}: {e}",
                &job.key[..12]
            ));
        }
    };
    if store.is_complete(&job.key) {
        return Outcome::Cached;
    }
    // A damaged artifact (a file missing or of the wrong size) is replaced.
    if store.artifact_dir(&job.key).exists()
        && let Err(e) = store.remove(&job.key)
    {
        return fail(format!(
            "cannot remove the damaged artifact {}: {e}",
            job.key
        ));
    }
    // Append mode: a worker process writes into the same log while this one holds it open.
    let opened = std::fs::write(&log_path, b"")
        .and_then(|_| std::fs::OpenOptions::new().append(true).open(&log_path));
    let mut log = match opened {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create log {}: {e}", log_path.display())),
    };
    let mut inputs = Vec::with_capacity(job.inputs.len());
    for input in &job.inputs {
        if !store.is_complete(&input.key) {
            return fail(format!(
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
    let parts = Parts {
        cache: store.root().to_path_buf(),
        template: job.template(store),
    };
    let params = Params::new(job.params.clone());
    let mut attempt = 0;
    let (tmp, started, seconds) = loop {
        let tmp = match store.begin(&job.key) {
            Ok(t) => t,
            Err(e) => return fail(format!("cannot create a temp folder in the cache: {e}")),
        };
        let _ = writeln!(
            log,
            "# pipe {}: stage {} ({}), key {}, point {}, {} thread(s) on {}{}",
            env!("CARGO_PKG_VERSION"),
            job.stage,
            job.kind,
            job.key,
            job.point,
            threads,
            store.host(),
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
                params: &params,
                inputs: &inputs,
                parts: &parts,
                out: &tmp,
                log: &mut log,
                log_path: &log_path,
                threads,
                base_dir: &job.base_dir,
                key: &job.key,
                point: &job.point,
                deadline: timeout.map(|t| clock + t),
            };
            std::panic::catch_unwind(AssertUnwindSafe(|| kind.run(&mut ctx)))
        };
        let seconds = clock.elapsed().as_secs_f64();
        let mut bad_data = false;
        let error = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                bad_data = e.chain().any(|c| c.is::<BadData>());
                if e.chain().any(|c| c.is::<TimedOut>()) {
                    Some(format!(
                        "timed out: still running after {:.0}s (timeout = {:?}s), killed",
                        seconds,
                        job.timeout.unwrap_or(0.0)
                    ))
                } else {
                    Some(format!("{e:#}"))
                }
            }
            Err(panic) => Some(format!(
                "the stage panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)")
            )),
        };
        let Some(message) = error else {
            break (tmp, started, seconds);
        };
        store.discard(&tmp);
        if !bad_data && attempt < job.retries {
            attempt += 1;
            let _ = writeln!(
                log,
                "# attempt {attempt} failed after {seconds:.3}s: {message}; retrying ({} of {} retries left)",
                job.retries - attempt + 1,
                job.retries
            );
            continue;
        }
        let _ = writeln!(log, "# failed after {seconds:.3}s: {message}");
        return Outcome::Failed {
            message: if attempt > 0 {
                format!("{message} (after {} attempts)", attempt + 1)
            } else {
                message
            },
            log: log_path,
            bad_data,
        };
    };
    let mut draft = parts.template.clone();
    draft.started = started;
    draft.seconds = seconds;
    match store.commit(&tmp, draft) {
        Ok(_) => {
            let _ = writeln!(log, "# done in {seconds:.3}s");
            Outcome::Executed { seconds }
        }
        Err(e) => {
            let message = format!("could not store the artifact: {e}");
            let _ = writeln!(log, "# failed: {message}");
            fail(message)
        }
    }
}
