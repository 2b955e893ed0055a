//! Your own model: a PyTorch module defined here, scripted by an `exec` stage with the
//! shipped `pipelines/models/export.py`, trained by `train` (`model = "script"`) and seen by
//! the analyses. Expectations are PyTorch's, computed from the stored checkpoints.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value as Json;

/// Scripts `model.py`'s `Net` into `$PIPE_OUT/model.pt`: through the shipped helper, or
/// (with `check = False`) through its adapter alone, so that the worker's checks are met.
fn make_py(check: bool) -> String {
    format!(
        "import os, torch, export\n\
         from model import Net\n\
         torch.manual_seed(0)\n\
         if not {check}:\n    export.check = lambda *a: []\n\
         export.export(Net(), os.environ['PIPE_OUT'] + '/model.pt', (1, 4, 4), 10)\n",
        check = if check { "True" } else { "False" }
    )
}

/// The pipeline: tiny data, half the labels corrupted, the module, 3 epochs, analyses.
const PIPELINE: &str = r#"[pipeline]
name = "own-model"
[stage.data]
kind = "dataset"
source = "idx"
path = "data"
train_size = 60
test_size = 20
[stage.corrupt]
kind = "corrupt"
inputs = ["data"]
fraction = 0.5
seed = 1
[stage.net]
kind = "exec"
cmd = ["python3", "make.py"]
files = ["model.py", "make.py", "export.py"]
[stage.train]
kind = "train"
inputs = ["data", "corrupt", "net"]
model = "script"
epochs = 3
batch_size = 20
lr = 0.05
seed = 1
device = "cpu"
checkpoints = [0, 1, 3]
[stage.activations]
kind = "activations"
inputs = ["train"]
epochs = [3]
classes = 3
per_class = 2
[stage.gradnorm]
kind = "gradnorm"
inputs = ["train"]
epochs = [0, 3]
[stage.rollback]
kind = "rollback"
inputs = ["train"]
from_epochs = [1]
"#;

/// A project with the data, the model, the helper and the pipeline (`model.py` and
/// `make.py` as given).
fn project(model: &str, make: &str, pipeline: &str) -> Project {
    let p = Project::new();
    p.write("model.py", model);
    p.write("make.py", make);
    p.write(
        "export.py",
        &std::fs::read_to_string(repo().join("pipelines/models/export.py")).unwrap(),
    );
    p.write("p.toml", pipeline);
    p
}

fn artifact(p: &Project, key: &Json) -> PathBuf {
    p.cache().join("artifacts").join(key.as_str().unwrap())
}

/// The artifact folder of the one executed instance of `stage`.
fn executed(p: &Project, r: &Json, stage: &str) -> PathBuf {
    let items = of_stage(r, "executed", stage);
    assert_eq!(items.len(), 1, "{stage}: {r}");
    artifact(p, &items[0]["key"])
}

/// Every checkpoint of a train artifact: epoch -> folder.
fn checkpoints(p: &Project, train: &Path) -> Vec<(i64, PathBuf)> {
    let list: Vec<Json> =
        serde_json::from_slice(&std::fs::read(train.join("checkpoints.json")).unwrap()).unwrap();
    list.iter()
        .map(|c| (c["epoch"].as_i64().unwrap(), artifact(p, &c["key"])))
        .collect()
}

fn blake3_file(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

/// Python that loads `model.py`'s `Net` and the data as pipe standardizes it: `net_at(file)`
/// (a checkpoint's weights, evaluation mode), `x`, `y` (training labels), `xt`, `yt`.
const PY_SETUP: &str = r#"
import importlib.util, json, math
import polars as pl, torch, torch.nn.functional as F
from safetensors.torch import load_file
spec = importlib.util.spec_from_file_location("model", A["model"])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
def images(path):
    df = pl.read_parquet(path)
    return torch.tensor(df["image"].to_list(), dtype=torch.uint8).view(-1, 1, 4, 4), torch.tensor(df["label"].to_list())
xr, _ = images(A["data"] + "/train.parquet")
xtr, yt = images(A["data"] + "/test.parquet")
xf = xr.float() / 255.0
mean = xf.mean(dim=(0, 2, 3), keepdim=True)
std = xf.std(dim=(0, 2, 3), unbiased=False, keepdim=True).clamp_min(1e-6)
x = (xr.float() / 255.0 - mean) / std
xt = (xtr.float() / 255.0 - mean) / std
labels = pl.read_parquet(A["labels"] + "/labels.parquet")
y = torch.tensor(labels["train_label"].to_list())
def net_at(file):
    net = m.Net()
    net.load_state_dict(load_file(file), strict=True)
    return net.eval()
"#;

/// Runs `PY_SETUP` then `code` with `A` = `args`; parses the JSON it prints.
fn py(args: &Json, code: &str) -> Json {
    python(&format!(
        "import json\nA = json.loads(r'''{args}''')\n{PY_SETUP}\n{code}"
    ))
}

#[test]
fn scripted_run_matches_pytorch_and_every_analysis_takes_it() {
    let p = project(MODEL_PY, &make_py(true), PIPELINE);
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let train = executed(&p, &r, "train");
    let module = executed(&p, &r, "net").join("model.pt");
    let args = serde_json::json!({
        "model": p.path("model.py"),
        "data": executed(&p, &r, "data"),
        "labels": executed(&p, &r, "corrupt"),
        "metrics": train.join("metrics.parquet"),
        "checkpoints": checkpoints(&p, &train),
        "activations": executed(&p, &r, "activations"),
        "gradnorm": executed(&p, &r, "gradnorm"),
        "rollback": executed(&p, &r, "rollback"),
    });

    // model.json: the module's digest, layers with their variables and parameter counts.
    let info: Json =
        serde_json::from_slice(&std::fs::read(train.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["model"], "script");
    assert_eq!(info["module"]["blake3"], blake3_file(&module));
    assert_eq!(
        info["module"]["buffers"],
        serde_json::json!([
            "fc1.1.num_batches_tracked",
            "fc1.1.running_mean",
            "fc1.1.running_var"
        ])
    );
    let layers: Vec<(String, usize, i64)> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["variables"].as_array().unwrap().len(),
                l["parameters"].as_i64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("input", 0, 0),
        ("fc1", 7, 16 * 12 + 12 + 2 * 12),
        ("logits", 2, 12 * 10 + 10),
    ];
    let want: Vec<(String, usize, i64)> = want
        .iter()
        .map(|(n, v, c)| (n.to_string(), *v, *c))
        .collect();
    assert_eq!(layers, want);
    assert_eq!(info["parameters"], 16 * 12 + 12 + 2 * 12 + 12 * 10 + 10);

    // Losses and accuracies at kept epochs equal PyTorch's evaluation of the checkpoint.
    let out = py(
        &args,
        r#"
metrics = {r["epoch"]: r for r in pl.read_parquet(A["metrics"]).to_dicts()}
out = []
for epoch, folder in A["checkpoints"]:
    net = net_at(folder + "/weights.safetensors")
    with torch.no_grad():
        z, zt = net(x).double(), net(xt).double()
    got = [F.cross_entropy(z, y, reduction="sum").item() / len(y), (z.argmax(1) == y).double().mean().item(),
           F.cross_entropy(zt, yt, reduction="sum").item() / len(yt), (zt.argmax(1) == yt).double().mean().item()]
    row = metrics[epoch]
    out.append([epoch, got, [row["train_loss"], row["train_acc"], row["test_loss"], row["test_acc"]]])
print(json.dumps(out))
"#,
    );
    let rows = out.as_array().unwrap();
    assert_eq!(rows.len(), 3, "epochs 0, 1, 3");
    for row in rows {
        let (torch, pipe) = (row[1].as_array().unwrap(), row[2].as_array().unwrap());
        for (a, b) in torch.iter().zip(pipe) {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            assert!(
                (a - b).abs() < 1e-5,
                "epoch {}: {torch:?} vs {pipe:?}",
                row[0]
            );
        }
    }
    let first = rows[0][2][0].as_f64().unwrap();
    let last = rows[2][2][0].as_f64().unwrap();
    assert!(last < first, "training lowers the loss: {first} -> {last}");

    // activations: a probe example's fc1 row is the module's `layers` output; gradnorm's
    // norms are PyTorch autograd's; a rollback row is PyTorch's accuracy of the mixed weights.
    let out = py(
        &args,
        r#"
ck = dict((e, f + "/weights.safetensors") for e, f in A["checkpoints"])
net = net_at(ck[3])
probe = pl.read_parquet(A["activations"] + "/probe_set.parquet")
feats = pl.read_parquet(A["activations"] + "/epoch=3/fc1.parquet")
i = probe["index"][0]
with torch.no_grad():
    mine = net.layers(x[i:i + 1])[0][1][0]
act = (mine - torch.tensor(feats["features"][0].to_list())).abs().max().item()
groups = pl.read_parquet(A["gradnorm"] + "/gradnorm_examples.parquet")
table = pl.read_parquet(A["gradnorm"] + "/gradnorm.parquet").filter(pl.col("epoch") == 3).to_dicts()
grad = 0.0
for row in table:
    idx = torch.tensor(groups.filter(pl.col("group") == row["group"])["index"].to_list())
    z = net(x[idx]).double()
    n, c = len(idx), z.shape[1]
    dep = ((F.one_hot(y[idx], c).double() - 1.0 / c) * z).sum() / n
    ind = (z.logsumexp(1) - z.mean(1)).sum() / n
    params = [p for name, p in net.named_parameters() if name.startswith(row["layer"] + ".")]
    for s, col in ((dep, "label_dependent"), (ind, "label_independent")):
        g = torch.autograd.grad(s, params, retain_graph=True)
        norm = torch.cat([t.flatten().double() for t in g]).norm().item()
        grad = max(grad, abs(norm - row[col]) / max(norm, 1e-12))
rb = pl.read_parquet(A["rollback"] + "/rollback.parquet").filter(pl.col("cutoff") == "logits").to_dicts()[0]
final, old = load_file(ck[3]), load_file(ck[1])
mixed = {k: (old[k] if k.startswith("logits.") else v) for k, v in final.items()}
net = m.Net(); net.load_state_dict(mixed); net.eval()
with torch.no_grad():
    acc = (net(xt).argmax(1) == yt).double().mean().item()
print(json.dumps({"act": act, "grad": grad, "rows": len(table), "rollback": [acc, rb["test_acc"]], "layers": sorted(set(r["layer"] for r in table))}))
"#,
    );
    assert!(out["act"].as_f64().unwrap() < 1e-5, "{out}");
    assert!(out["grad"].as_f64().unwrap() < 1e-6, "{out}");
    assert_eq!(out["layers"], serde_json::json!(["fc1", "logits"]));
    assert!(out["rows"].as_i64().unwrap() >= 4, "{out}");
    assert_eq!(out["rollback"][0], out["rollback"][1], "{out}");
}

#[test]
fn resumed_scripted_run_is_bit_identical_to_a_straight_one() {
    let pipeline = with_values(PIPELINE, &[("stage.train.epochs", "4")]);
    let pipeline = with_values(&pipeline, &[("stage.train.checkpoints", "[0, 1, 2]")]);
    // Analyses are not needed here.
    let pipeline = pipeline.split("[stage.activations]").next().unwrap();
    let p = project(MODEL_PY, &make_py(true), pipeline);
    // Straight to epoch 4, then the run and its epoch-4 checkpoint removed: the rerun
    // resumes from epoch 2 (a re-export would be a new module: the `net` stage stays cached).
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let key = of_stage(&r, "executed", "train")[0]["key"].clone();
    let key = key.as_str().unwrap();
    let train = artifact(&p, &Json::from(key));
    let files = |dir: &Path| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = ["metrics.parquet", "checkpoints.json", "model.json"]
            .iter()
            .map(|f| (f.to_string(), blake3_file(&dir.join(f))))
            .collect();
        for (epoch, ck) in checkpoints(&p, dir) {
            for f in [
                "weights.safetensors",
                "optimizer.safetensors",
                "metrics.parquet",
            ] {
                v.push((format!("{epoch}/{f}"), blake3_file(&ck.join(f))));
            }
        }
        v
    };
    let straight = files(&train);
    let last = checkpoints(&p, &train)
        .into_iter()
        .find(|(e, _)| *e == 4)
        .unwrap()
        .1;
    for target in [key, last.file_name().unwrap().to_str().unwrap()] {
        let out = p.pipe(&["rm", target, "--keep-parts"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!train.exists() && !last.exists());
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(of_stage(&r, "executed", "train")[0]["key"], key);
    let log = std::fs::read_to_string(p.cache().join("logs").join(format!("{key}.log"))).unwrap();
    assert!(
        log.contains("resumed from the checkpoint of epoch 2"),
        "{log}"
    );
    assert_eq!(files(&train), straight);
}

/// Runs the pipeline with this model (scripted without the helper's checks, or as given by
/// `make`) and `sets`; expects exit 2, `want` in stderr and no train artifact.
fn refused(model: &str, make: &str, sets: &[&str], want: &str) {
    let p = project(model, make, PIPELINE);
    let mut args = vec!["run", "p.toml"];
    args.extend_from_slice(sets);
    let out = p.pipe(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{want}: {stderr}");
    assert!(stderr.contains(want), "expected {want:?} in:\n{stderr}");
    // An analysis that refuses leaves the train run it read stored.
    let analysis = want.starts_with("layers:");
    for dir in p.artifacts().iter().filter(|_| !analysis) {
        let m: Json =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert!(
            !m["kind"].as_str().unwrap().starts_with("train"),
            "{want}: a train artifact was stored"
        );
    }
}

#[test]
fn contract_violations_exit_2_with_their_message() {
    let unchecked = make_py(false);
    let plain = "import os, torch\nfrom model import Net\n\
                 torch.jit.script(Net()).save(os.environ['PIPE_OUT'] + '/model.pt')\n";
    let cases: Vec<(String, &str, Vec<&str>, &str)> = vec![
        (
            MODEL_PY.replace("nn.Linear(12, 10)", "nn.Linear(12, 5)"),
            &unchecked,
            vec![],
            "forward(x) must return the logits [N, C] = [2, 10] for x of shape [2, 1, 4, 4] (10 classes), it returned a Tensor of shape [2, 5]",
        ),
        (
            MODEL_PY
                .replace("    @torch.jit.export\n    def layers", "    def layers")
                .replace(
                    "return self.layers(x)[-1][1]",
                    "return self.logits(self.fc1(x.flatten(1)).relu())",
                ),
            &unchecked,
            vec![],
            "the module has no method `layers`",
        ),
        (
            MODEL_PY.replace(
                "return self.layers(x)[-1][1]",
                "return self.logits(self.fc1(x.flatten(1)).relu())",
            )
            .replace("self.logits(h))]", "2.0 * self.logits(h))]"),
            &unchecked,
            vec![],
            "the last output of the module's layers(x), \"logits\" (shape [2, 10]), must be the logits forward(x) returns",
        ),
        (
            MODEL_PY.replace(
                "self.logits = nn.Linear(12, 10)",
                "self.logits = nn.Linear(12, 10)\n        self.scale = nn.Parameter(torch.ones(1))",
            ),
            &unchecked,
            vec![],
            "the module's parameter `scale` belongs to no layer",
        ),
        (
            MODEL_PY.replace(
                "self.logits = nn.Linear(12, 10)",
                "self.logits = nn.Linear(12, 10)\n        self.register_buffer('count', torch.zeros(1))",
            ),
            &unchecked,
            vec![],
            "the module's buffer `count` belongs to no layer",
        ),
        (
            MODEL_PY.replace("(\"fc1\", h)", "(\"input\", h)"),
            &unchecked,
            vec![],
            "names a layer \"input\"",
        ),
        (
            MODEL_PY.to_string(),
            plain,
            vec![],
            "the module has no method `buffers_by_name`",
        ),
        (
            MODEL_PY.replace(
                "self.logits = nn.Linear(12, 10)",
                "self.logits = nn.Sequential(nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 10))",
            ),
            &unchecked,
            vec!["--set", "stage.train.record_examples=true"],
            "record_examples needs the module's last layer (\"logits\") to be one linear layer",
        ),
        (
            MODEL_PY.to_string(),
            &unchecked,
            vec!["--set", "stage.train.freeze=[\"fc9\"]"],
            "freeze: the module has no layer \"fc9\"; its layers: fc1, logits",
        ),
        (
            MODEL_PY.to_string(),
            &unchecked,
            vec!["--set", "stage.train.model=\"mlp\""],
            "a `module` input is trained only with model = \"script\"",
        ),
        (
            MODEL_PY.to_string(),
            &unchecked,
            vec!["--set", "stage.activations.layers=[\"fc1\", \"nope\"]"],
            "layers: unknown layer \"nope\"; this module's layers: input, fc1, logits",
        ),
    ];
    for (model, make, sets, want) in &cases {
        refused(model, make, sets, want);
    }
}

#[test]
fn the_helper_checks_the_contract_before_it_writes() {
    let p = project(
        &MODEL_PY.replace(
            "self.logits = nn.Linear(12, 10)",
            "self.logits = nn.Linear(12, 10)\n        self.scale = nn.Parameter(torch.ones(1))",
        ),
        &make_py(true),
        PIPELINE,
    );
    let res = std::process::Command::new("python3")
        .args([
            "export.py",
            "model.py:Net",
            "out.pt",
            "--input",
            "1",
            "4",
            "4",
        ])
        .current_dir(p.dir.path())
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        stderr.contains("parameter `scale` belongs to no layer"),
        "{stderr}"
    );
    assert!(!p.path("out.pt").exists());
}

#[test]
fn the_helper_writes_the_same_file_for_the_same_module() {
    // TorchScript orders a module's constants as a Python set does, by string hashes that
    // differ per process unless the hash seed is fixed; the helper fixes it.
    let p = project(MODEL_PY, &make_py(true), PIPELINE);
    let files: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            // The same name (a TorchScript file holds its name), as an exec stage's is.
            let out = format!("e{i}/model.pt");
            std::fs::create_dir_all(p.path(&format!("e{i}"))).unwrap();
            let res = std::process::Command::new("python3")
                .args(["export.py", "model.py:Net", &out, "--input", "1", "4", "4"])
                .env_remove("PYTHONHASHSEED")
                .current_dir(p.dir.path())
                .output()
                .unwrap();
            assert!(
                res.status.success(),
                "{}",
                String::from_utf8_lossy(&res.stderr)
            );
            std::fs::read(p.path(&out)).unwrap()
        })
        .collect();
    assert!(files.iter().all(|f| f == &files[0]), "the exports differ");
}

/// `PIPELINE` with every example's dynamics recorded and the analyses the core test leaves
/// out: `probe`, `embed` and `detect`.
fn with_every_analysis() -> String {
    let pipeline = with_values(PIPELINE, &[("stage.activations.epochs", "[0, 3]")]);
    let pipeline = pipeline.replace(
        "checkpoints = [0, 1, 3]\n",
        "checkpoints = [0, 1, 3]\nrecord_examples = true\n",
    );
    format!(
        "{pipeline}[stage.probe]\nkind = \"probe\"\ninputs = [\"activations\"]\nn_t = 20\n\
         [stage.embed]\nkind = \"embed\"\ninputs = [\"activations\"]\nperplexity = 2.0\niterations = 250\n\
         [stage.detect]\nkind = \"detect\"\ninputs = [\"train\"]\nwindow = [1, 2]\ngradient_window = [1, 3]\n"
    )
}

#[test]
fn probe_embed_detect_table_and_report_take_a_scripted_run() {
    let p = project(MODEL_PY, &make_py(true), &with_every_analysis());
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let train = executed(&p, &r, "train");
    let args = serde_json::json!({
        "metrics": train.join("metrics.parquet"),
        "examples": train.join("examples.parquet"),
        "labels": executed(&p, &r, "corrupt").join("labels.parquet"),
        "probe_set": executed(&p, &r, "activations").join("probe_set.parquet"),
        "probe": executed(&p, &r, "probe").join("probe.parquet"),
        "embed": executed(&p, &r, "embed").join("embedding.parquet"),
        "scores": executed(&p, &r, "detect").join("scores.parquet"),
        "detection": executed(&p, &r, "detect").join("detection.parquet"),
    });
    let want = python(&format!(
        "import json, polars as pl\nA = json.loads(r'''{args}''')\n{}",
        r#"
m = pl.read_parquet(A["metrics"]).sort("epoch")
last = m.row(-1, named=True)
trained = m.filter(pl.col("epoch") > 0)
best = trained.filter(pl.col("test_acc") == trained["test_acc"].max()).row(-1, named=True)
labels = pl.read_parquet(A["labels"])
probe = pl.read_parquet(A["probe"])
ps = pl.read_parquet(A["probe_set"])
# The manifolds of each labeling: classes with at least two points (a shape).
expected = []
for labeling, corrupted, label in (("unpermuted", False, "true_label"), ("permuted", True, "train_label"), ("restored", True, "true_label")):
    sizes = [n for n in ps.filter(pl.col("corrupted") == corrupted)[label].value_counts()["count"].to_list() if n >= 2]
    if len(sizes) >= 2:
        for epoch in (0, 3):
            for layer in ("input", "fc1", "logits"):
                expected.append((epoch, layer, labeling, len(sizes), int(sum(sizes) / len(sizes) + 0.5), 20))
emb = pl.read_parquet(A["embed"])
scores = pl.read_parquet(A["scores"]).join(labels.select("index", pl.col("changed").alias("truth")), on="index")
print(json.dumps({
    "table": [last["test_acc"], best["test_acc"], best["epoch"], last["corrupted_train_acc"], last["clean_acc"], last["epoch"]],
    "examples": pl.read_parquet(A["examples"]).select("epoch").unique().sort("epoch")["epoch"].to_list(),
    "probe_set": pl.read_parquet(A["probe_set"]).group_by("corrupted").len().sort("corrupted")["len"].to_list(),
    "probe": sorted((r["epoch"], r["layer"], r["labeling"], r["P"], r["M"], r["n_t"]) for r in probe.to_dicts()),
    "probe_expected": sorted(expected),
    "embed": emb.group_by("epoch", "layer", "method").len().sort("epoch", "layer", "method").rows(),
    "embed_groups": emb.filter(pl.col("epoch") == 3).group_by("group").len().sort("group").rows(),
    "scores": [scores.height, scores["method"].n_unique(), (scores["changed"] == scores["truth"]).all()],
    "detection": pl.read_parquet(A["detection"]).select("method", "auroc", "n", "n_changed").rows(),
    "changed": int(labels["changed"].sum()),
}))
"#
    ));

    // `pipe table`: the row is the metrics table's last epoch and best test accuracy.
    let out = p.pipe(&["table", "p.toml", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    let row = &rows[0];
    let got = [
        &row["final_test_acc"],
        &row["best_test_acc"],
        &row["best_epoch"],
        &row["corrupted_fit"],
        &row["clean_acc"],
        &row["epochs"],
    ];
    for (g, w) in got.iter().zip(want["table"].as_array().unwrap()) {
        assert_eq!(g.as_f64().unwrap(), w.as_f64().unwrap(), "{row} vs {want}");
    }
    assert_eq!(row["state"], "cached");

    // examples.parquet: every epoch's dynamics, 0..=3.
    assert_eq!(want["examples"], serde_json::json!([0, 1, 2, 3]));
    // The probe set: 3 classes x 2 clean and 3 x 2 corrupted examples.
    assert_eq!(want["probe_set"], serde_json::json!([6, 6]));
    // probe: a row per epoch, layer of the module and labeling with two or more manifolds
    // (classes of at least two probe examples), with their count P and mean size M; the
    // clean and the permuted labelings have 3 classes of 2.
    assert_eq!(want["probe"], want["probe_expected"], "{want}");
    let labelings = want["probe"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[1] == "fc1");
    let by_label: Vec<(String, i64, i64)> = labelings
        .map(|r| {
            (
                r[2].as_str().unwrap().into(),
                r[3].as_i64().unwrap(),
                r[4].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        by_label.contains(&("unpermuted".into(), 3, 2)),
        "{by_label:?}"
    );
    assert!(
        by_label.contains(&("permuted".into(), 3, 2)),
        "{by_label:?}"
    );
    // embed: all 12 probe examples per epoch, layer and method; 6 clean and 6 corrupted.
    let mut embed = Vec::new();
    for epoch in [0, 3] {
        for layer in ["fc1", "input", "logits"] {
            for method in ["pca", "tsne"] {
                embed.push(serde_json::json!([epoch, layer, method, 12]));
            }
        }
    }
    assert_eq!(want["embed"], Json::from(embed));
    assert_eq!(
        want["embed_groups"],
        serde_json::json!([["clean", 6 * 2 * 3], ["corrupted", 6 * 2 * 3]])
    );
    // detect: every training example scored by every method, with its true `changed`;
    // detection's counts are the labels'.
    assert_eq!(want["scores"], serde_json::json!([60 * 6, 6, true]));
    let changed = want["changed"].as_i64().unwrap();
    assert!(changed > 20, "{want}");
    let detection = want["detection"].as_array().unwrap();
    assert_eq!(detection.len(), 6);
    assert_eq!(detection[0][0], "ensemble");
    for d in detection {
        assert_eq!(
            (d[2].as_i64(), d[3].as_i64()),
            (Some(60), Some(changed)),
            "{d}"
        );
        let auroc = d[1].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&auroc), "{d}");
    }

    // The report: a figure per finding the pipeline has data for, in headless Chromium.
    let out = p.pipe(&["report", "p.toml", "--out", "report", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Json = serde_json::from_slice(&out.stdout).unwrap();
    let names = figure_names(&w);
    assert_eq!(
        names,
        [
            "1-accuracy-train.svg",
            "2-geometry-probe-all.svg",
            "3-gradients-gradnorm-all.svg",
            "4-rollback-rollback-all.svg",
            "5-embedding-embed-all.svg",
            "7-detection-detect.svg",
        ],
        "{w}"
    );
    let svg =
        std::fs::read_to_string(p.path("report/figures/3-gradients-gradnorm-all.svg")).unwrap();
    assert!(svg.contains("fc1") && svg.contains("logits"));
    assert_renders(&p.path("report/index.html"), &names);
}

/// The file names of a `pipe report --json`'s figures.
fn figure_names(report: &Json) -> Vec<String> {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            Path::new(f.as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// Opens the page in headless Chromium (`tests/browser/check_page.py`, as the report test
/// does): no console message, and every figure, in order, decoded with a non-zero size.
fn assert_renders(page: &Path, names: &[String]) {
    let out = std::process::Command::new("python3")
        .arg(repo().join("tests/browser/check_page.py"))
        .arg(page)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Chromium check failed (scripts/setup installs chromium and chromium-driver):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages: Json = serde_json::from_slice(&out.stdout).unwrap();
    let good = &pages[0];
    assert_eq!(good["console"], serde_json::json!([]), "{good}");
    let images = good["images"].as_array().unwrap();
    assert_eq!(images.len(), names.len(), "{good}");
    for (img, name) in images.iter().zip(names) {
        assert_eq!(img["src"], format!("figures/{name}"));
        assert_eq!(img["decoded"], true, "{img}");
        assert!(img["width"].as_u64().unwrap() > 100 && img["height"].as_u64().unwrap() > 100);
    }
}

#[test]
fn a_seed_sweep_draws_different_networks_and_init_module_keeps_the_modules_weights() {
    let pipeline = PIPELINE
        .replace("[stage.data]", "[sweep]\nseed = [1, 2]\n[stage.data]")
        .replace("seed = 1\ndevice", "seed = \"${seed}\"\ndevice");
    let pipeline = with_values(&pipeline, &[("stage.train.epochs", "1")]);
    let pipeline = with_values(&pipeline, &[("stage.train.checkpoints", "[0]")]);
    let pipeline = pipeline.split("[stage.activations]").next().unwrap();
    let p = project(MODEL_PY, &make_py(true), pipeline);
    // Epoch-0 weights per seed: pipe's default init, then `init = "module"`.
    let epoch0 = |init: &[&str]| -> Vec<String> {
        let (code, r) = p.run("p.toml", init);
        assert_eq!(code, 0, "{r}");
        let mut trains = of_stage(&r, "executed", "train");
        trains.sort_by_key(|t| t["point"]["seed"].as_i64());
        assert_eq!(trains.len(), 2, "{r}");
        trains
            .iter()
            .map(|t| {
                let ck = checkpoints(&p, &artifact(&p, &t["key"]));
                assert_eq!(ck[0].0, 0);
                ck[0].1.join("weights.safetensors").display().to_string()
            })
            .collect()
    };
    let redrawn = epoch0(&[]);
    let kept = epoch0(&["--set", "stage.train.init=\"module\""]);
    let net = p
        .artifacts()
        .into_iter()
        .find(|a| a.join("model.pt").exists())
        .unwrap()
        .join("model.pt");
    let args = serde_json::json!({ "redrawn": redrawn, "kept": kept, "module": net });
    let out = python(&format!(
        "import json, torch\nfrom safetensors.torch import load_file\nA = json.loads(r'''{args}''')\n{}",
        r#"
module = {k: v for k, v in torch.jit.load(A["module"]).state_dict().items()}
def same(a, b):
    return sorted(k for k in a if torch.equal(a[k], b[k]))
r1, r2 = (load_file(f) for f in A["redrawn"])
k1, k2 = (load_file(f) for f in A["kept"])
print(json.dumps({
    "names": sorted(module) == sorted(r1) == sorted(k1),
    "seeds_same": same(r1, r2),
    "redrawn_as_module": same(r1, module),
    "kept_as_module": [same(k1, module), same(k2, module)],
}))
"#
    ));
    assert_eq!(out["names"], true, "{out}");
    // Different seeds, different linear weights and biases; the BatchNorm scales, shifts and
    // statistics are the module's own in both.
    let untouched = serde_json::json!([
        "fc1.1.bias",
        "fc1.1.num_batches_tracked",
        "fc1.1.running_mean",
        "fc1.1.running_var",
        "fc1.1.weight"
    ]);
    assert_eq!(out["seeds_same"], untouched, "{out}");
    assert_eq!(out["redrawn_as_module"], untouched, "{out}");
    // init = "module": every variable is the exported file's, whatever the seed.
    let all = serde_json::json!([
        "fc1.0.bias",
        "fc1.0.weight",
        "fc1.1.bias",
        "fc1.1.num_batches_tracked",
        "fc1.1.running_mean",
        "fc1.1.running_var",
        "fc1.1.weight",
        "logits.bias",
        "logits.weight"
    ]);
    assert_eq!(
        out["kept_as_module"],
        serde_json::json!([all, all]),
        "{out}"
    );
}

#[test]
fn the_shipped_own_model_pipeline_runs_at_toy_size_and_its_report_renders() {
    let p = Project::new();
    let file = repo().join("pipelines/own-model.toml");
    let file = file.to_str().unwrap();
    let mut args = vec!["run", file, "--json"];
    let small = [
        "sweep.seed=[1]",
        "stage.data.train_size=200",
        "stage.data.test_size=100",
        "stage.train.epochs=2",
        "stage.train.checkpoints=[0,1,2]",
        "stage.activations.epochs=[0,2]",
        "stage.activations.per_class=3",
        "stage.probe.n_t=20",
        "stage.embed.perplexity=3.0",
        "stage.embed.iterations=250",
        "stage.gradnorm.epochs=[0,2]",
        "stage.gradnorm.max_examples=20",
        "stage.rollback.from_epochs=[1]",
    ];
    for s in &small {
        args.extend(["--set", s]);
    }
    let out = p.pipe(&args);
    let r: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!("{}", String::from_utf8_lossy(&out.stderr));
    });
    assert_eq!(out.status.code(), Some(0), "{r}");
    // Both architectures at both noise levels, every analysis.
    for stage in [
        "train",
        "activations",
        "probe",
        "embed",
        "gradnorm",
        "rollback",
    ] {
        assert_eq!(of_stage(&r, "executed", stage).len(), 4, "{stage}: {r}");
    }
    let mut report = vec!["report", file, "--out", "report", "--json"];
    for s in &small {
        report.extend(["--set", s]);
    }
    let out = p.pipe(&report);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Json = serde_json::from_slice(&out.stdout).unwrap();
    let names = figure_names(&w);
    for want in [
        "2-geometry-probe-arch-vit-noise-0.4.svg",
        "3-gradients-gradnorm-arch-vit-noise-0.4.svg",
        "4-rollback-rollback-arch-vit-noise-0.4.svg",
        "5-embedding-embed-arch-vit-noise-0.4.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let page = std::fs::read_to_string(p.path("report/index.html")).unwrap();
    for layer in ["blocks.0", "blocks.1", "pool"] {
        assert!(page.contains(layer), "{layer}");
    }
    assert_renders(&p.path("report/index.html"), &names);
}

/// Every file of a train artifact and of its checkpoints but the manifests (which name
/// the keys): name -> bytes.
fn trained_files(p: &Project, train: &Path) -> Vec<(String, Vec<u8>)> {
    let mut dirs = vec![("train".to_string(), train.to_path_buf())];
    for (e, dir) in checkpoints(p, train) {
        dirs.push((format!("epoch {e}"), dir));
    }
    let mut files = Vec::new();
    for (label, dir) in dirs {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if [
                "manifest.json",
                "checkpoint.json",
                "checkpoints.json",
                "model.json",
            ]
            .contains(&name.as_str())
                || path.is_dir()
            {
                continue;
            }
            files.push((format!("{label}/{name}"), std::fs::read(&path).unwrap()));
        }
    }
    files.sort();
    files
}

#[test]
fn a_scripted_run_through_slurm_trains_what_a_local_run_trains() {
    crate::slurm::require_slurm();
    let local = project(MODEL_PY, &make_py(true), PIPELINE);
    let (code, lr) = local.run("p.toml", &["--only", "train"]);
    assert_eq!(code, 0, "{lr}");
    let slurm = project(MODEL_PY, &make_py(true), PIPELINE);
    let (code, sr) = slurm.run(
        "p.toml",
        &["--only", "train", "--executor", "slurm", "--poll", "0.3"],
    );
    assert_eq!(code, 0, "{sr}");
    assert_eq!(sr["submitted"], 4, "{sr}");
    let (a, b) = (
        trained_files(&local, &executed(&local, &lr, "train")),
        trained_files(&slurm, &executed(&slurm, &sr, "train")),
    );
    let names: Vec<&String> = a.iter().map(|f| &f.0).collect();
    assert!(
        names.contains(&&"train/metrics.parquet".to_string()),
        "{names:?}"
    );
    assert!(
        names.iter().filter(|n| n.starts_with("epoch ")).count() >= 3,
        "{names:?}"
    );
    assert_eq!(names, b.iter().map(|f| &f.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between the local and the Slurm run");
    }
}
