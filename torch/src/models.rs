//! Network architectures as ordered lists of named layers.
//!
//! Every model is a [`Net`]: `input`, then one named layer per block (its output taken
//! after the block's nonlinearity, and after the pooling that follows it), ending in
//! `logits`. Parameters of a layer are stored under the layer's name in the var store
//! (`fc1.weight`, `layer2.1.bn1.running_mean`), so rollback and gradient analyses know
//! which parameters belong to which layer. A [`Net`] is either built here or a user's
//! TorchScript module ([`ScriptNet`]), whose layers its `layers` method names.
use std::path::PathBuf;

use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::script::{self, ScriptNet};

/// The architectures `train` knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    /// Fully connected, ReLU after each hidden layer.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<i64>,
    },
    /// Two conv blocks (32, 64 channels) and one hidden fully connected layer (128), times
    /// a width multiplier.
    Cnn {
        /// Multiplies every width (1 = the standard net).
        mult: f64,
    },
    /// VGG-11 or VGG-16, CIFAR style (3x3 convs, 5 poolings, one linear classifier).
    Vgg {
        /// 11 or 16.
        depth: u32,
        /// BatchNorm after each conv.
        batch_norm: bool,
        /// Multiplies every width (1 = 64 .. 512 channels).
        mult: f64,
    },
    /// ResNet-18, CIFAR style (3x3 stem, no initial pooling), stages of k, 2k, 4k, 8k
    /// channels.
    Resnet18 {
        /// k (64 = the standard net).
        k: i64,
    },
    /// The small AlexNet used for CIFAR by Zhang et al. (2017), without local response norm.
    Alexnet {
        /// Multiplies every width (1 = 64, 64 channels, 384, 192 units).
        mult: f64,
    },
    /// A TorchScript module (see [`crate::script`]).
    Script {
        /// The module's file.
        file: PathBuf,
    },
}

/// How the weights of linear and convolution layers are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightInit {
    /// He et al.'s uniform for ReLU networks, U(+-sqrt(6 / fan_in)), biases of linear layers
    /// U(+-1/sqrt(fan_in)), of convolutions 0 (libtorch's Rust defaults).
    Kaiming,
    /// PyTorch's `nn.Linear` and `nn.Conv2d` default: weights and biases U(+-1/sqrt(fan_in)).
    Torch,
    /// A scripted module's own weights, as saved.
    Module,
}

/// `base` channels times `mult`, rounded, at least 1.
pub fn scaled(base: i64, mult: f64) -> i64 {
    ((base as f64 * mult).round() as i64).max(1)
}

impl Arch {
    /// Checks that the architecture fits an input of `channels x height x width`: any size
    /// at least as large as the poolings need (pooling before the classifier adapts to it).
    pub fn check_input(&self, _channels: i64, height: i64, width: i64) -> Result<(), String> {
        let (least, name) = match self {
            Arch::Mlp { .. } => (1, "mlp"),
            Arch::Cnn { .. } => (4, "cnn"),
            Arch::Vgg { .. } => (32, "vgg"),
            Arch::Resnet18 { .. } => (8, "resnet18"),
            Arch::Alexnet { .. } => (4, "alexnet"),
            // Checked when the module loads, on a batch of this shape.
            Arch::Script { .. } => (1, "script"),
        };
        if height < least || width < least {
            return Err(format!(
                "model {name} needs images of at least {least}x{least}, the data set has {height}x{width}"
            ));
        }
        Ok(())
    }
}

/// One named layer.
pub struct Layer {
    /// Its name (`fc1`, `conv3`, `layer2.1`, `logits`).
    pub name: String,
    module: nn::SequentialT,
}

/// A model: its variables and its layers in order.
pub struct Net {
    body: Body,
}

/// How a [`Net`] computes.
enum Body {
    /// Built here: a var store and the layers.
    Built {
        /// All variables (trainable parameters and BatchNorm statistics).
        vs: nn::VarStore,
        /// The layers, after `input`.
        layers: Vec<Layer>,
    },
    /// A TorchScript module.
    Script(ScriptNet),
}

impl Net {
    /// Builds the architecture with freshly initialized weights on `device` (a scripted
    /// module: loads it and checks its contract for this input and class count, or says
    /// what is wrong).
    ///
    /// Initialization draws from libtorch's global generator: seed it first (and hold
    /// [`crate::rng::TORCH_RNG`] while doing both) for reproducible weights.
    pub fn new(arch: &Arch, input: [i64; 3], classes: i64, device: Device) -> Result<Net, String> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let layers = match arch {
            Arch::Script { file } => {
                return Ok(Net {
                    body: Body::Script(ScriptNet::load(file, input, classes, device)?),
                });
            }
            Arch::Mlp { hidden } => mlp(&root, input, hidden, classes),
            Arch::Cnn { mult } => cnn(&root, input[0], *mult, classes),
            Arch::Vgg {
                depth,
                batch_norm,
                mult,
            } => vgg(&root, input[0], *depth, *batch_norm, *mult, classes),
            Arch::Resnet18 { k } => resnet18(&root, input[0], *k, classes),
            Arch::Alexnet { mult } => alexnet(&root, input[0], *mult, classes),
        };
        Ok(Net {
            body: Body::Built { vs, layers },
        })
    }

    /// The scripted module, if this is one.
    pub fn script(&self) -> Option<&ScriptNet> {
        match &self.body {
            Body::Script(s) => Some(s),
            Body::Built { .. } => None,
        }
    }

    /// How many layers follow `input`.
    pub fn depth(&self) -> usize {
        match &self.body {
            Body::Built { layers, .. } => layers.len(),
            Body::Script(s) => s.names().len(),
        }
    }

    /// Whether [`Net::forward_range`] may start or end inside the network (built models).
    pub fn splits(&self) -> bool {
        self.script().is_none()
    }

    /// Redraws the weights as `init` says (the layers are built with [`WeightInit::Kaiming`]).
    /// Draws from libtorch's global generator, like [`Net::new`].
    ///
    /// A scripted module's weights are redrawn by the same rule, by name: every `*.weight`
    /// of two or more dimensions (linear and convolution weights), in name order, from
    /// U(+-sqrt(6 / fan_in)) (`Kaiming`) or U(+-1/sqrt(fan_in)) (`Torch`), then its
    /// `*.bias` from U(+-1/sqrt(fan_in)) (`Kaiming` sets a convolution's bias, beside a
    /// weight of more than two dimensions, to 0). Other parameters (normalization scales,
    /// embeddings, tokens) and buffers keep the module's values; `Module` keeps them all.
    pub fn initialize(&self, init: WeightInit) {
        if let Body::Script(s) = &self.body {
            if init != WeightInit::Module {
                script_init(s.parameters(), init);
            }
            return;
        }
        if init != WeightInit::Torch {
            return;
        }
        let vars = self.variables();
        tch::no_grad(|| {
            for (name, w) in &vars {
                let Some(prefix) = name.strip_suffix(".weight") else {
                    continue;
                };
                let size = w.size();
                // Linear and convolution weights; BatchNorm's are 1-D and stay at 1.
                if size.len() < 2 {
                    continue;
                }
                let fan_in = size[1..].iter().product::<i64>() as f64;
                let bound = 1.0 / fan_in.sqrt();
                let _ = w.shallow_clone().uniform_(-bound, bound);
                let bias = format!("{prefix}.bias");
                if let Some((_, b)) = vars.iter().find(|(n, _)| *n == bias) {
                    let _ = b.shallow_clone().uniform_(-bound, bound);
                }
            }
        });
    }

    /// The logits for a batch.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match &self.body {
            Body::Built { layers, .. } => layers
                .iter()
                .fold(x.shallow_clone(), |h, l| l.module.forward_t(&h, train)),
            Body::Script(s) => s.forward_t(x, train),
        }
    }

    /// The output of layers `from..to` (indices after `input`) for their input `x`. A
    /// scripted module runs only whole (`0..depth`): see [`Net::splits`].
    pub fn forward_range(&self, x: &Tensor, from: usize, to: usize, train: bool) -> Tensor {
        match &self.body {
            Body::Built { layers, .. } => layers[from..to]
                .iter()
                .fold(x.shallow_clone(), |h, l| l.module.forward_t(&h, train)),
            Body::Script(s) => {
                assert!(
                    from == 0 && to == s.names().len(),
                    "a scripted module runs only whole"
                );
                s.forward_t(x, train)
            }
        }
    }

    /// For a batch `x` (the input of layer `from`; 0 for a scripted module), in evaluation
    /// mode: the last layer's input and the logits.
    pub fn last_input_and_logits(&self, x: &Tensor, from: usize) -> (Tensor, Tensor) {
        match &self.body {
            Body::Built { layers, .. } => {
                let last = layers.len() - 1;
                let h = self.forward_range(x, from, last, false);
                let z = self.forward_range(&h, last, last + 1, false);
                (h, z)
            }
            Body::Script(s) => {
                let mut outs = s.forward_layers(x);
                let (_, z) = outs.pop().expect("a scripted module has a logits layer");
                let h = outs.pop().map_or_else(|| x.shallow_clone(), |(_, h)| h);
                (h, z)
            }
        }
    }

    /// Whether a layer (index after `input`) holds BatchNorm statistics, so that training
    /// and evaluation differ in it (a scripted module's layers are taken to).
    pub fn has_batch_norm(&self, layer: usize) -> bool {
        match &self.body {
            Body::Built { vs, layers } => {
                let name = &layers[layer].name;
                vs.variables()
                    .keys()
                    .any(|v| self.layer_of(v) == Some(name.as_str()) && v.contains("running_"))
            }
            Body::Script(_) => true,
        }
    }

    /// The input and every layer's output for a batch (evaluation mode), in layer order.
    pub fn forward_layers(&self, x: &Tensor) -> Vec<(String, Tensor)> {
        let mut out = vec![("input".to_string(), x.shallow_clone())];
        match &self.body {
            Body::Built { layers, .. } => {
                let mut h = x.shallow_clone();
                for l in layers {
                    h = l.module.forward_t(&h, false);
                    out.push((l.name.clone(), h.shallow_clone()));
                }
            }
            Body::Script(s) => out.extend(s.forward_layers(x)),
        }
        out
    }

    /// Layer names after `input`.
    fn names(&self) -> Vec<&str> {
        match &self.body {
            Body::Built { layers, .. } => layers.iter().map(|l| l.name.as_str()).collect(),
            Body::Script(s) => s.names().iter().map(String::as_str).collect(),
        }
    }

    /// Layer names, starting with `input`.
    pub fn layer_names(&self) -> Vec<String> {
        std::iter::once("input")
            .chain(self.names())
            .map(str::to_string)
            .collect()
    }

    /// The layer a variable belongs to (`layer2.1.conv1.weight` -> `layer2.1`).
    pub fn layer_of(&self, variable: &str) -> Option<&str> {
        script::layer_of(self.names(), variable)
    }

    /// Every variable with whether it is trainable, unsorted.
    fn all_variables(&self) -> Vec<(String, Tensor)> {
        match &self.body {
            Body::Built { vs, .. } => vs.variables().into_iter().collect(),
            Body::Script(s) => s
                .parameters()
                .iter()
                .chain(s.buffers())
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect(),
        }
    }

    /// Trainable parameters, sorted by name (a fixed order for optimizers and checkpoints).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self
            .all_variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    /// Every variable (parameters and buffers), sorted by name.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        let mut named = self.all_variables();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }
}

/// Redraws a scripted module's linear and convolution weights and their biases (see
/// [`Net::initialize`]), in name order.
fn script_init(params: &[(String, Tensor)], init: WeightInit) {
    tch::no_grad(|| {
        for (name, w) in params {
            let Some(prefix) = name.strip_suffix(".weight") else {
                continue;
            };
            let size = w.size();
            if size.len() < 2 {
                continue;
            }
            let fan_in = size[1..].iter().product::<i64>() as f64;
            let bound = match init {
                WeightInit::Kaiming => (6.0 / fan_in).sqrt(),
                _ => 1.0 / fan_in.sqrt(),
            };
            let _ = w.shallow_clone().uniform_(-bound, bound);
            let bias = format!("{prefix}.bias");
            if let Some((_, b)) = params.iter().find(|(n, _)| *n == bias) {
                if init == WeightInit::Kaiming && size.len() > 2 {
                    let _ = b.shallow_clone().zero_();
                } else {
                    let b_bound = 1.0 / fan_in.sqrt();
                    let _ = b.shallow_clone().uniform_(-b_bound, b_bound);
                }
            }
        }
    });
}

fn layer(name: impl Into<String>, module: nn::SequentialT) -> Layer {
    Layer {
        name: name.into(),
        module,
    }
}

fn mlp(root: &nn::Path, input: [i64; 3], hidden: &[i64], classes: i64) -> Vec<Layer> {
    let mut layers = Vec::new();
    let mut width = input.iter().product::<i64>();
    for (i, &h) in hidden.iter().enumerate() {
        let name = format!("fc{}", i + 1);
        let mut seq = nn::seq_t();
        if i == 0 {
            seq = seq.add_fn(|x| x.flatten(1, -1));
        }
        seq = seq
            .add(nn::linear(
                root / name.as_str(),
                width,
                h,
                Default::default(),
            ))
            .add_fn(|x| x.relu());
        layers.push(layer(name, seq));
        width = h;
    }
    let mut seq = nn::seq_t();
    if hidden.is_empty() {
        seq = seq.add_fn(|x| x.flatten(1, -1));
    }
    layers.push(layer(
        "logits",
        seq.add(nn::linear(
            root / "logits",
            width,
            classes,
            Default::default(),
        )),
    ));
    layers
}

/// Average-pool to a `grid` x `grid` map (the identity when the map has that size, as for
/// the standard input), flatten, then a linear layer and ReLU: the first fully connected
/// block after convs, for inputs of any size.
fn flat_dense_relu(p: nn::Path, grid: i64, cin: i64, cout: i64) -> nn::SequentialT {
    nn::seq_t()
        .add_fn(move |x| x.adaptive_avg_pool2d([grid, grid]).flatten(1, -1))
        .add(nn::linear(p, cin, cout, Default::default()))
        .add_fn(|x| x.relu())
}

/// Global average pooling, then the linear classifier: the `logits` layer of the networks
/// whose last conv block has `cin` channels (a 32x32 VGG input is 1x1 there already).
fn pooled_logits(root: &nn::Path, cin: i64, classes: i64) -> Layer {
    layer(
        "logits",
        nn::seq_t()
            .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
            .add(nn::linear(
                root / "logits",
                cin,
                classes,
                Default::default(),
            )),
    )
}

fn conv3(p: nn::Path, cin: i64, cout: i64) -> nn::Conv2D {
    nn::conv2d(
        p,
        cin,
        cout,
        3,
        nn::ConvConfig {
            padding: 1,
            ..Default::default()
        },
    )
}

fn cnn(root: &nn::Path, channels: i64, mult: f64, classes: i64) -> Vec<Layer> {
    let (c1, c2, f) = (scaled(32, mult), scaled(64, mult), scaled(128, mult));
    vec![
        layer(
            "conv1",
            nn::seq_t()
                .add(conv3(root / "conv1", channels, c1))
                .add_fn(|x| x.relu().max_pool2d_default(2)),
        ),
        layer(
            "conv2",
            nn::seq_t()
                .add(conv3(root / "conv2", c1, c2))
                .add_fn(|x| x.relu().max_pool2d_default(2)),
        ),
        layer("fc1", flat_dense_relu(root / "fc1", 7, c2 * 7 * 7, f)),
        layer(
            "logits",
            nn::seq_t().add(nn::linear(root / "logits", f, classes, Default::default())),
        ),
    ]
}

fn vgg(
    root: &nn::Path,
    channels: i64,
    depth: u32,
    batch_norm: bool,
    mult: f64,
    classes: i64,
) -> Vec<Layer> {
    // Output channels per conv; `true` = a 2x2 max-pool follows.
    let cfg: &[(i64, bool)] = if depth == 11 {
        &[
            (64, true),
            (128, true),
            (256, false),
            (256, true),
            (512, false),
            (512, true),
            (512, false),
            (512, true),
        ]
    } else {
        &[
            (64, false),
            (64, true),
            (128, false),
            (128, true),
            (256, false),
            (256, false),
            (256, true),
            (512, false),
            (512, false),
            (512, true),
            (512, false),
            (512, false),
            (512, true),
        ]
    };
    let mut layers = Vec::new();
    let mut cin = channels;
    for (i, &(base, pool)) in cfg.iter().enumerate() {
        let cout = scaled(base, mult);
        let name = format!("conv{}", i + 1);
        let p = root / name.as_str();
        let mut seq = nn::seq_t().add(conv3(&p / "conv", cin, cout));
        if batch_norm {
            seq = seq.add(nn::batch_norm2d(&p / "bn", cout, Default::default()));
        }
        seq = seq.add_fn(move |x| {
            if pool {
                x.relu().max_pool2d_default(2)
            } else {
                x.relu()
            }
        });
        layers.push(layer(name, seq));
        cin = cout;
    }
    layers.push(pooled_logits(root, cin, classes));
    layers
}

/// A ResNet basic block: two 3x3 convs with BatchNorm and a (projected) shortcut.
#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    shortcut: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, stride: i64) -> BasicBlock {
        let conv = |p: nn::Path, cin, cout, k, stride, padding| {
            nn::conv2d(
                p,
                cin,
                cout,
                k,
                nn::ConvConfig {
                    stride,
                    padding,
                    bias: false,
                    ..Default::default()
                },
            )
        };
        BasicBlock {
            conv1: conv(&p / "conv1", cin, cout, 3, stride, 1),
            bn1: nn::batch_norm2d(&p / "bn1", cout, Default::default()),
            conv2: conv(&p / "conv2", cout, cout, 3, 1, 1),
            bn2: nn::batch_norm2d(&p / "bn2", cout, Default::default()),
            shortcut: (stride != 1 || cin != cout).then(|| {
                (
                    conv(&p / "shortcut_conv", cin, cout, 1, stride, 0),
                    nn::batch_norm2d(&p / "shortcut_bn", cout, Default::default()),
                )
            }),
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let h = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let h = h.apply(&self.conv2).apply_t(&self.bn2, train);
        let short = match &self.shortcut {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (h + short).relu()
    }
}

fn resnet18(root: &nn::Path, channels: i64, k: i64, classes: i64) -> Vec<Layer> {
    let stem = root / "conv1";
    let mut layers = vec![layer(
        "conv1",
        nn::seq_t()
            .add(nn::conv2d(
                &stem / "conv",
                channels,
                k,
                3,
                nn::ConvConfig {
                    padding: 1,
                    bias: false,
                    ..Default::default()
                },
            ))
            .add(nn::batch_norm2d(&stem / "bn", k, Default::default()))
            .add_fn(|x| x.relu()),
    )];
    let mut cin = k;
    for (stage, cout) in [k, 2 * k, 4 * k, 8 * k].into_iter().enumerate() {
        for b in 0..2 {
            let name = format!("layer{}.{b}", stage + 1);
            let stride = if stage > 0 && b == 0 { 2 } else { 1 };
            let block = BasicBlock::new(
                root / format!("layer{}", stage + 1) / b.to_string(),
                cin,
                cout,
                stride,
            );
            layers.push(layer(name, nn::seq_t().add(block)));
            cin = cout;
        }
    }
    layers.push(pooled_logits(root, cin, classes));
    layers
}

fn alexnet(root: &nn::Path, channels: i64, mult: f64, classes: i64) -> Vec<Layer> {
    let (c, f1, f2) = (scaled(64, mult), scaled(384, mult), scaled(192, mult));
    let conv5 = |p: nn::Path, cin, cout| {
        nn::conv2d(
            p,
            cin,
            cout,
            5,
            nn::ConvConfig {
                padding: 2,
                ..Default::default()
            },
        )
    };
    let pool = |x: &Tensor| x.relu().max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
    vec![
        layer(
            "conv1",
            nn::seq_t()
                .add(conv5(root / "conv1", channels, c))
                .add_fn(pool),
        ),
        layer(
            "conv2",
            nn::seq_t().add(conv5(root / "conv2", c, c)).add_fn(pool),
        ),
        layer("fc1", flat_dense_relu(root / "fc1", 8, c * 8 * 8, f1)),
        layer(
            "fc2",
            nn::seq_t()
                .add(nn::linear(root / "fc2", f1, f2, Default::default()))
                .add_fn(|x| x.relu()),
        ),
        layer(
            "logits",
            nn::seq_t().add(nn::linear(root / "logits", f2, classes, Default::default())),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn shapes(arch: Arch, input: [i64; 3]) -> Vec<(String, Vec<i64>)> {
        let net = {
            let _g = crate::rng::TORCH_RNG
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Net::new(&arch, input, 10, Device::Cpu).unwrap()
        };
        let x = Tensor::zeros(
            [2, input[0], input[1], input[2]],
            (Kind::Float, Device::Cpu),
        );
        net.forward_layers(&x)
            .into_iter()
            .map(|(n, t)| (n, t.size()))
            .collect()
    }

    #[test]
    fn layer_names_and_shapes() {
        let s = shapes(
            Arch::Mlp {
                hidden: vec![16, 8],
            },
            [1, 4, 4],
        );
        assert_eq!(
            s,
            vec![
                ("input".into(), vec![2, 1, 4, 4]),
                ("fc1".into(), vec![2, 16]),
                ("fc2".into(), vec![2, 8]),
                ("logits".into(), vec![2, 10])
            ]
        );
        let s = shapes(Arch::Cnn { mult: 1.0 }, [1, 28, 28]);
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["input", "conv1", "conv2", "fc1", "logits"]);
        assert_eq!(s[2].1, vec![2, 64, 7, 7]);
        let s = shapes(Arch::Resnet18 { k: 64 }, [3, 32, 32]);
        assert_eq!(s.len(), 1 + 1 + 8 + 1);
        assert_eq!(s[9].0, "layer4.1");
        assert_eq!(s[9].1, vec![2, 512, 4, 4]);
        let s = shapes(
            Arch::Vgg {
                depth: 16,
                batch_norm: true,
                mult: 1.0,
            },
            [3, 32, 32],
        );
        assert_eq!(s.len(), 1 + 13 + 1);
        assert_eq!(s[13].1, vec![2, 512, 1, 1]);
        let s = shapes(
            Arch::Vgg {
                depth: 11,
                batch_norm: false,
                mult: 1.0,
            },
            [3, 32, 32],
        );
        assert_eq!(s.len(), 1 + 8 + 1);
        let s = shapes(Arch::Alexnet { mult: 1.0 }, [3, 32, 32]);
        assert_eq!(s.last().unwrap().1, vec![2, 10]);
    }

    fn count(arch: Arch, input: [i64; 3]) -> i64 {
        let net = {
            let _g = crate::rng::TORCH_RNG
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Net::new(&arch, input, 10, Device::Cpu).unwrap()
        };
        net.parameters().iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// A 3x3 (or `k` x `k`) convolution's weights and bias.
    fn conv(k: i64, cin: i64, cout: i64) -> i64 {
        k * k * cin * cout + cout
    }

    fn dense(cin: i64, cout: i64) -> i64 {
        cin * cout + cout
    }

    #[test]
    fn parameter_counts_follow_the_width_formulas() {
        // cnn: conv(1->32m), conv(32m->64m), fc(64m*7*7 -> 128m), fc(128m -> 10).
        for m in [0.25, 0.5, 1.0, 2.0] {
            let (c1, c2, f) = (scaled(32, m), scaled(64, m), scaled(128, m));
            let want = conv(3, 1, c1) + conv(3, c1, c2) + dense(c2 * 49, f) + dense(f, 10);
            assert_eq!(count(Arch::Cnn { mult: m }, [1, 28, 28]), want, "cnn x{m}");
        }
        assert_eq!(count(Arch::Cnn { mult: 1.0 }, [1, 28, 28]), 421_642);
        // VGG-16 (CIFAR, no BatchNorm): 13 convs and one 512 -> 10 classifier.
        let vgg16 = [
            64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512,
        ];
        for m in [0.125, 1.0] {
            let mut cin = 3;
            let mut want = 0;
            for base in vgg16 {
                let cout = scaled(base, m);
                want += conv(3, cin, cout);
                cin = cout;
            }
            want += dense(cin, 10);
            let arch = Arch::Vgg {
                depth: 16,
                batch_norm: false,
                mult: m,
            };
            assert_eq!(count(arch, [3, 32, 32]), want, "vgg16 x{m}");
        }
        // ResNet-18 with stage widths k, 2k, 4k, 8k: a bias-free 3x3 stem with BatchNorm,
        // eight basic blocks (two 3x3 convs with BatchNorm; a 1x1 projection with BatchNorm
        // where the width or stride changes), a linear classifier.
        let resnet = |k: i64| {
            let mut n = 9 * 3 * k + 2 * k;
            let mut cin = k;
            for (stage, cout) in [k, 2 * k, 4 * k, 8 * k].into_iter().enumerate() {
                for b in 0..2 {
                    n += 9 * cin * cout + 2 * cout + 9 * cout * cout + 2 * cout;
                    if cin != cout || (stage > 0 && b == 0) {
                        n += cin * cout + 2 * cout;
                    }
                    cin = cout;
                }
            }
            n + dense(8 * k, 10)
        };
        assert_eq!(resnet(64), 11_173_962, "the standard CIFAR ResNet-18");
        for k in [4, 16, 64] {
            assert_eq!(
                count(Arch::Resnet18 { k }, [3, 32, 32]),
                resnet(k),
                "k = {k}"
            );
        }
        // AlexNet (small): two 5x5 convs, fc(c*8*8 -> 384m), fc(384m -> 192m), fc(-> 10).
        for m in [0.5, 1.0] {
            let (c, f1, f2) = (scaled(64, m), scaled(384, m), scaled(192, m));
            let want =
                conv(5, 3, c) + conv(5, c, c) + dense(c * 64, f1) + dense(f1, f2) + dense(f2, 10);
            assert_eq!(
                count(Arch::Alexnet { mult: m }, [3, 32, 32]),
                want,
                "alexnet x{m}"
            );
        }
    }

    #[test]
    fn torch_init_draws_uniform_within_one_over_root_fan_in() {
        let net = {
            let _g = crate::rng::TORCH_RNG
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            tch::manual_seed(3);
            let net = Net::new(&Arch::Cnn { mult: 1.0 }, [1, 28, 28], 10, Device::Cpu).unwrap();
            net.initialize(WeightInit::Torch);
            net
        };
        let vars = net.variables();
        let get = |n: &str| &vars.iter().find(|(v, _)| v == n).unwrap().1;
        // fc1: fan_in 64 * 7 * 7 = 3136; conv2: 32 * 3 * 3 = 288. U(-b, b) has sd b / sqrt(3).
        for (w, b, fan_in) in [
            ("fc1.weight", "fc1.bias", 3136.0),
            ("conv2.weight", "conv2.bias", 288.0),
        ] {
            let bound = 1.0 / f64::sqrt(fan_in);
            for t in [get(w), get(b)] {
                assert!(t.abs().max().double_value(&[]) <= bound);
            }
            let sd = get(w).std(true).double_value(&[]);
            assert!((sd / (bound / 3f64.sqrt()) - 1.0).abs() < 0.05, "{w}: {sd}");
        }
    }

    #[test]
    fn models_take_any_image_size_at_least_their_minimum() {
        for (arch, input) in [
            (Arch::Cnn { mult: 0.5 }, [3, 40, 36]),
            (Arch::Resnet18 { k: 4 }, [3, 64, 64]),
            (Arch::Alexnet { mult: 0.25 }, [1, 20, 20]),
            (
                Arch::Vgg {
                    depth: 11,
                    batch_norm: true,
                    mult: 0.125,
                },
                [3, 64, 48],
            ),
        ] {
            assert!(arch.check_input(input[0], input[1], input[2]).is_ok());
            let s = shapes(arch, input);
            assert_eq!(s.last().unwrap().1, vec![2, 10], "{input:?}");
        }
        let vgg = Arch::Vgg {
            depth: 16,
            batch_norm: false,
            mult: 1.0,
        };
        assert_eq!(
            vgg.check_input(1, 28, 28).unwrap_err(),
            "model vgg needs images of at least 32x32, the data set has 28x28"
        );
    }

    #[test]
    fn every_variable_belongs_to_one_layer() {
        let net = {
            let _g = crate::rng::TORCH_RNG
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            Net::new(&Arch::Resnet18 { k: 64 }, [3, 32, 32], 10, Device::Cpu).unwrap()
        };
        for (name, _) in net.variables() {
            let l = net
                .layer_of(&name)
                .unwrap_or_else(|| panic!("{name} has no layer"));
            assert!(name.starts_with(&format!("{l}.")), "{name} -> {l}");
        }
        assert_eq!(net.layer_of("layer1.1.bn2.running_mean"), Some("layer1.1"));
        // Every parameter is counted once; ResNet-18 for CIFAR has 11,173,962 parameters.
        let n: i64 = net.parameters().iter().map(|(_, t)| t.numel() as i64).sum();
        assert_eq!(n, 11_173_962);
    }
}
