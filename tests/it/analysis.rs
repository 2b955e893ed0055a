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
[stage.embed]
kind = "embed"
inputs = ["activations"]
[stage.gradnorm]
kind = "gradnorm"
inputs = ["train"]
epochs = [0, 1, "final"]
max_examples = 60
per_example = true
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
    // Corrupted means the label changed; clean examples were never chosen.
    let q = query(&format!(
        "SELECT count(*) FROM '{}/probe_set.parquet' p JOIN '{}/labels.parquet' l USING (index) WHERE p.corrupted <> l.changed OR (NOT p.corrupted AND l.chosen) OR l.changed <> (l.train_label <> l.true_label)",
        acts.display(),
        dir_of(&p, &r, "corrupt").display()
    ));
    assert_eq!(q, serde_json::json!([[0]]));

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

    // Gradnorm: the decomposition of Eq. 25 recomputed independently in PyTorch from the
    // checkpoints' weights and the recorded examples; `total` against PyTorch's own
    // cross-entropy gradient.
    let gn = dir_of(&p, &r, "gradnorm");
    let g = query(&format!(
        "SELECT epoch, layer, \"group\", n, label_dependent, label_independent, total FROM '{}/gradnorm.parquet' ORDER BY epoch, layer, \"group\" ASC",
        gn.display()
    ));
    let rows = g.as_array().unwrap();
    let groups: Vec<&str> = rows.iter().map(|r| r[2].as_str().unwrap()).collect();
    assert!(rows.len() >= 3 * 3 * 2, "{g}");
    for row in rows {
        let n = row[3].as_i64().unwrap();
        match row[2].as_str().unwrap() {
            "clean" | "corrupted" => assert_eq!(n, 60, "{row}"),
            "unchanged" => assert!((1..=60).contains(&n), "{row}"),
            other => panic!("group {other}"),
        }
    }
    assert!(groups.contains(&"corrupted") && groups.contains(&"clean"));
    let cks: Vec<Json> =
        serde_json::from_slice(&std::fs::read(train.join("checkpoints.json")).unwrap()).unwrap();
    let ck_dir = |epoch: i64| {
        let ck = cks.iter().find(|c| c["epoch"] == epoch).unwrap();
        p.cache()
            .join("artifacts")
            .join(ck["key"].as_str().unwrap())
    };
    let labels = dir_of(&p, &r, "corrupt");
    for epoch in [0i64, 30] {
        let py = python(&format!(
            "import json, numpy as np, torch, pyarrow.parquet as pq\n\
             from safetensors.torch import load_file\n\
             torch.set_default_dtype(torch.float64)\n\
             t = pq.read_table('{d}/train.parquet')\n\
             x = torch.tensor(np.stack(t.column('image').to_numpy(zero_copy_only=False)).astype(np.float32) / 255)\n\
             x = ((x - x.mean()) / x.std(unbiased=False)).double()\n\
             lab = pq.read_table('{l}/labels.parquet').to_pydict()\n\
             y = torch.tensor(lab['train_label'])\n\
             ex = pq.read_table('{g}/gradnorm_examples.parquet').to_pydict()\n\
             w = {{k: v.double().requires_grad_() for k, v in load_file('{c}/weights.safetensors').items()}}\n\
             layers = ['fc1', 'fc2', 'logits']\n\
             def logits(idx):\n\
             \x20   h = torch.relu(x[idx] @ w['fc1.weight'].T + w['fc1.bias'])\n\
             \x20   h = torch.relu(h @ w['fc2.weight'].T + w['fc2.bias'])\n\
             \x20   return h @ w['logits.weight'].T + w['logits.bias']\n\
             def norms(scalar):\n\
             \x20   keys = [l + s for l in layers for s in ['.weight', '.bias']]\n\
             \x20   gs = dict(zip(keys, torch.autograd.grad(scalar, [w[k] for k in keys], retain_graph=True)))\n\
             \x20   return {{l: torch.cat([gs[l + '.weight'].flatten(), gs[l + '.bias'].flatten()]) for l in layers}}\n\
             out = {{}}\n\
             for group in ['clean', 'corrupted']:\n\
             \x20   idx = [i for i, k in zip(ex['index'], ex['group']) if k == group]\n\
             \x20   ok = all((lab['train_label'][i] != lab['true_label'][i]) == (group == 'corrupted') for i in idx)\n\
             \x20   z = logits(idx)\n\
             \x20   yc = torch.nn.functional.one_hot(y[idx], 10).double() - 0.1\n\
             \x20   dep = norms((yc * z).sum() / len(idx))\n\
             \x20   ind = norms((torch.logsumexp(z, 1) - z.mean(1)).sum() / len(idx))\n\
             \x20   tot = norms(torch.nn.functional.cross_entropy(z, y[idx]))\n\
             \x20   out[group] = {{l: [dep[l].norm().item(), ind[l].norm().item(), tot[l].norm().item(), ok] for l in layers}}\n\
             i = [ex['index'][0]]\n\
             z = logits(i)\n\
             one = [norms(((torch.nn.functional.one_hot(y[i], 10).double() - 0.1) * z).sum()), norms(torch.logsumexp(z, 1).sum() - z.mean()), norms(torch.nn.functional.cross_entropy(z, y[i]))]\n\
             out['one'] = {{'index': i[0], **{{l: [v[l].norm().item() for v in one] for l in layers}}}}\n\
             print(json.dumps(out))",
            d = data.display(),
            l = labels.display(),
            g = gn.display(),
            c = ck_dir(epoch).display()
        ));
        // One example's own three norms, per layer.
        let one = &py["one"];
        let mine = query(&format!(
            "SELECT layer, label_dependent, label_independent, total FROM '{}/gradnorm_per_example.parquet' WHERE epoch = {epoch} AND index = {} ORDER BY layer",
            gn.display(),
            one["index"]
        ));
        assert_eq!(mine.as_array().unwrap().len(), 3, "{mine}");
        for row in mine.as_array().unwrap() {
            for k in 0..3 {
                let (a, b) = (
                    row[k + 1].as_f64().unwrap(),
                    one[row[0].as_str().unwrap()][k].as_f64().unwrap(),
                );
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1e-6),
                    "one example, epoch {epoch}: ours {a} vs PyTorch {b}"
                );
            }
        }
        for row in rows.iter().filter(|r| r[0] == epoch && r[2] != "unchanged") {
            let (layer, group) = (row[1].as_str().unwrap(), row[2].as_str().unwrap());
            let theirs = &py[group][layer];
            assert_eq!(theirs[3], true, "{group} examples are {group}");
            for (col, k) in [(4, 0), (5, 1), (6, 2)] {
                let (a, b) = (row[col].as_f64().unwrap(), theirs[k].as_f64().unwrap());
                assert!(
                    (a - b).abs() <= 1e-4 * b.abs().max(1e-6),
                    "epoch {epoch} {layer} {group} column {col}: ours {a} vs PyTorch {b}"
                );
            }
        }
    }

    // Embed: PCA and neighbour agreement recomputed in NumPy from the stored features.
    let emb = dir_of(&p, &r, "embed");
    let q = python(&format!(
        "import json, numpy as np, polars as pl\n\
         e = pl.read_parquet('{e}/embedding.parquet')\n\
         counts = e.group_by(['epoch', 'layer', 'method']).len().sort(['epoch', 'layer', 'method'])\n\
         f = np.stack(pl.read_parquet('{a}/epoch=30/logits.parquet')['features'].to_numpy()).astype(np.float64)\n\
         f = f - f.mean(0)\n\
         u, sv, vt = np.linalg.svd(f, full_matrices=False)\n\
         want = f @ vt[:2].T\n\
         pca = e.filter((pl.col('epoch') == 30) & (pl.col('layer') == 'logits') & (pl.col('method') == 'pca'))\n\
         got = pca.select(['x', 'y']).to_numpy()\n\
         pca_err = float(min(np.abs(got[:, j] - s * want[:, j]).max() for j in [0, 1] for s in [1, -1]) / np.abs(want).max())\n\
         t = e.filter((pl.col('epoch') == 30) & (pl.col('layer') == 'logits') & (pl.col('method') == 'tsne'))\n\
         agree_err = 0.0\n\
         for g in ['clean', 'corrupted']:\n\
         \x20   s = t.filter(pl.col('group') == g)\n\
         \x20   xy = s.select(['x', 'y']).to_numpy()\n\
         \x20   d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)\n\
         \x20   np.fill_diagonal(d, np.inf)\n\
         \x20   nn = np.argsort(d, axis=1, kind='stable')[:, :10]\n\
         \x20   for col, lab in [('train_label_agreement', 'train_label'), ('true_label_agreement', 'true_label')]:\n\
         \x20       l = s[lab].to_numpy()\n\
         \x20       agree_err = max(agree_err, float(np.abs((l[nn] == l[:, None]).mean(1) - s[col].to_numpy()).max()))\n\
         late = t.filter(pl.col('group') == 'corrupted')['train_label_agreement'].mean()\n\
         early = e.filter((pl.col('epoch') == 0) & (pl.col('layer') == 'logits') & (pl.col('method') == 'tsne') & (pl.col('group') == 'corrupted'))['train_label_agreement'].mean()\n\
         print(json.dumps({{'counts': counts['len'].to_list(), 'groups': len(counts), 'pca_err': pca_err, 'agree_err': agree_err, 'early': early, 'late': late}}))",
        e = emb.display(),
        a = acts.display()
    ));
    assert_eq!(
        q["groups"],
        3 * 4 * 2,
        "3 epochs x 4 layers x 2 methods: {q}"
    );
    assert!(
        q["counts"].as_array().unwrap().iter().all(|c| c == 400),
        "{q}"
    );
    assert!(q["pca_err"].as_f64().unwrap() < 1e-5, "{q}");
    assert!(q["agree_err"].as_f64().unwrap() < 1e-12, "{q}");
    assert!(
        q["late"].as_f64().unwrap() > q["early"].as_f64().unwrap() + 0.2,
        "corrupted examples cluster by training label late: {q}"
    );

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
        (
            "stage.embed.methods=[\"tnse\"]",
            "unknown method \"tnse\" (did you mean `tsne`?)",
        ),
        (
            "stage.embed.perplexity=0",
            "`stage.embed.perplexity`: must be positive",
        ),
        (
            "stage.gradnorm.max_examples=0",
            "`stage.gradnorm.max_examples`: must be at least 1",
        ),
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
