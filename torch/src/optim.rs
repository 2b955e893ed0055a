//! Optimizers with state that can be saved and restored, and learning-rate schedules.
//!
//! tch's own optimizers keep their state (momentum buffers, Adam moments) inside libtorch
//! where it cannot be saved, and resuming a run bit for bit needs exactly that state. So
//! SGD and Adam are written here with PyTorch's update rules (SGD: dampening 0, weight
//! decay added to the gradient; Adam: bias-corrected, L2 weight decay).

use tch::Tensor;

/// Optimizer settings.
#[derive(Clone, Debug, PartialEq)]
pub enum OptimizerConfig {
    /// Stochastic gradient descent.
    Sgd {
        /// Momentum factor.
        momentum: f64,
        /// Nesterov momentum.
        nesterov: bool,
        /// L2 penalty.
        weight_decay: f64,
    },
    /// Adam.
    Adam {
        /// Decay of the first moment.
        beta1: f64,
        /// Decay of the second moment.
        beta2: f64,
        /// Denominator term.
        eps: f64,
        /// L2 penalty.
        weight_decay: f64,
    },
}

/// An optimizer and its state, one buffer per parameter (in the parameters' fixed order).
pub struct Optimizer {
    config: OptimizerConfig,
    /// Momentum buffers (SGD) or first moments (Adam).
    first: Vec<Tensor>,
    /// Second moments (Adam only).
    second: Vec<Tensor>,
    /// Steps taken.
    pub steps: i64,
}

impl Optimizer {
    /// A fresh optimizer for `params`.
    pub fn new(config: OptimizerConfig, params: &[(String, Tensor)]) -> Optimizer {
        let zeros = || {
            params
                .iter()
                .map(|(_, p)| p.zeros_like())
                .collect::<Vec<_>>()
        };
        let second = match config {
            OptimizerConfig::Adam { .. } => zeros(),
            OptimizerConfig::Sgd { .. } => Vec::new(),
        };
        Optimizer {
            first: zeros(),
            second,
            steps: 0,
            config,
        }
    }

    /// One update of every parameter from its gradient, at learning rate `lr`.
    pub fn step(&mut self, params: &[(String, Tensor)], lr: f64) {
        self.steps += 1;
        let t = self.steps as f64;
        tch::no_grad(|| {
            for (i, (_, p)) in params.iter().enumerate() {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                match self.config {
                    OptimizerConfig::Sgd {
                        momentum,
                        nesterov,
                        weight_decay,
                    } => {
                        let d = if weight_decay != 0.0 {
                            &g + &p * weight_decay
                        } else {
                            g
                        };
                        let d = if momentum != 0.0 {
                            let buf = &mut self.first[i];
                            let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                            if nesterov {
                                d + &*buf * momentum
                            } else {
                                buf.shallow_clone()
                            }
                        } else {
                            d
                        };
                        let _ = p.g_sub_(&(d * lr));
                    }
                    OptimizerConfig::Adam {
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => {
                        let d = if weight_decay != 0.0 {
                            &g + &p * weight_decay
                        } else {
                            g
                        };
                        let m = &mut self.first[i];
                        let _ = m.g_mul_scalar_(beta1).g_add_(&(&d * (1.0 - beta1)));
                        let v = &mut self.second[i];
                        let _ = v.g_mul_scalar_(beta2).g_add_(&(&d * &d * (1.0 - beta2)));
                        let mhat = &*m / (1.0 - beta1.powf(t));
                        let vhat = &*v / (1.0 - beta2.powf(t));
                        let _ = p.g_sub_(&(mhat / (vhat.sqrt() + eps) * lr));
                    }
                }
            }
        });
    }

    /// The state as named tensors (`first.<param>`, `second.<param>`), for a checkpoint.
    pub fn state(&self, params: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (i, (name, _)) in params.iter().enumerate() {
            out.push((format!("first.{name}"), self.first[i].shallow_clone()));
            if let Some(s) = self.second.get(i) {
                out.push((format!("second.{name}"), s.shallow_clone()));
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state`].
    pub fn load_state(
        &mut self,
        params: &[(String, Tensor)],
        saved: &[(String, Tensor)],
        steps: i64,
    ) -> anyhow::Result<()> {
        let find = |n: &str| {
            saved
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, t)| t)
                .ok_or_else(|| anyhow::anyhow!("optimizer state lacks {n}"))
        };
        tch::no_grad(|| -> anyhow::Result<()> {
            for (i, (name, _)) in params.iter().enumerate() {
                self.first[i].copy_(find(&format!("first.{name}"))?);
                if let Some(s) = self.second.get_mut(i) {
                    s.copy_(find(&format!("second.{name}"))?);
                }
            }
            Ok(())
        })?;
        self.steps = steps;
        Ok(())
    }
}

/// A learning-rate schedule over epochs.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The same rate throughout.
    Constant,
    /// Multiplied by `gamma` at each milestone epoch.
    Step {
        /// Epochs after which the rate drops.
        milestones: Vec<i64>,
        /// The factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to 0 over all epochs.
    Cosine,
}

impl Schedule {
    /// The rate during training epoch `epoch` (1-based) of `total`, from base rate `lr`.
    ///
    /// Matches PyTorch's MultiStepLR and CosineAnnealingLR(T_max = total) stepped once per
    /// epoch. Only `Cosine` depends on `total`.
    pub fn lr(&self, lr: f64, epoch: i64, total: i64) -> f64 {
        match self {
            Schedule::Constant => lr,
            Schedule::Step { milestones, gamma } => {
                lr * gamma.powi(milestones.iter().filter(|&&m| m < epoch).count() as i32)
            }
            Schedule::Cosine => {
                lr * 0.5 * (1.0 + (std::f64::consts::PI * (epoch - 1) as f64 / total as f64).cos())
            }
        }
    }

    /// Whether the rate at an epoch depends on the total number of epochs.
    pub fn depends_on_total(&self) -> bool {
        matches!(self, Schedule::Cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn schedules_match_pytorch_formulas() {
        let s = Schedule::Step {
            milestones: vec![2, 4],
            gamma: 0.1,
        };
        // MultiStepLR: epochs 1-2 at lr, 3-4 at 0.1 lr, then 0.01 lr.
        let got: Vec<f64> = (1..=5).map(|e| s.lr(1.0, e, 5)).collect();
        let want = [1.0, 1.0, 0.1, 0.1, 0.01];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        let c = Schedule::Cosine;
        assert_eq!(c.lr(0.1, 1, 10), 0.1);
        assert!((c.lr(0.1, 6, 10) - 0.05).abs() < 1e-12);
        assert!(c.depends_on_total() && !s.depends_on_total());
    }

    #[test]
    fn sgd_momentum_matches_hand_computed_steps() {
        // f(p) = p^2 / 2, gradient p. p0 = 1, lr 0.1, momentum 0.9:
        // step 1: buf = 1, p = 0.9; step 2: buf = 0.9 + 0.9 = 1.8, p = 0.9 - 0.18 = 0.72.
        let p = Tensor::from_slice(&[1.0f64]).set_requires_grad(true);
        let params = vec![("p".to_string(), p.shallow_clone())];
        let mut opt = Optimizer::new(
            OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            },
            &params,
        );
        for want in [0.9, 0.72] {
            p.shallow_clone().zero_grad();
            (&p * &p * 0.5).sum(Kind::Double).backward();
            opt.step(&params, 0.1);
            assert!(
                (p.double_value(&[0]) - want).abs() < 1e-12,
                "{}",
                p.double_value(&[0])
            );
        }
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // Bias correction makes Adam's first step lr * g / (|g| + eps) ~ lr * sign(g).
        let p = Tensor::from_slice(&[2.0f64, -3.0]).set_requires_grad(true);
        let params = vec![("p".to_string(), p.shallow_clone())];
        let mut opt = Optimizer::new(
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.0,
            },
            &params,
        );
        (&p * &p * 0.5).sum(Kind::Double).backward();
        opt.step(&params, 0.01);
        assert!((p.double_value(&[0]) - 1.99).abs() < 1e-8);
        assert!((p.double_value(&[1]) + 2.99).abs() < 1e-8);
        let _ = Device::Cpu;
    }
}
