//! Network architectures as ordered lists of named layers.
//!
//! Every model is a [`Net`]: `input`, then one named layer per block (its output taken
//! after the block's nonlinearity, and after the pooling that follows it), ending in
//! `logits`. Parameters of a layer are stored under the layer's name in the var store
//! (`fc1.weight`, `layer2.1.bn1.running_mean`), so rollback and gradient analyses know
//! which parameters belong to which layer.

use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

/// The architectures `train` knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Arch {
    /// Fully connected, ReLU after each hidden layer.
    Mlp {
        /// Hidden layer widths.
        hidden: Vec<i64>,
    },
    /// Two conv blocks and one hidden fully connected layer, for 28x28 inputs.
    Cnn,
    /// VGG-11 or VGG-16, CIFAR style (3x3 convs, 5 poolings, one linear classifier).
    Vgg {
        /// 11 or 16.
        depth: u32,
        /// BatchNorm after each conv.
        batch_norm: bool,
    },
    /// ResNet-18, CIFAR style (3x3 stem, no initial pooling).
    Resnet18,
    /// The small AlexNet used for CIFAR by Zhang et al. (2017), without local response norm.
    Alexnet,
}

impl Arch {
    /// The architecture for a `model` name; `hidden` and `batch_norm` as the params give them.
    pub fn from_name(name: &str, hidden: Vec<i64>, batch_norm: bool) -> Option<Arch> {
        Some(match name {
            "mlp" => Arch::Mlp { hidden },
            "cnn" => Arch::Cnn,
            "vgg11" => Arch::Vgg {
                depth: 11,
                batch_norm,
            },
            "vgg16" => Arch::Vgg {
                depth: 16,
                batch_norm,
            },
            "resnet18" => Arch::Resnet18,
            "alexnet" => Arch::Alexnet,
            _ => return None,
        })
    }

    /// Checks that the architecture fits an input of `channels x height x width`.
    pub fn check_input(&self, channels: i64, height: i64, width: i64) -> Result<(), String> {
        match self {
            Arch::Mlp { .. } => Ok(()),
            Arch::Cnn if height == 28 && width == 28 => Ok(()),
            Arch::Cnn => Err(format!(
                "model cnn is for 28x28 inputs, the data set has {height}x{width}"
            )),
            _ if height == 32 && width == 32 && channels == 3 => Ok(()),
            _ => Err(format!(
                "this model is for 3x32x32 (CIFAR) inputs, the data set has {channels}x{height}x{width}"
            )),
        }
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
    /// All variables (trainable parameters and BatchNorm statistics).
    pub vs: nn::VarStore,
    /// The layers, after `input`.
    pub layers: Vec<Layer>,
}

impl Net {
    /// Builds the architecture with freshly initialized weights on `device`.
    ///
    /// Initialization draws from libtorch's global generator: seed it first (and hold
    /// [`crate::TORCH_RNG`] while doing both) for reproducible weights.
    pub fn new(arch: &Arch, input: [i64; 3], classes: i64, device: Device) -> Net {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let layers = match arch {
            Arch::Mlp { hidden } => mlp(&root, input, hidden, classes),
            Arch::Cnn => cnn(&root, input[0], classes),
            Arch::Vgg { depth, batch_norm } => vgg(&root, *depth, *batch_norm, classes),
            Arch::Resnet18 => resnet18(&root, classes),
            Arch::Alexnet => alexnet(&root, classes),
        };
        Net { vs, layers }
    }

    /// The logits for a batch.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.layers
            .iter()
            .fold(x.shallow_clone(), |h, l| l.module.forward_t(&h, train))
    }

    /// The input and every layer's output for a batch (evaluation mode), in layer order.
    pub fn forward_layers(&self, x: &Tensor) -> Vec<(String, Tensor)> {
        let mut out = vec![("input".to_string(), x.shallow_clone())];
        let mut h = x.shallow_clone();
        for l in &self.layers {
            h = l.module.forward_t(&h, false);
            out.push((l.name.clone(), h.shallow_clone()));
        }
        out
    }

    /// Layer names, starting with `input`.
    pub fn layer_names(&self) -> Vec<String> {
        std::iter::once("input".to_string())
            .chain(self.layers.iter().map(|l| l.name.clone()))
            .collect()
    }

    /// The layer a variable belongs to (`layer2.1.conv1.weight` -> `layer2.1`).
    pub fn layer_of(&self, variable: &str) -> Option<&str> {
        self.layers
            .iter()
            .map(|l| l.name.as_str())
            .filter(|n| {
                variable
                    .strip_prefix(n)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
            .max_by_key(|n| n.len())
    }

    /// Trainable parameters, sorted by name (a fixed order for optimizers and checkpoints).
    pub fn parameters(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    /// Every variable (parameters and buffers), sorted by name.
    pub fn variables(&self) -> Vec<(String, Tensor)> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }
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

/// Flatten, then a linear layer and ReLU: the first fully connected block after convs.
fn flat_dense_relu(p: nn::Path, cin: i64, cout: i64) -> nn::SequentialT {
    nn::seq_t()
        .add_fn(|x| x.flatten(1, -1))
        .add(nn::linear(p, cin, cout, Default::default()))
        .add_fn(|x| x.relu())
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

fn cnn(root: &nn::Path, channels: i64, classes: i64) -> Vec<Layer> {
    vec![
        layer(
            "conv1",
            nn::seq_t()
                .add(conv3(root / "conv1", channels, 32))
                .add_fn(|x| x.relu().max_pool2d_default(2)),
        ),
        layer(
            "conv2",
            nn::seq_t()
                .add(conv3(root / "conv2", 32, 64))
                .add_fn(|x| x.relu().max_pool2d_default(2)),
        ),
        layer("fc1", flat_dense_relu(root / "fc1", 64 * 7 * 7, 128)),
        layer(
            "logits",
            nn::seq_t().add(nn::linear(
                root / "logits",
                128,
                classes,
                Default::default(),
            )),
        ),
    ]
}

fn vgg(root: &nn::Path, depth: u32, batch_norm: bool, classes: i64) -> Vec<Layer> {
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
    let mut cin = 3;
    for (i, &(cout, pool)) in cfg.iter().enumerate() {
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
    layers.push(layer(
        "logits",
        nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(
            root / "logits",
            512,
            classes,
            Default::default(),
        )),
    ));
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

fn resnet18(root: &nn::Path, classes: i64) -> Vec<Layer> {
    let stem = root / "conv1";
    let mut layers = vec![layer(
        "conv1",
        nn::seq_t()
            .add(nn::conv2d(
                &stem / "conv",
                3,
                64,
                3,
                nn::ConvConfig {
                    padding: 1,
                    bias: false,
                    ..Default::default()
                },
            ))
            .add(nn::batch_norm2d(&stem / "bn", 64, Default::default()))
            .add_fn(|x| x.relu()),
    )];
    let mut cin = 64;
    for (stage, cout) in [64i64, 128, 256, 512].into_iter().enumerate() {
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
    layers.push(layer(
        "logits",
        nn::seq_t()
            .add_fn(|x| x.adaptive_avg_pool2d([1, 1]).flatten(1, -1))
            .add(nn::linear(
                root / "logits",
                512,
                classes,
                Default::default(),
            )),
    ));
    layers
}

fn alexnet(root: &nn::Path, classes: i64) -> Vec<Layer> {
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
            nn::seq_t().add(conv5(root / "conv1", 3, 64)).add_fn(pool),
        ),
        layer(
            "conv2",
            nn::seq_t().add(conv5(root / "conv2", 64, 64)).add_fn(pool),
        ),
        layer("fc1", flat_dense_relu(root / "fc1", 64 * 8 * 8, 384)),
        layer(
            "fc2",
            nn::seq_t()
                .add(nn::linear(root / "fc2", 384, 192, Default::default()))
                .add_fn(|x| x.relu()),
        ),
        layer(
            "logits",
            nn::seq_t().add(nn::linear(
                root / "logits",
                192,
                classes,
                Default::default(),
            )),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn shapes(arch: Arch, input: [i64; 3]) -> Vec<(String, Vec<i64>)> {
        let net = {
            let _g = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
            Net::new(&arch, input, 10, Device::Cpu)
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
        let s = shapes(Arch::Cnn, [1, 28, 28]);
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["input", "conv1", "conv2", "fc1", "logits"]);
        assert_eq!(s[2].1, vec![2, 64, 7, 7]);
        let s = shapes(Arch::Resnet18, [3, 32, 32]);
        assert_eq!(s.len(), 1 + 1 + 8 + 1);
        assert_eq!(s[9].0, "layer4.1");
        assert_eq!(s[9].1, vec![2, 512, 4, 4]);
        let s = shapes(
            Arch::Vgg {
                depth: 16,
                batch_norm: true,
            },
            [3, 32, 32],
        );
        assert_eq!(s.len(), 1 + 13 + 1);
        assert_eq!(s[13].1, vec![2, 512, 1, 1]);
        let s = shapes(
            Arch::Vgg {
                depth: 11,
                batch_norm: false,
            },
            [3, 32, 32],
        );
        assert_eq!(s.len(), 1 + 8 + 1);
        let s = shapes(Arch::Alexnet, [3, 32, 32]);
        assert_eq!(s.last().unwrap().1, vec![2, 10]);
    }

    #[test]
    fn layer_names_agree_with_the_engine_side_list() {
        let cases: [(&str, [i64; 3]); 6] = [
            ("mlp", [1, 28, 28]),
            ("cnn", [1, 28, 28]),
            ("vgg11", [3, 32, 32]),
            ("vgg16", [3, 32, 32]),
            ("resnet18", [3, 32, 32]),
            ("alexnet", [3, 32, 32]),
        ];
        for (model, input) in cases {
            let params = <pipe::stages::train::TrainParams as pipe::stage::KindParams>::parse(
                serde_json::json!({"model": model, "hidden": [7, 5, 3], "epochs": 1, "lr": 0.1})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
            let arch = Arch::from_name(model, vec![7, 5, 3], false).unwrap();
            let net = {
                let _g = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
                Net::new(&arch, input, 10, Device::Cpu)
            };
            assert_eq!(net.layer_names(), params.layer_names(), "{model}");
        }
    }

    #[test]
    fn every_variable_belongs_to_one_layer() {
        let net = {
            let _g = crate::TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner());
            Net::new(&Arch::Resnet18, [3, 32, 32], 10, Device::Cpu)
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
