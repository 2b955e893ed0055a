//! Runs side by side: `table` and `export` over `--run A --run B` and `--all-runs` with the
//! parameters that differ as columns, run names and notes in `runs`, and `diff` of two runs
//! over every final metric.

use crate::common::*;
use serde_json::Value as Json;

fn pipe(p: &Project, args: &[&str]) -> (i32, String, String) {
    let out = p.pipe(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(p: &Project, args: &[&str]) -> Json {
    let (code, out, err) = pipe(p, args);
    assert_eq!(code, 0, "pipe {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Two runs of the tiny training pipeline that differ in `train.lr`: `base` (0.05, with a
/// note) and `fast` (0.1). Returns their ids.
fn two_runs(p: &Project) -> (String, String) {
    p.write("p.toml", TINY_TRAIN);
    let (code, a) = p.run(
        "p.toml",
        &["--only", "train", "--name", "base", "--note", "first try"],
    );
    assert_eq!(code, 0, "{a}");
    let (code, b) = p.run(
        "p.toml",
        &[
            "--only",
            "train",
            "--set",
            "stage.train.lr=0.1",
            "--name",
            "fast",
        ],
    );
    assert_eq!(code, 0, "{b}");
    (
        a["run"].as_str().unwrap().to_string(),
        b["run"].as_str().unwrap().to_string(),
    )
}

#[test]
fn runs_side_by_side_in_table_export_runs_and_diff() {
    let p = Project::new();
    let (a, b) = two_runs(&p);

    // `runs` shows names and notes; `--run NAME` finds a run.
    let (code, out, err) = pipe(&p, &["runs"]);
    assert_eq!(code, 0, "{err}");
    let line_of = |id: &str| out.lines().find(|l| l.starts_with(id)).unwrap().to_string();
    assert!(out.lines().next().unwrap().contains("name"), "{out}");
    assert!(line_of(&a).contains(" base "), "{out}");
    assert!(line_of(&b).contains(" fast "), "{out}");
    assert!(out.contains("note: first try"), "{out}");
    let runs = json(&p, &["runs", "--json"]);
    assert_eq!(runs[0]["name"], "fast");
    assert_eq!(runs[0]["note"], Json::Null);
    assert_eq!(runs[1]["name"], "base");
    assert_eq!(runs[1]["note"], "first try");

    // One run: the table is as before, without run or parameter columns.
    let one = json(&p, &["table", "p.toml", "--run", "fast", "--json"]);
    assert_eq!(one.as_array().unwrap().len(), 2);
    assert!(
        one[0].get("run").is_none() && one[0].get("params").is_none(),
        "{one}"
    );

    // Two runs: a row per (run, train instance), the run, its name, and exactly the
    // parameter that differs (the sweep's `corrupt.fraction` and `train.seed` stay out).
    let rows = json(
        &p,
        &["table", "p.toml", "--run", "base", "--run", &b, "--json"],
    );
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4, "{rows:?}");
    for r in rows {
        let params = r["params"].as_object().unwrap();
        assert_eq!(params.keys().collect::<Vec<_>>(), ["train.lr"], "{r}");
        let (id, name, lr) = if r["run"] == a.as_str() {
            (&a, "base", 0.05)
        } else {
            (&b, "fast", 0.1)
        };
        assert_eq!(r["run"], id.as_str());
        assert_eq!(r["run_name"], name);
        assert_eq!(params["train.lr"], lr);
        assert_eq!(r["state"], "cached");
        assert_eq!(r["epochs"], 2);
        assert!(r["final_test_acc"].is_f64(), "{r}");
    }
    let noises: Vec<f64> = rows
        .iter()
        .map(|r| r["point"]["noise"].as_f64().unwrap())
        .collect();
    assert_eq!(noises, [0.0, 0.5, 0.0, 0.5]);
    // --where and --sort by a parameter column.
    let rows = json(
        &p,
        &[
            "table",
            "p.toml",
            "--run",
            &a,
            "--run",
            &b,
            "--where",
            "noise=0.5",
            "--sort",
            "-train.lr",
            "--json",
        ],
    );
    let lrs: Vec<f64> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["params"]["train.lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs, [0.1, 0.05]);

    // --all-runs: every run of the file; a run repeating a later one's settings is shown
    // by the later one.
    let (code, again) = p.run(
        "p.toml",
        &["--only", "train", "--set", "stage.train.lr=0.1"],
    );
    assert_eq!(code, 0, "{again}");
    let c = again["run"].as_str().unwrap();
    let (code, out, err) = pipe(&p, &["table", "p.toml", "--all-runs"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 of 3 runs repeat"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "run",
            "run_name",
            "stage",
            "noise",
            "train.lr",
            "final_test_acc",
            "best_test_acc",
            "best_epoch",
            "corrupted_fit",
            "clean_acc",
            "epochs",
            "state"
        ],
        "{out}"
    );
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(c)).count(),
        2,
        "{out}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with(&a)).count(),
        2,
        "{out}"
    );
    assert!(!out.contains(&b), "{out}");
    let (code, csv, err) = pipe(&p, &["table", "p.toml", "--all-runs", "--csv"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        csv.starts_with("run,run_name,stage,noise,train.lr,"),
        "{csv}"
    );

    // Export across runs: the same columns, read back with Polars.
    let (code, out, err) = pipe(
        &p,
        &[
            "export", "p.toml", "--run", &a, "--run", &b, "--out", "results",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("train.lr"), "{out}");
    let q = python(&format!(
        "import polars as pl, json\n\
         m = pl.read_parquet('{d}/metrics.parquet')\n\
         l = pl.read_parquet('{d}/labels.parquet')\n\
         runs = m.group_by('run', 'run_name').agg(pl.col('train.lr').unique(), pl.len()).sort('run_name')\n\
         print(json.dumps({{'columns': m.columns[-6:], 'rows': m.height, \
           'runs': [[r['run'], r['run_name'], r['train.lr'], r['len']] for r in runs.to_dicts()], \
           'label_lr_null': l['train.lr'].null_count() == l.height, 'label_runs': l['run'].n_unique(), \
           'lr_type': str(m.schema['train.lr'])}}))",
        d = p.path("results").display()
    ));
    assert_eq!(
        q["columns"],
        serde_json::json!(["noise", "train.lr", "run", "run_name", "stage", "key"])
    );
    // 2 runs x 2 train instances x 3 epochs (0, 1, 2).
    assert_eq!(q["rows"], 12);
    assert_eq!(
        q["runs"],
        serde_json::json!([[a, "base", [0.05], 6], [b, "fast", [0.1], 6]])
    );
    assert_eq!(q["lr_type"], "Float64");
    // corrupt's labels have no `train.lr`: null there, and a row set per run.
    assert_eq!(q["label_lr_null"], true);
    assert_eq!(q["label_runs"], 2);

    // diff of two runs: settings and every final metric of each train instance.
    let d = json(&p, &["diff", "run:base", "run:fast", "--json"]);
    let what = |l: &Json| l["what"].as_str().unwrap().to_string();
    let differences: Vec<String> = d["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(what)
        .collect();
    assert!(differences.contains(&"name".to_string()), "{d}");
    assert!(differences.contains(&"overrides".to_string()), "{d}");
    let metrics: Vec<String> = d["metrics"].as_array().unwrap().iter().map(what).collect();
    for inst in ["train[noise=0.0]", "train[noise=0.5]"] {
        for m in [
            "final_test_acc",
            "best_test_acc",
            "best_epoch",
            "final_test_loss",
            "final_train_acc",
            "final_train_loss",
            "final_clean_acc",
            "epochs",
        ] {
            assert!(metrics.contains(&format!("{m} {inst}")), "{m} {inst}: {d}");
        }
    }
    assert!(
        metrics.contains(&"final_corrupted_fit train[noise=0.5]".to_string()),
        "{d}"
    );
    let (code, out, err) = pipe(&p, &["diff", "run:base", "run:fast"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("final_train_loss train[noise=0.5]"), "{out}");
}

#[test]
fn side_by_side_refuses_what_it_cannot_show() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &["--name", "x"]).0, 0);
    // A name `--run` reads otherwise is refused before anything runs.
    let (code, _, err) = pipe(&p, &["run", "p.toml", "--name", "last"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--name last"), "{err}");
    // --set with several runs, --run none among them, --all-runs without a file.
    let (code, _, err) = pipe(
        &p,
        &[
            "table",
            "p.toml",
            "--all-runs",
            "--set",
            "sweep.noise=[0.0]",
        ],
    );
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = pipe(&p, &["table", "p.toml", "--run", "x", "--run", "none"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--run none"), "{err}");
    let (code, _, err) = pipe(&p, &["export", "--all-runs", "--out", "r"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--all-runs: name the pipeline file"), "{err}");
    // Commands that take one run say so.
    let (code, _, err) = pipe(&p, &["status", "p.toml", "--run", "x", "--run", "last"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--run once here"), "{err}");
    // Export of all runs of a file without train stages: exec and corrupt tables, one run.
    let (code, out, err) = pipe(
        &p,
        &["export", "p.toml", "--all-runs", "--out", "r", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let j: Json = serde_json::from_str(&out).unwrap();
    assert_eq!(j["runs"].as_array().unwrap().len(), 1);
    assert_eq!(j["params"], serde_json::json!([]));
}

/// Live curves: while a train instance runs, its metrics so far are a Parquet file beside
/// its log that Polars reads, and `pipe table` shows it `running` at its latest epoch; the
/// file goes when the instance is done.
#[test]
fn metrics_so_far_are_readable_while_training() {
    let p = Project::new();
    let text = with_values(
        TINY_TRAIN,
        &[
            ("sweep.noise", "[0.5]"),
            ("stage.train.epochs", "3000"),
            ("stage.train.checkpoints", "[0, 1, 3000]"),
        ],
    );
    p.write("p.toml", &text);
    let mut child = p
        .command(&["run", "p.toml", "--only", "train", "--quiet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let live = || -> Option<std::path::PathBuf> {
        std::fs::read_dir(p.cache().join("logs"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|f| f.to_string_lossy().ends_with(".metrics.parquet"))
    };
    let start = std::time::Instant::now();
    let (mut read, mut shown) = (None, None);
    while read.is_none() || shown.is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before its metrics were seen while running (read {read:?}, table {shown:?})"
        );
        assert!(start.elapsed().as_secs() < 120, "no live metrics seen");
        if read.is_none()
            && let Some(f) = live()
        {
            let q = python(&format!(
                "import polars as pl, json\n\
                 m = pl.read_parquet(open('{}', 'rb'))\n\
                 print(json.dumps({{'rows': m.height, 'first': int(m['epoch'][0]), 'last': int(m['epoch'][-1]), 'cols': m.columns}}))",
                f.display()
            ));
            if q["rows"].as_i64().unwrap() >= 2 {
                assert_eq!(q["first"], 0, "{q}");
                assert_eq!(q["last"].as_i64().unwrap() + 1, q["rows"].as_i64().unwrap());
                assert!(q["cols"].as_array().unwrap().contains(&"test_acc".into()));
                read = Some(q);
            }
        }
        if shown.is_none() {
            let rows = json(&p, &["table", "p.toml", "--run", "none", "--json"]);
            let r = &rows[0];
            if r["state"] == "running" && r["epochs"].as_i64().is_some_and(|e| e > 0) {
                assert!(r["final_test_acc"].is_f64(), "{r}");
                assert!(r["epochs"].as_i64().unwrap() < 3000, "{r}");
                shown = Some(r.clone());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(
        live(),
        None,
        "the live metrics stay only while the instance runs"
    );
    let rows = json(&p, &["table", "p.toml", "--run", "none", "--json"]);
    assert_eq!(rows[0]["state"], "cached");
    assert_eq!(rows[0]["epochs"], 3000);
}
