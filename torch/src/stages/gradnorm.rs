//! The `gradnorm` stage's work: per checkpoint, layer and group of examples, the mean
//! cross-entropy gradient split into a label-dependent and a label-independent part (the
//! paper's appendix, Eq. 25; science.md).
//!
//! For logits z, softmax p, one-hot y and C classes, dL/dz = p - y = (p - 1/C) - (y - 1/C).
//! Softmax ignores the all-ones direction of z, so both parts are centered: without the
//! centering, the label-dependent part would carry the gradient of the mean logit, which
//! every example shares whatever its label, and would hide the finding. For a group of n
//! examples with logit Jacobians J_i (w.r.t. one layer's parameters):
//! - label-dependent: G_dep = (1/n) sum_i J_i^T (y_i - 1/C), the gradient of the scalar
//!   (1/n) sum_i (y_i - 1/C) . z_i;
//! - label-independent: G_ind = (1/n) sum_i J_i^T (p_i - 1/C), the gradient of
//!   (1/n) sum_i [logsumexp(z_i) - mean_c z_ic];
//! - total: G_ind - G_dep, the group's mean cross-entropy gradient.
//!
//! Each is one backward pass (per chunk of examples, summed). Gradients are taken in
//! evaluation mode (BatchNorm uses its running statistics), so an example's gradient does
//! not depend on the others. Groups: clean (not chosen) and corrupted (label changed)
//! examples, the same number n in both (all of the smaller group, or `max_examples`), and
//! the chosen examples that kept their label (`unchanged`). `gradnorm_examples.parquet`
//! records the examples; `per_example = true` adds every example's own three norms.

use std::io::Write;

use anyhow::Result;
use pipe_engine::stage::RunContext;
use pipe_engine::table::Table;
use pipe_kinds::stages::corrupt::ExampleGroup;
use pipe_kinds::stages::gradnorm::{EPOCH_PART_KIND, GradNormParams};
use pipe_kinds::tables::{GradNorm, GradNormExamples, GradNormPerExample};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::trained::TrainedRun;
use crate::device;
use crate::models::Net;
use pipe_engine::table::StoredTable;

/// Examples per forward and backward pass.
const CHUNK: usize = 256;

/// The examples of each group, in the order groups are reported.
pub struct Groups(pub Vec<(ExampleGroup, Vec<i64>)>);

/// Picks each group's examples: clean and corrupted get the same number (the smaller
/// group's size, at most `max`); unchanged ones all (at most `max`). Seeded; indices sorted.
pub fn pick_examples(groups: &[ExampleGroup], max: Option<usize>, seed: u64) -> Groups {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pool = |g: ExampleGroup| -> Vec<i64> {
        (0..groups.len())
            .filter(|&i| groups[i] == g)
            .map(|i| i as i64)
            .collect()
    };
    let (clean, corrupted, unchanged) = (
        pool(ExampleGroup::Clean),
        pool(ExampleGroup::Corrupted),
        pool(ExampleGroup::Unchanged),
    );
    let cap = max.unwrap_or(usize::MAX);
    let paired = if corrupted.is_empty() {
        clean.len().min(cap)
    } else {
        clean.len().min(corrupted.len()).min(cap)
    };
    let mut out = Vec::new();
    for (g, mut pool, n) in [
        (ExampleGroup::Clean, clean, paired),
        (ExampleGroup::Corrupted, corrupted, paired),
        (ExampleGroup::Unchanged, unchanged, cap),
    ] {
        if pool.is_empty() {
            continue;
        }
        pool.shuffle(&mut rng);
        pool.truncate(n);
        pool.sort_unstable();
        out.push((g, pool));
    }
    Groups(out)
}

/// The trainable parameters of the layers that have some, grouped by layer.
struct LayerParams {
    names: Vec<String>,
    /// For each layer, the positions of its tensors in `tensors`.
    members: Vec<Vec<usize>>,
    tensors: Vec<Tensor>,
}

impl LayerParams {
    fn of(net: &Net) -> LayerParams {
        let params: Vec<(String, Tensor)> = net
            .parameters()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        let mut names = Vec::new();
        let mut members = Vec::new();
        for layer in net.layer_names() {
            let m: Vec<usize> = (0..params.len())
                .filter(|&i| net.layer_of(&params[i].0) == Some(layer.as_str()))
                .collect();
            if !m.is_empty() {
                names.push(layer);
                members.push(m);
            }
        }
        let tensors = params.into_iter().map(|(_, t)| t).collect();
        LayerParams {
            names,
            members,
            tensors,
        }
    }

    /// Per layer, the flattened gradient (double) assembled from per-tensor gradients.
    fn per_layer(&self, grads: &[Tensor]) -> Vec<Tensor> {
        self.members
            .iter()
            .map(|m| {
                Tensor::cat(
                    &m.iter()
                        .map(|&i| grads[i].flatten(0, -1))
                        .collect::<Vec<_>>(),
                    0,
                )
            })
            .collect()
    }
}

/// The two scalars whose gradients are G_dep and G_ind for the examples `idx`, each
/// divided by `n`: (sum_i (y_i - 1/C) . z_i / n, sum_i [logsumexp(z_i) - mean z_i] / n).
fn scalars(net: &Net, x: &Tensor, y: &Tensor, idx: &[i64], n: f64) -> (Tensor, Tensor) {
    let i = Tensor::from_slice(idx).to_device(x.device());
    let z = net
        .forward_t(&x.index_select(0, &i), false)
        .to_kind(Kind::Double);
    let c = z.size()[1];
    let centered_y = y.index_select(0, &i).one_hot(c).to_kind(Kind::Double) - 1.0 / c as f64;
    let dep = (centered_y * &z).sum(Kind::Double) / n;
    let ind = (z.logsumexp([1i64].as_slice(), false)
        - z.mean_dim([1i64].as_slice(), false, Kind::Double))
    .sum(Kind::Double)
        / n;
    (dep, ind)
}

/// Per layer, (G_dep, G_ind) of the examples `idx` (flattened, double).
fn group_parts(
    lp: &LayerParams,
    net: &Net,
    x: &Tensor,
    y: &Tensor,
    idx: &[i64],
) -> Vec<(Tensor, Tensor)> {
    let n = idx.len() as f64;
    let mut dep: Option<Vec<Tensor>> = None;
    let mut ind: Option<Vec<Tensor>> = None;
    let add = |sum: &mut Option<Vec<Tensor>>, g: Vec<Tensor>| {
        let g: Vec<Tensor> = g.into_iter().map(|t| t.to_kind(Kind::Double)).collect();
        *sum = Some(match sum.take() {
            None => g,
            Some(s) => s.iter().zip(&g).map(|(a, b)| a + b).collect(),
        });
    };
    for chunk in idx.chunks(CHUNK) {
        let (d, i) = scalars(net, x, y, chunk, n);
        add(
            &mut dep,
            Tensor::run_backward(&[d], &lp.tensors, true, false),
        );
        add(
            &mut ind,
            Tensor::run_backward(&[i], &lp.tensors, false, false),
        );
    }
    let (dep, ind) = (dep.unwrap_or_default(), ind.unwrap_or_default());
    lp.per_layer(&dep)
        .into_iter()
        .zip(lp.per_layer(&ind))
        .collect()
}

fn norm(t: &Tensor) -> f64 {
    t.norm().double_value(&[])
}

/// One checkpoint's rows: per layer and group, the three norms; per example too when asked.
fn epoch_tables(
    net: &Net,
    epoch: i64,
    (x, y): (&Tensor, &Tensor),
    groups: &Groups,
    per_example: bool,
) -> (GradNorm, Option<GradNormPerExample>) {
    let lp = LayerParams::of(net);
    let mut t = GradNorm::default();
    let mut parts = Vec::new();
    for (_, idx) in &groups.0 {
        parts.push(group_parts(&lp, net, x, y, idx));
    }
    for (li, layer) in lp.names.iter().enumerate() {
        for ((g, idx), p) in groups.0.iter().zip(&parts) {
            let (dep, ind) = &p[li];
            t.epoch.push(epoch);
            t.layer.push(layer.clone());
            t.group.push(g.as_str().to_string());
            t.n.push(idx.len() as i64);
            t.label_dependent.push(norm(dep));
            t.label_independent.push(norm(ind));
            t.total.push(norm(&(ind - dep)));
        }
    }
    let examples = per_example.then(|| {
        let mut e = GradNormPerExample::default();
        for (g, idx) in &groups.0 {
            for &i in idx {
                for (layer, (dep, ind)) in lp.names.iter().zip(group_parts(&lp, net, x, y, &[i])) {
                    e.epoch.push(epoch);
                    e.layer.push(layer.clone());
                    e.index.push(i);
                    e.group.push(g.as_str().to_string());
                    e.label_dependent.push(norm(&dep));
                    e.label_independent.push(norm(&ind));
                    e.total.push(norm(&(ind - dep)));
                }
            }
        }
        e
    });
    (t, examples)
}

/// The corrupted/clean ratio of the label-dependent norm per layer, for the log.
fn ratios(t: &GradNorm) -> String {
    let find = |layer: &str, group: &str| {
        (0..t.layer.len())
            .find(|&i| t.layer[i] == layer && t.group[i] == group)
            .map(|i| t.label_dependent[i])
    };
    let mut layers: Vec<&String> = Vec::new();
    for l in &t.layer {
        if !layers.contains(&l) {
            layers.push(l);
        }
    }
    layers
        .iter()
        .filter_map(|l| {
            let (k, c) = (find(l, "corrupted")?, find(l, "clean")?);
            Some(format!("{l} {:.3}", k / c.max(f64::MIN_POSITIVE)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs one `gradnorm` instance.
pub fn run(p: &GradNormParams, ctx: &mut RunContext<'_>) -> Result<()> {
    tch::set_num_threads(ctx.threads as i32);
    let device = device::resolve(&p.worker.device).map_err(anyhow::Error::msg)?;
    let run = TrainedRun::load(ctx, device)?;
    let groups = pick_examples(
        &run.data.groups()?,
        p.max_examples.map(|m| m as usize),
        p.seed as u64,
    );
    let counts: Vec<String> = groups
        .0
        .iter()
        .map(|(g, idx)| format!("{} {}", idx.len(), g.as_str()))
        .collect();
    writeln!(ctx.log, "examples: {}", counts.join(", "))?;
    let mut examples = GradNormExamples::default();
    for (g, idx) in &groups.0 {
        examples.index.extend_from_slice(idx);
        examples
            .group
            .extend(idx.iter().map(|_| g.as_str().to_string()));
    }
    examples.write_in(ctx.out)?;
    // Each epoch's rows are a part keyed on its checkpoint: computed once.
    let parts = run.epoch_parts(
        &p.epochs,
        ctx,
        EPOCH_PART_KIND,
        |keys, checkpoint| p.epoch_part_key(keys, checkpoint),
        |ck, net, tmp| {
            let data = (&run.data.train.x, &run.data.train.y);
            let (rows, per) = epoch_tables(net, ck.epoch, data, &groups, p.per_example);
            rows.write_in(tmp)?;
            per.map_or(Ok(()), |e| e.write_in(tmp))
        },
    )?;
    let mut table = GradNorm::default();
    let mut per = GradNormPerExample::default();
    for part in &parts {
        let (epoch, how) = (part.checkpoint.epoch, part.how());
        let rows = GradNorm::read_in(&part.dir)?;
        writeln!(
            ctx.log,
            "epoch {epoch}: {how} ({}); label-dependent corrupted/clean: {}",
            part.label(),
            ratios(&rows)
        )?;
        table.append(rows);
        if p.per_example {
            per.append(GradNormPerExample::read_in(&part.dir)?);
        }
    }
    table.write_in(ctx.out)?;
    if p.per_example {
        per.write_in(ctx.out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_paired_and_capped() {
        use ExampleGroup::*;
        // 10 clean, 4 corrupted, 2 unchanged.
        let mut g = vec![Clean; 10];
        g.extend([Corrupted; 4]);
        g.extend([Unchanged; 2]);
        let all = pick_examples(&g, None, 1);
        let sizes: Vec<(ExampleGroup, usize)> = all.0.iter().map(|(k, v)| (*k, v.len())).collect();
        assert_eq!(sizes, [(Clean, 4), (Corrupted, 4), (Unchanged, 2)]);
        for (k, idx) in &all.0 {
            assert!(idx.iter().all(|&i| g[i as usize] == *k));
            assert!(idx.windows(2).all(|w| w[0] < w[1]));
        }
        let capped = pick_examples(&g, Some(3), 1);
        let sizes: Vec<usize> = capped.0.iter().map(|(_, v)| v.len()).collect();
        assert_eq!(sizes, [3, 3, 2]);
        // Without corruption every clean example is used.
        let clean_only = pick_examples(&[Clean; 7], None, 1);
        assert_eq!(clean_only.0.len(), 1);
        assert_eq!(clean_only.0[0].1.len(), 7);
    }
}
