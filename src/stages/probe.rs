//! `probe`: manifold geometry (MFTMA) and a linear probe of every stored layer and epoch of
//! an `activations` artifact, for three groupings of the probe set (science.md):
//! `unpermuted` (clean examples by label), `permuted` (corrupted examples by the label they
//! were trained on) and `restored` (the same corrupted examples by their true label).
//!
//! Output: `probe.parquet` (one row per epoch, layer and labeling) and
//! `probe_manifolds.parquet` (one row per manifold). Runs in the `pipe` process (no
//! libtorch), parallel across manifolds with the instance's threads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};

use crate::geometry;
use crate::stage::{
    CheckEnv, Inputs, ParamError, ParamSpec, ParamType, Params, RunContext, Slot, StageKind,
};
use crate::stages::analysis::ActivationsInfo;
use crate::table::{read_parquet, write_parquet};

/// The `probe` stage kind.
pub struct Probe;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::default(
        "kappa",
        ParamType::Float,
        "0.0",
        "margin kappa of the capacity",
    ),
    ParamSpec::default(
        "n_t",
        ParamType::Int,
        "200",
        "Gaussian vectors t per manifold",
    ),
    ParamSpec::default(
        "center_correlation",
        ParamType::Bool,
        "true",
        "remove the correlations between manifold centers first",
    ),
    ParamSpec::default(
        "linear_probe",
        ParamType::Bool,
        "true",
        "also fit a linear classifier per layer",
    ),
    ParamSpec::default(
        "seed",
        ParamType::Int,
        "0",
        "seeds the t vectors, the center-subspace search and the probe split",
    ),
    ParamSpec::default(
        "threads",
        ParamType::Int,
        "2",
        "threads for the analysis (not in the key)",
    )
    .not_in_key(),
];

/// The three groupings of the probe set.
pub const LABELINGS: [&str; 3] = ["unpermuted", "permuted", "restored"];

/// The probe set: per example its labels and whether it was corrupted.
struct ProbeSet {
    true_label: Vec<i64>,
    train_label: Vec<i64>,
    corrupted: Vec<bool>,
}

fn int_col(b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    Ok(b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        .with_context(|| format!("no int64 column {name}"))?
        .values()
        .to_vec())
}

fn read_probe_set(path: &Path) -> Result<ProbeSet> {
    let b = read_parquet(path)?;
    let corrupted = b
        .column_by_name("corrupted")
        .and_then(|c| c.as_any().downcast_ref::<BooleanArray>())
        .context("no corrupted column")?;
    Ok(ProbeSet {
        true_label: int_col(&b, "true_label")?,
        train_label: int_col(&b, "train_label")?,
        corrupted: (0..corrupted.len()).map(|i| corrupted.value(i)).collect(),
    })
}

/// Reads a features file: (rows, width, row-major values).
fn read_features(path: &Path) -> Result<(usize, usize, Vec<f32>)> {
    let b = read_parquet(path)?;
    let list = b
        .column_by_name("features")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .with_context(|| format!("{}: no features column", path.display()))?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .context("features are not f32")?;
    let d = list.value_length() as usize;
    Ok((
        b.num_rows(),
        d,
        values.values()[..b.num_rows() * d].to_vec(),
    ))
}

/// Groups example indices into manifolds: label -> examples, for one labeling.
fn groups(set: &ProbeSet, labeling: &str) -> BTreeMap<i64, Vec<usize>> {
    let mut g: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
    for i in 0..set.true_label.len() {
        let (take, label) = match labeling {
            "unpermuted" => (!set.corrupted[i], set.true_label[i]),
            "permuted" => (set.corrupted[i], set.train_label[i]),
            _ => (set.corrupted[i], set.true_label[i]),
        };
        if take {
            g.entry(label).or_default().push(i);
        }
    }
    // A manifold needs at least two points to have a shape.
    g.retain(|_, v| v.len() >= 2);
    g
}

/// One row of `probe.parquet`.
struct Row {
    epoch: i64,
    layer: String,
    labeling: &'static str,
    result: geometry::MftmaResult,
    labels: Vec<i64>,
    linear: Option<f64>,
}

impl StageKind for Probe {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "manifold capacity, radius, dimension (MFTMA) and a linear probe per epoch, layer and labeling"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[Slot {
            name: "activations",
            kinds: &["activations"],
        }])
    }
    fn check(&self, params: &Params, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if params.int("n_t").unwrap_or(0) < 1 {
            return Err(ParamError::param(
                "n_t",
                "must be at least 1 (200 is usual)",
            ));
        }
        if params.float("kappa").is_some_and(|k| k < 0.0) {
            return Err(ParamError::param("kappa", "must not be negative"));
        }
        if params.int("threads").unwrap_or(1) < 1 {
            return Err(ParamError::param("threads", "must be at least 1"));
        }
        Ok(())
    }
    fn tables(&self, _params: &Params) -> Vec<String> {
        vec!["probe".into(), "probe_manifolds".into()]
    }
    fn threads(&self, params: &Params) -> usize {
        params.int("threads").unwrap_or(2).max(1) as usize
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let dir = ctx.input("activations")?.to_path_buf();
        let info: ActivationsInfo =
            serde_json::from_slice(&std::fs::read(dir.join("activations.json"))?)?;
        let set = read_probe_set(&dir.join("probe_set.parquet"))?;
        let p = ctx.params;
        let seed = p.int("seed").unwrap_or(0) as u64;
        let options = |salt: u64| geometry::MftmaOptions {
            kappa: p.float("kappa").unwrap_or(0.0),
            n_t: p.int("n_t").unwrap_or(200) as usize,
            center_correlation: p.bool("center_correlation").unwrap_or(true),
            seed: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(salt),
            ..Default::default()
        };
        let linear = p.bool("linear_probe").unwrap_or(true);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads)
            .build()?;
        let mut rows: Vec<Row> = Vec::new();
        let mut salt = 0u64;
        for &epoch in &info.epochs {
            for layer in &info.layers {
                let (n, d, values) = read_features(
                    &dir.join(format!("epoch={epoch}"))
                        .join(format!("{}.parquet", layer.name)),
                )?;
                if n != set.true_label.len() {
                    anyhow::bail!(
                        "epoch {epoch} layer {}: {n} rows for {} probe examples",
                        layer.name,
                        set.true_label.len()
                    );
                }
                for labeling in LABELINGS {
                    salt += 1;
                    let g = groups(&set, labeling);
                    if g.len() < 2 {
                        continue;
                    }
                    let manifolds: Vec<geometry::Mat<f64>> = g
                        .values()
                        .map(|idx| {
                            geometry::Mat::from_fn(d, idx.len(), |r, c| {
                                values[idx[c] * d + r] as f64
                            })
                        })
                        .collect();
                    let views: Vec<geometry::MatRef<'_, f64>> =
                        manifolds.iter().map(|m| m.as_ref()).collect();
                    let result = pool
                        .install(|| geometry::manifold_analysis(&views, &options(salt)))
                        .with_context(|| {
                            format!("MFTMA of epoch {epoch}, layer {}, {labeling}", layer.name)
                        })?;
                    let linear_acc = if linear {
                        let examples: Vec<(usize, usize)> = g
                            .iter()
                            .enumerate()
                            .flat_map(|(c, (_, idx))| idx.iter().map(move |&i| (i, c)))
                            .collect();
                        let x = geometry::Mat::from_fn(examples.len(), d, |r, c| {
                            values[examples[r].0 * d + c] as f64
                        });
                        let y: Vec<usize> = examples.iter().map(|e| e.1).collect();
                        let opts = geometry::LinearProbeOptions {
                            seed: seed.wrapping_add(salt),
                            ..Default::default()
                        };
                        let r = pool
                            .install(|| geometry::linear_probe(x.as_ref(), &y, &opts))
                            .with_context(|| {
                                format!(
                                    "linear probe of epoch {epoch}, layer {}, {labeling}",
                                    layer.name
                                )
                            })?;
                        Some(r.test_accuracy)
                    } else {
                        None
                    };
                    writeln!(
                        ctx.log,
                        "epoch {epoch:>4} {:<10} {labeling:<10} capacity {:.4} radius {:.3} dimension {:.2} K {} linear {}",
                        layer.name,
                        result.capacity,
                        result.radius,
                        result.dimension,
                        result.k,
                        linear_acc.map_or("-".into(), |a| format!("{a:.3}"))
                    )?;
                    rows.push(Row {
                        epoch,
                        layer: layer.name.clone(),
                        labeling,
                        result,
                        labels: g.keys().copied().collect(),
                        linear: linear_acc,
                    });
                }
            }
        }
        write_tables(ctx.out, &rows, p.int("n_t").unwrap_or(200))
    }
}

fn write_tables(out: &Path, rows: &[Row], n_t: i64) -> Result<()> {
    let s = |f: fn(&Row) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let fl = |f: fn(&Row) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(f)))
    };
    let i = |f: fn(&Row) -> i64| -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
    };
    let schema = Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("layer", DataType::Utf8, false),
        Field::new("labeling", DataType::Utf8, false),
        Field::new("capacity", DataType::Float64, false),
        Field::new("radius", DataType::Float64, false),
        Field::new("dimension", DataType::Float64, false),
        Field::new("center_correlation", DataType::Float64, false),
        Field::new("K", DataType::Int64, false),
        Field::new("P", DataType::Int64, false),
        Field::new("M", DataType::Int64, false),
        Field::new("n_t", DataType::Int64, false),
        Field::new("linear_probe_acc", DataType::Float64, true),
    ]);
    let cols: Vec<ArrayRef> = vec![
        i(|r| r.epoch),
        s(|r| r.layer.clone()),
        s(|r| r.labeling.to_string()),
        fl(|r| r.result.capacity),
        fl(|r| r.result.radius),
        fl(|r| r.result.dimension),
        fl(|r| r.result.center_correlation),
        i(|r| r.result.k as i64),
        i(|r| r.result.p as i64),
        i(|r| r.result.m.round() as i64),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|_| n_t))),
        Arc::new(rows.iter().map(|r| r.linear).collect::<Float64Array>()),
    ];
    write_parquet(
        &out.join("probe.parquet"),
        &RecordBatch::try_new(Arc::new(schema), cols)?,
    )?;

    let mut m_epoch = Vec::new();
    let mut m_layer = Vec::new();
    let mut m_labeling = Vec::new();
    let mut m_label = Vec::new();
    let mut m_cap = Vec::new();
    let mut m_rad = Vec::new();
    let mut m_dim = Vec::new();
    for r in rows {
        for (j, label) in r.labels.iter().enumerate() {
            m_epoch.push(r.epoch);
            m_layer.push(r.layer.clone());
            m_labeling.push(r.labeling);
            m_label.push(*label);
            m_cap.push(r.result.capacities[j]);
            m_rad.push(r.result.radii[j]);
            m_dim.push(r.result.dimensions[j]);
        }
    }
    let schema = Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("layer", DataType::Utf8, false),
        Field::new("labeling", DataType::Utf8, false),
        Field::new("label", DataType::Int64, false),
        Field::new("capacity", DataType::Float64, false),
        Field::new("radius", DataType::Float64, false),
        Field::new("dimension", DataType::Float64, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(m_epoch)),
        Arc::new(StringArray::from_iter_values(m_layer)),
        Arc::new(StringArray::from_iter_values(m_labeling)),
        Arc::new(Int64Array::from(m_label)),
        Arc::new(Float64Array::from(m_cap)),
        Arc::new(Float64Array::from(m_rad)),
        Arc::new(Float64Array::from(m_dim)),
    ];
    write_parquet(
        &out.join("probe_manifolds.parquet"),
        &RecordBatch::try_new(Arc::new(schema), cols)?,
    )
}
