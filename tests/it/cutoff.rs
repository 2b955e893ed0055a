//! Rerunning only what really changed, through the binary: analyses keyed on the
//! checkpoints they read, and early cutoff when a rerun writes the bytes its dependents
//! already read.

use crate::common::*;
use serde_json::Value as Json;

/// The tiny study at one point, its analyses on epochs 0, 1 and 2 only.
fn study(p: &Project) -> String {
    p.write_idx("data", 200, 40);
    let text = with_values(
        TINY_STUDY,
        &[
            ("sweep.noise", "[0.5]"),
            ("sweep.seed", "[1]"),
            ("stage.activations.epochs", "[0, 1, 2]"),
            ("stage.gradnorm.epochs", "[0, 2]"),
        ],
    );
    p.write("p.toml", &text);
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
    let train = of_stage(&r, "executed", "train")[0]["key"].as_str().unwrap();
    let log = String::from_utf8(p.pipe(&["log", train]).stdout).unwrap();
    assert!(log.contains("resumed from the checkpoint of epoch 4"), "{log}");
}

#[test]
fn labels_rewritten_identically_keep_training_and_analyses_cached() {
    let p = Project::new();
    p.write_idx("data", 200, 40);
    let text = with_values(TINY_STUDY, &[("sweep.noise", "[0.0]"), ("sweep.seed", "[1]")]);
    p.write("p.toml", &text);
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
        text_out.contains("train[noise=0.0,seed=1] (depends on corrupt[noise=0.0,seed=1]'s output)"),
        "{text_out}"
    );
    let (code, r) = p.run("p.toml", &mode);
    assert_eq!(code, 0, "{r}");
    assert_eq!(stages(&r, "executed"), ["corrupt"]);
    assert_eq!(count(&r, "cached"), 6);
    let st = p.status("p.toml", &mode);
    assert!(st.iter().all(|s| s["state"] == "cached"), "{st:?}");
}
