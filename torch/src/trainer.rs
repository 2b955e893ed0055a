//! The training loop: seeded data order, optional augmentation, per-epoch metrics.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

pub use pipe::stages::train::EpochMetrics;

use crate::data::TrainData;
use crate::models::{Arch, Net};
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::score::accuracy;

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
    /// Where to train.
    pub device: Device,
}

/// A model being trained, with its optimizer and the metrics so far.
pub struct Trainer<'a> {
    /// Settings.
    pub cfg: TrainConfig,
    /// The data.
    pub data: &'a TrainData,
    /// The model.
    pub net: Net,
    /// Trainable parameters in a fixed order.
    pub params: Vec<(String, Tensor)>,
    /// The optimizer and its state.
    pub opt: Optimizer,
    /// One row per epoch done so far, starting at epoch 0.
    pub metrics: Vec<EpochMetrics>,
}

/// Seed of the data order and augmentation of one epoch: a pure function of (seed, epoch),
/// so that a run resumed at any epoch draws exactly what a straight run draws.
fn epoch_rng(seed: u64, epoch: i64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (epoch as u64))
}

impl<'a> Trainer<'a> {
    /// A freshly initialized model (seeded), not yet evaluated.
    pub fn new(cfg: TrainConfig, data: &'a TrainData) -> Trainer<'a> {
        let info = &data.info;
        let input = [info.channels as i64, info.height as i64, info.width as i64];
        let net = {
            // libtorch's generator is global: seed and draw the initial weights under a lock.
            let _guard = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(cfg.seed as i64);
            Net::new(&cfg.arch, input, info.classes as i64, cfg.device)
        };
        let params = net.parameters();
        let opt = Optimizer::new(cfg.optimizer.clone(), &params);
        Trainer {
            cfg,
            data,
            net,
            params,
            opt,
            metrics: Vec::new(),
        }
    }

    /// The epoch reached so far (0 before any training).
    pub fn epoch(&self) -> i64 {
        self.metrics.last().map_or(0, |m| m.epoch)
    }

    /// Trains one more epoch and records its metrics.
    pub fn train_epoch(&mut self) -> &EpochMetrics {
        let clock = Instant::now();
        let epoch = self.epoch() + 1;
        let lr = self.cfg.schedule.lr(self.cfg.lr, epoch, self.cfg.epochs);
        let n = self.data.train.x.size()[0];
        let mut rng = epoch_rng(self.cfg.seed, epoch);
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rng);
        let device = self.cfg.device;
        for chunk in order.chunks(self.cfg.batch_size as usize) {
            let idx = Tensor::from_slice(chunk).to_device(device);
            let mut x = self.data.train.x.index_select(0, &idx);
            if self.cfg.augment {
                x = augment(&x, &mut rng);
            }
            let y = self.data.train.y.index_select(0, &idx);
            let loss = self.net.forward_t(&x, true).cross_entropy_for_logits(&y);
            for (_, p) in &self.params {
                p.shallow_clone().zero_grad();
            }
            loss.backward();
            self.opt.step(&self.params, lr);
        }
        let m = self.evaluate(epoch, lr, clock);
        self.metrics.push(m);
        self.metrics.last().expect("just pushed")
    }

    /// Evaluates the current weights on every split and records epoch 0's row if none yet.
    pub fn evaluate_initial(&mut self) {
        if self.metrics.is_empty() {
            let m = self.evaluate(0, 0.0, Instant::now());
            self.metrics.push(m);
        }
    }

    fn evaluate(&self, epoch: i64, lr: f64, clock: Instant) -> EpochMetrics {
        let d = self.data;
        let (train_loss, train_pred) = self.predict(&d.train.x, &d.train.y);
        let (test_loss, test_pred) = self.predict(&d.test.x, &d.test.y);
        let clean = d.clean();
        EpochMetrics {
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
        }
    }

    /// Mean cross-entropy and predicted classes over a split, in evaluation mode.
    fn predict(&self, x: &Tensor, y: &Tensor) -> (f64, Tensor) {
        tch::no_grad(|| {
            let n = x.size()[0];
            let mut loss = 0.0;
            let mut preds = Vec::new();
            let step = 1000;
            let mut start = 0;
            while start < n {
                let len = step.min(n - start);
                let logits = self.net.forward_t(&x.narrow(0, start, len), false);
                let yb = y.narrow(0, start, len);
                loss += logits
                    .to_kind(Kind::Double)
                    .cross_entropy_loss::<Tensor>(&yb, None, tch::Reduction::Sum, -100, 0.0)
                    .double_value(&[]);
                preds.push(logits.argmax(1, false));
                start += len;
            }
            (loss / n as f64, Tensor::cat(&preds, 0))
        })
    }
}

/// Random crop with 4-pixel zero padding and random horizontal flip, per example.
fn augment(x: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
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
