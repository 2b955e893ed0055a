//! `probe`: manifold geometry (MFTMA) and a linear probe of every stored layer and epoch of
//! an `activations` artifact, for three groupings of the probe set (science.md):
//! `unpermuted` (clean examples by label), `permuted` (corrupted examples by the label they
//! were trained on) and `restored` (the same corrupted examples by their true label).
//!
//! Output: `probe.parquet` (one row per epoch, layer and labeling) and
//! `probe_manifolds.parquet` (one row per manifold). Runs in the `pipe` process (no
//! libtorch), parallel across manifolds with the instance's threads.
//!
//! Each epoch is analysed into a part of its own (both tables for that epoch), keyed on
//! the activations' part of that epoch, and the output joins the parts: when activations
//! gain an epoch, only that epoch is analysed. An epoch's random streams depend on the
//! epoch and layer only, never on which other epochs are analysed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::stages::activations::{ActivationsInfo, for_each_epoch_part};
use crate::stages::slots;
use crate::tables::{self, Features, ProbeManifolds, ProbeSet};
use pipe_engine::stage::{
    CheckEnv, Inputs, KeyInputs, Kind, KindParams, ParamError, Part, RunContext,
};
use pipe_engine::table::StoredTable;
use pipe_engine::table::{Column, Table};
use pipe_science::geometry;

/// The kind's name, as written `kind = "probe"`.
pub const NAME: &str = slots::names::PROBE;

pipe_engine::stage_params! {
    /// The parameters of `probe`.
    pub struct ProbeParams {
        kappa: f64, default "0.0", "margin kappa of the capacity";
        n_t: i64, default "200", "Gaussian vectors t per manifold";
        center_correlation: bool, default "true", "remove the correlations between manifold centers first";
        linear_probe: bool, default "true", "also fit a linear classifier per layer";
        seed: i64, default "0", "seeds the t vectors, the center-subspace search and the probe split";
        threads: i64, default "2", not_in_key, "threads for the analysis (not in the key)";
    }
}

/// The code version of `probe` and its per-epoch parts.
pub const VERSION: u32 = 2;

/// The kind recorded in the manifests of the per-epoch parts.
pub const EPOCH_PART_KIND: &str = "probe-epoch";

impl ProbeParams {
    /// The key of the part analysing one epoch: the parameters in the key and the key of
    /// the activations' part of that epoch.
    pub fn epoch_part_key(&self, keys: &KeyInputs<'_>, activations_part: &str) -> String {
        let specs = ProbeParams::specs();
        keys.derived_part_key(EPOCH_PART_KIND, VERSION, specs, &[], activations_part)
    }
}

/// The `probe` stage kind.
pub struct Probe;

/// The three groupings of the probe set.
pub const LABELINGS: [&str; 3] = ["unpermuted", "permuted", "restored"];

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

/// What the analysis of one epoch and layer needs besides its features.
struct Analysis<'a> {
    params: &'a ProbeParams,
    set: &'a ProbeSet,
    pool: rayon::ThreadPool,
}

impl Analysis<'_> {
    /// MFTMA options for the analysis numbered `salt` (each gets its own random streams).
    fn options(&self, salt: u64) -> geometry::MftmaOptions {
        geometry::MftmaOptions {
            kappa: self.params.kappa,
            n_t: self.params.n_t as usize,
            center_correlation: self.params.center_correlation,
            seed: (self.params.seed as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(salt),
            ..Default::default()
        }
    }

    /// The linear probe's test accuracy on the manifolds' points.
    fn linear_probe(
        &self,
        g: &BTreeMap<i64, Vec<usize>>,
        features: &Features,
        salt: u64,
    ) -> Result<f64> {
        let d = features.features.width;
        let examples: Vec<(usize, usize)> = g
            .iter()
            .enumerate()
            .flat_map(|(c, (_, idx))| idx.iter().map(move |&i| (i, c)))
            .collect();
        let x = geometry::Mat::from_fn(examples.len(), d, |r, c| {
            features.features.values[examples[r].0 * d + c] as f64
        });
        let y: Vec<usize> = examples.iter().map(|e| e.1).collect();
        let opts = geometry::LinearProbeOptions {
            seed: (self.params.seed as u64).wrapping_add(salt),
            ..Default::default()
        };
        let r = self
            .pool
            .install(|| geometry::linear_probe(x.as_ref(), &y, &opts))?;
        Ok(r.test_accuracy)
    }

    /// Every labeling of one epoch and layer; `salt` counts analyses across the instance.
    fn layer(
        &self,
        epoch: i64,
        layer: &str,
        features: &Features,
        salt: &mut u64,
        log: &mut std::fs::File,
    ) -> Result<Vec<Row>> {
        let d = features.features.width;
        let values = &features.features.values;
        let mut rows = Vec::new();
        for labeling in LABELINGS {
            *salt += 1;
            let g = groups(self.set, labeling);
            if g.len() < 2 {
                continue;
            }
            let manifolds: Vec<geometry::Mat<f64>> = g
                .values()
                .map(|idx| {
                    geometry::Mat::from_fn(d, idx.len(), |r, c| values[idx[c] * d + r] as f64)
                })
                .collect();
            let views: Vec<geometry::MatRef<'_, f64>> =
                manifolds.iter().map(|m| m.as_ref()).collect();
            let options = self.options(*salt);
            let result = self
                .pool
                .install(|| geometry::manifold_analysis(&views, &options))
                .with_context(|| format!("MFTMA of epoch {epoch}, layer {layer}, {labeling}"))?;
            let linear = if self.params.linear_probe {
                Some(self.linear_probe(&g, features, *salt).with_context(|| {
                    format!("linear probe of epoch {epoch}, layer {layer}, {labeling}")
                })?)
            } else {
                None
            };
            writeln!(
                log,
                "epoch {epoch:>4} {layer:<10} {labeling:<10} capacity {:.4} radius {:.3} dimension {:.2} K {} linear {}",
                result.capacity,
                result.radius,
                result.dimension,
                result.k,
                linear.map_or("-".into(), |a| format!("{a:.3}"))
            )?;
            rows.push(Row {
                epoch,
                layer: layer.to_string(),
                labeling,
                result,
                labels: g.keys().copied().collect(),
                linear,
            });
        }
        Ok(rows)
    }
}

impl Kind for Probe {
    type Params = ProbeParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const ABOUT: &'static str = "manifold capacity, radius, dimension (MFTMA) and a linear probe per epoch, layer and labeling";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::ACTIVATIONS])
    }
    fn check(&self, p: &ProbeParams, _env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if p.n_t < 1 {
            return Err(ParamError::param(
                ProbeParams::n_t,
                "must be at least 1 (200 is usual)",
            ));
        }
        if p.kappa < 0.0 {
            return Err(ParamError::param(
                ProbeParams::kappa,
                "must not be negative",
            ));
        }
        if p.threads < 1 {
            return Err(ParamError::param(
                ProbeParams::threads,
                "must be at least 1",
            ));
        }
        Ok(())
    }
    fn tables(&self, _p: &ProbeParams) -> Vec<String> {
        vec![tables::Probe::NAME.into(), ProbeManifolds::NAME.into()]
    }
    /// One part per epoch of the activations, named like it (`epoch 5`).
    fn parts(&self, _p: &ProbeParams, keys: &KeyInputs<'_>) -> Vec<Part> {
        let specs = ProbeParams::specs();
        keys.parts_per_input_part(
            slots::ACTIVATIONS.name,
            EPOCH_PART_KIND,
            VERSION,
            specs,
            &[],
        )
    }
    fn threads(&self, p: &ProbeParams) -> usize {
        p.threads.max(1) as usize
    }
    fn run(&self, p: &ProbeParams, ctx: &mut RunContext<'_>) -> Result<()> {
        let dir = ctx.input(slots::ACTIVATIONS.name)?.to_path_buf();
        let info = ActivationsInfo::read_in(&dir)?;
        let set = ProbeSet::read_in(&dir)?;
        let analysis = Analysis {
            params: p,
            set: &set,
            pool: rayon::ThreadPoolBuilder::new()
                .num_threads(ctx.threads)
                .build()?,
        };
        let (mut probe, mut manifolds) = (tables::Probe::default(), ProbeManifolds::default());
        let analyse = |epoch: i64, log: &mut std::fs::File| -> Result<Vec<Row>> {
            let mut rows = Vec::new();
            for (li, layer) in info.layers.iter().enumerate() {
                let features = Features::read(
                    &dir.join(format!("epoch={epoch}"))
                        .join(format!("{}.parquet", layer.name)),
                )?;
                let n = features.features.rows();
                if n != set.true_label.len() {
                    anyhow::bail!(
                        "epoch {epoch} layer {}: {n} rows for {} probe examples",
                        layer.name,
                        set.true_label.len()
                    );
                }
                // Random streams of (epoch, layer, labeling), whatever else is analysed.
                let mut salt = ((epoch as u64) << 16) | ((li as u64) << 4);
                rows.extend(analysis.layer(epoch, &layer.name, &features, &mut salt, log)?);
            }
            Ok(rows)
        };
        for_each_epoch_part(
            ctx,
            &info.epochs,
            EPOCH_PART_KIND,
            |keys, part| p.epoch_part_key(keys, part),
            |epoch, folder, log| write_tables(folder, &analyse(epoch, log)?, p.n_t),
            |_, folder| {
                probe.append(tables::Probe::read_in(folder)?);
                manifolds.append(ProbeManifolds::read_in(folder)?);
                Ok(())
            },
        )?;
        probe.write_in(ctx.out)?;
        manifolds.write_in(ctx.out)
    }
}

/// Writes `probe.parquet` and `probe_manifolds.parquet`.
fn write_tables(out: &Path, rows: &[Row], n_t: i64) -> Result<()> {
    let (probe, manifolds) = row_tables(rows, n_t);
    probe.write_in(out)?;
    manifolds.write_in(out)
}

/// The two tables of some analysed rows.
fn row_tables(rows: &[Row], n_t: i64) -> (tables::Probe, ProbeManifolds) {
    let probe = tables::Probe {
        epoch: rows.iter().map(|r| r.epoch).collect(),
        layer: rows.iter().map(|r| r.layer.clone()).collect(),
        labeling: rows.iter().map(|r| r.labeling.to_string()).collect(),
        capacity: rows.iter().map(|r| r.result.capacity).collect(),
        radius: rows.iter().map(|r| r.result.radius).collect(),
        dimension: rows.iter().map(|r| r.result.dimension).collect(),
        center_correlation: rows.iter().map(|r| r.result.center_correlation).collect(),
        k: rows.iter().map(|r| r.result.k as i64).collect(),
        p: rows.iter().map(|r| r.result.p as i64).collect(),
        m: rows.iter().map(|r| r.result.m.round() as i64).collect(),
        n_t: vec![n_t; rows.len()],
        linear_probe_acc: rows.iter().map(|r| r.linear).collect(),
    };
    let mut m = ProbeManifolds::default();
    for r in rows {
        for (j, label) in r.labels.iter().enumerate() {
            m.epoch.push(r.epoch);
            m.layer.push(r.layer.clone());
            m.labeling.push(r.labeling.to_string());
            m.label.push(*label);
            m.capacity.push(r.result.capacities[j]);
            m.radius.push(r.result.radii[j]);
            m.dimension.push(r.result.dimensions[j]);
        }
    }
    (probe, m)
}
