//! `pipe diff A B`: two instances (keys, or `stage[point]`) or two runs (`run:ID`,
//! `run:last`, a run's name): what differs in their parameters, inputs and files, and
//! every final metric side by side.

use crate::cli::outln;
use pipe_engine::table::StoredTable;
use pipe_kinds::tables::Metrics;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value as Json;

use super::{cache_dir, print_json};
use pipe_engine::error::Error;
use pipe_engine::plan::point_label;
use pipe_engine::runs::{self, RunRecord};
use pipe_engine::spec::template;
use pipe_engine::store::{Manifest, Store};
use pipe_engine::table::Table;

/// Arguments of `pipe diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// An instance (key or prefix, or `stage[point]`) or a run (`run:ID`, `run:last`).
    pub a: String,
    /// The other one, of the same sort.
    pub b: String,
    /// The pipeline file to look `stage[point]` up in [default: the cache's manifests].
    #[arg(long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Override a value of the file: `--set stage.train.epochs=40` (as in `status`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Plan the pipeline file and overrides of a recorded run: an id (or prefix), `last`,
    /// or `none` (the file alone).
    #[arg(long, value_name = "ID|last|none")]
    pub run: Option<String>,
    /// Narrow both instances to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// The cache directory [default: $PIPE_CACHE, else found from the working folder].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One line of a diff: a name and the two sides (`null` where a side has none).
#[derive(Serialize)]
struct Line {
    /// What differs (`param lr`, `final_test_acc train[noise=0.4]`).
    what: String,
    /// The first side's value.
    a: Json,
    /// The second side's value.
    b: Json,
}

/// `pipe diff --json`.
#[derive(Serialize)]
struct DiffJson<'a> {
    /// The first side, as named.
    a: &'a str,
    /// The second side, as named.
    b: &'a str,
    /// Parameter, input, file and setting differences.
    differences: &'a [Line],
    /// Final metrics of both sides.
    metrics: &'a [Line],
}

/// Runs `pipe diff`; returns its exit code.
pub fn diff(args: &DiffArgs) -> Result<i32, Error> {
    let runs_asked = [&args.a, &args.b].map(|s| s.strip_prefix("run:"));
    let (differences, metrics) = match runs_asked {
        [Some(a), Some(b)] => {
            let store = Store::new(cache_dir(&args.cache)?);
            let ra = runs::find_record(&store, a)?;
            let rb = runs::find_record(&store, b)?;
            diff_runs(&store, &ra, &rb)
        }
        [None, None] => {
            let (store, ma) = manifest(&args.a, args)?;
            let (_, mb) = manifest(&args.b, args)?;
            diff_instances(&store, &ma, &mb)
        }
        _ => {
            return Err(Error::usage(
                "compare two instances or two runs (run:ID, run:last), not one of each",
            ));
        }
    };
    if args.json {
        return print_json(&DiffJson {
            a: &args.a,
            b: &args.b,
            differences: &differences,
            metrics: &metrics,
        })
        .map(|_| 0);
    }
    let width = differences
        .iter()
        .chain(&metrics)
        .map(|l| l.what.len())
        .max()
        .unwrap_or(0)
        .clamp(4, 120);
    // Long values (a command line) are cut to 60 characters here; `--json` has them whole.
    let show = |v: &Json| {
        let text = match v {
            Json::Null => "-".to_string(),
            Json::String(s) => s.clone(),
            Json::Number(n) if n.is_f64() => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
            v => template::display(v),
        };
        match text.char_indices().nth(60) {
            Some((i, _)) => format!("{}...", &text[..i]),
            None => text,
        }
    };
    outln!("{:<width$}  {:<63}  {}", "", args.a, args.b);
    if differences.is_empty() {
        outln!("{:<width$}  (same parameters, inputs and files)", "");
    }
    for l in differences.iter().chain(&metrics) {
        let delta = match (l.a.as_f64(), l.b.as_f64()) {
            (Some(x), Some(y)) if l.what.starts_with("final") || l.what.starts_with("best") => {
                format!("  ({:+.4})", y - x)
            }
            _ => String::new(),
        };
        outln!(
            "{:<width$}  {:<63}  {}{delta}",
            l.what,
            show(&l.a),
            show(&l.b)
        );
    }
    Ok(0)
}

/// The manifest of the one cached instance `target` names.
fn manifest(target: &str, args: &DiffArgs) -> Result<(Store, Manifest), Error> {
    let pipeline = super::PipelineArgs {
        file: args.file.clone(),
        set: args.set.clone(),
        cache: args.cache.clone(),
        run: args.run.iter().cloned().collect(),
    };
    let (store, found) =
        super::target::resolve(target, &pipeline, args.point.as_deref(), false, false)?;
    let t = super::target::one(target, found)?;
    let m = store.complete_manifest(&t.key).ok_or_else(|| {
        Error::usage(format!(
            "{} ({}) is not in the cache",
            t.label,
            pipe_engine::key::short(&t.key, 12)
        ))
    })?;
    Ok((store, m))
}

/// Pushes a line when the two values differ.
fn differ(out: &mut Vec<Line>, what: String, a: Option<&Json>, b: Option<&Json>) {
    if a != b {
        out.push(Line {
            what,
            a: a.cloned().unwrap_or(Json::Null),
            b: b.cloned().unwrap_or(Json::Null),
        });
    }
}

/// Differences between two artifacts' manifests, and their final metrics.
fn diff_instances(store: &Store, a: &Manifest, b: &Manifest) -> (Vec<Line>, Vec<Line>) {
    let mut out = Vec::new();
    let s = |x: &str| Json::String(x.to_string());
    differ(
        &mut out,
        "kind".into(),
        Some(&s(&a.kind)),
        Some(&s(&b.kind)),
    );
    differ(
        &mut out,
        "stage".into(),
        Some(&s(&a.stage)),
        Some(&s(&b.stage)),
    );
    differ(
        &mut out,
        "point".into(),
        Some(&s(&point_label(&a.point))),
        Some(&s(&point_label(&b.point))),
    );
    let empty = serde_json::Map::new();
    let (pa, pb) = (
        a.params.as_object().unwrap_or(&empty),
        b.params.as_object().unwrap_or(&empty),
    );
    let names: std::collections::BTreeSet<&String> = pa.keys().chain(pb.keys()).collect();
    for n in names {
        differ(&mut out, format!("param {n}"), pa.get(n), pb.get(n));
    }
    let slots: std::collections::BTreeSet<&String> =
        a.inputs.keys().chain(b.inputs.keys()).collect();
    for slot in slots {
        let short = |m: &Manifest| {
            m.inputs
                .get(slot)
                .map(|k| s(pipe_engine::key::short(k, 12)))
        };
        differ(
            &mut out,
            format!("input {slot}"),
            short(a).as_ref(),
            short(b).as_ref(),
        );
    }
    let files: std::collections::BTreeSet<&String> = a
        .declared_files
        .keys()
        .chain(b.declared_files.keys())
        .collect();
    for f in files {
        let h = |m: &Manifest| {
            m.declared_files
                .get(f)
                .map(|h| s(pipe_engine::key::short(h, 12)))
        };
        differ(&mut out, format!("file {f}"), h(a).as_ref(), h(b).as_ref());
    }
    let mut metrics = Vec::new();
    let (fa, fb) = (final_metrics(store, a), final_metrics(store, b));
    let mut names: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    names.sort_by(|x, y| metric_order(x, y));
    names.dedup();
    for n in names {
        metrics.push(Line {
            what: n.clone(),
            a: fa.get(n).cloned().unwrap_or(Json::Null),
            b: fb.get(n).cloned().unwrap_or(Json::Null),
        });
    }
    (out, metrics)
}

/// The final metrics of a train artifact, in the order they are shown.
const FINAL_METRICS: &[&str] = &[
    "final_test_acc",
    "best_test_acc",
    "best_epoch",
    "final_test_loss",
    "final_train_acc",
    "final_train_loss",
    "final_clean_acc",
    "final_corrupted_fit",
    "final_corrupted_true_acc",
    "epochs",
];

/// A train artifact's final metrics by name (empty for other kinds): every column of the
/// last epoch's row of its metrics (`final_corrupted_fit` is the corrupted examples'
/// accuracy against their training labels), the best test accuracy and its epoch, and the
/// epochs trained.
fn final_metrics(store: &Store, m: &Manifest) -> BTreeMap<String, Json> {
    let mut out = BTreeMap::new();
    let Ok(rows) = Metrics::read_in(&store.artifact_dir(&m.key)) else {
        return out;
    };
    let Some(last) = rows.rows().checked_sub(1) else {
        return out;
    };
    let best = (0..rows.rows())
        .filter(|&i| rows.epoch[i] > 0)
        .max_by(|&a, &b| rows.test_acc[a].total_cmp(&rows.test_acc[b]));
    let mut put = |name: &str, v: Option<Json>| {
        if let Some(v) = v {
            out.insert(name.to_string(), v);
        }
    };
    put("final_test_acc", Some(Json::from(rows.test_acc[last])));
    put("best_test_acc", best.map(|i| Json::from(rows.test_acc[i])));
    put("best_epoch", best.map(|i| Json::from(rows.epoch[i])));
    put("final_test_loss", Some(Json::from(rows.test_loss[last])));
    put("final_train_acc", Some(Json::from(rows.train_acc[last])));
    put("final_train_loss", Some(Json::from(rows.train_loss[last])));
    put("final_clean_acc", Some(Json::from(rows.clean_acc[last])));
    put(
        "final_corrupted_fit",
        rows.corrupted_train_acc[last].map(Json::from),
    );
    put(
        "final_corrupted_true_acc",
        rows.corrupted_true_acc[last].map(Json::from),
    );
    put("epochs", Some(Json::from(rows.epoch[last])));
    out
}

/// Metric names in the order shown: [`FINAL_METRICS`] first.
fn metric_order(a: &str, b: &str) -> std::cmp::Ordering {
    let at = |n: &str| {
        FINAL_METRICS
            .iter()
            .position(|m| *m == n)
            .unwrap_or(usize::MAX)
    };
    at(a).cmp(&at(b)).then(a.cmp(b))
}

/// Differences between two runs' settings, and every final metric of the train instances
/// each produced or read, by `stage[point]`.
fn diff_runs(store: &Store, a: &RunRecord, b: &RunRecord) -> (Vec<Line>, Vec<Line>) {
    let mut out = Vec::new();
    let s = |x: String| Json::String(x);
    let file = |r: &RunRecord| {
        s(r.file
            .as_ref()
            .map_or(String::new(), |f| f.display().to_string()))
    };
    differ(&mut out, "file".into(), Some(&file(a)), Some(&file(b)));
    let hash = |r: &RunRecord| s(r.file_hash.chars().take(12).collect());
    differ(
        &mut out,
        "file content".into(),
        Some(&hash(a)),
        Some(&hash(b)),
    );
    let named = |r: &RunRecord| s(r.name.clone().unwrap_or_else(|| "-".into()));
    differ(&mut out, "name".into(), Some(&named(a)), Some(&named(b)));
    let note = |r: &RunRecord| s(r.note.clone().unwrap_or_else(|| "-".into()));
    differ(&mut out, "note".into(), Some(&note(a)), Some(&note(b)));
    let set = |r: &RunRecord| s(super::runs::overrides(&r.overrides));
    differ(&mut out, "overrides".into(), Some(&set(a)), Some(&set(b)));
    differ(
        &mut out,
        "state".into(),
        Some(&s(a.state(store))),
        Some(&s(b.state(store))),
    );
    let counts = |r: &RunRecord| {
        s(format!(
            "{} executed, {} cached, {} failed of {}",
            r.counts.executed, r.counts.cached, r.counts.failed, r.counts.planned
        ))
    };
    differ(
        &mut out,
        "counts".into(),
        Some(&counts(a)),
        Some(&counts(b)),
    );
    // Every final metric of each train instance either run produced or read.
    let finals = |r: &RunRecord| -> BTreeMap<String, BTreeMap<String, Json>> {
        runs::keys_of(store, r)
            .iter()
            .filter_map(|k| store.complete_manifest(k))
            .filter(|m| m.kind == pipe_kinds::stages::train::NAME)
            .map(|m| {
                (
                    format!("{}[{}]", m.stage, point_label(&m.point)),
                    final_metrics(store, &m),
                )
            })
            .collect()
    };
    let (fa, fb) = (finals(a), finals(b));
    let labels: std::collections::BTreeSet<&String> = fa.keys().chain(fb.keys()).collect();
    let none = BTreeMap::new();
    let mut metrics = Vec::new();
    for label in labels {
        let (ma, mb) = (
            fa.get(label).unwrap_or(&none),
            fb.get(label).unwrap_or(&none),
        );
        let mut names: Vec<&String> = ma.keys().chain(mb.keys()).collect();
        names.sort_by(|x, y| metric_order(x, y));
        names.dedup();
        metrics.extend(names.into_iter().map(|n| Line {
            what: format!("{n} {label}"),
            a: ma.get(n).cloned().unwrap_or(Json::Null),
            b: mb.get(n).cloned().unwrap_or(Json::Null),
        }));
    }
    (out, metrics)
}
