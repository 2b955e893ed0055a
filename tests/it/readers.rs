//! What a running instance reads stays what its key says: its inputs cannot be removed,
//! recomputed or rewritten under it (by another process or by the stage itself), the files
//! it declares cannot change while it runs, and what it is told of the sweep point is in
//! its key. Every command here runs under `timeout`, so a hang fails the test.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::common::*;

/// Runs `pipe ARGS` under `timeout 60`; a hang shows as exit code 124.
fn pipe_t(p: &Project, args: &[&str]) -> Output {
    let mut c = std::process::Command::new("timeout");
    c.arg("60")
        .arg(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache());
    c.output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `pipe run FILE --json ARGS`: exit code, report, and stderr (where failures are told).
fn run_told(p: &Project, file: &str, extra: &[&str]) -> (i32, Json, String) {
    let mut args = vec!["run", file, "--json"];
    args.extend_from_slice(extra);
    let out = pipe_t(p, &args);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    (
        code(&out),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The artifact folder of `stage[point]` per `status --json`.
fn artifact_of(p: &Project, file: &str, stage: &str, point: &Json) -> std::path::PathBuf {
    let st = p.status(file, &[]);
    let s = st
        .iter()
        .find(|s| s["stage"] == stage && &s["point"] == point)
        .unwrap_or_else(|| panic!("no {stage} {point} in {st:?}"));
    p.cache().join("artifacts").join(s["key"].as_str().unwrap())
}

#[test]
fn the_point_a_command_is_told_is_the_one_its_key_holds() {
    let p = Project::new();
    // `a` depends on `seed` but writes the same bytes for every seed: `summary` of seed 2
    // has the key of `summary` of seed 1 (early cutoff), so it must not be told the seed.
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "cutoff-point"
[sweep]
seed = [1, 2]
width = [8]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "echo same > $PIPE_OUT/a # seed ${seed}"]
[stage.summary]
kind = "exec"
inputs = { a = "a" }
cmd = ["sh", "-c", "printf '%s' \"$PIPE_POINT\" > $PIPE_OUT/point.json"]
[stage.own]
kind = "exec"
inputs = { a = "a" }
cmd = ["sh", "-c", "printf '%s' \"$PIPE_POINT\" > $PIPE_OUT/point.json", "x", "${width}"]
"#,
    );
    let (c, r) = p.run("p.toml", &["--jobs", "1"]);
    assert_eq!(c, 0, "{r}");
    for seed in [1, 2] {
        let point = serde_json::json!({ "seed": seed });
        let summary = artifact_of(&p, "p.toml", "summary", &point);
        assert_eq!(
            std::fs::read_to_string(summary.join("point.json")).unwrap(),
            "{}",
            "summary references no variable: it is told none"
        );
        let point = serde_json::json!({ "seed": seed, "width": 8 });
        let own = artifact_of(&p, "p.toml", "own", &point);
        assert_eq!(
            std::fs::read_to_string(own.join("point.json")).unwrap(),
            r#"{"width":8}"#,
            "own references width (in its key), not seed"
        );
    }
}

/// A pipeline whose `count` stage waits for `go` to exist (up to 20 s), then counts its
/// input's files: a reader held open as long as a test needs.
const COUNTING: &str = r#"
[pipeline]
name = "count"
[stage.data]
kind = "exec"
cmd = ["sh", "-c", "for i in 1 2 3 4 5; do echo $i > $PIPE_OUT/f$i; done"]
[stage.count]
kind = "exec"
inputs = { d = "data" }
cmd = ["sh", "-c", "touch started; n=0; while [ ! -e go ] && [ $n -lt 200 ]; do sleep 0.1; n=$((n+1)); done; (ls $PIPE_INPUT_D 2>/dev/null || true) | grep -c '^f' > $PIPE_OUT/n || true"]
"#;

/// Starts `pipe run count.toml` in the background and waits until `count` runs.
fn start_counting(p: &Project) -> std::process::Child {
    p.write("count.toml", COUNTING);
    let _ = std::fs::remove_file(p.path("started"));
    let _ = std::fs::remove_file(p.path("go"));
    let child = p
        .command(&["run", "count.toml", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !p.path("started").exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "count never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Lets `count` finish; returns the run's exit code, report and stderr.
fn finish_counting(p: &Project, child: std::process::Child) -> (i32, Json, String) {
    std::fs::write(p.path("go"), "").unwrap();
    let out = child.wait_with_output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    (
        out.status.code().unwrap_or(-1),
        report,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_input_is_neither_removed_nor_recomputed_under_a_running_reader() {
    let p = Project::new();
    // Another pipeline on the same cache, for `gc` to keep.
    p.write(
        "other.toml",
        "[pipeline]\nname = \"other\"\n[stage.o]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo o > $PIPE_OUT/o\"]\n",
    );
    assert_eq!(p.run("other.toml", &[]).0, 0);
    p.write("count.toml", COUNTING);
    assert_eq!(p.run("count.toml", &["--only", "data"]).0, 0);
    let data = artifact_of(&p, "count.toml", "data", &serde_json::json!({}));
    let child = start_counting(&p);
    // From a second process, each way of removing `data` while `count` reads it.
    let rm = pipe_t(&p, &["rm", "data", "count.toml"]);
    assert_eq!(code(&rm), 1, "{}", text(&rm));
    assert!(text(&rm).contains("in use by pid"), "{}", text(&rm));
    let force = pipe_t(
        &p,
        &["run", "count.toml", "--force", "data", "--only", "data"],
    );
    assert_eq!(code(&force), 1, "{}", text(&force));
    assert!(
        text(&force).contains("is in use by pid"),
        "{}",
        text(&force)
    );
    let gc = pipe_t(&p, &["gc", "other.toml", "--keep-days", "0"]);
    assert_eq!(code(&gc), 0, "{}", text(&gc));
    assert!(data.join("f5").is_file(), "data is still there");
    let (c, r, _) = finish_counting(&p, child);
    assert_eq!(c, 0, "{r}");
    let count = artifact_of(&p, "count.toml", "count", &serde_json::json!({}));
    assert_eq!(std::fs::read_to_string(count.join("n")).unwrap(), "5\n");
    // Once nothing reads it, `rm` removes it.
    let rm = pipe_t(&p, &["rm", "data", "count.toml"]);
    assert_eq!(code(&rm), 0, "{}", text(&rm));
    assert!(!data.exists());
}

#[test]
fn an_input_removed_behind_pipes_back_fails_its_reader_instead_of_storing() {
    let p = Project::new();
    p.write("count.toml", COUNTING);
    assert_eq!(p.run("count.toml", &["--only", "data"]).0, 0);
    let data = artifact_of(&p, "count.toml", "data", &serde_json::json!({}));
    let child = start_counting(&p);
    // Not through pipe: nothing can refuse it, but nothing is stored from it either.
    let out = std::process::Command::new("rm")
        .arg("-rf")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success());
    let (c, r, failed) = finish_counting(&p, child);
    assert_eq!(c, 1, "{r}");
    assert!(
        failed.contains("changed while the stage ran") && failed.contains("the folder was removed"),
        "{failed}"
    );
    let st = p.status("count.toml", &[]);
    assert!(st.iter().all(|s| s["state"] != "cached"), "{st:?}");
    // The next run computes both again, and counts right.
    std::fs::write(p.path("go"), "").unwrap();
    let (c, r) = p.run("count.toml", &[]);
    assert_eq!(c, 0, "{r}");
    let count = artifact_of(&p, "count.toml", "count", &serde_json::json!({}));
    assert_eq!(std::fs::read_to_string(count.join("n")).unwrap(), "5\n");
}

#[test]
fn a_declared_file_edited_during_a_run_is_never_stored_under_the_old_key() {
    let p = Project::new();
    p.write("script.sh", "v1\n");
    // Instance i=2 edits the declared file while it runs (once: it removes `edit-me`).
    p.write("edit-me", "");
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "declared"
[sweep]
i = [1, 2, 3]
[stage.s]
kind = "exec"
files = ["script.sh"]
cmd = ["sh", "-c", "if [ ${i} = 2 ] && [ -e edit-me ]; then rm edit-me; echo v2 > script.sh; fi; cat script.sh > $PIPE_OUT/out"]
"#,
    );
    let (c, r, failed) = run_told(&p, "p.toml", &["--jobs", "1"]);
    assert_eq!(c, 1, "{r}");
    assert!(
        failed.contains("declared file script.sh changed while the stage ran"),
        "{failed}"
    );
    assert!(
        failed.contains("declared file script.sh changed after the run planned"),
        "{failed}"
    );
    assert_eq!(count(&r, "executed"), 1, "{r}");
    // Restored: the next run computes the two again from v1, and every artifact says v1.
    p.write("script.sh", "v1\n");
    let (c, r) = p.run("p.toml", &["--jobs", "1"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(count(&r, "executed"), 2, "{r}");
    for i in [1, 2, 3] {
        let dir = artifact_of(&p, "p.toml", "s", &serde_json::json!({ "i": i }));
        assert_eq!(std::fs::read_to_string(dir.join("out")).unwrap(), "v1\n");
    }
}

#[test]
fn a_stage_that_rewrites_its_input_fails_and_the_input_is_computed_again() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "tamper"
[stage.d]
kind = "exec"
cmd = ["sh", "-c", "echo 1 > $PIPE_OUT/d.txt"]
[stage.bad]
kind = "exec"
inputs = { d = "d" }
cmd = ["sh", "-c", "sed -i s/1/2/ $PIPE_INPUT_D/d.txt; cat $PIPE_INPUT_D/d.txt > $PIPE_OUT/x"]
"#,
    );
    let (c, r, failed) = run_told(&p, "p.toml", &[]);
    assert_eq!(c, 1, "{r}");
    assert!(
        failed.contains("input d") && failed.contains("d.txt was replaced"),
        "{failed}"
    );
    assert!(failed.contains("was removed"), "{failed}");
    // Nothing damaged is left to be served: `d` is gone, `verify` is clean.
    let verify = pipe_t(&p, &["verify"]);
    assert_eq!(code(&verify), 0, "{}", text(&verify));
    let st = p.status("p.toml", &[]);
    assert!(st.iter().all(|s| s["state"] != "cached"), "{st:?}");
    // A stage that adds a file to its input fails the same way.
    p.write(
        "p.toml",
        &std::fs::read_to_string(p.path("p.toml")).unwrap().replace(
            "sed -i s/1/2/ $PIPE_INPUT_D/d.txt",
            "touch $PIPE_INPUT_D/extra",
        ),
    );
    let (c, r, failed) = run_told(&p, "p.toml", &[]);
    assert_eq!(c, 1, "{r}");
    assert!(failed.contains("changed while the stage ran"), "{failed}");
    assert_eq!(code(&pipe_t(&p, &["verify"])), 0);
}
