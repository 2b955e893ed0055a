//! Outputs as users read them: the shipped quick pipeline on real Fashion-MNIST, and its
//! Parquet tables queried from DuckDB and Polars (the virtualenv's python3 on PATH).

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value as Json;

fn artifact(cache: &Path, key: &Json) -> PathBuf {
    cache.join("artifacts").join(key.as_str().unwrap())
}

#[test]
fn quick_pipeline_on_fashion_mnist_reads_back_in_duckdb_and_polars() {
    let p = Project::new();
    let file = repo().join("pipelines/quick.toml");
    let file = file.to_str().unwrap();
    let (code, r) = p.run(file, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(of_stage(&r, "executed", "data").len(), 1);
    assert_eq!(of_stage(&r, "executed", "corrupt").len(), 4);
    // At noise 0.0 both seeds' labels are the same bytes: one summary serves both.
    assert_eq!(of_stage(&r, "executed", "summary").len(), 3);
    assert_eq!(of_stage(&r, "cached", "summary").len(), 1);
    assert_eq!(of_stage(&r, "executed", "train").len(), 4);
    for stage in ["activations", "probe", "embed", "gradnorm", "rollback"] {
        assert_eq!(of_stage(&r, "executed", stage).len(), 4, "{stage}");
    }

    let data = artifact(&p.cache(), &of_stage(&r, "executed", "data")[0]["key"]);
    // 2,000 train and 1,000 test examples, class-balanced: 200 and 100 per class.
    let q = python(&format!(
        "import duckdb, json\n\
         t = duckdb.sql(\"SELECT label, count(*) n, min(len(image)) w FROM '{d}/train.parquet' GROUP BY label ORDER BY label\").fetchall()\n\
         s = duckdb.sql(\"SELECT count(*) FROM '{d}/test.parquet'\").fetchall()[0][0]\n\
         print(json.dumps({{'train': t, 'test': s}}))",
        d = data.display()
    ));
    let train = q["train"].as_array().unwrap();
    assert_eq!(train.len(), 10);
    for row in train {
        assert_eq!(row[1], 200, "{row}");
        assert_eq!(row[2], 784, "28 x 28 pixels");
    }
    assert_eq!(q["test"], 1000);

    for item in of_stage(&r, "executed", "corrupt") {
        let noise = item["point"]["noise"].as_f64().unwrap();
        let labels = artifact(&p.cache(), &item["key"]).join("labels.parquet");
        let want = (noise * 2000.0).round() as i64;
        let q = python(&format!(
            "import duckdb, polars as pl, json\n\
             d = duckdb.sql(\"SELECT count(*), sum(chosen::INT), sum((true_label <> train_label)::INT), \
               sum(((NOT chosen) AND true_label <> train_label)::INT), sum((changed <> (true_label <> train_label))::INT) FROM '{f}'\").fetchall()[0]\n\
             df = pl.read_parquet('{f}')\n\
             print(json.dumps({{'duckdb': d, 'polars_rows': df.height, 'polars_corrupted': int(df['chosen'].sum()), \
               'polars_changed': int(df['changed'].sum()), 'polars_fraction': float(df['chosen'].mean()), 'columns': df.columns}}))",
            f = labels.display()
        ));
        assert_eq!(q["duckdb"][0], 2000);
        assert_eq!(q["duckdb"][1], want, "noise {noise}");
        assert_eq!(q["duckdb"][3], 0, "clean examples keep their label");
        assert_eq!(q["duckdb"][4], 0, "changed = train_label <> true_label");
        assert_eq!(q["polars_changed"], q["duckdb"][2]);
        if noise > 0.0 {
            // Permuting 800 labels over 10 balanced classes leaves ~10% in place.
            let changed = q["duckdb"][2].as_i64().unwrap();
            assert!((600..=780).contains(&changed), "{changed}");
        }
        assert_eq!(q["polars_rows"], 2000);
        assert_eq!(q["polars_corrupted"], want);
        assert!((q["polars_fraction"].as_f64().unwrap() - noise).abs() < 1e-12);
        assert_eq!(
            q["columns"],
            serde_json::json!(["index", "true_label", "train_label", "chosen", "changed"])
        );
    }

    // The exec summary stage saw the same numbers.
    for item in of_stage(&r, "executed", "summary") {
        let noise = item["point"]["noise"].as_f64().unwrap();
        let s: Json = serde_json::from_slice(
            &std::fs::read(artifact(&p.cache(), &item["key"]).join("summary.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(s["examples"], 2000);
        assert_eq!(s["chosen"], (noise * 2000.0).round() as i64);
        let (corrupted, unchanged) = (
            s["corrupted"].as_i64().unwrap(),
            s["unchanged"].as_i64().unwrap(),
        );
        assert_eq!(corrupted + unchanged, s["chosen"].as_i64().unwrap());
    }

    // Training shows finding 1 of the study: with noise, test accuracy peaks early and falls
    // while the corrupted examples are memorized. Queried from Polars, as a user would.
    for item in of_stage(&r, "executed", "train") {
        let noise = item["point"]["noise"].as_f64().unwrap();
        let q = python(&format!(
            "import polars as pl, json\n\
             m = pl.read_parquet('{}/metrics.parquet').sort('epoch')\n\
             print(json.dumps({{'rows': m.height, 'peak': m['test_acc'].max(), 'final': m['test_acc'][-1], \
               'mem': m['corrupted_train_acc'][-1], 'true_peak': m['corrupted_true_acc'].max(), 'true_final': m['corrupted_true_acc'][-1]}}))",
            artifact(&p.cache(), &item["key"]).display()
        ));
        assert_eq!(q["rows"], 81);
        let (peak, last) = (q["peak"].as_f64().unwrap(), q["final"].as_f64().unwrap());
        assert!(peak > 0.7, "noise {noise}: peak test accuracy {peak}");
        if noise > 0.0 {
            assert!(
                last < peak - 0.05,
                "test accuracy peaks and falls: {peak} -> {last}"
            );
            assert!(q["mem"].as_f64().unwrap() > 0.9, "memorized: {q}");
            assert!(
                q["true_final"].as_f64().unwrap() < q["true_peak"].as_f64().unwrap() - 0.3,
                "{q}"
            );
        }
    }

    // Finding 3 as the paper's appendix measures it (science.md: ratio 0.29-0.32 at
    // initialization): the corrupted examples' label-dependent gradient is below half the
    // clean examples' in every layer at epoch 0, their label-independent one alike (ratio
    // near 1), and both groups hold the same number of examples: every changed label.
    for item in of_stage(&r, "executed", "gradnorm") {
        if item["point"]["noise"] != 0.4 {
            continue;
        }
        let dir = artifact(&p.cache(), &item["key"]);
        let q = python(&format!(
            "import polars as pl, json\n\
             g = pl.read_parquet('{d}/gradnorm.parquet').filter(pl.col('epoch') == 0)\n\
             k = g.filter(pl.col('group') == 'corrupted').sort('layer')\n\
             c = g.filter(pl.col('group') == 'clean').sort('layer')\n\
             print(json.dumps({{'layers': k['layer'].to_list(), 'dep': (k['label_dependent'] / c['label_dependent']).to_list(), \
               'ind': (k['label_independent'] / c['label_independent']).to_list(), 'n': [k['n'][0], c['n'][0]]}}))",
            d = dir.display()
        ));
        assert_eq!(q["layers"], serde_json::json!(["fc1", "fc2", "logits"]));
        for (dep, ind) in q["dep"]
            .as_array()
            .unwrap()
            .iter()
            .zip(q["ind"].as_array().unwrap())
        {
            let (dep, ind) = (dep.as_f64().unwrap(), ind.as_f64().unwrap());
            assert!(dep < 0.5, "label-dependent ratio at initialization: {q}");
            assert!((0.9..1.1).contains(&ind), "label-independent ratio: {q}");
        }
        assert_eq!(q["n"][0], q["n"][1]);
        let labels = artifact(
            &p.cache(),
            &of_stage(&r, "executed", "corrupt")
                .iter()
                .find(|c| c["point"] == item["point"])
                .unwrap()["key"],
        );
        let changed = python(&format!(
            "import duckdb, json\nprint(json.dumps(duckdb.sql(\"SELECT sum(changed::INT), sum((chosen AND NOT changed)::INT) FROM '{}/labels.parquet'\").fetchall()[0]))",
            labels.display()
        ));
        assert_eq!(
            q["n"][0], changed[0],
            "all corrupted examples, as many clean ones"
        );
    }

    // The study's Figure 1 in numbers: in the last layer, corrupted examples' 2-D
    // neighbours carry their random training label only late in training.
    for item in of_stage(&r, "executed", "embed") {
        if item["point"]["noise"] != 0.4 {
            continue;
        }
        let q = python(&format!(
            "import duckdb, json\nprint(json.dumps(duckdb.sql(\"SELECT epoch, avg(train_label_agreement), count(*) FROM '{}/embedding.parquet' WHERE layer = 'logits' AND method = 'tsne' AND \\\"group\\\" = 'corrupted' GROUP BY ALL ORDER BY ALL\").fetchall()))",
            artifact(&p.cache(), &item["key"]).display()
        ));
        let rows = q.as_array().unwrap();
        assert_eq!(rows.len(), 4, "epochs 0, 2, 10, 80: {q}");
        let agreement = |i: usize| rows[i][1].as_f64().unwrap();
        assert!(
            agreement(0) < 0.25,
            "chance is about 0.1 at initialization: {q}"
        );
        assert!(
            agreement(3) > 0.6,
            "memorized labels cluster at the end: {q}"
        );
        assert!(rows.iter().all(|r| r[2] == 500), "{q}");
    }

    // Rerun: nothing to do.
    let (code, r) = p.run(file, &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "executed"), 0);
    assert_eq!(count(&r, "cached"), 33);
}

#[test]
fn cifar10_and_cifar100_binary_files_load() {
    let p = Project::new();
    // Two CIFAR-10 batches of 20 records each would need all six files: write tiny ones.
    let dir = p.path("cifar10");
    std::fs::create_dir_all(&dir).unwrap();
    let record = |label: u8, fill: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(fill, 3072));
        r
    };
    for (name, n) in [
        ("data_batch_1.bin", 20),
        ("data_batch_2.bin", 10),
        ("data_batch_3.bin", 10),
        ("data_batch_4.bin", 10),
        ("data_batch_5.bin", 10),
        ("test_batch.bin", 10),
    ] {
        let bytes: Vec<u8> = (0..n)
            .flat_map(|i| record((i % 10) as u8, i as u8))
            .collect();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let dir100 = p.path("cifar100");
    std::fs::create_dir_all(&dir100).unwrap();
    for name in ["train.bin", "test.bin"] {
        let bytes: Vec<u8> = (0..200u32)
            .flat_map(|i| {
                let mut r = vec![(i % 20) as u8, (i % 100) as u8];
                r.extend(std::iter::repeat_n(7u8, 3072));
                r
            })
            .collect();
        std::fs::write(dir100.join(name), bytes).unwrap();
    }
    p.write(
        "c.toml",
        r#"
[pipeline]
name = "cifar"
[stage.c10]
kind = "dataset"
source = "cifar10"
path = "cifar10"
train_size = 30
[stage.c100]
kind = "dataset"
source = "cifar100"
path = "cifar100"
train_size = 100
test_size = 100
"#,
    );
    let (code, r) = p.run("c.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let c10 = artifact(&p.cache(), &of_stage(&r, "executed", "c10")[0]["key"]);
    let info: Json =
        serde_json::from_slice(&std::fs::read(c10.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["classes"], 10);
    assert_eq!(info["class_names"][0], "airplane");
    assert_eq!(
        (info["train_size"].as_u64(), info["test_size"].as_u64()),
        (Some(30), Some(10))
    );
    assert_eq!(
        (info["channels"].as_u64(), info["layout"].as_str()),
        (Some(3), Some("CHW"))
    );
    let c100 = artifact(&p.cache(), &of_stage(&r, "executed", "c100")[0]["key"]);
    let info: Json =
        serde_json::from_slice(&std::fs::read(c100.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["classes"], 100);
    let q = python(&format!(
        "import duckdb, json\nprint(json.dumps(duckdb.sql(\"SELECT count(DISTINCT label), min(len(image)), max(image[1]) FROM '{}/train.parquet'\").fetchall()[0]))",
        c100.display()
    ));
    assert_eq!(q, serde_json::json!([100, 3072, 7]));

    // A truncated batch: exit 2, named, nothing stored for it.
    let f = dir.join("data_batch_3.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    let out = p.pipe(&["run", "c.toml", "--set", "stage.c10.train_size=20"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("data_batch_3.bin") && stderr.contains("whole number"),
        "{stderr}"
    );
}

#[test]
fn nightly_sweep_plans_every_branch() {
    let p = Project::new();
    let file = repo().join("pipelines/sweep.toml");
    let (code, r) = p.run(file.to_str().unwrap(), &["--dry-run"]);
    assert_eq!(code, 0, "{r}");
    let count_of = |stage: &str| {
        r["would_run"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["stage"] == stage)
            .count()
    };
    // One data set; 5 noise levels x 3 seeds of everything else.
    assert_eq!(count_of("data"), 1);
    for stage in [
        "corrupt",
        "summary",
        "train_mlp",
        "train_cnn",
        "activations_mlp",
        "probe_mlp",
        "embed_mlp",
        "gradnorm_mlp",
        "rollback_mlp",
        "activations_cnn",
        "probe_cnn",
        "embed_cnn",
        "gradnorm_cnn",
        "rollback_cnn",
    ] {
        assert_eq!(count_of(stage), 15, "{stage}");
    }
}
