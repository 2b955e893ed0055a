//! Rerunning only what really changed, through the binary: analyses keyed on the
//! checkpoints they read, and early cutoff when a rerun writes the bytes its dependents
//! already read.

use crate::common::*;
use serde_json::Value as Json;

/// The tiny study at one point, its analyses on epochs 0, 1 and 2 only.
fn study(p: &Project) -> String {
    let epochs = [
        ("stage.activations.epochs", "[0, 1, 2]"),
        ("stage.gradnorm.epochs", "[0, 2]"),
    ];
    tiny_study_at(p, "0.5", &epochs);
    "p.toml".into()
}

fn stages(r: &Json, list: &str) -> Vec<String> {
    let mut v: Vec<String> = r[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["stage"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn training_longer_reruns_only_what_reads_the_new_checkpoints() {
    let p = Project::new();
    let file = study(&p);
    let (code, r) = p.run(&file, &[]);
    assert_eq!(code, 0, "{r}");
    let longer = [
        "--set",
        "stage.train.epochs=8",
        "--set",
        "stage.train.checkpoints=[0,1,2,4,8]",
    ];
    // Before running: the analyses of epochs 0-2 are cached under the longer training
    // (their keys are those checkpoints' keys); rollback starts from the final epoch.
    let st = p.status(&file, &longer);
    let state = |stage: &str| -> String {
        st.iter().find(|s| s["stage"] == stage).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for stage in ["activations", "probe", "gradnorm"] {
        assert_eq!(state(stage), "cached", "{stage}: {st:?}");
    }
    assert_eq!(state("train"), "stale");
    let (code, r) = p.run(&file, &longer);
    assert_eq!(code, 0, "{r}");
    assert_eq!(stages(&r, "executed"), ["rollback", "train"]);
    assert_eq!(
        stages(&r, "cached"),
        ["activations", "corrupt", "data", "gradnorm", "probe"]
    );
    // The train instance resumed from epoch 4 of the first run's checkpoints (it kept
    // 0, 1, 2, 4): it trained epochs 5-8 only.
    let train = of_stage(&r, "executed", "train")[0]["key"]
        .as_str()
        .unwrap();
    let log = String::from_utf8(p.pipe(&["log", train]).stdout).unwrap();
    assert!(
        log.contains("resumed from the checkpoint of epoch 4"),
        "{log}"
    );
}

#[test]
fn labels_rewritten_identically_keep_training_and_analyses_cached() {
    let p = Project::new();
    tiny_study_at(&p, "0.0", &[]);
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    // Another corruption mode: at noise 0.0 no label is chosen, the labels are the same
    // bytes, and nothing below corrupt runs; the dry run says they may.
    let mode = ["--set", "stage.corrupt.mode=\"uniform\""];
    let (code, dry) = p.run("p.toml", &[&["--dry-run"][..], &mode[..]].concat());
    assert_eq!(code, 0, "{dry}");
    assert_eq!(stages(&dry, "would_run"), ["corrupt"]);
    assert_eq!(
        stages(&dry, "may_run"),
        ["activations", "gradnorm", "probe", "rollback", "train"]
    );
    let text_out = p.pipe(&[&["run", "p.toml", "--dry-run"][..], &mode[..]].concat());
    let text_out = String::from_utf8(text_out.stdout).unwrap();
    assert!(
        text_out
            .contains("train[noise=0.0,seed=1] (depends on corrupt[noise=0.0,seed=1]'s output)"),
        "{text_out}"
    );
    let (code, r) = p.run("p.toml", &mode);
    assert_eq!(code, 0, "{r}");
    assert_eq!(stages(&r, "executed"), ["corrupt"]);
    assert_eq!(count(&r, "cached"), 6);
    let st = p.status("p.toml", &mode);
    assert!(st.iter().all(|s| s["state"] == "cached"), "{st:?}");
}

/// The log of the instance of `stage` in a run report.
fn log_of(p: &Project, r: &Json, stage: &str) -> String {
    let key = of_stage(r, "executed", stage)[0]["key"].as_str().unwrap();
    String::from_utf8(p.pipe(&["log", key]).stdout).unwrap()
}

/// The epochs a log says were `computed` or `reused` (lines `epoch E: computed ...`).
fn epochs_in(log: &str, how: &str) -> Vec<i64> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("epoch ")?;
            let (e, tail) = rest.split_once(": ")?;
            tail.starts_with(how).then(|| e.trim().parse().ok())?
        })
        .collect()
}

#[test]
fn an_added_epoch_is_the_only_one_computed_and_a_removed_one_costs_nothing() {
    let p = Project::new();
    let file = study(&p);
    let (code, first) = p.run(&file, &[]);
    assert_eq!(code, 0, "{first}");
    for stage in ["activations", "probe"] {
        assert_eq!(epochs_in(&log_of(&p, &first, stage), "computed"), [0, 1, 2]);
    }
    assert_eq!(
        epochs_in(&log_of(&p, &first, "gradnorm"), "computed"),
        [0, 2]
    );

    let more = [
        "--set",
        "stage.activations.epochs=[0,1,2,4]",
        "--set",
        "stage.gradnorm.epochs=[0,2,4]",
    ];
    let (code, r) = p.run(&file, &more);
    assert_eq!(code, 0, "{r}");
    assert_eq!(stages(&r, "executed"), ["activations", "gradnorm", "probe"]);
    for stage in ["activations", "probe"] {
        let log = log_of(&p, &r, stage);
        assert_eq!(epochs_in(&log, "computed"), [4], "{stage}: {log}");
        assert_eq!(epochs_in(&log, "reused"), [0, 1, 2], "{stage}: {log}");
    }
    let log = log_of(&p, &r, "gradnorm");
    assert_eq!(epochs_in(&log, "computed"), [4], "{log}");
    // The reused epochs' numbers are the first run's, to the bit (an epoch's analysis
    // does not depend on which other epochs are analysed).
    let probe = |r: &Json| {
        let key = of_stage(r, "executed", "probe")[0]["key"].as_str().unwrap();
        p.cache().join("artifacts").join(key).join("probe.parquet")
    };
    let same = python(&format!(
        "import polars as pl, json\n\
         a = pl.read_parquet('{}')\n\
         b = pl.read_parquet('{}').filter(pl.col('epoch') <= 2)\n\
         print(json.dumps([a.height, a.equals(b)]))",
        probe(&first).display(),
        probe(&r).display()
    ));
    assert_eq!(
        same,
        serde_json::json!([27, true]),
        "3 epochs x 3 layers x 3 labelings"
    );
    // status lists each analysis's per-epoch parts, as it lists checkpoints.
    let st = p.status(&file, &more);
    let parts = |stage: &str| -> Vec<(String, bool)> {
        st.iter().find(|s| s["stage"] == stage).unwrap()["parts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["name"].as_str().unwrap().to_string(),
                    x["cached"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    let all = |names: &[&str]| -> Vec<(String, bool)> {
        names.iter().map(|n| (n.to_string(), true)).collect()
    };
    let four = ["epoch 0", "epoch 1", "epoch 2", "epoch 4"];
    assert_eq!(parts("activations"), all(&four));
    assert_eq!(parts("probe"), all(&four));
    assert_eq!(parts("gradnorm"), all(&["epoch 0", "epoch 2", "epoch 4"]));

    // Fewer epochs: the new instances are made of cached parts alone.
    let (code, r) = p.run(&file, &["--set", "stage.activations.epochs=[0,2]"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(stages(&r, "executed"), ["activations", "probe"]);
    for stage in ["activations", "probe"] {
        let log = log_of(&p, &r, stage);
        assert_eq!(epochs_in(&log, "computed"), Vec::<i64>::new(), "{log}");
        assert_eq!(epochs_in(&log, "reused"), [0, 2], "{log}");
    }
}

#[test]
fn parts_sealed_before_a_crash_are_reused_by_the_next_run() {
    // What `kill -9` leaves while an analysis works through its epochs: some parts sealed,
    // the instance itself absent (the reliability suite kills real runs at random).
    let p = Project::new();
    let file = study(&p);
    let (code, first) = p.run(&file, &[]);
    assert_eq!(code, 0, "{first}");
    for stage in ["activations", "probe"] {
        let key = of_stage(&first, "executed", stage)[0]["key"]
            .as_str()
            .unwrap();
        std::fs::remove_dir_all(p.cache().join("artifacts").join(key)).unwrap();
    }
    let st = p.status(&file, &[]);
    let act = st.iter().find(|s| s["stage"] == "activations").unwrap();
    assert_eq!(act["state"], "missing");
    assert!(
        act["parts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["cached"] == true)
    );
    let (code, r) = p.run(&file, &[]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(stages(&r, "executed"), ["activations", "probe"]);
    for stage in ["activations", "probe"] {
        let log = log_of(&p, &r, stage);
        assert_eq!(epochs_in(&log, "computed"), Vec::<i64>::new(), "{log}");
        assert_eq!(epochs_in(&log, "reused"), [0, 1, 2], "{log}");
        // The same artifact as before the crash.
        assert_eq!(
            of_stage(&r, "executed", stage)[0]["key"],
            of_stage(&first, "executed", stage)[0]["key"]
        );
    }
    assert_no_partial_artifacts(&p.cache());
}
