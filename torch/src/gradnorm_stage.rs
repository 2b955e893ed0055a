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
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use pipe::stage::RunContext;
use pipe::table::write_parquet;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::Value as Json;
use tch::{Kind, Tensor};

use crate::device;
use crate::models::Net;
use crate::trained::{TrainedRun, to_bool};

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

/// Runs one `gradnorm` instance.
pub fn run(ctx: &mut RunContext<'_>) -> Result<()> {
    let p = ctx.params;
    tch::set_num_threads(ctx.threads as i32);
    let device = device::resolve(p.str("device").unwrap_or("auto")).map_err(anyhow::Error::msg)?;
    let run = TrainedRun::load(ctx, device)?;
    let subset = p.int("subset").unwrap_or(100) as usize;
    let corrupted = to_bool(&run.data.corrupted)?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.int("seed").unwrap_or(0) as u64);
    let mut pick = |flag: bool| -> Vec<i64> {
        let mut pool: Vec<i64> = (0..corrupted.len())
            .filter(|&i| corrupted[i] == flag)
            .map(|i| i as i64)
            .collect();
        pool.shuffle(&mut rng);
        pool.truncate(subset);
        pool
    };
    let clean_idx = pick(false);
    let cor_idx = pick(true);
    writeln!(
        ctx.log,
        "{} clean and {} corrupted examples",
        clean_idx.len(),
        cor_idx.len()
    )?;
    let chosen: Vec<i64> = clean_idx.iter().chain(&cor_idx).copied().collect();
    let schema = Schema::new(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("corrupted", DataType::Boolean, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(chosen.clone())),
        Arc::new(BooleanArray::from(
            chosen
                .iter()
                .map(|&i| corrupted[i as usize])
                .collect::<Vec<_>>(),
        )),
    ];
    write_parquet(
        &ctx.out.join("gradnorm_examples.parquet"),
        &RecordBatch::try_new(Arc::new(schema), cols)?,
    )?;
    let (x, y) = (&run.data.train.x, &run.data.train.y);
    let epochs: Vec<Json> = match p.get("epochs") {
        Some(Json::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    let mut rows: Vec<GradRow> = Vec::new();
    let mut done = Vec::new();
    for which in &epochs {
        let ck = run.checkpoint(which)?;
        if done.contains(&ck.epoch) {
            continue;
        }
        done.push(ck.epoch);
        let net = run.net_at(&ck)?;
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
        let g_clean = layer_grads(&net, &params, &layers, x, y, &clean_idx);
        let g_cor =
            (!cor_idx.is_empty()).then(|| layer_grads(&net, &params, &layers, x, y, &cor_idx));
        let per_example = |idx: &[i64]| -> Vec<f64> {
            let mut sums = vec![0.0; layers.len()];
            for &i in idx {
                for (s, g) in sums
                    .iter_mut()
                    .zip(layer_grads(&net, &params, &layers, x, y, &[i]))
                {
                    *s += norm(&g);
                }
            }
            sums.into_iter()
                .map(|s| s / idx.len().max(1) as f64)
                .collect()
        };
        let ex_clean = per_example(&clean_idx);
        let ex_cor = (!cor_idx.is_empty()).then(|| per_example(&cor_idx));
        let (nc, nk) = (clean_idx.len() as f64, cor_idx.len() as f64);
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
                epoch: ck.epoch,
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
        writeln!(ctx.log, "epoch {} done", ck.epoch)?;
    }
    let f = |g: fn(&GradRow) -> f64| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(rows.iter().map(g)))
    };
    let o = |g: fn(&GradRow) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(g).collect::<Float64Array>())
    };
    let schema = Schema::new(vec![
        Field::new("epoch", DataType::Int64, false),
        Field::new("layer", DataType::Utf8, false),
        Field::new("clean_grad_norm", DataType::Float64, false),
        Field::new("corrupted_grad_norm", DataType::Float64, true),
        Field::new("total_grad_norm", DataType::Float64, false),
        Field::new("corrupted_share", DataType::Float64, true),
        Field::new("cosine", DataType::Float64, true),
        Field::new("clean_example_grad_norm", DataType::Float64, false),
        Field::new("corrupted_example_grad_norm", DataType::Float64, true),
        Field::new("n_clean", DataType::Int64, false),
        Field::new("n_corrupted", DataType::Int64, false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.epoch))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.layer.as_str()),
        )),
        f(|r| r.clean),
        o(|r| r.corrupted),
        f(|r| r.total),
        o(|r| r.corrupted_share),
        o(|r| r.cosine),
        f(|r| r.clean_example),
        o(|r| r.corrupted_example),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|_| clean_idx.len() as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|_| cor_idx.len() as i64),
        )),
    ];
    write_parquet(
        &ctx.out.join("gradnorm.parquet"),
        &RecordBatch::try_new(Arc::new(schema), cols)?,
    )
}
