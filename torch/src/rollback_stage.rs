//! The `rollback` stage's work: the final weights with layers k..L replaced by an earlier
//! epoch's (every variable of those layers, BatchNorm statistics included), evaluated.
//!
//! Output `rollback.parquet`: `from_epoch, cutoff, cutoff_index, layers_rolled_back,
//! test_acc, clean_acc, corrupted_train_acc, corrupted_true_acc`, with one extra row
//! `cutoff = "none"` for the final weights as they are.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use pipe::stage::RunContext;
use pipe::table::write_parquet;
use serde_json::Value as Json;
use tch::Tensor;

use crate::device;
use crate::models::Net;
use crate::trained::{TrainedRun, accuracy, predict};

struct Row {
    from_epoch: i64,
    cutoff: String,
    cutoff_index: i64,
    rolled: i64,
    test: f64,
    clean: f64,
    cor_train: Option<f64>,
    cor_true: Option<f64>,
}

fn evaluate(net: &Net, run: &TrainedRun) -> (f64, f64, Option<f64>, Option<f64>) {
    let d = &run.data;
    let test = accuracy(&predict(net, &d.test.x), &d.test.y, None).unwrap_or(f64::NAN);
    let pred = predict(net, &d.train.x);
    let clean_mask = d.corrupted.logical_not();
    (
        test,
        accuracy(&pred, &d.train.y, Some(&clean_mask)).unwrap_or(f64::NAN),
        accuracy(&pred, &d.train.y, Some(&d.corrupted)),
        accuracy(&pred, &d.train_true, Some(&d.corrupted)),
    )
}

fn set_weights(net: &Net, weights: &[(String, Tensor)], only: impl Fn(&str) -> bool) {
    tch::no_grad(|| {
        for (name, var) in net.variables() {
            if only(&name)
                && let Some((_, w)) = weights.iter().find(|(n, _)| *n == name)
            {
                var.shallow_clone().copy_(w);
            }
        }
    });
}

/// Runs one `rollback` instance.
pub fn run(ctx: &mut RunContext<'_>) -> Result<()> {
    let p = ctx.params;
    tch::set_num_threads(ctx.threads as i32);
    let device = device::resolve(p.str("device").unwrap_or("auto")).map_err(anyhow::Error::msg)?;
    let run = TrainedRun::load(ctx, device)?;
    let final_ck = run.checkpoint(p.get("final").unwrap_or(&Json::from("final")))?;
    let net = run.net_at(&final_ck)?;
    let final_w = run.weights(&final_ck)?;
    let names = net.layer_names();
    let variables = net.variables();
    let with_params: Vec<String> = names
        .iter()
        .filter(|l| {
            variables
                .iter()
                .any(|(n, _)| net.layer_of(n) == Some(l.as_str()))
        })
        .cloned()
        .collect();
    let cutoffs: Vec<String> = match p.get("cutoffs") {
        Some(Json::Array(a)) => a
            .iter()
            .filter_map(|l| l.as_str().map(str::to_string))
            .collect(),
        _ => with_params.clone(),
    };
    let mut rows = Vec::new();
    let (test, clean, ct, cr) = evaluate(&net, &run);
    rows.push(Row {
        from_epoch: final_ck.epoch,
        cutoff: "none".into(),
        cutoff_index: -1,
        rolled: 0,
        test,
        clean,
        cor_train: ct,
        cor_true: cr,
    });
    let from: Vec<Json> = match p.get("from_epochs") {
        Some(Json::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    for which in &from {
        let ck = run.checkpoint(which)?;
        let old = run.weights(&ck)?;
        for cutoff in &cutoffs {
            let k = names.iter().position(|n| n == cutoff).unwrap_or(usize::MAX);
            let rolled: Vec<&String> = names
                .iter()
                .skip(k)
                .filter(|l| with_params.contains(l))
                .collect();
            set_weights(&net, &final_w, |_| true);
            set_weights(&net, &old, |v| {
                net.layer_of(v)
                    .is_some_and(|l| rolled.iter().any(|r| r.as_str() == l))
            });
            let (test, clean, ct, cr) = evaluate(&net, &run);
            rows.push(Row {
                from_epoch: ck.epoch,
                cutoff: cutoff.clone(),
                cutoff_index: k as i64,
                rolled: rolled.len() as i64,
                test,
                clean,
                cor_train: ct,
                cor_true: cr,
            });
        }
        writeln!(
            ctx.log,
            "rolled back to epoch {}: {} cutoffs",
            ck.epoch,
            cutoffs.len()
        )?;
    }
    let schema = Schema::new(vec![
        Field::new("from_epoch", DataType::Int64, false),
        Field::new("cutoff", DataType::Utf8, false),
        Field::new("cutoff_index", DataType::Int64, false),
        Field::new("layers_rolled_back", DataType::Int64, false),
        Field::new("test_acc", DataType::Float64, false),
        Field::new("clean_acc", DataType::Float64, false),
        Field::new("corrupted_train_acc", DataType::Float64, true),
        Field::new("corrupted_true_acc", DataType::Float64, true),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.from_epoch),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| r.cutoff.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.cutoff_index),
        )),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.rolled))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.test))),
        Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.clean))),
        Arc::new(rows.iter().map(|r| r.cor_train).collect::<Float64Array>()),
        Arc::new(rows.iter().map(|r| r.cor_true).collect::<Float64Array>()),
    ];
    write_parquet(
        &ctx.out.join("rollback.parquet"),
        &RecordBatch::try_new(Arc::new(schema), cols)?,
    )
}
