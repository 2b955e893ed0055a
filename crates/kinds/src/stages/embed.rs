//! `embed`: 2-D views of the probe set's representation (the study's Figure 1), per epoch
//! and layer of an `activations` artifact, by PCA and by t-SNE (science.md, "embed").
//!
//! Output `embedding.parquet` (`crate::tables::Embedding`): per epoch, layer, method and
//! probe-set example its coordinates, labels, group and nearest-neighbour label agreement:
//! the share of its `neighbours` nearest examples in 2-D, among the examples of its own
//! group (clean with clean, corrupted with corrupted, as the report's panels show them),
//! that carry its training label and its true label. Clusters by training label among the
//! corrupted examples are the memorized random labels.
//!
//! t-SNE is seeded and deterministic, with the same perplexity for every epoch and layer
//! (lowered, with a warning in the log, when the probe set has too few examples for it:
//! [`usable_perplexity`]).
//! Each epoch is embedded into a part of its own, keyed on the activations' part of that
//! epoch, like `probe`. Runs in the `pipe` process (no libtorch).

use std::io::Write;

use anyhow::{Result, bail};
use rayon::prelude::*;

use crate::stages::activations::{ActivationsInfo, ActivationsParams, for_each_epoch_part};
use crate::stages::slots;
use crate::stages::trained::Layers;
use crate::tables::{Embedding, Features, ProbeSet};
use pipe_engine::stage::{
    BadData, CheckEnv, Inputs, KeyInputs, Kind, KindParams, ParamError, Part, RunContext,
};
use pipe_engine::table::StoredTable;
use pipe_engine::table::{Column, Table};
use pipe_science::embedding;

/// The kind's name, as written `kind = "embed"`.
pub const NAME: &str = slots::names::EMBED;

/// The code version of `embed` and its per-epoch parts.
pub const VERSION: u32 = 1;

/// The kind recorded in the manifests of the per-epoch parts.
pub const EPOCH_PART_KIND: &str = "embed-epoch";

/// The methods `embed` knows.
pub const METHODS: [&str; 2] = ["pca", "tsne"];

pipe_engine::stage_params! {
    /// The parameters of `embed`.
    pub struct EmbedParams {
        layers: Layers, default "\"all\"", "\"all\" or a list of the activations' layers to embed";
        methods: Vec<String>, default "[\"pca\", \"tsne\"]", "any of \"pca\" and \"tsne\"";
        perplexity: f64, default "30.0", "t-SNE perplexity, the same for every epoch and layer";
        iterations: i64, default "1000", "t-SNE iterations";
        neighbours: i64, default "10", "neighbours counted in the label agreement";
        seed: i64, default "0", "seeds t-SNE";
        threads: i64, default "2", not_in_key, "threads for t-SNE (not in the key)";
    }
}

impl EmbedParams {
    /// The key of the part embedding one epoch: the parameters in the key and the key of
    /// the activations' part of that epoch.
    pub fn epoch_part_key(&self, keys: &KeyInputs<'_>, activations_part: &str) -> String {
        let specs = EmbedParams::specs();
        keys.derived_part_key(EPOCH_PART_KIND, VERSION, specs, &[], activations_part)
    }
}

/// The `embed` stage kind.
pub struct Embed;

/// One epoch and layer's features with the probe set, embedded every way asked.
fn embed_layer(
    p: &EmbedParams,
    epoch: i64,
    layer: &str,
    features: &Features,
    set: &ProbeSet,
    out: &mut Embedding,
    log: &mut impl Write,
) -> Result<()> {
    let (n, d) = (features.features.rows(), features.features.width);
    let x = &features.features.values;
    let groups: Vec<&str> = set
        .corrupted
        .iter()
        .map(|&c| if c { "corrupted" } else { "clean" })
        .collect();
    for method in &p.methods {
        let started = std::time::Instant::now();
        let coords = match method.as_str() {
            "pca" => embedding::pca_2d(x, n, d)
                .map_err(|m| BadData(format!("PCA of epoch {epoch}, layer {layer}: {m}")))?,
            _ => {
                let perplexity = usable_perplexity(p.perplexity, n);
                if perplexity < p.perplexity {
                    writeln!(
                        log,
                        "warning: perplexity {} needs more than {} points; {n} probe examples use {perplexity:.3}",
                        p.perplexity,
                        (3.0 * p.perplexity).ceil()
                    )?;
                }
                let options = embedding::TsneOptions {
                    perplexity,
                    iterations: p.iterations as usize,
                    seed: p.seed as u64,
                    ..Default::default()
                };
                embedding::tsne_2d(x, n, d, &options)
                    .map_err(|m| BadData(format!("t-SNE of epoch {epoch}, layer {layer}: {m}")))?
            }
        };
        let (train_agree, true_agree) = agreement(&coords, set, &groups, p.neighbours as usize);
        for i in 0..n {
            out.epoch.push(epoch);
            out.layer.push(layer.to_string());
            out.method.push(method.clone());
            out.index.push(set.index[i]);
            out.x.push(coords[i][0]);
            out.y.push(coords[i][1]);
            out.true_label.push(set.true_label[i]);
            out.train_label.push(set.train_label[i]);
            out.group.push(groups[i].to_string());
            out.train_label_agreement.push(train_agree[i]);
            out.true_label_agreement.push(true_agree[i]);
        }
        let mean_of = |v: &[f64], g: &str| {
            let sel: Vec<f64> = (0..n).filter(|&i| groups[i] == g).map(|i| v[i]).collect();
            sel.iter().sum::<f64>() / sel.len().max(1) as f64
        };
        writeln!(
            log,
            "epoch {epoch:>4} {layer:<10} {method:<5} {:.2} s; neighbour agreement: clean {:.3}, corrupted by training label {:.3}, by true label {:.3}",
            started.elapsed().as_secs_f64(),
            mean_of(&true_agree, "clean"),
            mean_of(&train_agree, "corrupted"),
            mean_of(&true_agree, "corrupted"),
        )?;
    }
    Ok(())
}

/// The perplexity t-SNE uses for `n` points: the one asked for, or, when `n` is too small
/// for it (t-SNE needs n - 1 >= 3 x perplexity), just under the largest that `n` allows,
/// (n - 1) / 3. It depends on `n` alone, so every epoch of an instance uses the same.
pub fn usable_perplexity(asked: f64, n: usize) -> f64 {
    let room = n.saturating_sub(1) as f64;
    if room >= 3.0 * asked {
        asked
    } else {
        (room / 3.0 * (1.0 - 1e-9)).max(f64::MIN_POSITIVE)
    }
}

/// Each example's neighbour agreement by training and by true label, among its own group.
fn agreement(
    coords: &[[f64; 2]],
    set: &ProbeSet,
    groups: &[&str],
    k: usize,
) -> (Vec<f64>, Vec<f64>) {
    let n = coords.len();
    let (mut by_train, mut by_true) = (vec![0.0; n], vec![0.0; n]);
    for g in ["clean", "corrupted"] {
        let members: Vec<usize> = (0..n).filter(|&i| groups[i] == g).collect();
        if members.is_empty() {
            continue;
        }
        let pts: Vec<[f64; 2]> = members.iter().map(|&i| coords[i]).collect();
        let label = |l: &[i64]| -> Vec<i64> { members.iter().map(|&i| l[i]).collect() };
        let a = embedding::neighbour_agreement(&pts, &label(&set.train_label), k);
        let b = embedding::neighbour_agreement(&pts, &label(&set.true_label), k);
        for (j, &i) in members.iter().enumerate() {
            by_train[i] = a[j];
            by_true[i] = b[j];
        }
    }
    (by_train, by_true)
}

impl Kind for Embed {
    type Params = EmbedParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = VERSION;
    const ABOUT: &'static str = "2-D views (PCA, t-SNE) of the probe set per epoch and layer, with nearest-neighbour label agreement";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[slots::ACTIVATIONS])
    }
    fn check(&self, p: &EmbedParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        crate::stages::check_methods(EmbedParams::methods, &p.methods, &METHODS)?;
        if !(p.perplexity > 0.0 && p.perplexity.is_finite()) {
            return Err(ParamError::param(
                EmbedParams::perplexity,
                format!("must be positive, got {}", p.perplexity),
            ));
        }
        for (value, name) in [
            (p.iterations, "iterations"),
            (p.neighbours, "neighbours"),
            (p.threads, "threads"),
        ] {
            crate::stages::trained::at_least(Some(value), name, 1)?;
        }
        match &p.layers {
            Layers::Word(w) if w == "all" => {}
            Layers::Names(names) => {
                // Where the activations list their layers, these must be among them.
                let upstream = env
                    .input(slots::ACTIVATIONS.name)
                    .and_then(|a| a.params.typed::<ActivationsParams>().ok());
                let kept = upstream.as_ref().and_then(|a| a.layers.names());
                if let Some(kept) = kept
                    && let Some(l) = names.iter().find(|l| !kept.contains(l))
                {
                    return Err(ParamError::param(
                        EmbedParams::layers,
                        format!(
                            "the activations keep no layer \"{l}\"{}; they keep: {}",
                            pipe_engine::error::suggest(l, kept.iter().map(String::as_str)),
                            kept.join(", ")
                        ),
                    ));
                }
            }
            other => {
                return Err(ParamError::param(
                    EmbedParams::layers,
                    format!("expected \"all\" or a list of layer names, found {other:?}"),
                ));
            }
        }
        Ok(())
    }
    fn tables(&self, _p: &EmbedParams) -> Vec<String> {
        vec![Embedding::NAME.into()]
    }
    /// One part per epoch of the activations, named like it (`epoch 5`).
    fn parts(&self, _p: &EmbedParams, keys: &KeyInputs<'_>) -> Vec<Part> {
        let specs = EmbedParams::specs();
        keys.parts_per_input_part(
            slots::ACTIVATIONS.name,
            EPOCH_PART_KIND,
            VERSION,
            specs,
            &[],
        )
    }
    fn threads(&self, p: &EmbedParams) -> usize {
        p.threads.max(1) as usize
    }
    fn run(&self, p: &EmbedParams, ctx: &mut RunContext<'_>) -> Result<()> {
        let dir = ctx.input(slots::ACTIVATIONS.name)?.to_path_buf();
        let info = ActivationsInfo::read_in(&dir)?;
        let set = ProbeSet::read_in(&dir)?;
        let stored: Vec<&str> = info.layers.iter().map(|l| l.name.as_str()).collect();
        let layers: Vec<String> = match p.layers.names() {
            None => stored.iter().map(|s| s.to_string()).collect(),
            Some(names) => {
                if let Some(l) = names.iter().find(|l| !stored.contains(&l.as_str())) {
                    bail!(BadData(format!(
                        "layers: the activations hold no layer \"{l}\"; they hold: {}",
                        stored.join(", ")
                    )));
                }
                names.to_vec()
            }
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(ctx.threads)
            .build()?;
        // One layer's embeddings and log lines.
        let embed_one = |epoch: i64, layer: &String| -> Result<(Embedding, Vec<u8>)> {
            let features = Features::read(
                &dir.join(format!("epoch={epoch}"))
                    .join(format!("{layer}.parquet")),
            )?;
            if features.features.rows() != set.true_label.len() {
                bail!(
                    "epoch {epoch} layer {layer}: {} rows for {} probe examples",
                    features.features.rows(),
                    set.true_label.len()
                );
            }
            let (mut t, mut lines) = (Embedding::default(), Vec::new());
            embed_layer(p, epoch, layer, &features, &set, &mut t, &mut lines)?;
            Ok((t, lines))
        };
        // The layers side by side (each t-SNE also splits its own loops): the threads
        // stay busy through each one's serial steps. Rows and log lines keep layer order.
        let embed = |epoch: i64, log: &mut std::fs::File| -> Result<Embedding> {
            let done: Vec<Result<(Embedding, Vec<u8>)>> = pool.install(|| {
                layers
                    .par_iter()
                    .map(|layer| embed_one(epoch, layer))
                    .collect()
            });
            let mut t = Embedding::default();
            for one in done {
                let (rows, lines) = one?;
                log.write_all(&lines)?;
                t.append(rows);
            }
            Ok(t)
        };
        let mut table = Embedding::default();
        for_each_epoch_part(
            ctx,
            &info.epochs,
            EPOCH_PART_KIND,
            |keys, part| p.epoch_part_key(keys, part),
            |epoch, folder, log| embed(epoch, log)?.write_in(folder),
            |_, folder| {
                table.append(Embedding::read_in(folder)?);
                Ok(())
            },
        )?;
        table.write_in(ctx.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perplexity_is_lowered_only_for_small_probe_sets() {
        assert_eq!(usable_perplexity(30.0, 1000), 30.0);
        assert_eq!(
            usable_perplexity(30.0, 91),
            30.0,
            "n - 1 = 3 x 30 is enough"
        );
        // 50 points: (50 - 1) / 3 = 16.33, just under.
        let p = usable_perplexity(30.0, 50);
        assert!((p - 49.0 / 3.0).abs() < 1e-6 && p < 49.0 / 3.0);
        assert!(49.0 >= 3.0 * p);
        let x: Vec<f32> = (0..50 * 3).map(|i| ((i * 37) % 11) as f32).collect();
        let options = embedding::TsneOptions {
            perplexity: p,
            iterations: 10,
            ..Default::default()
        };
        assert!(embedding::tsne_2d(&x, 50, 3, &options).is_ok());
    }
}
