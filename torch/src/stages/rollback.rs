//! The `rollback` stage's work: the final weights with layers k..L replaced by an earlier
//! epoch's (every variable of those layers, BatchNorm statistics included), evaluated.
//!
//! Output `rollback.parquet`: `from_epoch, cutoff, cutoff_index, layers_rolled_back,
//! test_acc, clean_acc, corrupted_train_acc, corrupted_true_acc`, with one extra row
//! `cutoff = "none"` for the final weights as they are.

use std::io::Write;

use anyhow::Result;
use pipe_engine::stage::RunContext;
use pipe_kinds::stages::rollback::RollbackParams;
use pipe_kinds::tables::Rollback;
use tch::Tensor;

use super::trained::{TrainedRun, predict};
use crate::device;
use crate::models::Net;
use crate::score::accuracy;
use pipe_engine::table::StoredTable;

/// Test, clean, corrupted (training labels) and corrupted (true labels) accuracy.
type Scores = (f64, f64, Option<f64>, Option<f64>);

/// Adds one row to the table.
fn push(
    t: &mut Rollback,
    from_epoch: i64,
    cutoff: &str,
    cutoff_index: i64,
    rolled: i64,
    s: Scores,
) {
    t.from_epoch.push(from_epoch);
    t.cutoff.push(cutoff.to_string());
    t.cutoff_index.push(cutoff_index);
    t.layers_rolled_back.push(rolled);
    t.test_acc.push(s.0);
    t.clean_acc.push(s.1);
    t.corrupted_train_acc.push(s.2);
    t.corrupted_true_acc.push(s.3);
}

fn evaluate(net: &Net, run: &TrainedRun) -> Scores {
    let d = &run.data;
    let test = accuracy(&predict(net, &d.test.x), &d.test.y, None).unwrap_or(f64::NAN);
    let pred = predict(net, &d.train.x);
    let clean_mask = d.clean();
    (
        test,
        accuracy(&pred, &d.train.y, Some(&clean_mask)).unwrap_or(f64::NAN),
        accuracy(&pred, &d.train.y, Some(&d.changed)),
        accuracy(&pred, &d.train_true, Some(&d.changed)),
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
pub fn run(p: &RollbackParams, ctx: &mut RunContext<'_>) -> Result<()> {
    tch::set_num_threads(ctx.threads as i32);
    let device = device::resolve(&p.worker.device).map_err(anyhow::Error::msg)?;
    let run = TrainedRun::load(ctx, device)?;
    run.check_layers("cutoffs", p.cutoffs.names())?;
    let final_ck = run.checkpoint(&p.final_epoch)?;
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
    let cutoffs: Vec<String> = p
        .cutoffs
        .names()
        .map_or_else(|| with_params.clone(), <[String]>::to_vec);
    let mut table = Rollback::default();
    push(
        &mut table,
        final_ck.epoch,
        "none",
        -1,
        0,
        evaluate(&net, &run),
    );
    for which in &p.from_epochs {
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
            let scores = evaluate(&net, &run);
            push(
                &mut table,
                ck.epoch,
                cutoff,
                k as i64,
                rolled.len() as i64,
                scores,
            );
        }
        writeln!(
            ctx.log,
            "rolled back to epoch {}: {} cutoffs",
            ck.epoch,
            cutoffs.len()
        )?;
    }
    table.write_in(ctx.out)
}
