//! Runs trained elsewhere: an `import` stage whose command trains a module in plain
//! PyTorch and writes the layout (module, weights per kept epoch, metrics), which pipe
//! checks when the stage ends and every analysis then reads as its `train` input.
//! Expectations are PyTorch's, computed from the weights files the command wrote.

use std::path::PathBuf;

use crate::common::*;
use serde_json::Value as Json;

/// The user's own training loop, in plain PyTorch: the layout README's "Runs trained
/// elsewhere" documents. `BREAK` spoils one part of it, for the refusals.
const TRAIN_PY: &str = r#"import os
import polars as pl, torch, torch.nn.functional as F
from torch import nn
from safetensors.torch import save_file
import export
from model import Net

out, brk = os.environ["PIPE_OUT"], os.environ.get("BREAK", "")
data, labels = os.environ["PIPE_INPUT_DATASET"], os.environ["PIPE_INPUT_LABELS"]

def images(path):
    df = pl.read_parquet(path)
    x = torch.tensor(df["image"].to_list(), dtype=torch.uint8).view(-1, 1, 4, 4).float() / 255.0
    return x, torch.tensor(df["label"].to_list())

x, _ = images(data + "/train.parquet")
xt, yt = images(data + "/test.parquet")
# The analyses feed the module inputs standardized per channel with the training set's
# mean and deviation: train on the same.
mean = x.mean(dim=(0, 2, 3), keepdim=True)
std = x.std(dim=(0, 2, 3), unbiased=False, keepdim=True).clamp_min(1e-6)
x, xt = (x - mean) / std, (xt - mean) / std
lab = pl.read_parquet(labels + "/labels.parquet")
y = torch.tensor(lab["train_label"].to_list())
true = torch.tensor(lab["true_label"].to_list())
chosen = torch.tensor(lab["chosen"].to_list())
changed = torch.tensor(lab["changed"].to_list())

torch.manual_seed(0)
net = Net()
opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
os.makedirs(out + "/weights")
rows = []

def evaluate(epoch, lr):
    net.eval()
    with torch.no_grad():
        z, zt = net(x), net(xt)
    acc = lambda p, t, m=None: ((p == t)[m] if m is not None else (p == t)).double().mean().item()
    p = z.argmax(1)
    rows.append(dict(epoch=epoch, lr=lr, train_loss=F.cross_entropy(z, y).item(), train_acc=acc(p, y),
                     clean_acc=acc(p, y, ~chosen),
                     corrupted_train_acc=acc(p, y, changed) if changed.any() else None,
                     corrupted_true_acc=acc(p, true, changed) if changed.any() else None,
                     test_loss=F.cross_entropy(zt, yt).item(), test_acc=acc(zt.argmax(1), yt)))

def keep(epoch):
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if brk == "param" and epoch == 1:
        del state["logits.bias"]
    if not (brk == "epoch" and epoch == 1):
        save_file(state, f"{out}/weights/{epoch}.safetensors")

evaluate(0, 0.0)
keep(0)
g = torch.Generator().manual_seed(0)
for epoch in (1, 2, 3):
    net.train()
    for idx in torch.randperm(len(y), generator=g).split(20):
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    evaluate(epoch, 0.05)
    if epoch in (1, 3):
        keep(epoch)

table = pl.DataFrame(rows, schema={"epoch": pl.Int64, "lr": pl.Float64, "train_loss": pl.Float64,
    "train_acc": pl.Float64, "clean_acc": pl.Float64, "corrupted_train_acc": pl.Float64,
    "corrupted_true_acc": pl.Float64, "test_loss": pl.Float64, "test_acc": pl.Float64})
if brk == "metrics":
    table = table.rename({"test_acc": "accuracy"})
table.write_parquet(out + "/metrics.parquet")
if brk == "contract":
    net.scale = nn.Parameter(torch.ones(1))
    export.check = lambda *a: []
export.export(net.eval(), out + "/model.pt", (1, 4, 4), 10)
"#;

/// The pipeline: tiny data, half the labels corrupted, the imported run (epochs 0, 1, 3
/// kept), and the analyses of pipe's own runs.
const PIPELINE: &str = r#"[pipeline]
name = "imported"
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
[stage.mine]
kind = "import"
inputs = ["data", "corrupt"]
cmd = ["python3", "train.py"]
files = ["model.py", "train.py", "export.py"]
epochs = [0, 1, 3]
env = { BREAK = "" }
[stage.activations]
kind = "activations"
inputs = ["mine"]
epochs = ["final"]
classes = 3
per_class = 2
[stage.gradnorm]
kind = "gradnorm"
inputs = ["mine"]
epochs = [0, 3]
[stage.rollback]
kind = "rollback"
inputs = ["mine"]
from_epochs = [1]
"#;

fn project(brk: &str) -> Project {
    let p = Project::new();
    p.write("model.py", MODEL_PY);
    p.write("train.py", TRAIN_PY);
    p.write(
        "export.py",
        &std::fs::read_to_string(repo().join("pipelines/models/export.py")).unwrap(),
    );
    p.write(
        "p.toml",
        &PIPELINE.replace("BREAK = \"\"", &format!("BREAK = \"{brk}\"")),
    );
    p
}

/// The artifact folder of the one executed instance of `stage`.
fn executed(p: &Project, r: &Json, stage: &str) -> PathBuf {
    let items = of_stage(r, "executed", stage);
    assert_eq!(items.len(), 1, "{stage}: {r}");
    p.cache()
        .join("artifacts")
        .join(items[0]["key"].as_str().unwrap())
}

/// Python that loads `model.py` (as `m`), the data as the analyses standardize it (`x`,
/// `xt`, `yt`; images of side `A["side"]`, 4 unless given) and, when `A` names them, the
/// labels table (`lab`) and the training labels (`y`), from `A`'s paths.
const PY_SETUP: &str = r#"
import polars as pl, torch, torch.nn.functional as F
from safetensors.torch import load_file
spec = importlib.util.spec_from_file_location("model", A["model"])
m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
def images(path):
    df = pl.read_parquet(path)
    side = A.get("side", 4)
    return torch.tensor(df["image"].to_list(), dtype=torch.uint8).view(-1, 1, side, side).float() / 255.0, torch.tensor(df["label"].to_list())
x, _ = images(A["data"] + "/train.parquet")
xt, yt = images(A["data"] + "/test.parquet")
mean = x.mean(dim=(0, 2, 3), keepdim=True)
std = x.std(dim=(0, 2, 3), unbiased=False, keepdim=True).clamp_min(1e-6)
x, xt = (x - mean) / std, (xt - mean) / std
if "labels" in A:
    lab = pl.read_parquet(A["labels"] + "/labels.parquet")
    y = torch.tensor(lab["train_label"].to_list())
"#;

/// Runs `PY_SETUP` then `code` with `A` = `args`; parses the JSON it prints.
fn py(args: &Json, code: &str) -> Json {
    python(&format!(
        "import json, importlib.util\nA = json.loads(r'''{args}''')\n{PY_SETUP}\n{code}"
    ))
}

/// Recomputes, in PyTorch from the imported weights files, a probe example's `fc1` row,
/// the gradient norms (autograd) and the rollback of `logits` to epoch 1.
const CHECK_PY: &str = r#"
def net_of(state):
    net = m.Net(); net.load_state_dict(state, strict=True); return net.eval()
w = {e: load_file(A["run"] + f"/weights/{e}.safetensors") for e in (0, 1, 3)}
net = net_of(w[3])
probe = pl.read_parquet(A["activations"] + "/probe_set.parquet")
feats = pl.read_parquet(A["activations"] + "/epoch=3/fc1.parquet")
i = probe["index"][0]
with torch.no_grad():
    mine = net.layers(x[i:i + 1])[0][1][0]
act = (mine - torch.tensor(feats["features"][0].to_list())).abs().max().item()
groups = pl.read_parquet(A["gradnorm"] + "/gradnorm_examples.parquet")
table = pl.read_parquet(A["gradnorm"] + "/gradnorm.parquet").to_dicts()
grad = 0.0
for row in table:
    net = net_of(w[row["epoch"]])
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
mixed = {k: (w[1][k] if k.startswith("logits.") else v) for k, v in w[3].items()}
with torch.no_grad():
    acc = (net_of(mixed)(xt).argmax(1) == yt).double().mean().item()
print(json.dumps({"act": act, "grad": grad, "rows": len(table), "epochs": sorted(set(r["epoch"] for r in table)),
                  "rollback": [acc, rb["test_acc"], rb["from_epoch"]]}))
"#;

#[test]
fn an_imported_run_is_checked_and_every_analysis_takes_it() {
    let p = project("");
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let run = executed(&p, &r, "mine");
    // pipe's own file beside the user's: the module's layers and variables.
    let info: Json =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    assert_eq!(info["model"], "import");
    let layers: Vec<&str> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["input", "fc1", "logits"]);
    assert_eq!(info["layers"][1]["variables"].as_array().unwrap().len(), 7);

    let args = serde_json::json!({
        "model": p.path("model.py"),
        "data": executed(&p, &r, "data"),
        "labels": executed(&p, &r, "corrupt"),
        "run": run,
        "activations": executed(&p, &r, "activations"),
        "gradnorm": executed(&p, &r, "gradnorm"),
        "rollback": executed(&p, &r, "rollback"),
    });
    let out = py(&args, CHECK_PY);
    assert!(out["act"].as_f64().unwrap() < 1e-5, "{out}");
    assert!(out["grad"].as_f64().unwrap() < 1e-6, "{out}");
    assert_eq!(out["epochs"], serde_json::json!([0, 3]), "{out}");
    assert!(out["rows"].as_i64().unwrap() >= 8, "{out}");
    assert_eq!(out["rollback"][0], out["rollback"][1], "{out}");
    assert_eq!(out["rollback"][2], 1, "{out}");

    // A second run computes nothing: the import and its analyses are cached.
    let (code, again) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(count(&again, "executed"), 0, "{again}");

    // `pipe table`: the import's row, its values those of its metrics.parquet (in Polars).
    let out = p.pipe(&["table", "p.toml", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Json = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let want = python(&format!(
        r#"import json, polars as pl
m = pl.read_parquet(r"{}/metrics.parquet").sort("epoch")
last = m.row(-1, named=True)
# the best epoch after 0; of equal accuracies, the later epoch (as `pipe table` picks)
best = max(m.filter(pl.col("epoch") > 0).iter_rows(named=True), key=lambda r: (r["test_acc"], r["epoch"]))
print(json.dumps({{"epochs": last["epoch"], "final_test_acc": last["test_acc"], "best_test_acc": best["test_acc"],
    "best_epoch": best["epoch"], "corrupted_fit": last["corrupted_train_acc"], "clean_acc": last["clean_acc"]}}))
"#,
        run.display()
    ));
    assert_eq!(rows[0]["stage"], "mine");
    assert_eq!(rows[0]["state"], "cached");
    for (col, v) in want.as_object().unwrap() {
        assert_eq!(&rows[0][col], v, "{col}: table {} metrics {want}", rows[0]);
    }

    // `pipe report`: the import's accuracy figure (finding 1) plots its metrics, and the
    // gradient and rollback findings (3, 4) have figures; probe and embed (2, 5) are not in
    // this pipeline, so those have none.
    let out = p.pipe(&["report", "p.toml", "--out", "report", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["without_figure"], serde_json::json!([2, 5]), "{rep}");
    let csv = std::fs::read_to_string(p.path("report/figures/1-accuracy-mine.csv")).unwrap();
    let test_acc: Vec<(i64, f64)> = csv
        .lines()
        .filter(|l| l.starts_with("test_acc,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[2].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect();
    let metrics = python(&format!(
        r#"import json, polars as pl
m = pl.read_parquet(r"{}/metrics.parquet").sort("epoch")
print(json.dumps([[e, a] for e, a in zip(m["epoch"], m["test_acc"])]))
"#,
        run.display()
    ));
    let metrics: Vec<(i64, f64)> = serde_json::from_value(metrics).unwrap();
    assert_eq!(test_acc, metrics, "{csv}");

    // An epoch the import does not keep is refused when the pipeline is planned.
    let out = p.pipe(&["run", "p.toml", "--set", "stage.gradnorm.epochs=[2]"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("keeps no checkpoint 2; it keeps epochs 0, 1, 3"),
        "{stderr}"
    );

    // `detect` refuses an import that does not record examples when the pipeline is
    // planned, saying what to set.
    p.write(
        "d.toml",
        &format!("{PIPELINE}[stage.detect]\nkind = \"detect\"\ninputs = [\"mine\"]\n"),
    );
    let out = p.pipe(&["run", "d.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "its `import` input must record the training dynamics: set `record_examples = true` there"
        ),
        "{stderr}"
    );
    // With it, every epoch from 0 to the last must be kept.
    let out = p.pipe(&["run", "d.toml", "--set", "stage.mine.record_examples=true"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("record_examples needs the weights of every epoch from 0 to 3; add 2"),
        "{stderr}"
    );
    assert_eq!(count_artifacts_of(&p, "detect"), 0);
}

/// Recomputes, in PyTorch from the imported weights of every epoch, each training
/// example's loss, margin, prediction and last-layer gradient norm, and the `loss` and
/// `aum` scores over epochs 1..=2, and prints their largest differences from pipe's.
const EXAMPLES_PY: &str = r#"
ex = pl.read_parquet(A["run"] + "/examples.parquet")
diff, loss_by_epoch, margin_by_epoch = 0.0, {}, {}
for e in range(4):
    net = m.Net(); net.load_state_dict(load_file(A["run"] + f"/weights/{e}.safetensors")); net.eval()
    with torch.no_grad():
        out = net.layers(x)
        h, z = out[-2][1].double().flatten(1), out[-1][1].double()
    loss = F.cross_entropy(z, y, reduction="none")
    others = z.clone(); others[torch.arange(len(y)), y] = float("-inf")
    margin = z[torch.arange(len(y)), y] - others.max(1).values
    g = z.softmax(1) - F.one_hot(y, z.shape[1]).double()
    gnorm = g.norm(dim=1) * h.norm(dim=1)
    rows = ex.filter(pl.col("epoch") == e).sort("index")
    assert rows["index"].to_list() == list(range(len(y))), rows["index"].to_list()
    assert rows["label"].to_list() == y.tolist()
    assert rows["changed"].to_list() == lab["changed"].to_list()
    assert rows["predicted"].to_list() == z.argmax(1).tolist()
    for col, want in (("loss", loss), ("margin", margin), ("grad_norm", gnorm)):
        got = torch.tensor(rows[col].to_list(), dtype=torch.float64)
        diff = max(diff, ((got - want).abs() / want.abs().clamp_min(1e-6)).max().item())
    loss_by_epoch[e], margin_by_epoch[e] = loss, margin
scores = pl.read_parquet(A["detect"] + "/scores.parquet")
score_diff = 0.0
for method, want in (("loss", (loss_by_epoch[1] + loss_by_epoch[2]) / 2),
                     ("aum", -(margin_by_epoch[1] + margin_by_epoch[2]) / 2)):
    got = torch.tensor(scores.filter(pl.col("method") == method).sort("index")["score"].to_list(), dtype=torch.float64)
    score_diff = max(score_diff, ((got - want).abs() / want.abs().clamp_min(1e-6)).max().item())
print(json.dumps({"examples": diff, "scores": score_diff, "rows": ex.height, "n": len(y)}))
"#;

#[test]
fn detect_takes_an_import_whose_examples_pipe_records_from_its_weights() {
    let p = project("");
    p.write(
        "train.py",
        &TRAIN_PY.replace("if epoch in (1, 3):", "if True:"),
    );
    p.write(
        "d.toml",
        &format!(
            "{}[stage.detect]\nkind = \"detect\"\ninputs = [\"mine\"]\nmethods = [\"loss\", \"aum\"]\nwindow = [1, 2]\n",
            PIPELINE.replace("epochs = [0, 1, 3]", "epochs = [0, 1, 2, 3]\nrecord_examples = true")
        ),
    );
    let (code, r) = p.run("d.toml", &["--only", "detect"]);
    assert_eq!(code, 0, "{r}");
    let args = serde_json::json!({
        "model": p.path("model.py"),
        "data": executed(&p, &r, "data"),
        "labels": executed(&p, &r, "corrupt"),
        "run": executed(&p, &r, "mine"),
        "detect": executed(&p, &r, "detect"),
    });
    let out = py(&args, EXAMPLES_PY);
    assert_eq!(out["n"], 60, "{out}");
    assert_eq!(out["rows"], 4 * 60, "{out}");
    assert!(out["examples"].as_f64().unwrap() < 1e-6, "{out}");
    assert!(out["scores"].as_f64().unwrap() < 1e-6, "{out}");

    // A command that writes examples.parquet itself is refused: that file is pipe's.
    p.write(
        "train.py",
        &TRAIN_PY.replace("if epoch in (1, 3):", "if True:").replace(
            "table.write_parquet(out + \"/metrics.parquet\")",
            "table.write_parquet(out + \"/metrics.parquet\")\ntable.write_parquet(out + \"/examples.parquet\")",
        ),
    );
    let out = p.pipe(&["run", "d.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "examples.parquet is written by pipe with record_examples; the command wrote one too"
        ),
        "{stderr}"
    );
}

/// How many artifacts of `kind` the project's cache holds.
fn count_artifacts_of(p: &Project, kind: &str) -> usize {
    p.artifacts()
        .iter()
        .filter(|dir| {
            let m: Json =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            m["kind"] == kind
        })
        .count()
}

#[test]
fn malformed_runs_are_refused_with_their_message_and_nothing_stored() {
    let cases = [
        (
            "epoch",
            "weights/1.safetensors is missing: the command must write one weights file per epoch listed in `epochs`",
        ),
        (
            "param",
            "weights/1.safetensors lacks the module's variable logits.bias",
        ),
        ("metrics", "metrics.parquet does not have the train schema"),
        (
            "contract",
            "model.pt: the module's parameter `scale` belongs to no layer",
        ),
    ];
    for (brk, want) in cases {
        let p = project(brk);
        let out = p.pipe(&["run", "p.toml"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{brk}: {stderr}");
        assert!(
            stderr.contains(want),
            "{brk}: expected {want:?} in:\n{stderr}"
        );
        for dir in p.artifacts() {
            let m: Json =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            let kind = m["kind"].as_str().unwrap();
            assert!(
                kind == "dataset" || kind == "corrupt",
                "{brk}: a {kind} artifact was stored"
            );
        }
        assert_no_partial_artifacts(&p.cache());
    }
}

/// The fenced block that follows the line `<!-- tested: NAME -->` in README.md, exactly as
/// the reader sees it.
fn readme_block(name: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let marker = format!("<!-- tested: {name} -->\n");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no line {marker:?}"));
    let fence = &readme[at + marker.len()..];
    assert!(
        fence.starts_with("```"),
        "{name}: no fenced block after the marker"
    );
    let body = &fence[fence.find('\n').unwrap() + 1..];
    let end = body
        .find("\n```\n")
        .unwrap_or_else(|| panic!("{name}: the fenced block does not end"));
    body[..=end].to_string()
}

/// README's "Runs trained elsewhere" as a user copies it: its `import` and `gradnorm`
/// stages, its minimal `train.py` and the minimal `model.py` of "Your own model", on a
/// tiny data set of MNIST's shape (60 training images of 28x28, half the labels corrupted).
#[test]
fn the_readme_minimal_train_py_is_imported_and_analysed() {
    let p = Project::new();
    p.write_idx_sized("data28", 60, 20, 28);
    p.write("model.py", &readme_block("model.py"));
    p.write("train.py", &readme_block("train.py"));
    p.write(
        "export.py",
        &std::fs::read_to_string(repo().join("pipelines/models/export.py")).unwrap(),
    );
    let stages = readme_block("import.toml");
    p.write(
        "p.toml",
        &format!(
            r#"[pipeline]
name = "readme-import"
[stage.data]
kind = "dataset"
source = "idx"
path = "data28"
train_size = 60
test_size = 20
[stage.corrupt]
kind = "corrupt"
inputs = ["data"]
fraction = 0.5
seed = 1
{stages}"#
        ),
    );
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let run = executed(&p, &r, "mine");
    let info: Json =
        serde_json::from_slice(&std::fs::read(run.join("model.json")).unwrap()).unwrap();
    let layers: Vec<&str> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["input", "fc1", "logits"]);

    // In PyTorch, from what the script wrote: its metrics rows, and the test accuracy of
    // each kept epoch's weights loaded back into model.py's MLP (inputs standardized as
    // README says the analyses feed them), against the script's own row of that epoch;
    // and gradnorm's table of the run.
    let args = serde_json::json!({
        "model": p.path("model.py"),
        "data": executed(&p, &r, "data"),
        "side": 28,
        "run": run,
        "gradnorm": executed(&p, &r, "gradnorm"),
    });
    let out = py(
        &args,
        r#"import math
metrics = pl.read_parquet(A["run"] + "/metrics.parquet")
acc = {}
for e in metrics["epoch"].to_list():
    net = m.MLP(); net.load_state_dict(load_file(A["run"] + f"/weights/{e}.safetensors"), strict=True); net.eval()
    with torch.no_grad():
        acc[e] = (net(xt).argmax(1) == yt).double().mean().item()
g = pl.read_parquet(A["gradnorm"] + "/gradnorm.parquet")
norms = g["label_dependent"].to_list() + g["label_independent"].to_list()
print(json.dumps({"epochs": metrics["epoch"].to_list(),
    "acc_error": max(abs(acc[e] - t) for e, t in zip(metrics["epoch"], metrics["test_acc"])),
    "corrupted": metrics["corrupted_train_acc"].to_list(),
    "gradnorm_epochs": sorted(set(g["epoch"].to_list())), "gradnorm_layers": sorted(set(g["layer"].to_list())),
    "norms_positive": all(math.isfinite(v) and v > 0 for v in norms)}))
"#,
    );
    assert_eq!(out["epochs"], serde_json::json!([0, 1, 3]), "{out}");
    assert!(out["acc_error"].as_f64().unwrap() < 1e-12, "{out}");
    assert!(
        out["corrupted"]
            .as_array()
            .unwrap()
            .iter()
            .all(Json::is_f64),
        "{out}"
    );
    // `epochs = [0, "final"]`: "final" is the largest of the import's `epochs`.
    assert_eq!(out["gradnorm_epochs"], serde_json::json!([0, 3]), "{out}");
    assert_eq!(
        out["gradnorm_layers"],
        serde_json::json!(["fc1", "logits"]),
        "{out}"
    );
    assert_eq!(out["norms_positive"], true, "{out}");
}
