//! `show`, `log`, `diff` and `rm` plan a pipeline as `status` does (`--set`, `--run`,
//! `--point`), and `pipe ls` lists instances, not bare keys.

use serde_json::Value as Json;

use crate::common::{BASIC, Project, TINY_TRAIN};

/// stdout of a command that must succeed.
fn ok(p: &Project, args: &[&str]) -> String {
    let out = p.pipe(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The key `status` gives `corrupt` at noise 0.5, seed 1, with `extra` options.
fn status_key(p: &Project, extra: &[&str]) -> String {
    let mut args = vec!["--point", "noise=0.5,seed=1"];
    args.extend_from_slice(extra);
    let rows = p.status("p.toml", &args);
    let row = rows.iter().find(|r| r["stage"] == "corrupt").unwrap();
    assert_eq!(row["state"], "cached", "{row}");
    row["key"].as_str().unwrap().to_string()
}

/// The key `show --json` names with `args`.
fn shown_key(p: &Project, args: &[&str]) -> String {
    let mut all = vec!["show", "corrupt", "p.toml", "--json"];
    all.extend_from_slice(args);
    let m: Json = serde_json::from_str(&ok(p, &all)).unwrap();
    m["key"].as_str().unwrap().to_string()
}

#[test]
fn show_log_diff_rm_take_set_run_and_point_like_status() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let (code, first) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    let first_id = first["run"].as_str().unwrap().to_string();
    let variant = ["--set", "stage.data.train_size=30"];
    let (code, _) = p.run("p.toml", &variant);
    assert_eq!(code, 0);

    let plain = status_key(&p, &["--run", "none"]);
    let varied = status_key(&p, &variant);
    assert_ne!(plain, varied);
    assert_eq!(status_key(&p, &["--run", &first_id]), plain);

    // show: the same instance as status, for each way of naming the pipeline.
    let at = ["--point", "noise=0.5,seed=1"];
    assert_eq!(
        shown_key(&p, &[&at[..], &["--run", "none"]].concat()),
        plain
    );
    assert_eq!(shown_key(&p, &[&at[..], &variant].concat()), varied);
    assert_eq!(
        shown_key(&p, &[&at[..], &["--run", &first_id]].concat()),
        plain
    );
    // `--run ID` alone names the file too.
    let m: Json = serde_json::from_str(&ok(
        &p,
        &[
            "show",
            "corrupt",
            "--run",
            &first_id,
            "--point",
            "noise=0.5,seed=1",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(m["key"], plain.as_str());

    // log: the variant's log.
    let log: Json = serde_json::from_str(&ok(
        &p,
        &[&["log", "corrupt", "p.toml", "--json"][..], &at, &variant].concat(),
    ))
    .unwrap();
    assert_eq!(log["key"], varied.as_str());

    // diff: --point narrows both sides, --set/--run pick the pipeline.
    let d: Json = serde_json::from_str(&ok(
        &p,
        &[
            "diff",
            "corrupt[noise=0.0]",
            "corrupt[noise=0.5]",
            "--file",
            "p.toml",
            "--point",
            "seed=1",
            "--run",
            "none",
            "--json",
        ],
    ))
    .unwrap();
    let whats: Vec<&str> = d["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap())
        .collect();
    assert!(
        whats.contains(&"point") && whats.contains(&"param fraction"),
        "{d}"
    );
    assert!(!whats.contains(&"input data"), "same data set: {d}");
    let d: Json = serde_json::from_str(&ok(
        &p,
        &[
            &[
                "diff", "corrupt", "corrupt", "--file", "p.toml", "--json", "--run", "none",
            ][..],
            &at,
        ]
        .concat(),
    ))
    .unwrap();
    assert_eq!(d["differences"].as_array().unwrap().len(), 0, "{d}");
    let d: Json = serde_json::from_str(&ok(
        &p,
        &[
            &["diff", "corrupt", "corrupt", "--file", "p.toml", "--json"][..],
            &at,
            &variant,
        ]
        .concat(),
    ))
    .unwrap();
    assert_eq!(d["differences"].as_array().unwrap().len(), 0, "{d}");

    // rm: only the variant's instances at noise 0.5 go; the file's stay.
    let out = ok(
        &p,
        &[
            &["rm", "corrupt", "p.toml", "--point", "noise=0.5"][..],
            &variant,
        ]
        .concat(),
    );
    assert!(out.contains("of 2 instances"), "{out}");
    assert!(!p.cache().join("artifacts").join(&varied).exists());
    assert!(p.cache().join("artifacts").join(&plain).exists());
    let plain_rows = p.status("p.toml", &["--run", "none"]);
    assert!(plain_rows.iter().all(|r| r["state"] == "cached"));

    // --set without a pipeline is refused, not ignored.
    let out = p.pipe(&["show", "corrupt", "--set", "stage.data.train_size=30"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--set"));
}

#[test]
fn ls_lists_instances_with_age_size_and_pipeline_newest_first() {
    let p = Project::new();
    p.write("p.toml", TINY_TRAIN);
    let (code, _) = p.run("p.toml", &["-q"]);
    assert_eq!(code, 0);
    let text = ok(&p, &["ls"]);
    let lines: Vec<&str> = text.lines().collect();
    // A header, 7 instances (checkpoints counted with their train instance), a total.
    assert_eq!(lines.len(), 9, "{text}");
    assert!(lines[0].starts_with("instance") && lines[0].contains("age"));
    assert!(
        lines[8].starts_with("7 instances (13 artifacts with their parts)"),
        "{text}"
    );
    let train = lines
        .iter()
        .find(|l| l.starts_with("train[noise=0.5]"))
        .unwrap();
    assert!(
        train.contains("+3 parts") && train.contains("tiny-train"),
        "{train}"
    );
    assert!(train.contains("ago") && train.contains(" KB"), "{train}");
    // Newest first: the data set, made first, is last; rollback comes before train.
    assert!(lines[7].starts_with("data "), "{text}");
    let pos = |s: &str| lines.iter().position(|l| l.starts_with(s)).unwrap();
    assert!(
        pos("rollback[noise=0.5]") < pos("train[noise=0.5]"),
        "{text}"
    );
    // --json still has every artifact, each part with its instance.
    let all: Json = serde_json::from_str(&ok(&p, &["ls", "--json"])).unwrap();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 13);
    assert_eq!(all.iter().filter(|a| a["part_of"].is_string()).count(), 6);
}

#[test]
fn double_descent_axis_ticks_at_the_widths_and_error_never_below_zero() {
    let p = Project::new();
    let text = TINY_TRAIN
        .replace("noise = [0.0, 0.5]", "noise = [0.5]\nwidth = [3, 12, 48]")
        .replace("hidden = [8]", "hidden = [\"${width}\"]")
        .replace("seed = 1\ndevice", "seed = \"${seed}\"\ndevice")
        .replace(
            "[stage.rollback]\nkind = \"rollback\"\ninputs = [\"train\"]\nfrom_epochs = [1]\n",
            "",
        )
        .replace("width = [3, 12, 48]", "width = [3, 12, 48]\nseed = [1, 2]");
    p.write("p.toml", &text);
    let (code, r) = p.run("p.toml", &["-q"]);
    assert_eq!(code, 0, "{r}");
    let out = p.pipe(&["report", "p.toml", "--out", "report"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(p.path("report/figures/6-double-descent-train.svg")).unwrap();
    // The width axis is labelled at the data's widths, not at 10^0.8 = 6.31 and the like.
    let labels: Vec<&str> = svg
        .split("<text")
        .skip(1)
        .filter_map(|t| t.split_once('>').map(|(_, r)| r))
        .filter_map(|r| r.split_once("</text>").map(|(l, _)| l.trim()))
        .collect();
    for w in ["3", "12", "48"] {
        assert!(labels.contains(&w), "no tick {w}: {labels:?}");
    }
    assert!(
        !labels
            .iter()
            .any(|l| l.contains('.') && l.parse::<f64>().is_ok_and(|v| v > 1.0)),
        "a tick at an unround width: {labels:?}"
    );
    // The error axes start at 0: no negative tick label in the two error panels.
    assert!(
        !labels
            .iter()
            .any(|l| l.starts_with('-') && l.parse::<f64>().is_ok()),
        "an error axis below 0: {labels:?}"
    );
}
