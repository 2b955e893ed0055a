//! The `activations` stage's work: pick the probe set, run it through each chosen
//! checkpoint, store every layer's features (projected when wide).
//!
//! Output: `probe_set.parquet` (`example, index, true_label, train_label, corrupted`),
//! `epoch=E/LAYER.parquet` (`example`, `features` = fixed-size list of f32) and
//! `activations.json` (epochs, layers with their widths, P, M).
//!
//! Each epoch's layers are first stored as a part of their own (keyed on the checkpoint,
//! see `ActivationsParams::epoch_part_key`), then linked into the output: an epoch whose
//! part is cached is not computed again.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use pipe_engine::stage::{BadData, RunContext};
use pipe_engine::table::{FixedRows, Table};
use pipe_kinds::stages::activations::{
    ActivationsInfo, ActivationsParams, EPOCH_PART_KIND, LAYERS_FILE, LayerFeatures,
};
use pipe_kinds::tables::{Features, ProbeSet};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::trained::TrainedRun;
use crate::device;
use crate::models::Net;
use crate::tensors::to_i64;
use pipe_engine::table::StoredTable;
use pipe_kinds::stages::corrupt::ExampleGroup;

/// Chooses the probe set: for each of the first P classes, M clean examples of that class
/// and M corrupted examples (label changed) whose training label is that class (none
/// without corruption). Chosen examples that kept their own label are left out.
pub fn choose_probe_set(
    train_labels: &[i64],
    groups: &[ExampleGroup],
    classes: usize,
    per_class: usize,
    seed: u64,
) -> Result<Vec<usize>, String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let any_corrupted = groups.contains(&ExampleGroup::Corrupted);
    let mut out = Vec::new();
    for (group, wanted) in [
        (ExampleGroup::Clean, true),
        (ExampleGroup::Corrupted, any_corrupted),
    ] {
        if !wanted {
            continue;
        }
        for c in 0..classes as i64 {
            let mut pool: Vec<usize> = (0..train_labels.len())
                .filter(|&i| groups[i] == group && train_labels[i] == c)
                .collect();
            if pool.len() < per_class {
                let what = match group {
                    ExampleGroup::Clean => "clean examples of class",
                    _ => "corrupted examples (label changed) with training label",
                };
                return Err(format!(
                    "per_class = {per_class}, but there are only {} {what} {c}; lower per_class",
                    pool.len()
                ));
            }
            pool.shuffle(&mut rng);
            out.extend_from_slice(&pool[..per_class]);
        }
    }
    Ok(out)
}

/// Projects `x` (`[n, d]`) to `k` features with a seeded Gaussian matrix scaled by 1/sqrt(k),
/// generated in blocks of input features so that wide layers fit in memory. The same seed
/// gives the same projection, whatever the batch.
fn project(x: &Tensor, k: i64, seed: u64) -> Tensor {
    let d = x.size()[1];
    let block = 2048;
    let mut out = Tensor::zeros([x.size()[0], k], (Kind::Float, x.device()));
    let mut start = 0;
    let mut b = 0u64;
    while start < d {
        let len = block.min(d - start);
        let r = {
            let _g = crate::rng::TORCH_RNG
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(
                (seed.wrapping_mul(1_000_003).wrapping_add(b) & 0x7fff_ffff_ffff_ffff) as i64,
            );
            Tensor::randn([len, k], (Kind::Float, Device::Cpu))
        }
        .to_device(x.device());
        out += x.narrow(1, start, len).matmul(&r);
        start += len;
        b += 1;
    }
    out / (k as f64).sqrt()
}

/// A `[n, d]` tensor of features as a [`Features`] table.
fn features_table(features: &Tensor) -> Result<Features> {
    let f = features
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous();
    let (n, d) = (f.size()[0], f.size()[1]);
    Ok(Features {
        example: (0..n).collect(),
        features: FixedRows {
            width: d as usize,
            values: Vec::<f32>::try_from(f.view([-1]))?,
        },
    })
}

/// Every (wanted) layer's output for the whole probe set `x`, flattened, in batches.
fn layer_outputs(net: &Net, x: &Tensor, wanted: Option<&[String]>) -> Vec<(String, Tensor)> {
    let mut per_layer: Vec<(String, Vec<Tensor>)> = Vec::new();
    let n = x.size()[0];
    let mut start = 0;
    while start < n {
        let len = 500.min(n - start);
        let outs = tch::no_grad(|| net.forward_layers(&x.narrow(0, start, len)));
        for (name, t) in outs {
            if wanted.is_some_and(|w| !w.contains(&name)) {
                continue;
            }
            let flat = t.flatten(1, -1);
            match per_layer.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(flat),
                None => per_layer.push((name, vec![flat])),
            }
        }
        start += len;
    }
    per_layer
        .into_iter()
        .map(|(name, parts)| (name, Tensor::cat(&parts, 0)))
        .collect()
}

/// Stores one epoch's layers under `dir` (projected when wider than `max_features`),
/// adding layers seen for the first time to `layers_info`.
fn store_epoch(
    p: &ActivationsParams,
    net: &Net,
    x: &Tensor,
    dir: &Path,
    layers_info: &mut Vec<LayerFeatures>,
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for (li, (name, feats)) in layer_outputs(net, x, p.layers.names())
        .into_iter()
        .enumerate()
    {
        let d = feats.size()[1];
        let stored = if d > p.max_features {
            project(
                &feats,
                p.max_features,
                (p.seed as u64).wrapping_add(1 + li as u64),
            )
        } else {
            feats
        };
        features_table(&stored)?.write(&dir.join(format!("{name}.parquet")))?;
        if !layers_info.iter().any(|l| l.name == name) {
            layers_info.push(LayerFeatures {
                name,
                features: stored.size()[1] as usize,
                original_features: d as usize,
            });
        }
    }
    Ok(())
}

/// Puts an epoch part's layer files into the output folder `dir`: hard links (the part
/// and the output then share the bytes), or copies where links are not possible.
fn link_epoch(part: &Path, dir: &Path, layers: &[LayerFeatures]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for l in layers {
        let name = format!("{}.parquet", l.name);
        let (from, to) = (part.join(&name), dir.join(&name));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// Runs one `activations` instance.
pub fn run(p: &ActivationsParams, ctx: &mut RunContext<'_>) -> Result<()> {
    tch::set_num_threads(ctx.threads as i32);
    let device = device::resolve(&p.worker.device).map_err(anyhow::Error::msg)?;
    let run = TrainedRun::load(ctx, device)?;
    run.check_layers("layers", p.layers.names())?;
    let classes = p.classes.map_or(run.data.info.classes, |c| c as usize);
    if classes > run.data.info.classes {
        bail!(BadData(format!(
            "classes = {classes}, but the data set has {}",
            run.data.info.classes
        )));
    }
    let per_class = p.per_class as usize;
    let true_labels = to_i64(&run.data.train_true)?;
    let train_labels = to_i64(&run.data.train.y)?;
    let groups = run.data.groups()?;
    let corrupted: Vec<bool> = groups
        .iter()
        .map(|&g| g == ExampleGroup::Corrupted)
        .collect();
    let chosen = choose_probe_set(&train_labels, &groups, classes, per_class, p.seed as u64)
        .map_err(|m| anyhow::Error::new(BadData(m)))?;
    let n_corrupted = chosen.iter().filter(|&&i| corrupted[i]).count();
    writeln!(
        ctx.log,
        "probe set: {} examples ({} corrupted), P = {classes}, M = {per_class}",
        chosen.len(),
        n_corrupted
    )?;
    ProbeSet {
        example: (0..chosen.len() as i64).collect(),
        index: chosen.iter().map(|&i| i as i64).collect(),
        true_label: chosen.iter().map(|&i| true_labels[i]).collect(),
        train_label: chosen.iter().map(|&i| train_labels[i]).collect(),
        corrupted: chosen.iter().map(|&i| corrupted[i]).collect(),
    }
    .write_in(ctx.out)?;

    let idx =
        Tensor::from_slice(&chosen.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device);
    let x = run.data.train.x.index_select(0, &idx);
    let mut epochs = Vec::new();
    let mut layers_info: Vec<LayerFeatures> = Vec::new();
    let parts = run.epoch_parts(
        &p.epochs,
        ctx,
        EPOCH_PART_KIND,
        |keys, checkpoint| p.epoch_part_key(keys, checkpoint),
        |_, net, tmp| {
            let mut layers = Vec::new();
            store_epoch(p, net, &x, tmp, &mut layers)?;
            std::fs::write(tmp.join(LAYERS_FILE), serde_json::to_vec_pretty(&layers)?)?;
            Ok(())
        },
    )?;
    for part in &parts {
        let epoch = part.checkpoint.epoch;
        epochs.push(epoch);
        let layers: Vec<LayerFeatures> =
            serde_json::from_slice(&std::fs::read(part.dir.join(LAYERS_FILE))?)?;
        link_epoch(&part.dir, &ctx.out.join(format!("epoch={epoch}")), &layers)?;
        for l in layers {
            if !layers_info.iter().any(|k| k.name == l.name) {
                layers_info.push(l);
            }
        }
        writeln!(
            ctx.log,
            "epoch {epoch}: {} ({} layers, {})",
            part.how(),
            layers_info.len(),
            part.label()
        )?;
    }
    let info = ActivationsInfo {
        epochs,
        layers: layers_info,
        classes,
        per_class,
        clean: chosen.len() - n_corrupted,
        corrupted: n_corrupted,
    };
    std::fs::write(
        ctx.out.join(ActivationsInfo::FILE),
        serde_json::to_vec_pretty(&info)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_set_has_m_clean_and_m_corrupted_per_class() {
        let n = 400;
        let truth: Vec<i64> = (0..n).map(|i| i % 4).collect();
        let corrupted: Vec<bool> = (0..n).map(|i| i % 5 == 0).collect();
        // Every 10th of the chosen keeps its label: those never enter the probe set.
        let groups: Vec<ExampleGroup> = (0..n)
            .map(|i| ExampleGroup::of(i % 5 == 0, i % 5 == 0 && i % 50 != 0))
            .collect();
        let train: Vec<i64> = (0..n)
            .map(|i| {
                if i % 5 == 0 && i % 50 != 0 {
                    (truth[i as usize] + 1) % 4
                } else {
                    truth[i as usize]
                }
            })
            .collect();
        let chosen = choose_probe_set(&train, &groups, 3, 5, 1).unwrap();
        assert_eq!(chosen.len(), 2 * 3 * 5);
        for c in 0..3 {
            assert_eq!(
                chosen
                    .iter()
                    .filter(|&&i| !corrupted[i] && train[i] == c)
                    .count(),
                5
            );
            assert_eq!(
                chosen
                    .iter()
                    .filter(|&&i| corrupted[i] && train[i] == c)
                    .count(),
                5
            );
        }
        assert!(chosen.iter().all(|&i| i % 50 != 0), "unchanged left out");
        assert!(choose_probe_set(&train, &groups, 3, 50, 1).is_err());
        // Projection: same seed, same matrix; the scale keeps norms about equal.
        let x = Tensor::randn([4, 3000], (Kind::Float, Device::Cpu));
        let a = project(&x, 1000, 9);
        let b = project(&x, 1000, 9);
        assert!(a.equal(&b));
        let ratio = a.norm().double_value(&[]) / x.norm().double_value(&[]);
        assert!((0.9..1.1).contains(&ratio), "{ratio}");
    }
}
