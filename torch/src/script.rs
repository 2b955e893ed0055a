//! A network from a TorchScript file: the user's own PyTorch model, trained and analysed
//! like a built-in one.
//!
//! The module is loaded with tch's [`CModule`]; its parameters are the module's own tensors
//! (`named_parameters`), trained in place, as tch's `TrainableCModule` does (which also
//! puts them in a var store, under names with `.` turned into `_`: pipe needs the real
//! names, which name the layers). The contract, checked by [`ScriptNet::load`] on a batch
//! of the data set's shape before anything is stored:
//!
//! - `forward(x)` returns the logits, `[N, C]` for the data set's images and classes;
//! - `layers(x)` returns `List[Tuple[str, Tensor]]`: every layer's output, named, in order,
//!   the last being the logits;
//! - `buffers_by_name()` returns `Dict[str, Tensor]`, the module's buffers (BatchNorm
//!   statistics), which tch cannot list (`pipelines/models/export.py` adds it);
//! - every parameter and buffer belongs to a layer by name prefix
//!   (`blocks.3.attn.qkv.weight` -> `blocks.3`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::{CModule, Device, IValue, Kind, Tensor};

/// The method that returns every layer's output.
pub const LAYERS_METHOD: &str = "layers";
/// The method that returns the buffers by name.
pub const BUFFERS_METHOD: &str = "buffers_by_name";

/// The module and the mode (training or evaluation) it was last switched to.
struct Module {
    module: CModule,
    training: Option<bool>,
}

/// A TorchScript module with named layers.
pub struct ScriptNet {
    module: Mutex<Module>,
    /// Layer names in order (without `input`).
    names: Vec<String>,
    /// Parameters, sorted by name (the module's own tensors).
    params: Vec<(String, Tensor)>,
    /// Buffers, sorted by name (the module's own tensors).
    buffers: Vec<(String, Tensor)>,
    /// The file it was loaded from.
    pub file: PathBuf,
}

/// The layer of `variable` among `names`: the longest name that is a prefix of it followed
/// by a `.` (`layer2.1.conv1.weight` -> `layer2.1`).
pub fn layer_of<'a>(names: impl IntoIterator<Item = &'a str>, variable: &str) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| {
            variable
                .strip_prefix(n)
                .is_some_and(|rest| rest.starts_with('.'))
        })
        .max_by_key(|n| n.len())
}

/// A deterministic, non-constant batch of two inputs of shape `[2, c, h, w]`.
fn probe_batch(input: [i64; 3], device: Device) -> Tensor {
    let n: i64 = 2 * input.iter().product::<i64>();
    Tensor::arange(n, (Kind::Float, device))
        .sin()
        .view([2, input[0], input[1], input[2]])
}

fn shape(t: &Tensor) -> String {
    format!("{:?}", t.size())
}

/// What a method result is, for messages.
fn type_name(v: &IValue) -> &'static str {
    match v {
        IValue::None => "None",
        IValue::Tensor(_) => "a Tensor",
        IValue::Double(_) | IValue::Int(_) | IValue::Bool(_) => "a number",
        IValue::Tuple(_) => "a tuple",
        IValue::String(_) => "a str",
        IValue::GenericDict(_) => "a dict",
        IValue::Object(_) => "an object",
        _ => "a list of something else",
    }
}

impl ScriptNet {
    /// Loads the module at `file` onto `device` and checks the contract for images of shape
    /// `input` and `classes` classes; the error says what is wrong and what is expected.
    pub fn load(
        file: &Path,
        input: [i64; 3],
        classes: i64,
        device: Device,
    ) -> Result<ScriptNet, String> {
        let mut module = CModule::load_on_device(file, device).map_err(|e| {
            format!(
                "cannot load the TorchScript module {}: {}; expected a file saved by torch.jit.save (pipelines/models/export.py writes one)",
                file.display(),
                first_line(&e.to_string())
            )
        })?;
        module.set_eval();
        let x = probe_batch(input, device);
        let dims = format!("[2, {}, {}, {}]", input[0], input[1], input[2]);
        let logits = tch::no_grad(|| module.forward_is(&[IValue::Tensor(x.shallow_clone())]))
            .map_err(|e| {
                format!(
                    "the module's forward(x) fails for a batch of the data set's images, x of shape {dims}: {}",
                    first_line(&e.to_string())
                )
            })?;
        let logits = match logits {
            IValue::Tensor(t) if t.size() == [2, classes] => t,
            IValue::Tensor(t) => {
                return Err(format!(
                    "the module's forward(x) must return the logits [N, C] = [2, {classes}] for x of shape {dims} ({classes} classes), it returned a Tensor of shape {}",
                    shape(&t)
                ));
            }
            other => {
                return Err(format!(
                    "the module's forward(x) must return the logits, a Tensor [N, C] = [2, {classes}], it returned {}",
                    type_name(&other)
                ));
            }
        };
        let outputs = layer_outputs(&module, &x)?;
        let names: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
        check_names(&names)?;
        let (last, last_out) = outputs.last().ok_or_else(|| {
            "the module's layers(x) returned no layers; expected every layer's output, the last being the logits".to_string()
        })?;
        if last_out.size() != logits.size()
            || !last_out.to_kind(Kind::Double).allclose(
                &logits.to_kind(Kind::Double),
                1e-5,
                1e-6,
                false,
            )
        {
            return Err(format!(
                "the last output of the module's layers(x), \"{last}\" (shape {}), must be the logits forward(x) returns (shape {})",
                shape(last_out),
                shape(&logits)
            ));
        }
        let buffers = buffers_of(&module)?;
        let mut params = module.named_parameters().map_err(|e| {
            format!(
                "cannot list the module's parameters: {}",
                first_line(&e.to_string())
            )
        })?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        for (kind, list) in [("parameter", &params), ("buffer", &buffers)] {
            for (v, _) in list {
                if layer_of(names.iter().map(String::as_str), v).is_none() {
                    return Err(format!(
                        "the module's {kind} `{v}` belongs to no layer: every parameter and buffer must be named after a layer that layers(x) returns, as its prefix (`blocks.3.attn.qkv.weight` belongs to `blocks.3`); the layers: {}",
                        names.join(", ")
                    ));
                }
            }
        }
        for (_, p) in &params {
            let _ = p.shallow_clone().set_requires_grad(true);
        }
        Ok(ScriptNet {
            module: Mutex::new(Module {
                module,
                training: Some(false),
            }),
            names,
            params,
            buffers,
            file: file.to_path_buf(),
        })
    }

    /// Layer names, without `input`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Every parameter (trainable or frozen), sorted by name.
    pub fn parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Every buffer, sorted by name.
    pub fn buffers(&self) -> &[(String, Tensor)] {
        &self.buffers
    }

    /// Runs `f` on the module switched to training or evaluation mode.
    fn with_mode<T>(&self, train: bool, f: impl FnOnce(&CModule) -> T) -> T {
        let mut m = self.module.lock().unwrap_or_else(|e| e.into_inner());
        if m.training != Some(train) {
            if train {
                m.module.set_train();
            } else {
                m.module.set_eval();
            }
            m.training = Some(train);
        }
        f(&m.module)
    }

    /// The logits for a batch.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.with_mode(train, |m| m.forward_ts(&[x]))
            .unwrap_or_else(|e| panic!("the module's forward failed: {e}"))
    }

    /// Every layer's output for a batch, in order, in evaluation mode.
    pub fn forward_layers(&self, x: &Tensor) -> Vec<(String, Tensor)> {
        self.with_mode(false, |m| layer_outputs(m, x))
            .unwrap_or_else(|e| panic!("the module's layers method failed: {e}"))
    }
}

/// The first line of an error from libtorch (the rest is a C++ backtrace).
fn first_line(e: &str) -> String {
    e.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

/// Layer names: not empty, unique, not `input`, letters, digits, `.`, `_`, `-`.
fn check_names(names: &[String]) -> Result<(), String> {
    for (i, n) in names.iter().enumerate() {
        let fine = !n.is_empty()
            && n != "input"
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !fine {
            return Err(format!(
                "the module's layers(x) names a layer {n:?}: layer names are letters, digits, `.`, `_` and `-`, and not \"input\" (pipe adds the input itself)"
            ));
        }
        if names[..i].contains(n) {
            return Err(format!(
                "the module's layers(x) names the layer \"{n}\" twice; each layer once, in order"
            ));
        }
    }
    Ok(())
}

/// `layers(x)` as (name, output) pairs, or what is wrong with it.
fn layer_outputs(module: &CModule, x: &Tensor) -> Result<Vec<(String, Tensor)>, String> {
    const EXPECTED: &str = "expected `@torch.jit.export def layers(self, x) -> List[Tuple[str, Tensor]]` returning every layer's output, named, in order, the last being the logits";
    let out = module
        .method_is(LAYERS_METHOD, &[IValue::Tensor(x.shallow_clone())])
        .map_err(|e| {
            let e = first_line(&e.to_string());
            if e.contains("not defined") || e.contains("Method") {
                format!("the module has no method `layers`: {EXPECTED}")
            } else {
                format!("the module's layers(x) fails: {e}")
            }
        })?;
    let IValue::GenericList(items) = out else {
        return Err(format!(
            "the module's layers(x) returned {}: {EXPECTED}",
            type_name(&out)
        ));
    };
    items
        .into_iter()
        .map(|item| match item {
            IValue::Tuple(mut pair) if pair.len() == 2 => match (pair.remove(0), pair.remove(0)) {
                (IValue::String(name), IValue::Tensor(t)) => Ok((name, t)),
                _ => Err(format!(
                    "the module's layers(x) returned a pair that is not (str, Tensor): {EXPECTED}"
                )),
            },
            other => Err(format!(
                "the module's layers(x) returned a list holding {}: {EXPECTED}",
                type_name(&other)
            )),
        })
        .collect()
}

/// `buffers_by_name()` sorted by name, or what is wrong with it.
fn buffers_of(module: &CModule) -> Result<Vec<(String, Tensor)>, String> {
    const EXPECTED: &str = "expected `@torch.jit.export def buffers_by_name(self) -> Dict[str, Tensor]` returning every buffer (BatchNorm statistics) by its name in the state dict, which pipelines/models/export.py adds when it scripts the module";
    let out = module
        .method_is::<IValue>(BUFFERS_METHOD, &[])
        .map_err(|e| {
            let e = first_line(&e.to_string());
            if e.contains("not defined") || e.contains("Method") {
                format!("the module has no method `buffers_by_name`: {EXPECTED}")
            } else {
                format!("the module's buffers_by_name() fails: {e}")
            }
        })?;
    let IValue::GenericDict(items) = out else {
        return Err(format!(
            "the module's buffers_by_name() returned {}: {EXPECTED}",
            type_name(&out)
        ));
    };
    let mut buffers = items
        .into_iter()
        .map(|kv| match kv {
            (IValue::String(name), IValue::Tensor(t)) => Ok((name, t)),
            _ => Err(format!(
                "the module's buffers_by_name() holds an entry that is not str: Tensor: {EXPECTED}"
            )),
        })
        .collect::<Result<Vec<_>, String>>()?;
    buffers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(buffers)
}
