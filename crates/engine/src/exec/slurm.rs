//! The Slurm executor: every instance that must run becomes one `sbatch` job whose
//! dependencies are its inputs' jobs (`--dependency=afterok:...`). A job runs
//! `pipe job --cache DIR JOBFILE` on its node, which computes the instance from the job
//! file in the shared cache with [`run_job`](super::job::run_job), exactly as a local run
//! does. Progress comes from one `squeue` call per poll interval for the whole run.
//!
//! Each run keeps its files in `CACHE/runs/RUN/`: `run.json` (the job ids), `jobs/KEY.json`
//! (the job), `jobs/KEY.outcome.json` (written by the job), `logs/KEY.out` (Slurm's log).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use serde::{Deserialize, Serialize};

use super::job::Job;
use super::{Event, Observer, Outcome, RunOptions, RunReport, Triage, conclude, triage};
use crate::error::Error;
use crate::plan::Plan;
use crate::store::{Store, unix_now, write_atomic};

/// Options of a Slurm run.
#[derive(Clone, Debug)]
pub struct SlurmOptions {
    /// `--partition` for every job.
    pub partition: Option<String>,
    /// Extra `sbatch` arguments, passed as given.
    pub args: Vec<String>,
    /// Submit and return without waiting.
    pub detach: bool,
    /// Time between two `squeue` polls.
    pub poll: Duration,
    /// The `pipe` binary the jobs run (on a filesystem the nodes share).
    pub exe: PathBuf,
}

/// One submitted job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The instance's key.
    pub key: String,
    /// `stage[point]`.
    pub label: String,
    /// Slurm's job id.
    pub job_id: String,
    /// Slurm's log of the job.
    pub slurm_log: PathBuf,
}

/// A run's record, `runs/RUN/run.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id (also in every job name: `pipe-RUN-STAGE`).
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Unix time of submission.
    pub submitted: f64,
    /// The jobs, in submission order.
    pub jobs: Vec<JobRecord>,
    /// Whether the run has ended (every job done, failed or cancelled).
    pub finished: bool,
}

/// What a job writes when it ends, `jobs/KEY.outcome.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobOutcome {
    /// `executed`, `cached` or `failed`.
    pub outcome: String,
    /// The failure, if any.
    pub message: Option<String>,
    /// Whether the failure was the data's fault.
    pub bad_data: bool,
    /// Seconds the stage ran.
    pub seconds: f64,
}

impl JobOutcome {
    /// The record of an outcome.
    pub fn of(o: &Outcome) -> JobOutcome {
        match o {
            Outcome::Executed { seconds } => JobOutcome {
                outcome: "executed".into(),
                message: None,
                bad_data: false,
                seconds: *seconds,
            },
            Outcome::Cached => JobOutcome {
                outcome: "cached".into(),
                message: None,
                bad_data: false,
                seconds: 0.0,
            },
            Outcome::Failed {
                message, bad_data, ..
            } => JobOutcome {
                outcome: "failed".into(),
                message: Some(message.clone()),
                bad_data: *bad_data,
                seconds: 0.0,
            },
            Outcome::Skipped { reason } => JobOutcome {
                outcome: "skipped".into(),
                message: Some(reason.clone()),
                bad_data: false,
                seconds: 0.0,
            },
        }
    }
}

/// Where the runs' files live.
pub fn runs_dir(store: &Store) -> PathBuf {
    store.root().join("runs")
}

/// Where a job's outcome goes, beside its job file.
pub fn outcome_path(job_file: &Path) -> PathBuf {
    job_file.with_extension("outcome.json")
}

fn record_path(store: &Store, id: &str) -> PathBuf {
    runs_dir(store).join(id).join("run.json")
}

/// Saves a run record atomically.
pub fn save_record(store: &Store, r: &RunRecord) -> Result<(), Error> {
    let path = record_path(store, &r.id);
    let text = serde_json::to_vec_pretty(r).unwrap_or_default();
    write_atomic(&path, &text).map_err(|e| Error::io(&path, e))
}

/// Every run record in the cache, oldest first.
pub fn records(store: &Store) -> Vec<RunRecord> {
    let mut out: Vec<RunRecord> = std::fs::read_dir(runs_dir(store))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("run.json")).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .collect();
    out.sort_by(|a: &RunRecord, b| a.submitted.total_cmp(&b.submitted));
    out
}

/// The run with this id or unique id prefix.
pub fn find_record(store: &Store, id: &str) -> Result<RunRecord, Error> {
    let all = records(store);
    let hits: Vec<&RunRecord> = all.iter().filter(|r| r.id.starts_with(id)).collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::usage(format!(
            "no Slurm run `{id}` in {}; runs: {}",
            runs_dir(store).display(),
            if all.is_empty() {
                "none".to_string()
            } else {
                all.iter()
                    .map(|r| r.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))),
        many => Err(Error::usage(format!(
            "`{id}` names {} runs ({}); give more of the id",
            many.len(),
            many.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A job of an unfinished run, as `pipe status` shows it.
#[derive(Clone, Debug)]
pub struct LiveJob {
    /// The run id.
    pub run: String,
    /// Slurm's job id.
    pub job_id: String,
    /// Slurm's state (`PENDING`, `RUNNING`, ...), or `UNKNOWN` when Slurm cannot say.
    pub state: String,
    /// Slurm's reason.
    pub reason: String,
}

/// The queued or running jobs, by key, of unfinished runs that compute one of `keys`
/// (one `squeue` call). Runs none of whose jobs is queued or running any more are marked
/// finished.
pub fn live_jobs(store: &Store, keys: &HashSet<&str>) -> HashMap<String, LiveJob> {
    let mut out = HashMap::new();
    let open: Vec<RunRecord> = records(store).into_iter().filter(|r| !r.finished).collect();
    if open.is_empty() {
        return out;
    }
    let ids: Vec<&str> = open
        .iter()
        .flat_map(|r| r.jobs.iter().map(|j| j.job_id.as_str()))
        .collect();
    let Ok(states) = query(&ids) else {
        return out;
    };
    for mut r in open {
        let mut active = false;
        for j in &r.jobs {
            let Some(q) = states.get(&j.job_id).filter(|q| is_active(&q.state)) else {
                continue;
            };
            active = true;
            if keys.contains(j.key.as_str()) {
                out.insert(
                    j.key.clone(),
                    LiveJob {
                        run: r.id.clone(),
                        job_id: j.job_id.clone(),
                        state: q.state.clone(),
                        reason: q.reason.clone(),
                    },
                );
            }
        }
        if !active {
            r.finished = true;
            let _ = save_record(store, &r);
        }
    }
    out
}

/// A job's state as `squeue` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueState {
    /// `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, `CANCELLED`, ...
    pub state: String,
    /// Slurm's reason (`Dependency`, `None`, `NonZeroExitCode`, ...).
    pub reason: String,
}

/// Parses `squeue -h -o '%i|%T|%r'` output.
pub fn parse_squeue(text: &str) -> HashMap<String, QueueState> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().splitn(3, '|');
            let id = f.next()?.trim().to_string();
            let state = f.next()?.trim().to_string();
            let reason = f.next().unwrap_or("").trim().to_string();
            (!id.is_empty()).then_some((id, QueueState { state, reason }))
        })
        .collect()
}

/// The states of these jobs, finished ones included, in one `squeue` call. Jobs Slurm has
/// forgotten are absent.
pub fn query(ids: &[&str]) -> Result<HashMap<String, QueueState>, String> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T|%r", "-j", &ids.join(",")])
        .output()
        .map_err(|e| format!("cannot run squeue: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // A single forgotten id is an error for squeue; it is just not there.
        if ids.len() == 1 && err.contains("Invalid job id") {
            return Ok(HashMap::new());
        }
        return Err(format!("squeue failed: {}", err.trim()));
    }
    Ok(parse_squeue(&String::from_utf8_lossy(&out.stdout)))
}

/// Cancels jobs with `scancel`.
pub fn cancel(ids: &[&str]) -> Result<(), String> {
    if ids.is_empty() {
        return Ok(());
    }
    let out = Command::new("scancel")
        .args(ids)
        .output()
        .map_err(|e| format!("cannot run scancel: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scancel failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Quotes a word for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn new_run_id() -> String {
    let h = blake3::hash(
        format!(
            "{} {} {}",
            unix_now(),
            std::process::id(),
            crate::store::lock::host_name()
        )
        .as_bytes(),
    );
    h.to_hex()[..10].to_string()
}

/// Slurm states in which a job will still run or is running.
fn is_active(state: &str) -> bool {
    matches!(
        state,
        "PENDING"
            | "CONFIGURING"
            | "RUNNING"
            | "COMPLETING"
            | "SUSPENDED"
            | "REQUEUED"
            | "RESIZING"
            | "STAGE_OUT"
            | "SIGNALING"
    )
}

/// A submitted, unfinished job.
struct Live {
    job_id: String,
    job_file: PathBuf,
    slurm_log: PathBuf,
    cpus: usize,
    started: bool,
    misses: u32,
}

/// Submits the plan's missing instances as Slurm jobs and (unless detached) waits for
/// them. Returns each instance's outcome and the run's record.
pub fn run(
    plan: &Plan,
    store: &Store,
    opts: &RunOptions,
    slurm: &SlurmOptions,
    observer: &dyn Observer,
    interrupted: &AtomicBool,
) -> Result<(RunReport, RunRecord), Error> {
    store.prepare().map_err(|e| Error::io(store.root(), e))?;
    let root = std::fs::canonicalize(store.root()).map_err(|e| Error::io(store.root(), e))?;
    let base_dir =
        std::fs::canonicalize(&plan.spec.base_dir).unwrap_or_else(|_| plan.spec.base_dir.clone());
    let Triage {
        nodes,
        mut outcomes,
        to_run,
    } = triage(plan, store, opts, observer);
    let mut record = RunRecord {
        id: new_run_id(),
        pipeline: plan.spec.name.clone(),
        submitted: unix_now(),
        jobs: Vec::new(),
        finished: to_run.is_empty(),
    };
    if to_run.is_empty() {
        let report =
            conclude(plan, store, &nodes, outcomes).map_err(|e| Error::io(store.root(), e))?;
        return Ok((report, record));
    }
    let dir = root.join("runs").join(&record.id);
    for sub in ["jobs", "logs"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }

    // Submit in plan order, so that every input's job id is known before its users'.
    let mut live: HashMap<NodeIndex, Live> = HashMap::new();
    for &n in &to_run {
        let inst = &plan.graph[n];
        let stage = &plan.spec.stages[inst.stage];
        let mut job = Job::of(plan, n);
        job.base_dir = base_dir.clone();
        job.remote = opts.remote.as_ref().map(|r| r.url().to_string());
        job.parts = super::stored_keys(plan, n).split_off(1);
        let job_file = dir.join("jobs").join(format!("{}.json", inst.key));
        let text = serde_json::to_vec_pretty(&job).unwrap_or_default();
        write_atomic(&job_file, &text).map_err(|e| Error::io(&job_file, e))?;
        let res = stage
            .kind
            .resources(&inst.params)
            .overridden_by(&stage.resources);
        let slurm_log = dir.join("logs").join(format!("{}.out", inst.key));
        let mut args: Vec<String> = vec![
            "--parsable".into(),
            format!("--job-name=pipe-{}-{}", record.id, stage.name),
            format!("--output={}", slurm_log.display()),
            "--kill-on-invalid-dep=yes".into(),
        ];
        let cpus = res.cpus.unwrap_or(1).max(1);
        args.push(format!("--cpus-per-task={cpus}"));
        if let Some(g) = res.gpus.filter(|g| *g > 0) {
            args.push(format!("--gpus={g}"));
        }
        if let Some(m) = &res.mem {
            args.push(format!("--mem={m}"));
        }
        if let Some(t) = &res.time {
            args.push(format!("--time={t}"));
        }
        if let Some(p) = &slurm.partition {
            args.push(format!("--partition={p}"));
        }
        let deps: Vec<&str> = inst
            .inputs
            .iter()
            .filter_map(|(_, up)| live.get(up).map(|l| l.job_id.as_str()))
            .collect();
        if !deps.is_empty() {
            args.push(format!("--dependency=afterok:{}", deps.join(":")));
        }
        args.extend(slurm.args.iter().cloned());
        args.push(format!(
            "--wrap=exec {} job --cache {} {}",
            sh_quote(&slurm.exe.to_string_lossy()),
            sh_quote(&root.to_string_lossy()),
            sh_quote(&job_file.to_string_lossy())
        ));
        let submitted = Command::new("sbatch").args(&args).output();
        let job_id = match submitted {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .trim()
                .split(';')
                .next()
                .unwrap_or("")
                .to_string(),
            Ok(out) => {
                let ids: Vec<&str> = live.values().map(|l| l.job_id.as_str()).collect();
                let _ = cancel(&ids);
                return Err(Error::usage(format!(
                    "sbatch refused the job of {}: {}(the {} jobs submitted before it were cancelled)",
                    plan.label(n),
                    String::from_utf8_lossy(&out.stderr),
                    ids.len()
                )));
            }
            Err(e) => {
                let ids: Vec<&str> = live.values().map(|l| l.job_id.as_str()).collect();
                let _ = cancel(&ids);
                return Err(Error::usage(format!(
                    "cannot run sbatch ({e}); --executor slurm needs the Slurm client commands on PATH"
                )));
            }
        };
        record.jobs.push(JobRecord {
            key: inst.key.clone(),
            label: plan.label(n),
            job_id: job_id.clone(),
            slurm_log: slurm_log.clone(),
        });
        live.insert(
            n,
            Live {
                job_id,
                job_file,
                slurm_log,
                cpus: cpus as usize,
                started: false,
                misses: 0,
            },
        );
    }
    save_record(store, &record)?;
    if slurm.detach {
        return Ok((report(&nodes, outcomes), record));
    }

    let mut last_poll = Instant::now() - slurm.poll;
    while !live.is_empty() {
        if interrupted.load(Ordering::SeqCst) {
            let ids: Vec<&str> = live.values().map(|l| l.job_id.as_str()).collect();
            let _ = cancel(&ids);
            let nodes: Vec<NodeIndex> = live.keys().copied().collect();
            for n in nodes {
                live.remove(&n);
                let o = Outcome::Skipped {
                    reason: format!("run {} was interrupted; its jobs were cancelled", record.id),
                };
                observer.event(plan, Event::Finished(n, &o));
                outcomes.insert(n, o);
            }
            break;
        }
        let wait = slurm.poll.saturating_sub(last_poll.elapsed());
        if !wait.is_zero() {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            continue;
        }
        last_poll = Instant::now();
        let ids: Vec<&str> = live.values().map(|l| l.job_id.as_str()).collect();
        let states = match query(&ids) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let mut ended: Vec<(NodeIndex, Outcome)> = Vec::new();
        let mut order: Vec<NodeIndex> = live.keys().copied().collect();
        order.sort();
        for n in order {
            let l = live.get_mut(&n).expect("live job");
            let key = &plan.graph[n].key;
            let st = states.get(&l.job_id);
            match st {
                Some(q)
                    if q.state == "PENDING" && q.reason.contains("DependencyNeverSatisfied") =>
                {
                    let _ = cancel(&[l.job_id.as_str()]);
                    ended.push((
                        n,
                        Outcome::Skipped {
                            reason: "an input's job failed".into(),
                        },
                    ));
                }
                Some(q) if is_active(&q.state) => {
                    l.misses = 0;
                    if !l.started && q.state != "PENDING" {
                        l.started = true;
                        observer.event(plan, Event::Started(n, l.cpus));
                    }
                }
                Some(q) if q.state == "CANCELLED" && q.reason.contains("Dependency") => {
                    ended.push((
                        n,
                        Outcome::Skipped {
                            reason: "an input's job failed".into(),
                        },
                    ));
                }
                Some(q) => ended.push((n, finished(store, key, l, &q.state))),
                None => {
                    // Forgotten by Slurm (or not yet visible): the cache decides.
                    l.misses += 1;
                    if store.is_complete(key) || l.misses >= 3 {
                        ended.push((n, finished(store, key, l, "gone from the queue")));
                    }
                }
            }
        }
        for (n, outcome) in ended {
            if live.remove(&n).is_none() {
                continue;
            }
            let failed = matches!(outcome, Outcome::Failed { .. });
            observer.event(plan, Event::Finished(n, &outcome));
            outcomes.insert(n, outcome);
            if failed {
                let label = plan.label(n);
                let mut cancelled: Vec<String> = Vec::new();
                let skip: HashSet<NodeIndex> = if opts.fail_fast {
                    live.keys().copied().collect()
                } else {
                    plan.descendants(n).into_iter().collect()
                };
                for d in skip {
                    if let Some(l) = live.remove(&d) {
                        cancelled.push(l.job_id);
                        let o = Outcome::Skipped {
                            reason: if opts.fail_fast {
                                "the run stopped at the first failure (--fail-fast)".into()
                            } else {
                                format!("input {label} failed")
                            },
                        };
                        observer.event(plan, Event::Finished(d, &o));
                        outcomes.insert(d, o);
                    }
                }
                let ids: Vec<&str> = cancelled.iter().map(String::as_str).collect();
                let _ = cancel(&ids);
            }
        }
    }
    record.finished = live.is_empty();
    save_record(store, &record)?;
    let report = conclude(plan, store, &nodes, outcomes).map_err(|e| Error::io(store.root(), e))?;
    Ok((report, record))
}

fn report(nodes: &[NodeIndex], mut outcomes: HashMap<NodeIndex, Outcome>) -> RunReport {
    RunReport {
        outcomes: nodes
            .iter()
            .filter_map(|n| outcomes.remove(n).map(|o| (*n, o)))
            .collect(),
    }
}

/// The outcome of a job that left the queue, from its outcome file and the cache.
fn finished(store: &Store, key: &str, l: &Live, state: &str) -> Outcome {
    let recorded: Option<JobOutcome> = std::fs::read(outcome_path(&l.job_file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let instance_log = store.log_path(key);
    let log = if instance_log.exists() {
        instance_log
    } else {
        l.slurm_log.clone()
    };
    if store.is_complete(key) {
        return match recorded {
            Some(r) if r.outcome == "cached" => Outcome::Cached,
            Some(r) => Outcome::Executed { seconds: r.seconds },
            None => Outcome::Executed {
                seconds: store.manifest(key).map_or(0.0, |m| m.seconds),
            },
        };
    }
    let (message, bad_data) = match recorded {
        Some(r) if r.outcome == "failed" => (r.message.unwrap_or_default(), r.bad_data),
        _ => (
            format!("the job ended {state} without storing the artifact"),
            false,
        ),
    };
    Outcome::Failed {
        message: format!(
            "{message} (slurm job {}, {state}; slurm log {})",
            l.job_id,
            l.slurm_log.display()
        ),
        log,
        bad_data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_and_quoting() {
        let s = parse_squeue(
            "12|PENDING|Dependency\n13|COMPLETED|None\n\n 14|CANCELLED|DependencyNeverSatisfied\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(
            s["12"],
            QueueState {
                state: "PENDING".into(),
                reason: "Dependency".into()
            }
        );
        assert_eq!(s["14"].reason, "DependencyNeverSatisfied");
        assert_eq!(sh_quote("a b'c"), "'a b'\\''c'");
        assert!(is_active("RUNNING") && !is_active("COMPLETED") && !is_active("FAILED"));
    }
}
