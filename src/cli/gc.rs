//! `pipe gc`: removes the artifacts that nothing keeps. Kept are: what the given pipelines
//! reach (as written, and with their last run's overrides), what any run of the last
//! `--keep-days` (default 30) read or wrote, whatever pipeline file or overrides it used,
//! what a live run holds, and every artifact younger than the cut-off.

use crate::cli::{errln, outln};
use std::collections::HashSet;
use std::path::PathBuf;

use serde::Serialize;

use super::{PipelineArgs, cache_dir, load, pipeline_cache, print_json};
use pipe_engine::error::Error;
use pipe_engine::plan::point_label;
use pipe_engine::runs::{self, RunRecord};
use pipe_engine::status;
use pipe_engine::store::{GcPolicy, Removed, Store};

/// Arguments of `pipe gc`.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Pipelines whose artifacts (at their current sweep, as written and with their last
    /// run's overrides) are kept whatever their age.
    pub files: Vec<PathBuf>,
    /// Keep what any run of the last N days read or wrote, and every artifact younger
    /// than N days; `--keep-days 0` keeps only what the pipelines reach and live runs hold.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 30.0,
        allow_negative_numbers = true
    )]
    pub keep_days: f64,
    /// Also keep what this run read or wrote (an id or prefix, or `last`; repeatable).
    #[arg(long, value_name = "ID|last")]
    pub run: Vec<String>,
    /// Say what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The cache directory [default: $PIPE_CACHE, else the first file's, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `pipe gc --json`.
#[derive(Serialize)]
struct GcJson<'a> {
    /// Whether nothing was removed (`--dry-run`).
    dry_run: bool,
    /// Bytes the removed artifacts held.
    freed_bytes: u64,
    /// Artifacts nothing named but kept (too recent, locked, or made since a live run began).
    kept: usize,
    /// Days of runs and artifacts kept.
    keep_days: f64,
    /// The artifacts removed (or that would be).
    removed: &'a [Removed],
    /// The runs whose keys were kept.
    runs_kept: usize,
}

/// Runs `pipe gc`; returns its exit code.
pub fn gc(args: &GcArgs) -> Result<i32, Error> {
    let keep_days = args.keep_days;
    if !(keep_days.is_finite() && keep_days >= 0.0) {
        return Err(Error::usage(format!(
            "--keep-days {keep_days}: give a number of days, 0 or more"
        )));
    }
    let dir = match args.files.first() {
        Some(f) => pipeline_cache(&args.cache, f)?,
        None => cache_dir(&args.cache)?,
    };
    let store = Store::new(dir);
    let keep_secs = keep_days * 86_400.0;
    pipe_engine::exec::registry::settle_open_runs(&store);
    let mut base = reachable(args, &store)?;
    for id in &args.run {
        let r: RunRecord = runs::find_record(&store, id)?;
        base.extend(runs::keys_of(&store, &r));
    }
    let mut policy = GcPolicy {
        keep: base.clone(),
        keep_secs,
        ..GcPolicy::default()
    };
    let mut runs_kept = 0;
    // Called before the first artifact and whenever a run starts or ends meanwhile.
    let mut refresh = |policy: &mut GcPolicy| {
        let all = runs::records(&store);
        let mut keep = base.clone();
        let mut pinned_since: Option<f64> = None;
        runs_kept = 0;
        for r in &all {
            let live = runs::is_live(&store, r);
            if live {
                pinned_since = Some(pinned_since.map_or(r.submitted, |t| t.min(r.submitted)));
            }
            if live || !r.older_than(keep_secs) {
                runs_kept += 1;
                keep.extend(runs::keys_of(&store, r));
            }
        }
        policy.keep = keep;
        policy.pinned_since = pinned_since;
        policy.unsettled = runs::live_lease_without_record(&store, &all);
    };
    let dry_run = args.dry_run;
    let report = store
        .gc(&mut policy, dry_run, &mut refresh)
        .map_err(|e| Error::io(store.root(), e))?;
    if args.json {
        print_json(&GcJson {
            dry_run,
            freed_bytes: report.freed_bytes,
            kept: report.kept,
            keep_days,
            removed: &report.removed,
            runs_kept,
        })?;
        return Ok(0);
    }
    for r in &report.removed {
        let label = if r.stage.is_empty() {
            "(no manifest)".to_string()
        } else {
            format!("{}[{}]", r.stage, point_label(&r.point))
        };
        outln!(
            "{} {label:<40} {:<16} {:>9} {:>10}  {}",
            if dry_run { "would remove" } else { "removed" },
            r.pipeline,
            age(r.age_secs),
            size(r.size),
            pipe_engine::key::short(&r.key, 12)
        );
    }
    let s = |n: usize| if n == 1 { "" } else { "s" };
    outln!(
        "{} {} artifact{}, {}; kept what {runs_kept} run{} of the last {keep_days} days used and {} other artifact{} (younger, locked or in use by a live run)",
        if dry_run { "would free" } else { "freed" },
        report.removed.len(),
        s(report.removed.len()),
        size(report.freed_bytes),
        s(runs_kept),
        report.kept,
        s(report.kept)
    );
    if report.removed.is_empty() && keep_days > 0.0 && !dry_run {
        errln!("note: `--keep-days 0` also removes what recent runs used");
    }
    Ok(0)
}

/// An age in words: `3.2 d`, `5.0 h`, `12 min`.
fn age(secs: f64) -> String {
    if !secs.is_finite() {
        "?".into()
    } else if secs >= 86_400.0 {
        format!("{:.1} d", secs / 86_400.0)
    } else if secs >= 3_600.0 {
        format!("{:.1} h", secs / 3_600.0)
    } else {
        format!("{:.0} min", secs / 60.0)
    }
}

/// A size in words: `1.2 MB`, `340 kB`, `12 B`.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1} GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.0} kB", b / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// The keys of every instance and part of the given pipelines at their current sweep, as
/// written and with their last run's overrides. An instance whose key waits for an input's
/// output keeps what it last computed (and that artifact's parts): the next run may find
/// it unchanged and reuse it.
fn reachable(args: &GcArgs, store: &Store) -> Result<HashSet<String>, Error> {
    let mut keys = HashSet::new();
    let all = runs::records(store);
    for f in &args.files {
        let mut variants = vec![Vec::new()];
        if let Some(r) = runs::last_of(&all, f).filter(|r| !r.overrides.is_empty()) {
            variants.push(r.overrides.clone());
        }
        for set in variants {
            let plan = load(
                &PipelineArgs {
                    file: Some(PathBuf::from(f)),
                    set,
                    cache: Some(store.root().to_path_buf()),
                    run: vec!["none".into()],
                },
                false,
            )?
            .plan;
            let index = store.read_index(&plan.spec.name);
            for &n in &plan.order {
                keys.extend(plan.key(n));
                for (part, _) in status::parts(&plan, store, n) {
                    keys.insert(part.key);
                }
                if plan.key(n).is_none()
                    && let Some(last) = index.entries.get(&pipe_engine::store::index::entry_id(
                        plan.stage_name(n),
                        &plan.point(n),
                    ))
                {
                    keys.insert(last.key.clone());
                    if let Some(m) = store.manifest(&last.key) {
                        keys.extend(m.parts.into_values());
                    }
                }
            }
        }
    }
    Ok(keys)
}
