//! `pipe status`: whether every instance is cached, missing or stale and why, with its
//! checkpoints and the job computing it, if an executor's unfinished run has one.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde::Serialize;
use serde_json::Value as Json;

use super::{PipelineArgs, load, print_json};
use pipe_engine::error::Error;
use pipe_engine::exec::executor::LiveInstance;
use pipe_engine::exec::registry;
use pipe_engine::plan::Plan;
use pipe_engine::stage::Part;
use pipe_engine::status::{self, InstanceStatus, State};

/// Arguments of `pipe status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Only the instances at this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
}

/// One instance in `pipe status --json`.
#[derive(Serialize)]
struct StatusJson<'a> {
    /// The queued or running job computing it.
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<JobJson<'a>>,
    /// Its key (`null` while it depends on an input's output not computed yet).
    key: Option<String>,
    /// Its parts (checkpoints), when it has any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parts: Vec<PartJson<'a>>,
    /// Its sweep point.
    point: Json,
    /// Why it is missing or stale (empty when cached).
    reason: &'a str,
    /// Its stage's name.
    stage: &'a str,
    /// Cached, missing, stale or may-run.
    state: State,
}

/// A job in `pipe status --json`.
#[derive(Serialize)]
struct JobJson<'a> {
    /// The job's id.
    job_id: &'a str,
    /// The executor's reason for its state.
    reason: &'a str,
    /// The run id.
    run: &'a str,
    /// The job's state.
    state: &'a str,
}

/// A part in `pipe status --json`.
#[derive(Serialize)]
struct PartJson<'a> {
    /// Whether it is in the store.
    cached: bool,
    /// Its key.
    key: &'a str,
    /// What it is (`epoch 5`).
    name: &'a str,
}

/// Runs `pipe status`; returns its exit code.
pub fn status(args: &StatusArgs) -> Result<i32, Error> {
    let loaded = load(&args.pipeline, true)?;
    let (plan, store) = (loaded.plan, loaded.store);
    let index = status::IndexSource::lazy(&store, &plan.spec.name);
    let only = super::selectors(&plan, &[], args.point.as_deref())?;
    let states: Vec<InstanceStatus> = status::status_from(&plan, &store, &index)
        .into_iter()
        .filter(|s| only.iter().all(|o| o.matches(&plan, s.node)))
        .collect();
    let pending: HashSet<&str> = states
        .iter()
        .filter(|s| s.state != State::Cached)
        .map(|s| plan.graph[s.node].recipe.as_str())
        .collect();
    let jobs: HashMap<String, LiveInstance> = registry::executors()
        .iter()
        .flat_map(|e| e.live_instances(&store, &pending))
        .collect();
    if args.json {
        let items: Vec<StatusJson> = states.iter().map(|s| view(&plan, s, &jobs)).collect();
        print_json(&items)?;
    } else {
        print_text(&plan, &states, &jobs);
    }
    Ok(0)
}

/// The JSON view of one instance's status.
fn view<'a>(
    plan: &'a Plan,
    s: &'a InstanceStatus,
    jobs: &'a HashMap<String, LiveInstance>,
) -> StatusJson<'a> {
    let inst = &plan.graph[s.node];
    StatusJson {
        job: jobs.get(&inst.recipe).map(|j| JobJson {
            job_id: &j.job_id,
            reason: &j.reason,
            run: &j.run,
            state: &j.state,
        }),
        key: inst.key(),
        parts: s
            .parts
            .iter()
            .map(|(p, cached)| PartJson {
                cached: *cached,
                key: &p.key,
                name: &p.name,
            })
            .collect(),
        point: plan.point_of(inst),
        reason: &s.reason,
        stage: plan.stage_name(s.node),
        state: s.state,
    }
}

/// The widest a padded column gets (longer labels are printed whole, unpadded; a width
/// over 65,535 is out of range for formatting).
const MAX_WIDTH: usize = 120;

/// Prints one line per instance (and one for its parts), then the counts.
fn print_text(plan: &Plan, states: &[InstanceStatus], jobs: &HashMap<String, LiveInstance>) {
    // One write per screenful, not per line (stdout is line-buffered).
    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    // Each label made once (a label formats the instance's point); the column is as wide
    // as the plan's widest label, shown or not.
    let labels: Vec<String> = states.iter().map(|s| plan.label(s.node)).collect();
    let widest = match states.len() == plan.order.len() {
        true => labels.iter().map(String::len).max(),
        false => plan.order.iter().map(|&n| plan.label(n).len()).max(),
    };
    let width = widest.unwrap_or(0).min(MAX_WIDTH);
    for (s, label) in states.iter().zip(&labels) {
        let state = s.state.word();
        let job = jobs
            .get(&plan.graph[s.node].recipe)
            .map(job_text)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{state:<8} {label:<width$}  {}  {}{job}",
            plan.short_key(s.node),
            s.reason
        );
        if !s.parts.is_empty() {
            let _ = writeln!(
                out,
                "{:8} parts cached: {}; missing: {}",
                "",
                part_names(&s.parts, true),
                part_names(&s.parts, false)
            );
        }
    }
    let count = |st| states.iter().filter(|s| s.state == st).count();
    let mut may = String::new();
    for (st, word) in [
        (State::MayRun, "may run"),
        (State::Running, "running"),
        (State::Failed, "failed"),
    ] {
        let n = count(st);
        if n > 0 {
            may.push_str(&format!(", {n} {word}"));
        }
    }
    let _ = writeln!(
        out,
        "{} instances: {} cached, {} missing, {} stale{may}",
        states.len(),
        count(State::Cached),
        count(State::Missing),
        count(State::Stale)
    );
    let _ = out.flush();
}

/// ` [EXECUTOR job ID of run RUN: STATE, REASON]`, the reason left out when the executor
/// gives none.
fn job_text(j: &LiveInstance) -> String {
    format!(
        " [{} job {} of run {}: {}{}]",
        j.executor,
        j.job_id,
        j.run,
        j.state,
        if j.reason.is_empty() || j.reason == "None" {
            String::new()
        } else {
            format!(", {}", j.reason)
        }
    )
}

/// The names of the parts that are (or are not) cached, comma-separated, or `none`.
fn part_names(parts: &[(Part, bool)], cached: bool) -> String {
    let names: Vec<&str> = parts
        .iter()
        .filter(|(_, c)| *c == cached)
        .map(|(p, _)| p.name.as_str())
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
