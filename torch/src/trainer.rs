//! The training loop: seeded data order, optional augmentation, per-epoch scores and,
//! when asked, every training example's scores. Plain code: its settings are its own
//! types, and its results are values the caller stores as it likes.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use crate::data::TrainData;
use crate::models::{Arch, Net, WeightInit};
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::score::accuracy;
use crate::tensors::{to_bool, to_f64, to_i64};

/// The training loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// Softmax cross-entropy on the labels.
    CrossEntropy,
    /// Squared error between the logits and one-hot targets (mean over all entries).
    Mse,
}

/// Everything that defines a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// The architecture.
    pub arch: Arch,
    /// Total epochs.
    pub epochs: i64,
    /// Examples per step.
    pub batch_size: i64,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// Base learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Random crop (4-pixel padding) and horizontal flip.
    pub augment: bool,
    /// Seeds initialization, data order and augmentation.
    pub seed: u64,
    /// The training loss (and the loss the epoch scores report).
    pub loss: Loss,
    /// How the weights are drawn.
    pub init: WeightInit,
    /// Layers kept at their initial weights.
    pub freeze: Vec<String>,
    /// Where to train.
    pub device: Device,
    /// Score every training example (loss, margin, prediction, last-layer gradient) after
    /// each epoch ([`Evaluation::examples`]).
    pub record_examples: bool,
}

/// The state after an epoch, on every split (epoch 0 = initialization).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochScores {
    /// Epoch (0 = before training).
    pub epoch: i64,
    /// Learning rate used during the epoch (0 for epoch 0).
    pub lr: f64,
    /// Mean loss on the whole training set against the training labels.
    pub train_loss: f64,
    /// Accuracy on the whole training set against the training labels.
    pub train_acc: f64,
    /// Accuracy on the clean training examples.
    pub clean_acc: f64,
    /// Accuracy on the corrupted examples against their training labels (memorization).
    pub corrupted_train_acc: Option<f64>,
    /// Accuracy on the corrupted examples against their true labels (generalization).
    pub corrupted_true_acc: Option<f64>,
    /// Mean loss on the test set.
    pub test_loss: f64,
    /// Accuracy on the test set.
    pub test_acc: f64,
    /// Wall-clock seconds of the epoch (training and evaluation); not deterministic.
    pub seconds: f64,
}

/// Every training example's scores after an epoch, in training-set order, against its
/// training label (the gradient terms are explained at [`Trainer`]'s `example_scores`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExampleScores {
    /// The loss.
    pub loss: Vec<f64>,
    /// The logit of the label minus the largest other logit.
    pub margin: Vec<f64>,
    /// The predicted class.
    pub predicted: Vec<i64>,
    /// Whether the prediction is the label.
    pub correct: Vec<bool>,
    /// The norm of the last layer's weight gradient.
    pub grad_norm: Vec<f64>,
    /// That gradient's cosine with its class's mean gradient.
    pub grad_agreement: Vec<f64>,
    /// The label-dependent part's cosine with its class's mean.
    pub dep_agreement: Vec<f64>,
}

/// What an evaluation after an epoch gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The scores on every split.
    pub scores: EpochScores,
    /// With `record_examples`: every training example's scores.
    pub examples: Option<ExampleScores>,
}

/// The outputs of a frozen first block of layers for the training and test images, computed
/// once: when the first `layers` layers are frozen, hold no BatchNorm and see no
/// augmentation, they map every image to the same features in every epoch, so training and
/// evaluation start from these.
struct FrozenPrefix {
    layers: usize,
    train: Tensor,
    test: Tensor,
}

/// A model being trained, with its optimizer and the epoch it reached.
pub struct Trainer<'a> {
    /// Settings.
    pub cfg: TrainConfig,
    /// The data.
    pub data: &'a TrainData,
    /// The model.
    pub net: Net,
    /// Trainable parameters in a fixed order.
    pub params: Vec<(String, Tensor)>,
    /// The frozen layers' parameters (kept at their initial values), in a fixed order.
    pub frozen: Vec<(String, Tensor)>,
    /// How many first layers are frozen and computed once (see [`FrozenPrefix`]).
    prefix_layers: usize,
    /// Their features, once computed.
    prefix: Option<FrozenPrefix>,
    /// The optimizer and its state.
    pub opt: Optimizer,
    /// The epoch reached (0 before any training).
    epoch: i64,
}

/// How many first layers of `net` are frozen and can be computed once (see
/// [`FrozenPrefix`]): frozen, without BatchNorm, not seeing augmentation; never the last.
fn frozen_prefix_len(net: &Net, cfg: &TrainConfig) -> usize {
    if cfg.augment || !net.splits() {
        return 0;
    }
    net.layer_names()
        .iter()
        .skip(1)
        .enumerate()
        .take_while(|(i, l)| cfg.freeze.contains(l) && !net.has_batch_norm(*i))
        .count()
        .min(net.depth() - 1)
}

/// Checks what a scripted module needs for the training options: `freeze` names its
/// layers, and with `record_examples` its last layer is one linear map of the previous
/// layer's output (pooled over space when it has 4 dimensions, then flattened), from which
/// the per-example last-layer gradients are computed.
fn check_script_options(net: &Net, cfg: &TrainConfig, data: &TrainData) -> Result<(), String> {
    let names = net.layer_names();
    for f in &cfg.freeze {
        if f == "input" || !names.contains(f) {
            return Err(format!(
                "freeze: the module has no layer \"{f}\"; its layers: {}",
                names[1..].join(", ")
            ));
        }
    }
    if !cfg.record_examples {
        return Ok(());
    }
    let last = names.last().cloned().unwrap_or_default();
    let refuse = |why: String| {
        Err(format!(
            "record_examples needs the module's last layer (\"{last}\") to be one linear layer on the previous layer's output (pooled over space when it has 4 dimensions, then flattened), whose gradient it records; {why}"
        ))
    };
    let n = data.train.x.size()[0].min(4);
    let (h, z) = tch::no_grad(|| net.last_input_and_logits(&data.train.x.narrow(0, 0, n), 0));
    let h = match h.dim() {
        2 => h,
        4 => h.adaptive_avg_pool2d([1, 1]).flatten(1, -1),
        d => return refuse(format!("the previous layer's output has {d} dimensions")),
    };
    let own: Vec<(String, Tensor)> = net
        .variables()
        .into_iter()
        .filter(|(v, _)| net.layer_of(v) == Some(last.as_str()))
        .collect();
    let weight = own.iter().find(|(_, t)| t.dim() == 2);
    let bias = own.iter().find(|(_, t)| t.dim() == 1);
    let Some((_, w)) = weight.filter(|_| own.len() == 1 + usize::from(bias.is_some())) else {
        return refuse(format!(
            "its variables are {}",
            own.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    if w.size() != [z.size()[1], h.size()[1]] {
        return refuse(format!(
            "its weight has shape {:?}, the previous layer has {} features",
            w.size(),
            h.size()[1]
        ));
    }
    let mut linear = h
        .to_kind(Kind::Double)
        .matmul(&w.to_kind(Kind::Double).tr());
    if let Some((_, b)) = bias {
        linear += b.to_kind(Kind::Double);
    }
    if !linear.allclose(&z.to_kind(Kind::Double), 1e-4, 1e-5, false) {
        return refuse(
            "its logits are not the previous layer's output times its weight plus its bias".into(),
        );
    }
    Ok(())
}

/// Seed of the data order and augmentation of one epoch: a pure function of (seed, epoch),
/// so that a run resumed at any epoch draws exactly what a straight run draws.
fn epoch_rng(seed: u64, epoch: i64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64))
}

impl<'a> Trainer<'a> {
    /// A freshly initialized model (seeded), not yet evaluated; or why a scripted module
    /// cannot be trained as configured.
    pub fn new(cfg: TrainConfig, data: &'a TrainData) -> Result<Trainer<'a>, String> {
        let net = {
            // libtorch's generator is global: seed and draw the initial weights under a lock.
            let _guard = crate::rng::TORCH_RNG
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(cfg.seed as i64);
            let net = Net::new(&cfg.arch, data.input_shape(), data.classes(), cfg.device)?;
            net.initialize(cfg.init);
            net
        };
        if net.script().is_some() {
            check_script_options(&net, &cfg, data)?;
        }
        let mut frozen = Vec::new();
        for (name, t) in net.parameters() {
            if net
                .layer_of(&name)
                .is_some_and(|l| cfg.freeze.iter().any(|f| f == l))
            {
                let _ = t.shallow_clone().set_requires_grad(false);
                frozen.push((name, t));
            }
        }
        let params = net.parameters();
        let opt = Optimizer::new(cfg.optimizer.clone(), &params);
        let prefix_layers = frozen_prefix_len(&net, &cfg);
        if params.is_empty() {
            return Err(
                "freeze: every layer with parameters is frozen, nothing would train".into(),
            );
        }
        Ok(Trainer {
            cfg,
            data,
            net,
            params,
            frozen,
            prefix_layers,
            prefix: None,
            opt,
            epoch: 0,
        })
    }

    /// The frozen first layers' features, computed on first use.
    fn prefix(&mut self) -> Option<&FrozenPrefix> {
        let layers = self.prefix_layers;
        if layers == 0 {
            return None;
        }
        if self.prefix.is_none() {
            let run = |x: &Tensor| {
                tch::no_grad(|| {
                    let n = x.size()[0];
                    let parts: Vec<Tensor> = (0..n)
                        .step_by(1000)
                        .map(|s| {
                            let len = 1000.min(n - s);
                            self.net
                                .forward_range(&x.narrow(0, s, len), 0, layers, false)
                        })
                        .collect();
                    Tensor::cat(&parts, 0)
                })
            };
            self.prefix = Some(FrozenPrefix {
                layers,
                train: run(&self.data.train.x),
                test: run(&self.data.test.x),
            });
        }
        self.prefix.as_ref()
    }

    /// The loss of a batch's logits against labels `y`, as the configuration says.
    fn loss(&self, logits: &Tensor, y: &Tensor) -> Tensor {
        match self.cfg.loss {
            Loss::CrossEntropy => logits.cross_entropy_for_logits(y),
            Loss::Mse => {
                let target = y.one_hot(logits.size()[1]).to_kind(logits.kind());
                logits.mse_loss(&target, tch::Reduction::Mean)
            }
        }
    }

    /// The epoch reached so far (0 before any training).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Sets the epoch reached, once the weights and optimizer state of its end are loaded.
    pub fn resume_at(&mut self, epoch: i64) {
        self.epoch = epoch;
    }

    /// Trains one more epoch and evaluates the weights it ends with.
    pub fn train_epoch(&mut self) -> Evaluation {
        self.train_epoch_unless(&|_| false)
            .expect("an epoch that is never abandoned ends")
    }

    /// Trains one more epoch unless `abandon`, asked before each step with the fraction of
    /// the epoch's steps done, says to stop: then returns `None`, and the trainer's weights
    /// and optimizer state are those of a partial epoch (restore a saved state to go on).
    pub fn train_epoch_unless(&mut self, abandon: &dyn Fn(f64) -> bool) -> Option<Evaluation> {
        let clock = Instant::now();
        let epoch = self.epoch() + 1;
        let lr = self.cfg.schedule.lr(self.cfg.lr, epoch, self.cfg.epochs);
        let n = self.data.train.x.size()[0];
        let mut rng = epoch_rng(self.cfg.seed, epoch);
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rng);
        let device = self.cfg.device;
        let (start, source) = match self.prefix() {
            Some(p) => (p.layers, p.train.shallow_clone()),
            None => (0, self.data.train.x.shallow_clone()),
        };
        let end = self.net.depth();
        let steps = order.len().div_ceil(self.cfg.batch_size as usize).max(1);
        // The epoch's order goes to the device once, not a batch's indices every step.
        let order_on_device = Tensor::from_slice(&order).to_device(device);
        for (step, chunk) in order.chunks(self.cfg.batch_size as usize).enumerate() {
            if abandon(step as f64 / steps as f64) {
                return None;
            }
            let first = (step * self.cfg.batch_size as usize) as i64;
            let idx = order_on_device.narrow(0, first, chunk.len() as i64);
            let mut x = source.index_select(0, &idx);
            if self.cfg.augment {
                x = augment(&x, &mut rng);
            }
            let y = self.data.train.y.index_select(0, &idx);
            let logits = self.net.forward_range(&x, start, end, true);
            let loss = self.loss(&logits, &y);
            for (_, p) in &self.params {
                p.shallow_clone().zero_grad();
            }
            loss.backward();
            self.opt.step(&self.params, lr);
        }
        self.epoch = epoch;
        Some(self.evaluate(epoch, lr, clock))
    }

    /// Evaluates the initial weights on every split: epoch 0.
    pub fn evaluate_initial(&mut self) -> Evaluation {
        self.evaluate(0, 0.0, Instant::now())
    }

    /// Loads the weights saved in `file` (every variable of the model, by name) and
    /// evaluates them as the end of `epoch`: how an imported run's examples are recorded.
    pub fn evaluate_saved(
        &mut self,
        epoch: i64,
        file: &std::path::Path,
    ) -> anyhow::Result<Evaluation> {
        crate::checkpoint::load_weights(&self.net.variables(), file)?;
        Ok(self.evaluate(epoch, 0.0, Instant::now()))
    }

    /// Evaluates the current weights on every split (and every training example, with
    /// `record_examples`) as the end of `epoch`, trained at `lr`, started at `clock`.
    fn evaluate(&mut self, epoch: i64, lr: f64, clock: Instant) -> Evaluation {
        let d = self.data;
        let (start, train_x, test_x) = match self.prefix() {
            Some(p) => (p.layers, p.train.shallow_clone(), p.test.shallow_clone()),
            None => (0, d.train.x.shallow_clone(), d.test.x.shallow_clone()),
        };
        let record = self.cfg.record_examples;
        let (train_loss, train_pred, last) = self.predict(&train_x, &d.train.y, start, record);
        let examples = last.map(|(features, logits)| self.example_scores(&features, &logits));
        let (test_loss, test_pred, _) = self.predict(&test_x, &d.test.y, start, false);
        let clean = d.clean();
        let scores = EpochScores {
            epoch,
            lr,
            train_loss,
            train_acc: accuracy(&train_pred, &d.train.y, None).unwrap_or(f64::NAN),
            clean_acc: accuracy(&train_pred, &d.train.y, Some(&clean)).unwrap_or(f64::NAN),
            corrupted_train_acc: accuracy(&train_pred, &d.train.y, Some(&d.changed)),
            corrupted_true_acc: accuracy(&train_pred, &d.train_true, Some(&d.changed)),
            test_loss,
            test_acc: accuracy(&test_pred, &d.test.y, None).unwrap_or(f64::NAN),
            seconds: clock.elapsed().as_secs_f64(),
        };
        Evaluation { scores, examples }
    }

    /// Mean loss and predicted classes over a split, in evaluation mode, and with `keep`
    /// the last layer's inputs (flattened, pooled where the layer pools) and the logits of
    /// every example. `x` is the input of layer `from` (0: the images).
    fn predict(
        &self,
        x: &Tensor,
        y: &Tensor,
        from: usize,
        keep: bool,
    ) -> (f64, Tensor, Option<(Tensor, Tensor)>) {
        tch::no_grad(|| {
            let n = x.size()[0];
            let mut loss = 0.0;
            let mut preds = Vec::new();
            let (mut features, mut all_logits) = (Vec::new(), Vec::new());
            let step = 1000;
            let mut start = 0;
            let end = self.net.depth();
            while start < n {
                let len = step.min(n - start);
                let batch = x.narrow(0, start, len);
                let logits = if keep {
                    let (h, logits) = self.net.last_input_and_logits(&batch, from);
                    let h = if h.dim() == 4 {
                        h.adaptive_avg_pool2d([1, 1])
                    } else {
                        h
                    };
                    features.push(h.flatten(1, -1).to_kind(Kind::Double));
                    all_logits.push(logits.to_kind(Kind::Double));
                    logits
                } else {
                    self.net.forward_range(&batch, from, end, false)
                };
                let yb = y.narrow(0, start, len);
                let z = logits.to_kind(Kind::Double);
                loss += match self.cfg.loss {
                    Loss::CrossEntropy => {
                        z.cross_entropy_loss::<Tensor>(&yb, None, tch::Reduction::Sum, -100, 0.0)
                    }
                    // Per example the mean over classes, summed here, averaged below.
                    Loss::Mse => (z - yb.one_hot(logits.size()[1]).to_kind(Kind::Double))
                        .square()
                        .mean_dim([1i64].as_slice(), false, Kind::Double)
                        .sum(Kind::Double),
                }
                .double_value(&[]);
                preds.push(logits.argmax(1, false));
                start += len;
            }
            let kept = keep.then(|| (Tensor::cat(&features, 0), Tensor::cat(&all_logits, 0)));
            (loss / n as f64, Tensor::cat(&preds, 0), kept)
        })
    }

    /// Every training example's scores from the last layer's inputs `h` (`[n, H]`) and the
    /// logits `z` (`[n, C]`) of every training example, both double.
    ///
    /// With `g = dL/dz` (cross-entropy: `softmax(z) - e_y`; squared error: `2 (z - e_y) / C`)
    /// an example's last-layer weight gradient is `g h^T`: its norm is `|g| |h|`, and its
    /// agreement is the cosine with its class's mean gradient `D_y = mean over the examples
    /// labeled y of g h^T`, that is `g^T D_y h / (|g| |h| |D_y|)`. The label-dependent part
    /// of `g` is `-(e_y - 1/C)` (cross-entropy) or `-2 e_y / C` (squared error), the same for
    /// every example labeled y, so that part's agreement with its class mean is the cosine of
    /// `h` with the class's mean `h`.
    fn example_scores(&self, h: &Tensor, z: &Tensor) -> ExampleScores {
        let y = self.data.train.y.to_device(z.device());
        let classes = z.size()[1];
        let onehot = y.one_hot(classes).to_kind(Kind::Double);
        let (loss, g) = match self.cfg.loss {
            Loss::CrossEntropy => {
                let log_p = z.log_softmax(1, Kind::Double);
                let loss =
                    -(&log_p * &onehot).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
                (loss, log_p.exp() - &onehot)
            }
            Loss::Mse => {
                let diff = z - &onehot;
                let loss = diff
                    .square()
                    .mean_dim([1i64].as_slice(), false, Kind::Double);
                (loss, diff * (2.0 / classes as f64))
            }
        };
        let own = (z * &onehot).sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        let others = z.masked_fill(&onehot.to_kind(Kind::Bool), f64::NEG_INFINITY);
        let margin = own - others.amax([1i64].as_slice(), false);
        let g_norm = g.norm_scalaropt_dim(2, [1i64].as_slice(), false);
        let h_norm = h.norm_scalaropt_dim(2, [1i64].as_slice(), false);
        let grad_norm = &g_norm * &h_norm;
        let agreement = Tensor::zeros_like(&grad_norm);
        let dep_agreement = Tensor::zeros_like(&grad_norm);
        for c in 0..classes {
            let members = y.eq(c).nonzero().squeeze_dim(1);
            let count = members.size()[0];
            if count == 0 {
                continue;
            }
            let (gc, hc) = (g.index_select(0, &members), h.index_select(0, &members));
            let direction = gc.transpose(0, 1).matmul(&hc) / count as f64; // [C, H]
            let along = (gc.matmul(&direction) * &hc).sum_dim_intlist(
                [1i64].as_slice(),
                false,
                Kind::Double,
            );
            let scale = grad_norm.index_select(0, &members) * direction.norm();
            let cosine = along / scale.clamp_min(1e-300);
            let _ = agreement.shallow_clone().index_copy_(0, &members, &cosine);
            let mean_h = hc.mean_dim([0i64].as_slice(), false, Kind::Double); // [H]
            let dep_scale = h_norm.index_select(0, &members) * mean_h.norm();
            let dep = hc.matmul(&mean_h) / dep_scale.clamp_min(1e-300);
            let _ = dep_agreement.shallow_clone().index_copy_(0, &members, &dep);
        }
        let predicted = z.argmax(1, false);
        // These are 1-D tensors of the kinds asked for: the conversions cannot fail.
        let f64s = |t: &Tensor| to_f64(t).expect("a 1-D double tensor");
        ExampleScores {
            loss: f64s(&loss),
            margin: f64s(&margin),
            predicted: to_i64(&predicted).expect("a 1-D integer tensor"),
            correct: to_bool(&predicted.eq_tensor(&y)).expect("a 1-D bool tensor"),
            grad_norm: f64s(&grad_norm),
            grad_agreement: f64s(&agreement),
            dep_agreement: f64s(&dep_agreement),
        }
    }
}

/// Random crop with 4-pixel zero padding and random horizontal flip, per example: for each
/// example in order, its row offset, column offset (each 0..=8) and whether to flip are
/// drawn from `rng`. The crops are two gathers over the whole batch (a handful of kernels
/// on a GPU, where a crop per example would launch hundreds per batch).
fn augment(x: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
    let size = x.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    let mut rows = Vec::with_capacity((n * h) as usize);
    let mut cols = Vec::with_capacity((n * w) as usize);
    for _ in 0..n {
        let dy = rng.random_range(0..=8i64);
        let dx = rng.random_range(0..=8i64);
        let flip = rng.random_bool(0.5);
        rows.extend((0..h).map(|i| dy + i));
        cols.extend((0..w).map(|j| dx + if flip { w - 1 - j } else { j }));
    }
    let device = x.device();
    let rows = Tensor::from_slice(&rows)
        .to_device(device)
        .view([n, 1, h, 1])
        .expand([n, c, h, w + 8], false);
    let cols = Tensor::from_slice(&cols)
        .to_device(device)
        .view([n, 1, 1, w])
        .expand([n, c, h, w], false);
    x.constant_pad_nd([4, 4, 4, 4])
        .gather(2, &rows, false)
        .gather(3, &cols, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The crops of the per-example definition (pad, narrow, flip), drawing as `augment` does.
    fn augment_one_by_one(x: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
        let size = x.size();
        let (h, w) = (size[2], size[3]);
        let padded = x.constant_pad_nd([4, 4, 4, 4]);
        let crops: Vec<Tensor> = (0..size[0])
            .map(|i| {
                let dy = rng.random_range(0..=8i64);
                let dx = rng.random_range(0..=8i64);
                let crop = padded.get(i).narrow(1, dy, h).narrow(2, dx, w);
                if rng.random_bool(0.5) {
                    crop.flip([2])
                } else {
                    crop
                }
            })
            .collect();
        Tensor::stack(&crops, 0)
    }

    #[test]
    fn batched_augmentation_equals_cropping_each_example() {
        let x = Tensor::randn([37, 3, 8, 6], (Kind::Float, Device::Cpu));
        let (mut a, mut b) = (epoch_rng(7, 3), epoch_rng(7, 3));
        let batched = augment(&x, &mut a);
        let each = augment_one_by_one(&x, &mut b);
        assert_eq!(batched.size(), [37, 3, 8, 6]);
        assert!(batched.equal(&each));
        // Both drew the same numbers: the next draw agrees.
        assert_eq!(a.random_range(0..1000u32), b.random_range(0..1000u32));
    }
}
