//! Finding mislabeled examples: `train` with `record_examples`, `detect` and `clean`
//! through the real binary, every figure recounted independently in Python (PyTorch's
//! autograd for the gradients, numpy and scipy for the rankings).

use std::path::PathBuf;

use crate::common::*;
use serde_json::Value as Json;

/// The Fashion-MNIST training pipeline recording its dynamics for `epochs` epochs, then
/// detect, clean (drop and relabel), the oracle, and a retrain on the dropped labels.
fn pipeline(epochs: i64) -> String {
    let base = with_values(
        FASHION_TRAIN,
        &[
            ("stage.train.epochs", &epochs.to_string()),
            ("stage.train.checkpoints", "[0, 2]"),
        ],
    );
    let base = base.replace(
        "device = \"cpu\"\n",
        "device = \"cpu\"\nrecord_examples = true\n",
    );
    format!(
        "{base}
[stage.detect]
kind = \"detect\"
inputs = [\"train\"]

[stage.clean]
kind = \"clean\"
inputs = {{ scores = \"detect\", labels = \"corrupt\" }}

[stage.relabel]
kind = \"clean\"
inputs = {{ scores = \"detect\", labels = \"corrupt\" }}
method = \"loss\"
action = \"relabel\"

[stage.oracle]
kind = \"clean\"
inputs = {{ scores = \"detect\", labels = \"corrupt\" }}
oracle = true

[stage.retrain]
kind = \"train\"
inputs = {{ dataset = \"data\", labels = \"clean\" }}
model = \"mlp\"
hidden = [16]
epochs = 1
seed = 1
lr = 0.01
device = \"cpu\"
record_examples = true
"
    )
}

fn dir_of(p: &Project, report: &Json, stage: &str) -> PathBuf {
    let item = of_stage(report, "executed", stage)
        .first()
        .copied()
        .unwrap_or_else(|| panic!("{stage} did not run: {report}"));
    p.cache()
        .join("artifacts")
        .join(item["key"].as_str().unwrap())
}

#[test]
fn recorded_dynamics_detection_and_cleaning_match_an_independent_recount() {
    let p = Project::new();
    p.write("d.toml", &pipeline(4));
    let (code, r) = p.run("d.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let [data, labels, train, detect, clean, relabel, oracle, retrain] = [
        "data", "corrupt", "train", "detect", "clean", "relabel", "oracle", "retrain",
    ]
    .map(|s| dir_of(&p, &r, s));
    let ck: Vec<Json> =
        serde_json::from_slice(&std::fs::read(train.join("checkpoints.json")).unwrap()).unwrap();
    let final_ck = p
        .cache()
        .join("artifacts")
        .join(ck.last().unwrap()["key"].as_str().unwrap());
    let dirs = format!(
        "{:?}",
        [
            &data, &labels, &train, &detect, &clean, &relabel, &oracle, &retrain, &final_ck
        ]
        .map(|d| d.display().to_string())
    );
    let q = python(&format!(
        r#"
import json, numpy as np, polars as pl, torch
from scipy.stats import rankdata
from safetensors.torch import load_file
D, L, T, DET, C, R, O, RT, CK = {dirs}
ex = pl.read_parquet(f"{{T}}/examples.parquet").sort(["epoch", "index"])
met = pl.read_parquet(f"{{T}}/metrics.parquet").sort("epoch")
lab = pl.read_parquet(f"{{L}}/labels.parquet").sort("index")
n, E = lab.height, met["epoch"].max()
out = {{"rows": ex.height, "n": n, "epochs": E}}

# Per epoch, the records agree with metrics.parquet (its loss and accuracy).
by = ex.group_by("epoch").agg(pl.col("loss").mean(), (pl.col("predicted") == pl.col("label")).mean().alias("acc")).sort("epoch")
out["loss_gap"] = float(np.abs(by["loss"].to_numpy() - met["train_loss"].to_numpy()).max())
out["acc_gap"] = float(np.abs(by["acc"].to_numpy() - met["train_acc"].to_numpy()).max())
out["labels_match"] = ex.filter(pl.col("epoch") == 0)["label"].to_list() == lab["train_label"].to_list()
out["changed_match"] = ex.filter(pl.col("epoch") == 0)["changed"].to_list() == lab["changed"].to_list()

# The final epoch recomputed from the checkpoint with autograd, one example at a time.
img = pl.read_parquet(f"{{D}}/train.parquet").sort("index")
x = torch.tensor(np.array(img["image"].to_list(), dtype=np.float32)) / 255
x = (x - x.mean()) / x.std(unbiased=False)
y = torch.tensor(lab["train_label"].to_numpy())
w = {{k: v.double() for k, v in load_file(f"{{CK}}/weights.safetensors").items()}}
h = torch.relu(x.double() @ w["fc1.weight"].T + w["fc1.bias"])
h = torch.relu(h @ w["fc2.weight"].T + w["fc2.bias"])
W = w["logits.weight"].clone().requires_grad_(True)
grads, losses = [], []
for i in range(n):
    z = h[i] @ W.T + w["logits.bias"]
    loss = torch.nn.functional.cross_entropy(z[None], y[i:i+1])
    g, = torch.autograd.grad(loss, W)
    grads.append(g.flatten()); losses.append(loss.item())
G = torch.stack(grads)
z = (h @ w["logits.weight"].T + w["logits.bias"])
own = z.gather(1, y[:, None])[:, 0]
others = z.scatter(1, y[:, None], float("-inf")).max(1).values
agree = torch.zeros(n, dtype=torch.float64)
for c in range(10):
    m = (y == c)
    d = G[m].mean(0)
    agree[m] = (G[m] @ d) / (G[m].norm(dim=1) * d.norm())
last = ex.filter(pl.col("epoch") == E)
def gap(a, b): return float(np.abs(np.asarray(a) - np.asarray(b)).max())
out["final_loss_gap"] = gap(last["loss"], losses)
out["final_margin_gap"] = gap(last["margin"], (own - others).numpy())
out["final_grad_norm_gap"] = gap(last["grad_norm"], G.norm(dim=1).numpy())
out["final_agreement_gap"] = gap(last["grad_agreement"], agree.numpy())
# The label-dependent part's agreement, from the autograd gradients of the loss's label term
# alone (-log-softmax's e_y part minus its mean over classes).
dep = []
for i in range(n):
    zi = h[i] @ W.T + w["logits.bias"]
    part = -(zi[y[i]] - zi.mean())
    g, = torch.autograd.grad(part, W)
    dep.append(g.flatten())
Dg = torch.stack(dep)
dep_agree = torch.zeros(n, dtype=torch.float64)
for c in range(10):
    m = (y == c)
    d = Dg[m].mean(0)
    dep_agree[m] = (Dg[m] @ d) / (Dg[m].norm(dim=1) * d.norm())
out["final_dep_agreement_gap"] = gap(last["dep_agreement"], dep_agree.numpy())
out["correct_match"] = ex["correct"].to_list() == (ex["predicted"] == ex["label"]).to_list()
out["final_predicted_match"] = last["predicted"].to_list() == z.argmax(1).tolist()

# Detection recounted: scores, AUROC (Mann-Whitney), Otsu's count, precision and recall.
changed = lab["changed"].to_numpy()
M = ex["margin"].to_numpy().reshape(E + 1, n); Lo = ex["loss"].to_numpy().reshape(E + 1, n)
A = ex["grad_agreement"].to_numpy().reshape(E + 1, n)
DA = ex["dep_agreement"].to_numpy().reshape(E + 1, n)
P = ex["predicted"].to_numpy().reshape(E + 1, n); lbl = lab["train_label"].to_numpy()
right = (P == lbl)[1:]
forget = np.where(right.any(0), (right[:-1] & ~right[1:]).sum(0), E + 1).astype(float)
expect = {{"aum": -M[1:4].mean(0), "loss": Lo[1:4].mean(0), "gradient": -A[1:5].mean(0), "label_gradient": -DA[1:5].mean(0), "forgetting": forget}}
def auroc(s):
    r = rankdata(s); p = changed.sum(); q = n - p
    return (r[changed].sum() - p * (p + 1) / 2) / (p * q)
def otsu(s):
    s = np.sort(s); best, k = -1.0, 0
    for i in range(1, len(s)):
        if s[i] == s[i - 1]: continue
        a, b = s[:i], s[i:]
        v = len(a) * len(b) * (a.mean() - b.mean()) ** 2
        if v > best: best, k = v, len(s) - i
    return k
expect["ensemble"] = np.mean([rankdata(expect[m]) / n for m in ["aum", "gradient", "loss"]], axis=0)
det = pl.read_parquet(f"{{DET}}/detection.parquet")
sc = pl.read_parquet(f"{{DET}}/scores.parquet")
out["methods"] = det["method"].to_list()
rows = {{}}
for m, s in expect.items():
    got = sc.filter(pl.col("method") == m).sort("index")
    row = det.filter(pl.col("method") == m).row(0, named=True)
    # The ensemble flags as many as Otsu's threshold on the mean loss does.
    k = otsu(s) if m != "ensemble" else otsu(expect["loss"])
    flagged = got["flagged"].to_numpy()
    rows[m] = {{
        "score_gap": gap(got["score"], s),
        "auroc_gap": abs(row["auroc"] - auroc(s)),
        "otsu_match": int(row["flagged"]) == k,
        "flagged_count_match": int(flagged.sum()) == row["flagged"],
        "flagged_are_top": bool(flagged.sum() == 0 or got["score"].to_numpy()[flagged].min() >= got["score"].to_numpy()[~flagged].max()),
        "precision_gap": abs(row["precision"] - changed[flagged].mean()),
        "recall_gap": abs(row["recall"] - flagged[changed].mean()),
        "auroc": row["auroc"],
    }}
out["per_method"] = rows

# clean (the default, ensemble, drop), relabel (loss, to the prediction at the window's end), oracle.
default_flag = sc.filter(pl.col("method") == "ensemble").sort("index")["flagged"].to_numpy()
cl = pl.read_parquet(f"{{C}}/labels.parquet")
out["drop_kept_exactly_unflagged"] = cl["index"].to_list() == np.nonzero(~default_flag)[0].tolist()
out["drop_labels_unchanged"] = cl["train_label"].to_list() == lbl[~default_flag].tolist()
loss_flag = sc.filter(pl.col("method") == "loss").sort("index")["flagged"].to_numpy()
rl = pl.read_parquet(f"{{R}}/labels.parquet").sort("index")
want = np.where(loss_flag, P[3], lbl)
out["relabel_matches"] = rl["train_label"].to_list() == want.tolist()
out["relabel_changed_consistent"] = (rl["changed"].to_numpy() == (want != lab["true_label"].to_numpy())).all().item()
orc = pl.read_parquet(f"{{O}}/labels.parquet")
out["oracle_kept_clean"] = orc["index"].to_list() == np.nonzero(~changed)[0].tolist()
out["oracle_summary"] = json.load(open(f"{{O}}/clean.json"))
rex = pl.read_parquet(f"{{RT}}/examples.parquet")
out["retrain_trained_on_kept"] = rex.filter(pl.col("epoch") == 0)["index"].to_list() == cl["index"].to_list()
print(json.dumps(out))
"#
    ));
    assert_eq!(q["n"], 1000);
    assert_eq!(q["rows"], 1000 * 5, "1,000 examples x epochs 0..=4");
    assert!(q["loss_gap"].as_f64().unwrap() < 1e-9, "{q}");
    assert_eq!(q["acc_gap"].as_f64().unwrap(), 0.0, "{q}");
    for k in [
        "labels_match",
        "changed_match",
        "final_predicted_match",
        "correct_match",
        "drop_kept_exactly_unflagged",
        "drop_labels_unchanged",
        "relabel_matches",
        "relabel_changed_consistent",
        "oracle_kept_clean",
        "retrain_trained_on_kept",
    ] {
        assert_eq!(q[k], true, "{k}: {q}");
    }
    // The worker computes in float32 and then double; the recount is double throughout.
    for k in [
        "final_loss_gap",
        "final_margin_gap",
        "final_grad_norm_gap",
        "final_agreement_gap",
        "final_dep_agreement_gap",
    ] {
        assert!(q[k].as_f64().unwrap() < 1e-4, "{k}: {q}");
    }
    assert_eq!(
        q["methods"],
        serde_json::json!([
            "ensemble",
            "aum",
            "gradient",
            "label_gradient",
            "loss",
            "forgetting"
        ]),
        "the default method first"
    );
    for (m, row) in q["per_method"].as_object().unwrap() {
        assert!(row["score_gap"].as_f64().unwrap() < 1e-9, "{m}: {row}");
        assert!(row["auroc_gap"].as_f64().unwrap() < 1e-12, "{m}: {row}");
        assert!(row["precision_gap"].as_f64().unwrap() < 1e-12, "{m}: {row}");
        assert!(row["recall_gap"].as_f64().unwrap() < 1e-12, "{m}: {row}");
        for k in ["otsu_match", "flagged_count_match", "flagged_are_top"] {
            assert_eq!(row[k], true, "{m} {k}: {row}");
        }
    }
    // Noise 0.4 on 1,000 Fashion-MNIST examples: the margin separates the corrupted well
    // above chance even after 4 short epochs.
    let aum = q["per_method"]["aum"]["auroc"].as_f64().unwrap();
    assert!(aum > 0.85, "aum AUROC {aum}");
    let s = &q["oracle_summary"];
    assert_eq!(s["method"], "oracle");
    assert_eq!(s["corrupted_left"], 0);
    assert_eq!(s["flagged"], s["flagged_corrupted"]);
    assert_eq!(
        s["kept"].as_i64().unwrap() + s["flagged"].as_i64().unwrap(),
        1000
    );
}

#[test]
fn recorded_dynamics_resume_exactly_and_an_unused_option_keeps_the_key() {
    // A 6-epoch run resumed from a 4-epoch one records what a straight 6-epoch run does.
    let a = Project::new();
    a.write("d.toml", &pipeline(4));
    assert_eq!(a.run("d.toml", &["--only", "train"]).0, 0);
    let (code, r) = a.run(
        "d.toml",
        &["--only", "train", "--set", "stage.train.epochs=6"],
    );
    assert_eq!(code, 0, "{r}");
    let resumed = dir_of(&a, &r, "train");
    let log = std::fs::read_to_string(a.cache().join("logs").join(format!(
        "{}.log",
        resumed.file_name().unwrap().to_str().unwrap()
    )))
    .unwrap();
    assert!(
        log.contains("resumed from the checkpoint of epoch 4"),
        "{log}"
    );
    let b = Project::new();
    b.write("d.toml", &pipeline(6));
    let (code, r) = b.run("d.toml", &["--only", "train"]);
    assert_eq!(code, 0);
    let straight = dir_of(&b, &r, "train");
    let bytes = |d: &PathBuf| std::fs::read(d.join("examples.parquet")).unwrap();
    assert_eq!(
        bytes(&resumed),
        bytes(&straight),
        "examples.parquet differs"
    );
    assert_eq!(
        std::fs::read(resumed.join("metrics.parquet")).unwrap(),
        std::fs::read(straight.join("metrics.parquet")).unwrap()
    );

    // `record_examples = false` written out keeps the key of a file that never names it.
    let key_of = |text: &str| -> Json {
        let p = Project::new();
        p.write("t.toml", text);
        // The train key is known once its inputs are.
        assert_eq!(p.run("t.toml", &["--only", "corrupt"]).0, 0);
        p.status("t.toml", &[])
            .into_iter()
            .find(|s| s["stage"] == "train")
            .unwrap()["key"]
            .clone()
    };
    let plain = FASHION_TRAIN.to_string();
    let off = plain.replace(
        "device = \"cpu\"\n",
        "device = \"cpu\"\nrecord_examples = false\n",
    );
    let on = plain.replace(
        "device = \"cpu\"\n",
        "device = \"cpu\"\nrecord_examples = true\n",
    );
    assert_ne!(plain, off);
    assert_eq!(key_of(&plain), key_of(&off));
    assert_ne!(key_of(&plain), key_of(&on));
}

#[test]
fn detect_and_clean_refuse_what_cannot_work_with_exit_2() {
    let p = Project::new();
    let cases: [(&str, &str, &str); 5] = [
        (
            "record_examples = true\n",
            "record_examples = false\n",
            "set `record_examples = true`",
        ),
        (
            "[stage.detect]\nkind = \"detect\"\n",
            "[stage.detect]\nkind = \"detect\"\nmethods = [\"aum\", \"margin\"]\n",
            "unknown method \"margin\"",
        ),
        (
            "[stage.detect]\nkind = \"detect\"\n",
            "[stage.detect]\nkind = \"detect\"\nwindow = [3, 1]\n",
            "window",
        ),
        (
            "[stage.detect]\nkind = \"detect\"\n",
            "[stage.detect]\nkind = \"detect\"\nwindow = [9, 10]\n",
            "starts at epoch 9 but the run trains 4 epochs",
        ),
        ("method = \"loss\"\n", "method = \"los\"\n", "did you mean"),
    ];
    for (i, (from, to, want)) in cases.into_iter().enumerate() {
        let text = pipeline(4).replacen(from, to, 1);
        let file = format!("bad{i}.toml");
        p.write(&file, &text);
        let out = p.pipe(&["run", &file]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {err}");
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
        assert!(err.contains(&file), "the file is named:\n{err}");
    }
    assert!(p.artifacts().is_empty(), "nothing computed");
}

/// Checks that the detection figure's accuracy panel (the last panel, after one ROC panel
/// per group) draws its categories as dots: no series line (2 px wide) lies in its cell.
fn no_line_joins_the_accuracy_categories(svg: &str, csv: &str) {
    let mut groups: Vec<&str> = csv
        .lines()
        .filter_map(|l| l.split(',').next())
        .filter(|p| p.starts_with("roc "))
        .collect();
    groups.dedup();
    let panels = groups.len() + 1;
    let columns = panels.min(3);
    let (col, row) = ((panels - 1) % columns, (panels - 1) / columns);
    let (x0, x1) = (440 * col as i64, 440 * (col + 1) as i64);
    let (y0, y1) = (50 + 330 * row as i64, 50 + 330 * (row + 1) as i64);
    let mut in_cell = 0;
    for line in svg.split("<polyline").skip(1) {
        let points = line
            .split("points=\"")
            .nth(1)
            .and_then(|p| p.split('"').next())
            .unwrap();
        let xy: Vec<(i64, i64)> = points
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        if xy
            .iter()
            .all(|&(x, y)| x >= x0 && x < x1 && y >= y0 && y < y1)
        {
            in_cell += 1;
            assert!(
                !line.contains("stroke-width=\"2\""),
                "a line joins the accuracy panel's categories: {points}"
            );
        }
    }
    assert!(in_cell > 0, "the accuracy panel's axes are in its cell");
    assert!(svg.contains("<circle"), "its categories are dots");
}

/// The report's accuracy panel: the noisy baseline is an ordinary run on the same corrupted
/// labels as detect's train when one exists (a short run that only records the dynamics is
/// not the baseline), and detect's own train otherwise.
#[test]
fn the_report_takes_the_ordinary_run_as_the_noisy_baseline() {
    // The report's noisy accuracy, and the final test accuracy of each named train stage.
    let measure = |text: &str, stages: &[&str]| -> (f64, Vec<f64>) {
        let p = Project::new();
        p.write("d.toml", text);
        let (code, r) = p.run("d.toml", &[]);
        assert_eq!(code, 0, "{r}");
        let out = p.pipe(&["report", "d.toml", "--out", "rep"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let csv = std::fs::read_to_string(p.path("rep/figures/7-detection-detect.csv"))
            .expect("finding 7's numbers");
        let svg = std::fs::read_to_string(p.path("rep/figures/7-detection-detect.svg")).unwrap();
        no_line_joins_the_accuracy_categories(&svg, &csv);
        // panel,series,x,mean,sd,n
        let row: Vec<&str> = csv
            .lines()
            .find(|l| l.starts_with("test accuracy,") && l.contains(",noisy,"))
            .unwrap_or_else(|| panic!("no noisy row in:\n{csv}"))
            .rsplitn(4, ',')
            .collect();
        let finals = stages
            .iter()
            .map(|s| {
                let q = python(&format!(
                    "import polars as pl\nprint(pl.read_parquet('{}/metrics.parquet').sort('epoch')['test_acc'][-1])",
                    dir_of(&p, &r, s).display()
                ));
                q.as_f64().unwrap()
            })
            .collect();
        (row[2].parse().unwrap(), finals)
    };
    // Alone, detect's own train is the baseline.
    let alone = pipeline(2);
    let (noisy, finals) = measure(&alone, &["train"]);
    assert!((noisy - finals[0]).abs() < 1e-12, "{noisy} {finals:?}");
    // Beside an ordinary 3-epoch run on the same labels, that run is.
    let with_baseline = format!(
        "{alone}
[stage.baseline]
kind = \"train\"
inputs = [\"data\", \"corrupt\"]
model = \"mlp\"
hidden = [16]
epochs = 3
seed = 1
lr = 0.01
device = \"cpu\"
"
    );
    let (noisy, finals) = measure(&with_baseline, &["baseline", "train"]);
    assert!((noisy - finals[0]).abs() < 1e-12, "{noisy} {finals:?}");
    assert_ne!(finals[0], finals[1], "the two runs end differently");
}
