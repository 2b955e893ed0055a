//! The engine, end to end through the real binary: expansion, caching, staleness,
//! failures, crashes and concurrency.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

#[test]
fn sweep_expands_and_shares_unswept_stages() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    // 1 dataset shared by the 2 x 2 points, 4 corrupt, 4 exec; at noise 0.0 both seeds
    // leave every label alone, so the two counts read identical bytes with identical
    // parameters and share one artifact: 3 computed, 1 found cached.
    assert_eq!(of_stage(&r, "executed", "data").len(), 1);
    assert_eq!(of_stage(&r, "executed", "corrupt").len(), 4);
    assert_eq!(of_stage(&r, "executed", "count").len(), 3);
    assert_eq!(of_stage(&r, "cached", "count").len(), 1);
    let count_keys = |noise: f64| -> Vec<Json> {
        r["executed"]
            .as_array()
            .unwrap()
            .iter()
            .chain(r["cached"].as_array().unwrap())
            .filter(|i| i["stage"] == "count" && i["point"]["noise"] == noise)
            .map(|i| i["key"].clone())
            .collect()
    };
    assert_eq!(count_keys(0.0).len(), 2);
    assert_eq!(count_keys(0.0)[0], count_keys(0.0)[1]);
    assert_ne!(count_keys(0.5)[0], count_keys(0.5)[1]);
    assert_eq!(
        of_stage(&r, "executed", "data")[0]["point"],
        serde_json::json!({})
    );
    let points: Vec<&Json> = of_stage(&r, "executed", "corrupt")
        .iter()
        .map(|i| &i["point"])
        .collect();
    for noise in [0.0, 0.5] {
        for seed in [1, 2] {
            assert!(
                points.contains(&&serde_json::json!({"noise": noise, "seed": seed})),
                "{points:?}"
            );
        }
    }
    assert_eq!(p.artifacts().len(), 8);
    assert_no_partial_artifacts(&p.cache());
}

#[test]
fn second_run_executes_nothing_and_status_is_all_cached() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "executed"), 0);
    assert_eq!(count(&r, "cached"), 9);
    let st = p.status("p.toml", &[]);
    assert_eq!(st.len(), 9);
    assert!(st.iter().all(|s| s["state"] == "cached"), "{st:?}");
}

#[test]
fn changing_one_parameter_reruns_exactly_its_dependents_and_status_says_why() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let changed = BASIC.replace(
        "seed = \"${seed}\"",
        "seed = \"${seed}\"\nmode = \"uniform\"",
    );
    p.write("p.toml", &changed);
    let st = p.status("p.toml", &[]);
    for s in &st {
        match s["stage"].as_str().unwrap() {
            "data" => assert_eq!(s["state"], "cached"),
            "corrupt" => {
                assert_eq!(s["state"], "stale");
                assert_eq!(s["reason"], "param mode changed \"permute\" -> \"uniform\"");
            }
            "count" => {
                // Its key depends on what corrupt will write.
                assert_eq!(s["state"], "may-run");
                assert_eq!(s["key"], Json::Null);
                let corrupt = format!(
                    "corrupt[noise={},seed={}]",
                    if s["point"]["noise"] == 0.0 {
                        "0.0"
                    } else {
                        "0.5"
                    },
                    s["point"]["seed"]
                );
                assert_eq!(s["reason"], format!("depends on {corrupt}'s output"));
            }
            other => panic!("unexpected stage {other}"),
        }
    }
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    assert_eq!(of_stage(&r, "executed", "data").len(), 0);
    assert_eq!(of_stage(&r, "cached", "data").len(), 1);
    assert_eq!(of_stage(&r, "executed", "corrupt").len(), 4);
    // Early cutoff: at noise 0.0 no label is chosen, so the new mode writes the same
    // bytes and the counts there stay cached; at 0.5 the labels differ and they rerun.
    assert_eq!(of_stage(&r, "executed", "count").len(), 2);
    assert!(
        of_stage(&r, "executed", "count")
            .iter()
            .all(|i| i["point"]["noise"] == 0.5),
        "{r}"
    );
    assert_eq!(of_stage(&r, "cached", "count").len(), 2);

    // A --set override is reported the same way, with old and new numbers.
    let st = p.status("p.toml", &["--set", "stage.data.train_size=30"]);
    let data = st.iter().find(|s| s["stage"] == "data").unwrap();
    assert_eq!(data["state"], "stale");
    assert_eq!(data["reason"], "param train_size changed 40 -> 30");
}

#[test]
fn adding_a_noise_level_runs_only_the_new_branch() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let (code, r) = p.run("p.toml", &["--set", "sweep.noise=[0.0, 0.5, 0.25]"]);
    assert_eq!(code, 0);
    let executed: Vec<&Json> = r["executed"].as_array().unwrap().iter().collect();
    assert_eq!(executed.len(), 4, "{r}");
    assert!(executed.iter().all(|i| i["point"]["noise"] == 0.25), "{r}");
    assert_eq!(count(&r, "cached"), 9);
}

#[test]
fn status_explains_missing_and_code_and_file_changes() {
    let p = Project::new();
    p.write("fit.sh", "echo one > $PIPE_OUT/x\n");
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "files"
[stage.fit]
kind = "exec"
cmd = ["sh", "fit.sh"]
files = ["fit.sh"]
"#,
    );
    let st = p.status("p.toml", &[]);
    assert_eq!(st[0]["state"], "missing");
    assert_eq!(st[0]["reason"], "never run");
    assert_eq!(p.run("p.toml", &[]).0, 0);
    p.write("fit.sh", "echo two > $PIPE_OUT/x\n");
    let st = p.status("p.toml", &[]);
    assert_eq!(st[0]["state"], "stale");
    assert_eq!(st[0]["reason"], "file fit.sh changed");
    // Back to the old content: the old artifact is found again.
    p.write("fit.sh", "echo one > $PIPE_OUT/x\n");
    assert_eq!(p.status("p.toml", &[])[0]["state"], "cached");
    // Remove the artifact behind pipe's back.
    std::fs::remove_dir_all(&p.artifacts()[0]).unwrap();
    let st = p.status("p.toml", &[]);
    assert_eq!(st[0]["state"], "missing");
    assert!(
        st[0]["reason"]
            .as_str()
            .unwrap()
            .contains("deleted from the cache")
    );
}

#[test]
fn threads_do_not_change_the_key() {
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"t\"\n[stage.a]\nkind = \"exec\"\ncmd = [\"true\"]\nthreads = 1\n",
    );
    let (_, r1) = p.run("p.toml", &["--dry-run"]);
    let (_, r2) = p.run("p.toml", &["--dry-run", "--set", "stage.a.threads=2"]);
    assert_eq!(r1["would_run"][0]["key"], r2["would_run"][0]["key"]);
    let (_, r3) = p.run(
        "p.toml",
        &["--dry-run", "--set", "stage.a.cmd=[\"true\", 1]"],
    );
    assert_ne!(r1["would_run"][0]["key"], r3["would_run"][0]["key"]);
}

#[test]
fn failing_exec_stops_only_its_branch() {
    let p = Project::new();
    let failing = BASIC.replace(
        "cmd = [\"sh\", \"-c\", \"ls $PIPE_INPUT_LABELS > $PIPE_OUT/listing.txt\"]",
        "cmd = [\"sh\", \"-c\", \"echo partial > $PIPE_OUT/half.txt; echo boom >&2; test ${seed} = 1\"]",
    );
    let with_child = format!(
        "{failing}\n[stage.after]\nkind = \"exec\"\ninputs = [\"count\"]\ncmd = [\"true\"]\n"
    );
    p.write("p.toml", &with_child);
    let out = p.pipe(&["run", "p.toml", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    // seed 2 fails at both noise levels; their `after` is skipped; seed 1 completes.
    assert_eq!(of_stage(&r, "failed", "count").len(), 2);
    assert!(
        of_stage(&r, "failed", "count")
            .iter()
            .all(|i| i["point"]["seed"] == 2)
    );
    assert_eq!(of_stage(&r, "skipped", "after").len(), 2);
    // Both seed-1 counts wrote the same bytes, so their `after`s share one artifact.
    assert_eq!(of_stage(&r, "executed", "after").len(), 1);
    assert_eq!(of_stage(&r, "cached", "after").len(), 1);
    assert_eq!(of_stage(&r, "executed", "corrupt").len(), 4);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited with status 1"), "{stderr}");
    // The failure names its log, which holds the command's stderr.
    let log_line = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("log: "))
        .unwrap();
    let log = std::fs::read_to_string(
        p.dir
            .path()
            .join(log_line.trim_start().trim_start_matches("log: ")),
    )
    .unwrap();
    assert!(log.contains("boom"), "{log}");
    // No partial artifact: the failed instances' half-written files are nowhere in the store.
    assert_no_partial_artifacts(&p.cache());
    assert_eq!(p.artifacts().len(), 1 + 4 + 2 + 1);
    assert_eq!(std::fs::read_dir(p.cache().join("tmp")).unwrap().count(), 0);
}

#[test]
fn fail_fast_skips_what_has_not_started() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "ff"
[sweep]
i = [1, 2, 3, 4, 5, 6]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "test ${i} != 1"]
"#,
    );
    let (code, r) = p.run("p.toml", &["--fail-fast", "--jobs", "1"]);
    assert_eq!(code, 1);
    assert_eq!(count(&r, "failed"), 1);
    assert_eq!(count(&r, "skipped"), 5, "{r}");
}

#[test]
fn bad_pipelines_exit_2_with_file_line_and_column() {
    let p = Project::new();
    let cases: &[(&str, &str, &str)] = &[
        (
            "cycle",
            "[pipeline]\nname = \"c\"\n[stage.a]\nkind = \"exec\"\ninputs = [\"b\"]\ncmd = [\"true\"]\n[stage.b]\nkind = \"exec\"\ninputs = [\"a\"]\ncmd = [\"true\"]\n",
            "cycle.toml:5:11: `stage.a.inputs`: the stages form a cycle",
        ),
        (
            "badtype",
            "[pipeline]\nname = \"t\"\n[stage.d]\nkind = \"dataset\"\nsource = \"idx\"\npath = \"data\"\ntrain_size = \"many\"\n",
            "badtype.toml:7:14: `stage.d.train_size`: expected an integer, found a string",
        ),
        (
            "unknownkey",
            "[pipeline]\nname = \"u\"\n[stage.d]\nkind = \"dataset\"\nsource = \"idx\"\npath = \"data\"\ntrain_sise = 10\n",
            "unknownkey.toml:7:1: `stage.d.train_sise`: unknown key for a `dataset` stage (did you mean `train_size`?)",
        ),
        (
            "badresource",
            "[pipeline]\nname = \"r\"\n[stage.a]\nkind = \"exec\"\ncmd = [\"true\"]\nresources = { cpu = 2 }\n",
            "badresource.toml:6:15: `stage.a.resources.cpu`: unknown resource (did you mean `cpus`?); allowed: cpus, gpus, mem, time",
        ),
        (
            "badmem",
            "[pipeline]\nname = \"r\"\n[stage.a]\nkind = \"exec\"\ncmd = [\"true\"]\nresources = { mem = \"16GB\" }\n",
            "badmem.toml:6:21: `stage.a.resources.mem`: \"16GB\" is not a memory size; write e.g. \"16G\", \"512M\"",
        ),
        (
            "unknownkind",
            "[pipeline]\nname = \"k\"\n[stage.d]\nkind = \"datset\"\n",
            "unknownkind.toml:4:8: `stage.d.kind`: unknown stage kind \"datset\" (did you mean `dataset`?)",
        ),
        (
            "unknownvar",
            "[pipeline]\nname = \"v\"\n[sweep]\nnoise = [0.1]\n[stage.a]\nkind = \"exec\"\ncmd = [\"echo\", \"${noize}\"]\n",
            "unknownvar.toml:7:16: `stage.a.cmd`: unknown sweep variable `noize` (did you mean `noise`?)",
        ),
        (
            "unknownstage",
            "[pipeline]\nname = \"s\"\n[stage.a]\nkind = \"exec\"\ninputs = [\"nope\"]\ncmd = [\"true\"]\n",
            "unknownstage.toml:5:11: `stage.a.inputs`: unknown stage \"nope\"",
        ),
        (
            "syntax",
            "[pipeline]\nname = \"x\"\n[stage.a]\nkind = = 1\n",
            "syntax.toml:4:",
        ),
        (
            "range",
            "[pipeline]\nname = \"r\"\n[stage.d]\nkind = \"dataset\"\nsource = \"idx\"\npath = \"data\"\n[stage.c]\nkind = \"corrupt\"\ninputs = [\"d\"]\nfraction = 1.5\n",
            "range.toml:10:12: `stage.c.fraction`: must be between 0 and 1",
        ),
    ];
    for (name, text, want) in cases {
        let file = format!("{name}.toml");
        p.write(&file, text);
        for cmd in ["run", "status", "dag"] {
            let out = p.pipe(&[cmd, &file]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {cmd}: {stderr}");
            assert!(
                stderr.contains(want),
                "{name} {cmd}: expected {want:?} in:\n{stderr}"
            );
        }
    }
    // Nothing in the cache changed: it was never even created.
    assert!(!p.cache().exists());
}

#[test]
fn set_values_are_checked_like_file_values() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let out = p.pipe(&["run", "p.toml", "--set", "stage.corrupt.fraction=\"lots\""]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--set stage.corrupt.fraction=\"lots\":1:24: `stage.corrupt.fraction`: expected a number"), "{stderr}");
    let out = p.pipe(&["run", "p.toml", "--set", "novalue"]);
    assert_eq!(out.status.code(), Some(2));
    let out = p.pipe(&["run", "p.toml", "--only", "corupt"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("did you mean `corrupt`"));
    // A malformed value is an error, not a string; a bare word is a string; a stage the
    // pipeline lacks is named with the nearest one.
    for (set, want) in [
        (
            "stage.corrupt.fraction=0.1.2",
            "`0.1.2` is not a TOML value",
        ),
        (
            "stage.corupt.seed=3",
            "the pipeline has no stage `corupt` (did you mean `corrupt`?); its stages: data, corrupt, count",
        ),
        (
            "stage.corrupt.mode=permutte",
            "`stage.corrupt.mode`: expected one of",
        ),
    ] {
        let out = p.pipe(&["run", "p.toml", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {stderr}");
        assert!(stderr.contains(want), "{set}: {stderr}");
    }
    assert!(!p.cache().exists());
    // A sweep variable no stage uses is named in a warning.
    let out = p.pipe(&["status", "p.toml", "--set", "sweep.extra=[1, 2]"]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "warning: --set sweep.extra=[1, 2]:1:7: `sweep.extra`: no stage uses `${extra}`"
        ),
        "{stderr}"
    );
}

#[test]
fn only_runs_a_stage_and_what_it_needs() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let (code, r) = p.run("p.toml", &["--only", "corrupt"]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "executed"), 5);
    assert_eq!(of_stage(&r, "executed", "count").len(), 0);
}

#[test]
fn bad_data_files_exit_2_and_change_nothing() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    // Wrong magic number: caught while planning, before any work.
    let img = p.path("data/train-images-idx3-ubyte");
    let good = std::fs::read(&img).unwrap();
    let mut bad = good.clone();
    bad[2] = 0x0d;
    std::fs::write(&img, &bad).unwrap();
    let out = p.pipe(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("p.toml:")
            && stderr.contains("train-images-idx3-ubyte")
            && stderr.contains("type code"),
        "{stderr}"
    );
    // Truncated data: found when the data are read; exit 2, no artifact for the data set.
    std::fs::write(&img, &good[..good.len() - 5]).unwrap();
    let out = p.pipe(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
    assert!(p.artifacts().is_empty());
}

#[test]
fn kill_9_leaves_no_partial_artifact_and_the_next_run_completes() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "slow"
[sweep]
i = [1, 2, 3, 4, 5, 6]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "echo start > $PIPE_OUT/f; sleep 0.${i}; echo ${i} >> $PIPE_OUT/f"]
"#,
    );
    let mut child = p
        .command(&["run", "p.toml", "--jobs", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first artifact is stored, then kill mid-run.
    let t0 = Instant::now();
    while p.artifacts().is_empty() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let done_before = p.artifacts().len();
    assert!(
        (1..6).contains(&done_before),
        "killed mid-run, {done_before} done"
    );
    assert_no_partial_artifacts(&p.cache());
    for a in p.artifacts() {
        let f = std::fs::read_to_string(a.join("f")).unwrap();
        assert_eq!(f.lines().count(), 2, "a stored artifact is complete: {f:?}");
    }
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "cached"), done_before);
    assert_eq!(count(&r, "executed"), 6 - done_before);
    assert_no_partial_artifacts(&p.cache());
    assert_eq!(
        std::fs::read_dir(p.cache().join("tmp")).unwrap().count(),
        0,
        "leftover temp dirs are cleaned"
    );
}

#[test]
fn concurrent_runs_compute_each_key_once() {
    let p = Project::new();
    let counter = p.path("computed.txt");
    p.write(
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "conc"
[sweep]
i = [1, 2, 3, 4]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "echo a${{i}} >> {c}; sleep 0.3; echo ok > $PIPE_OUT/out"]
[stage.b]
kind = "exec"
inputs = ["a"]
cmd = ["sh", "-c", "echo b${{i}} >> {c}; sleep 0.1; cat $PIPE_INPUT_A/out > $PIPE_OUT/out"]
"#,
            c = counter.display()
        ),
    );
    let spawn = || {
        p.command(&["run", "p.toml", "--json"])
            .stderr(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn();
    let b = spawn();
    let ra: Json = serde_json::from_slice(&a.wait_with_output().unwrap().stdout).unwrap();
    let rb: Json = serde_json::from_slice(&b.wait_with_output().unwrap().stdout).unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&counter)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        ["a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4"],
        "each key computed exactly once"
    );
    assert_eq!(count(&ra, "executed") + count(&rb, "executed"), 8);
    assert_eq!(count(&ra, "failed") + count(&rb, "failed"), 0);
    assert_eq!(p.artifacts().len(), 8);
    assert_no_partial_artifacts(&p.cache());
}

#[test]
fn exec_gets_inputs_output_and_point_in_its_environment() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "env"
[sweep]
lr = [0.5]
[stage.first]
kind = "exec"
cmd = ["sh", "-c", "echo hello > $PIPE_OUT/msg"]
[stage.second]
kind = "exec"
inputs = { upstream-one = "first" }
cmd = ["sh", "-c", "cat $PIPE_INPUT_UPSTREAM_ONE/msg > $PIPE_OUT/got; echo $1 $PIPE_POINT $GREETING > $PIPE_OUT/args", "x", "lr=${lr}"]
env = { GREETING = "hi" }
"#,
    );
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let second = p
        .status("p.toml", &[])
        .into_iter()
        .find(|s| s["stage"] == "second")
        .unwrap();
    let dir = p
        .cache()
        .join("artifacts")
        .join(second["key"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(dir.join("got")).unwrap(), "hello\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("args")).unwrap(),
        "lr=0.5 {\"lr\":0.5} hi\n"
    );
    let m: Json =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(m["kind"], "exec");
    assert_eq!(m["stage"], "second");
    assert_eq!(m["files"].as_array().unwrap().len(), 2);
    assert_eq!(m["files"][0]["path"], "args");
    assert_eq!(
        m["files"][0]["blake3"],
        blake3::hash(b"lr=0.5 {\"lr\":0.5} hi\n")
            .to_hex()
            .to_string()
    );
    assert_eq!(m["files"][0]["size"], 21);
}

#[test]
fn verify_rehashes_and_fix_removes_damaged_artifacts() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let out = p.pipe(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checked"], 8);
    assert_eq!(v["damaged"].as_array().unwrap().len(), 0);
    // Flip one byte of a labels file (same size: only a rehash sees it).
    let corrupt_key = p
        .status("p.toml", &[])
        .into_iter()
        .find(|s| s["stage"] == "corrupt")
        .unwrap()["key"]
        .clone();
    let f = p
        .cache()
        .join("artifacts")
        .join(corrupt_key.as_str().unwrap())
        .join("labels.parquet");
    let mut bytes = std::fs::read(&f).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&f, &bytes).unwrap();
    let out = p.pipe(&["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["damaged"][0]["key"], corrupt_key);
    assert!(
        v["damaged"][0]["problem"]
            .as_str()
            .unwrap()
            .contains("labels.parquet")
    );
    assert_eq!(p.pipe(&["verify", "--fix"]).status.code(), Some(0));
    assert_eq!(p.artifacts().len(), 7);
    // The next run recomputes exactly the removed one.
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "executed"), 1);
    assert_eq!(r["executed"][0]["key"], corrupt_key);
    assert_eq!(std::fs::read(&f).unwrap().len(), bytes.len());
}

#[test]
fn dag_renders_every_instance_and_edge() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let text = String::from_utf8(p.pipe(&["dag", "p.toml"]).stdout).unwrap();
    assert_eq!(text.lines().count(), 9);
    assert!(text.contains("corrupt[noise=0.5,seed=2] <- data"), "{text}");
    let dot = String::from_utf8(p.pipe(&["dag", "p.toml", "--format", "dot"]).stdout).unwrap();
    assert_eq!(dot.matches(" -> ").count(), 8);
    let mermaid =
        String::from_utf8(p.pipe(&["dag", "p.toml", "--format", "mermaid"]).stdout).unwrap();
    assert!(mermaid.starts_with("flowchart LR"));
    assert_eq!(mermaid.matches(" --> ").count(), 8);
}

#[test]
fn include_and_exclude_shape_the_grid() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "grid"
[sweep]
noise = [0.0, 0.4]
seed = [1, 2]
exclude = [{ noise = 0.0, seed = 2 }]
include = [{ noise = 0.8, seed = 1 }]
[stage.a]
kind = "exec"
cmd = ["echo", "${noise}", "${seed}"]
"#,
    );
    let (_, r) = p.run("p.toml", &["--dry-run"]);
    let mut pts: Vec<String> = r["would_run"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["point"].to_string())
        .collect();
    pts.sort();
    assert_eq!(
        pts,
        [
            r#"{"noise":0.0,"seed":1}"#,
            r#"{"noise":0.4,"seed":1}"#,
            r#"{"noise":0.4,"seed":2}"#,
            r#"{"noise":0.8,"seed":1}"#
        ]
    );
}

#[test]
fn a_large_stage_is_planned_on_every_core_as_each_instance_is_alone() {
    // 300 instances (planned in parallel) of an exec stage whose command and threads come
    // from the point.
    let p = Project::new();
    let values: Vec<String> = (1..=300).map(|v| v.to_string()).collect();
    p.write(
        "p.toml",
        &format!(
            "[pipeline]\nname = \"wide\"\n[sweep]\nv = [{}]\n[stage.a]\nkind = \"exec\"\n\
             cmd = [\"echo\", \"${{v}}\"]\nthreads = \"${{v}}\"\n",
            values.join(", ")
        ),
    );
    let dag = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["dag", "p.toml"];
        args.extend_from_slice(extra);
        let out = p.pipe(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    let all = dag(&[]);
    assert_eq!(all.len(), 300);
    // In sweep order, and each key what a plan of that point alone (sequential) gives.
    for (i, v) in [1, 2, 64, 65, 150, 299, 300].into_iter().enumerate() {
        let line = &all[v - 1];
        assert!(line.ends_with(&format!(" a[v={v}]")), "{i}: {line}");
        let alone = dag(&["--set", &format!("sweep.v=[{v}]")]);
        assert_eq!(alone, vec![line.clone()], "v = {v}");
    }
    let keys: std::collections::HashSet<&str> =
        all.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(keys.len(), 300);
    // Two points fail the kind's check: the error is the first one in sweep order.
    let mut bad = values.clone();
    bad[150] = "0".into();
    bad[250] = "-1".into();
    let set = format!("sweep.v=[{}]", bad.join(","));
    let out = p.pipe(&["dag", "p.toml", "--set", &set]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`stage.a.threads`: must be at least 1 (at v=0)"),
        "{err}"
    );
}
