//! The `gradnorm` stage's work: per checkpoint and layer, the loss gradient from clean and
//! from corrupted examples.
//!
//! Gradients are taken in evaluation mode (BatchNorm uses its running statistics), so an
//! example's gradient does not depend on the others. For each layer, g_clean and g_corrupted
//! are the mean gradients (over the layer's trainable parameters, flattened) of the two
//! groups; the total is the mean over both. `corrupted_share` is
//! |n_k g_k| / (|n_c g_c| + |n_k g_k|): the corrupted examples' part of the summed gradient.
//! `gradnorm_examples.parquet` lists the examples used (`index`, `corrupted`).

use std::io::Write;

use anyhow::Result;
use pipe::stage::RunContext;
use pipe::stages::gradnorm::{EPOCH_PART_KIND, GradNormParams};
use pipe::table::Table;
use pipe::tables::{GradNorm, GradNormExamples};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::device;
use crate::models::Net;
use crate::trained_run::{TrainedRun, to_bool};

/// One row of `gradnorm.parquet`.
#[derive(Clone, Debug)]
pub struct GradRow {
    /// Epoch of the checkpoint.
    pub epoch: i64,
    /// Layer name.
    pub layer: String,
    /// |mean gradient of the clean examples|.
    pub clean: f64,
    /// |mean gradient of the corrupted examples|.
    pub corrupted: Option<f64>,
    /// |mean gradient of all chosen examples|.
    pub total: f64,
    /// The corrupted examples' share of the summed gradient.
    pub corrupted_share: Option<f64>,
    /// cos(g_clean, g_corrupted).
    pub cosine: Option<f64>,
    /// Mean per-example gradient norm of the clean examples.
    pub clean_example: f64,
    /// Mean per-example gradient norm of the corrupted examples.
    pub corrupted_example: Option<f64>,
}

/// Per-layer gradient (flattened, in the layer's variable order) of the mean loss over `idx`.
fn layer_grads(
    net: &Net,
    params: &[(String, Tensor)],
    layers: &[String],
    x: &Tensor,
    y: &Tensor,
    idx: &[i64],
) -> Vec<Tensor> {
    for (_, p) in params {
        p.shallow_clone().zero_grad();
    }
    let i = Tensor::from_slice(idx).to_device(x.device());
    let loss = net
        .forward_t(&x.index_select(0, &i), false)
        .cross_entropy_for_logits(&y.index_select(0, &i));
    loss.backward();
    layers
        .iter()
        .map(|l| {
            let parts: Vec<Tensor> = params
                .iter()
                .filter(|(n, _)| net.layer_of(n) == Some(l.as_str()))
                .map(|(_, p)| p.grad().to_kind(Kind::Double).flatten(0, -1))
                .collect();
            Tensor::cat(&parts, 0)
        })
        .collect()
}

fn norm(t: &Tensor) -> f64 {
    t.norm().double_value(&[])
}

/// Picks `subset` clean and `subset` corrupted examples (fewer when there are fewer).
fn pick_examples(corrupted: &[bool], subset: usize, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pick = |flag: bool| -> Vec<i64> {
        let mut pool: Vec<i64> = (0..corrupted.len())
            .filter(|&i| corrupted[i] == flag)
            .map(|i| i as i64)
            .collect();
        pool.shuffle(&mut rng);
        pool.truncate(subset);
        pool
    };
    let clean = pick(false);
    let cor = pick(true);
    (clean, cor)
}

/// The rows of one checkpoint: per layer with trainable parameters, the two groups'
/// gradients and how they compare.
fn epoch_rows(
    net: &Net,
    epoch: i64,
    (x, y): (&Tensor, &Tensor),
    clean_idx: &[i64],
    cor_idx: &[i64],
) -> Vec<GradRow> {
    let params = net.parameters();
    let layers: Vec<String> = net
        .layer_names()
        .into_iter()
        .filter(|l| {
            params
                .iter()
                .any(|(n, _)| net.layer_of(n) == Some(l.as_str()))
        })
        .collect();
    let g_clean = layer_grads(net, &params, &layers, x, y, clean_idx);
    let g_cor = (!cor_idx.is_empty()).then(|| layer_grads(net, &params, &layers, x, y, cor_idx));
    let per_example = |idx: &[i64]| -> Vec<f64> {
        let mut sums = vec![0.0; layers.len()];
        for &i in idx {
            for (s, g) in sums
                .iter_mut()
                .zip(layer_grads(net, &params, &layers, x, y, &[i]))
            {
                *s += norm(&g);
            }
        }
        sums.into_iter()
            .map(|s| s / idx.len().max(1) as f64)
            .collect()
    };
    let ex_clean = per_example(clean_idx);
    let ex_cor = (!cor_idx.is_empty()).then(|| per_example(cor_idx));
    let (nc, nk) = (clean_idx.len() as f64, cor_idx.len() as f64);
    let mut rows = Vec::new();
    for (li, layer) in layers.iter().enumerate() {
        let gc = &g_clean[li];
        let (corrupted_norm, total, share, cosine) = match &g_cor {
            Some(gk) => {
                let gk = &gk[li];
                let total = (gc * nc + gk * nk) / (nc + nk);
                let (a, b) = (norm(gc) * nc, norm(gk) * nk);
                let cos =
                    gc.dot(gk).double_value(&[]) / (norm(gc) * norm(gk)).max(f64::MIN_POSITIVE);
                (
                    Some(norm(gk)),
                    norm(&total),
                    Some(b / (a + b).max(f64::MIN_POSITIVE)),
                    Some(cos),
                )
            }
            None => (None, norm(gc), None, None),
        };
        rows.push(GradRow {
            epoch,
            layer: layer.clone(),
            clean: norm(gc),
            corrupted: corrupted_norm,
            total,
            corrupted_share: share,
            cosine,
            clean_example: ex_clean[li],
            corrupted_example: ex_cor.as_ref().map(|v| v[li]),
        });
    }
    rows
}

/// Runs one `gradnorm` instance.
pub fn run(p: &GradNormParams, ctx: &mut RunContext<'_>) -> Result<()> {
    tch::set_num_threads(ctx.threads as i32);
    let device = device::resolve(&p.worker.device).map_err(anyhow::Error::msg)?;
    let run = TrainedRun::load(ctx, device)?;
    let corrupted = to_bool(&run.data.corrupted)?;
    let (clean_idx, cor_idx) = pick_examples(&corrupted, p.subset as usize, p.seed as u64);
    writeln!(
        ctx.log,
        "{} clean and {} corrupted examples",
        clean_idx.len(),
        cor_idx.len()
    )?;
    let chosen: Vec<i64> = clean_idx.iter().chain(&cor_idx).copied().collect();
    GradNormExamples {
        corrupted: chosen.iter().map(|&i| corrupted[i as usize]).collect(),
        index: chosen,
    }
    .write(&ctx.out.join("gradnorm_examples.parquet"))?;
    let identities = ctx.input_identities();
    let keys = identities.keys(ctx.params);
    let mut table = GradNorm::default();
    // Each epoch's rows are a part keyed on its checkpoint: computed once.
    let parts = run.epoch_parts(
        &p.epochs,
        ctx.parts,
        EPOCH_PART_KIND,
        |checkpoint| p.epoch_part_key(&keys, checkpoint),
        |ck, net, tmp| {
            let data = (&run.data.train.x, &run.data.train.y);
            let rows = epoch_rows(net, ck.epoch, data, &clean_idx, &cor_idx);
            rows_table(&rows, clean_idx.len(), cor_idx.len()).write(&tmp.join("gradnorm.parquet"))
        },
    )?;
    for part in &parts {
        let (epoch, how) = (part.checkpoint.epoch, part.how());
        writeln!(ctx.log, "epoch {epoch}: {how} (part {})", &part.key[..12])?;
        table.append(GradNorm::read(&part.dir.join("gradnorm.parquet"))?);
    }
    table.write(&ctx.out.join("gradnorm.parquet"))
}

/// The `gradnorm.parquet` rows of some gradient measurements.
fn rows_table(rows: &[GradRow], n_clean: usize, n_corrupted: usize) -> GradNorm {
    GradNorm {
        epoch: rows.iter().map(|r| r.epoch).collect(),
        layer: rows.iter().map(|r| r.layer.clone()).collect(),
        clean_grad_norm: rows.iter().map(|r| r.clean).collect(),
        corrupted_grad_norm: rows.iter().map(|r| r.corrupted).collect(),
        total_grad_norm: rows.iter().map(|r| r.total).collect(),
        corrupted_share: rows.iter().map(|r| r.corrupted_share).collect(),
        cosine: rows.iter().map(|r| r.cosine).collect(),
        clean_example_grad_norm: rows.iter().map(|r| r.clean_example).collect(),
        corrupted_example_grad_norm: rows.iter().map(|r| r.corrupted_example).collect(),
        n_clean: vec![n_clean as i64; rows.len()],
        n_corrupted: vec![n_corrupted as i64; rows.len()],
    }
}
