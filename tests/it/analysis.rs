//! The analysis stages (activations, probe, gradnorm, rollback) on a small trained MLP,
//! checked against the training metrics and against Python recomputations.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value as Json;

/// The shared Fashion-MNIST pipeline (noise 0.4, 30 epochs) and the analysis stages.
const PIPELINE: &str = concat!(
    include_str!("../pipelines/fashion-train.toml"),
    r#"[stage.activations]
kind = "activations"
inputs = ["train"]
epochs = [0, 2, "final"]
per_class = 20
seed = 1
[stage.probe]
kind = "probe"
inputs = ["activations"]
n_t = 100
seed = 1
[stage.gradnorm]
kind = "gradnorm"
inputs = ["train"]
epochs = [0, 1, "final"]
subset = 60
[stage.rollback]
kind = "rollback"
inputs = ["train"]
from_epochs = [2]
"#
);

fn dir_of(p: &Project, r: &Json, stage: &str) -> PathBuf {
    let items = of_stage(r, "executed", stage);
    assert_eq!(items.len(), 1, "{stage}: {r}");
    p.cache()
        .join("artifacts")
        .join(items[0]["key"].as_str().unwrap())
}

fn query(sql: &str) -> Json {
    python(&format!(
        "import duckdb, json\nprint(json.dumps([list(r) for r in duckdb.sql(\"\"\"{sql}\"\"\").fetchall()]))"
    ))
}

#[test]
fn analysis_stages_measure_what_science_md_defines() {
    let p = Project::new();
    p.write("a.toml", PIPELINE);
    let (code, r) = p.run("a.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let train = dir_of(&p, &r, "train");
    let acts = dir_of(&p, &r, "activations");
    let data = dir_of(&p, &r, "data");

    // Probe set: 10 classes x 20 clean + 10 training labels x 20 corrupted examples.
    let q = query(&format!(
        "SELECT corrupted, count(*), count(DISTINCT train_label), min(c) FROM (SELECT *, count(*) OVER (PARTITION BY corrupted, train_label) c FROM '{}/probe_set.parquet') GROUP BY corrupted ORDER BY corrupted",
        acts.display()
    ));
    assert_eq!(
        q,
        serde_json::json!([[false, 200, 10, 20], [true, 200, 10, 20]])
    );

    // The `input` layer's features are the standardized pixels of the chosen examples.
    let q = python(&format!(
        "import json, numpy as np, pyarrow.parquet as pq\n\
         t = pq.read_table('{d}/train.parquet')\n\
         x = np.stack(t.column('image').to_numpy(zero_copy_only=False)).astype(np.float64) / 255\n\
         z = (x - x.mean()) / x.std()\n\
         ps = pq.read_table('{a}/probe_set.parquet').column('index').to_numpy()\n\
         f = np.stack(pq.read_table('{a}/epoch=0/input.parquet').column('features').to_numpy(zero_copy_only=False))\n\
         widths = {{l: pq.read_table(f'{a}/epoch=30/{{l}}.parquet').column('features').type.list_size for l in ['input', 'fc1', 'fc2', 'logits']}}\n\
         print(json.dumps({{'err': float(np.abs(f - z[ps]).max()), 'widths': widths}}))",
        d = data.display(),
        a = acts.display()
    ));
    assert!(q["err"].as_f64().unwrap() < 1e-4, "{q}");
    assert_eq!(
        q["widths"],
        serde_json::json!({"input": 784, "fc1": 256, "fc2": 256, "logits": 10})
    );

    // Probe: 3 epochs x 4 layers x 3 labelings; capacity rises with depth in the trained
    // network for the clean examples, and the corrupted examples become separable by their
    // training labels only in the deeper layers.
    let probe = dir_of(&p, &r, "probe");
    let rows = query(&format!(
        "SELECT epoch, layer, labeling, capacity, radius, dimension, P, M, n_t, linear_probe_acc FROM '{}/probe.parquet' ORDER BY epoch, layer, labeling",
        probe.display()
    ));
    assert_eq!(rows.as_array().unwrap().len(), 3 * 4 * 3, "{rows}");
    let get = |epoch: i64, layer: &str, labeling: &str, col: usize| -> f64 {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == epoch && r[1] == layer && r[2] == labeling)
            .unwrap_or_else(|| panic!("no row {epoch} {layer} {labeling}"))[col]
            .as_f64()
            .unwrap()
    };
    for row in rows.as_array().unwrap() {
        assert_eq!(
            (row[6].as_i64(), row[7].as_i64(), row[8].as_i64()),
            (Some(10), Some(20), Some(100)),
            "{row}"
        );
        assert!(row[3].as_f64().unwrap() > 0.0);
    }
    assert!(get(30, "logits", "unpermuted", 3) > get(30, "input", "unpermuted", 3));
    assert!(get(30, "logits", "permuted", 3) > get(30, "input", "permuted", 3));
    assert!(
        get(30, "logits", "permuted", 9) > 0.5,
        "memorized labels are linearly decodable at the end"
    );
    assert!(
        get(0, "logits", "permuted", 9) < 0.35,
        "but not at initialization"
    );

    // Gradnorm: recomputed independently in PyTorch from the final checkpoint's weights and
    // the recorded examples: the logits layer's mean-gradient norms and the share formula.
    let gn = dir_of(&p, &r, "gradnorm");
    let g = query(&format!(
        "SELECT epoch, layer, clean_grad_norm, corrupted_grad_norm, corrupted_share, cosine, n_clean, n_corrupted FROM '{}/gradnorm.parquet' ORDER BY epoch, layer",
        gn.display()
    ));
    assert_eq!(g.as_array().unwrap().len(), 3 * 3, "{g}");
    for row in g.as_array().unwrap() {
        assert_eq!((row[6].as_i64(), row[7].as_i64()), (Some(60), Some(60)));
        assert!((-1.0..=1.0).contains(&row[5].as_f64().unwrap()));
        let (c, k) = (row[2].as_f64().unwrap(), row[3].as_f64().unwrap());
        assert!(
            (row[4].as_f64().unwrap() - k / (c + k)).abs() < 1e-12,
            "share = |g_k| / (|g_c| + |g_k|) for equal groups"
        );
    }
    let cks: Vec<Json> =
        serde_json::from_slice(&std::fs::read(train.join("checkpoints.json")).unwrap()).unwrap();
    let final_ck = p
        .cache()
        .join("artifacts")
        .join(cks.last().unwrap()["key"].as_str().unwrap());
    let labels = dir_of(&p, &r, "corrupt");
    let py = python(&format!(
        "import json, numpy as np, torch, pyarrow.parquet as pq\n\
         from safetensors.torch import load_file\n\
         t = pq.read_table('{d}/train.parquet')\n\
         x = torch.tensor(np.stack(t.column('image').to_numpy(zero_copy_only=False)).astype(np.float32) / 255)\n\
         x = (x - x.mean()) / x.std(unbiased=False)\n\
         y = torch.tensor(pq.read_table('{l}/labels.parquet').column('train_label').to_numpy())\n\
         ex = pq.read_table('{g}/gradnorm_examples.parquet').to_pydict()\n\
         w = {{k: v.requires_grad_() for k, v in load_file('{c}/weights.safetensors').items()}}\n\
         def grad(idx):\n\
         \x20   for v in w.values(): v.grad = None\n\
         \x20   h = torch.relu(x[idx] @ w['fc1.weight'].T + w['fc1.bias'])\n\
         \x20   h = torch.relu(h @ w['fc2.weight'].T + w['fc2.bias'])\n\
         \x20   torch.nn.functional.cross_entropy(h @ w['logits.weight'].T + w['logits.bias'], y[idx]).backward()\n\
         \x20   return torch.cat([w['logits.bias'].grad.flatten(), w['logits.weight'].grad.flatten()]).double()\n\
         clean = [i for i, k in zip(ex['index'], ex['corrupted']) if not k]\n\
         cor = [i for i, k in zip(ex['index'], ex['corrupted']) if k]\n\
         gc, gk = grad(clean), grad(cor)\n\
         print(json.dumps([gc.norm().item(), gk.norm().item(), (gc @ gk / gc.norm() / gk.norm()).item()]))",
        d = data.display(),
        l = labels.display(),
        g = gn.display(),
        c = final_ck.display()
    ));
    let ours = g
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r[0] == 30 && r[1] == "logits")
        .unwrap();
    for (mine, theirs) in [(&ours[2], &py[0]), (&ours[3], &py[1]), (&ours[5], &py[2])] {
        let (a, b) = (mine.as_f64().unwrap(), theirs.as_f64().unwrap());
        assert!(
            (a - b).abs() <= 1e-4 * b.abs().max(1e-3),
            "ours {a} vs PyTorch {b}"
        );
    }

    // Rollback: the untouched final weights score what training measured at the final epoch,
    // and rolling every layer back to epoch 2 scores what training measured at epoch 2.
    let rb = dir_of(&p, &r, "rollback");
    let m = query(&format!(
        "SELECT epoch, test_acc, corrupted_train_acc FROM '{}/metrics.parquet' WHERE epoch IN (2, 30) ORDER BY epoch",
        train.display()
    ));
    let rows = query(&format!(
        "SELECT from_epoch, cutoff, layers_rolled_back, test_acc, corrupted_train_acc FROM '{}/rollback.parquet'",
        rb.display()
    ));
    let find = |cutoff: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r[1] == cutoff)
            .unwrap()
            .clone()
    };
    assert_eq!(rows.as_array().unwrap().len(), 1 + 3, "{rows}");
    assert_eq!(find("none")[3], m[1][1]);
    assert_eq!(find("fc1")[2], 3);
    assert_eq!(
        find("fc1")[3],
        m[0][1],
        "all layers rolled back = the epoch-2 network"
    );
    assert_eq!(find("fc1")[4], m[0][2]);
    assert_eq!(find("logits")[2], 1);
    assert!(
        find("fc2")[3].as_f64().unwrap() > find("none")[3].as_f64().unwrap(),
        "rolling back the last layers recovers test accuracy: {rows}"
    );

    // Changing only a probe parameter reruns only the probe.
    let (code, r2) = p.run("a.toml", &["--set", "stage.probe.n_t=50"]);
    assert_eq!(code, 0);
    let executed: Vec<&str> = r2["executed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["stage"].as_str().unwrap())
        .collect();
    assert_eq!(executed, ["probe"]);
}

#[test]
fn bad_analysis_parameters_exit_2() {
    let p = Project::new();
    p.write("a.toml", PIPELINE);
    for (set, want) in [
        ("stage.activations.epochs=[7]", "keeps no checkpoint 7"),
        (
            "stage.activations.layers=[\"fc9\"]",
            "unknown layer \"fc9\"",
        ),
        (
            "stage.activations.per_class=1",
            "`stage.activations.per_class`: must be at least 2",
        ),
        ("stage.activations.classes=1", "must be at least 2"),
        (
            "stage.gradnorm.epochs=[\"last\"]",
            "keeps no checkpoint \"last\"",
        ),
        (
            "stage.rollback.cutoffs=[\"input\"]",
            "unknown layer \"input\"",
        ),
        ("stage.probe.n_t=0", "`stage.probe.n_t`"),
    ] {
        let out = p.pipe(&["run", "a.toml", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {stderr}");
        assert!(
            stderr.contains(want),
            "{set}: expected {want:?} in {stderr}"
        );
    }
    assert!(!Path::new(&p.cache()).exists());
}
