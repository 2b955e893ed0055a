//! A day with pipe, through the binary: runs recorded and reused, gc that keeps recent
//! and live work, status reasons against the cache, selectors, force and rm, the results
//! table, diff, the cache found from the pipeline file, exec tables and files, the live
//! view on a terminal.

use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;

/// Runs `pipe ARGS` and returns (exit code, stdout, stderr).
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

/// Two exec stages over `noise`: `a` writes the noise, `b` copies it.
const TWO: &str = r#"
[pipeline]
name = "two"
[sweep]
noise = [0.1, 0.2]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "echo ${noise} > $PIPE_OUT/x.txt"]
[stage.b]
kind = "exec"
inputs = { a = "a" }
cmd = ["sh", "-c", "cat $PIPE_INPUT_A/x.txt > $PIPE_OUT/y.txt"]
"#;

#[test]
fn runs_are_recorded_listed_and_reused_by_status_and_report() {
    let p = Project::new();
    p.write("p.toml", TWO);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let (code, r) = p.run("p.toml", &["--set", "sweep.noise=[0.3]"]);
    assert_eq!(code, 0);
    let id = r["run"].as_str().unwrap().to_string();
    let runs = json(&p, &["runs", "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // Newest first, with its overrides, counts, state and the keys it used.
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(
        runs[0]["overrides"],
        serde_json::json!(["sweep.noise=[0.3]"])
    );
    assert_eq!(runs[0]["counts"]["executed"], 2);
    assert_eq!(runs[0]["counts"]["planned"], 2);
    assert_eq!(runs[0]["state"], "ok");
    assert_eq!(runs[0]["keys"], 2);
    assert_eq!(runs[1]["counts"]["executed"], 4);
    assert_eq!(runs[0]["file_changed"], false);
    // Given only the file, status uses its last run's overrides and says so.
    let (code, out, err) = pipe(&p, &["status", "p.toml"]);
    assert_eq!(code, 0);
    assert!(
        err.contains(&format!("using the overrides of run {id}")),
        "{err}"
    );
    assert!(out.contains("2 instances: 2 cached"), "{out}");
    // --run none: the file alone; --run with --set is refused.
    let (_, out, _) = pipe(&p, &["status", "p.toml", "--run", "none"]);
    assert!(out.contains("4 instances: 4 cached"), "{out}");
    let (code, ..) = pipe(
        &p,
        &["status", "--run", "last", "--set", "sweep.noise=[0.1]"],
    );
    assert_eq!(code, 2);
    // --run with a prefix and without the file.
    let (_, out, _) = pipe(&p, &["status", "--run", &id[..19]]);
    assert!(out.contains("2 instances: 2 cached"), "{out}");
    // The report names the run and its overrides.
    let (code, _, err) = pipe(&p, &["report", "p.toml", "--out", "rep"]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(p.path("rep/index.html")).unwrap();
    assert!(html.contains(&id), "the report names run {id}");
    assert!(html.contains("sweep.noise=[0.3]"));
    // The text listing, through head.
    let (_, out, _) = pipe(&p, &["runs", "-n", "1"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.contains(&id) && out.contains("--set 'sweep.noise=[0.3]'"),
        "{out}"
    );
    // Editing the file shows in the listing.
    p.write("p.toml", &TWO.replace("0.2]", "0.25]"));
    assert_eq!(json(&p, &["runs", "--json"])[0]["file_changed"], true);
}

#[test]
fn gc_keeps_recent_runs_work_whatever_file_or_overrides_and_lists_what_it_removes() {
    let p = Project::new();
    p.write("p.toml", TWO);
    p.write(
        "other.toml",
        &TWO.replace("name = \"two\"", "name = \"other\"")
            .replace("echo", "printf '%s\\n'")
            .replace("y.txt", "z.txt"),
    );
    assert_eq!(p.run("p.toml", &[]).0, 0);
    assert_eq!(p.run("p.toml", &["--set", "sweep.noise=[0.6]"]).0, 0);
    assert_eq!(p.run("other.toml", &[]).0, 0);
    let all = p.artifacts().len();
    assert_eq!(all, 4 + 2 + 4);
    // The trap of issue reports: gc of one file must not remove the other runs' work.
    let r = json(&p, &["gc", "p.toml", "--json"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 0, "{r}");
    assert_eq!(r["runs_kept"], 3);
    assert_eq!(p.artifacts().len(), all);
    // --keep-days 0 removes what neither p.toml (as written, and with its last run's
    // overrides) nor a live run uses: the other pipeline's 4. The dry run lists
    // stage[point], pipeline, age and size.
    let (code, out, _) = pipe(&p, &["gc", "p.toml", "--keep-days", "0", "--dry-run"]);
    assert_eq!(code, 0);
    assert!(out.contains("would remove a[noise=0.1]"), "{out}");
    assert!(!out.contains("[noise=0.6]"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("would remove") && l.contains(" other "))
            .count(),
        4,
        "{out}"
    );
    assert!(out.contains(" min ") && out.contains(" B "), "{out}");
    assert!(out.contains("would free 4 artifacts"), "{out}");
    // `--keep-days 0` keeps what no run used.
    assert!(
        out.contains("kept what 0 runs of the last 0 days used"),
        "{out}"
    );
    assert_eq!(p.artifacts().len(), all, "a dry run removes nothing");
    // Ages that are not a number of days are refused, and nothing changes.
    for bad in ["-1", "nan", "inf"] {
        let (code, _, err) = pipe(&p, &["gc", &format!("--keep-days={bad}")]);
        assert_eq!(code, 2, "--keep-days {bad}: {err}");
    }
    assert_eq!(p.artifacts().len(), all);
    let r = json(&p, &["gc", "p.toml", "--keep-days", "0", "--json"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 4);
    let stages: Vec<&str> = r["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["pipeline"].as_str().unwrap())
        .collect();
    assert_eq!(stages.iter().filter(|s| **s == "other").count(), 4);
    let (code, r) = p.run("p.toml", &["--run", "none"]);
    assert_eq!(code, 0);
    assert_eq!(
        r["executed"].as_array().unwrap().len(),
        0,
        "p.toml's work was kept"
    );
}

#[test]
fn gc_never_removes_what_a_live_run_reads() {
    let p = Project::new();
    // The run reads its dataset input 3 s after it starts.
    p.write(
        "a.toml",
        r#"
[pipeline]
name = "a"
[stage.data]
kind = "dataset"
source = "idx"
path = "data"
train_size = 40
test_size = 10
[stage.slow]
kind = "exec"
inputs = { d = "data" }
cmd = ["sh", "-c", "sleep 3; cp $PIPE_INPUT_D/train.parquet $PIPE_OUT/"]
"#,
    );
    p.write("b.toml", TWO);
    assert_eq!(p.run("a.toml", &["--only", "data"]).0, 0);
    let mut run = p.command(&["run", "a.toml", "--json"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let r = json(&p, &["gc", "b.toml", "--keep-days", "0", "--json"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 0, "{r}");
    let status = run.wait().unwrap();
    assert!(status.success(), "the run lost its input to gc");
    // Once it has ended, only what a pipeline reaches is kept.
    let r = json(&p, &["gc", "b.toml", "--keep-days", "0", "--json"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r}");
}

#[test]
fn status_reasons_compare_with_the_cache_and_show_running_and_failed() {
    let p = Project::new();
    p.write("p.toml", TWO);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    // A run with another command for b, then b[noise=0.1]'s first artifact deleted by hand.
    assert_eq!(
        p.run("p.toml", &["--set", "stage.b.env={ X = \"1\" }"]).0,
        0
    );
    let first = p.status("p.toml", &["--run", "none"]);
    let b1 = first
        .iter()
        .find(|s| s["stage"] == "b" && s["point"]["noise"] == 0.1)
        .unwrap();
    assert_eq!(b1["state"], "cached");
    let key = b1["key"].as_str().unwrap();
    let (code, out, _) = pipe(&p, &["rm", key]);
    assert_eq!(code, 0, "{out}");
    let now = p.status("p.toml", &["--run", "none"]);
    let b1 = now
        .iter()
        .find(|s| s["stage"] == "b" && s["point"]["noise"] == 0.1)
        .unwrap();
    assert_eq!(b1["state"], "missing");
    assert_eq!(
        b1["reason"],
        "deleted from the cache (it was computed before)"
    );
    // A change compares with what is cached for that stage and point, not the last run.
    p.write(
        "p.toml",
        &TWO.replace("> $PIPE_OUT/y.txt", ">> $PIPE_OUT/y.txt"),
    );
    let st = p.status("p.toml", &["--run", "none"]);
    let b2 = st
        .iter()
        .find(|s| s["stage"] == "b" && s["point"]["noise"] == 0.2)
        .unwrap();
    assert_eq!(b2["state"], "stale");
    let reason = b2["reason"].as_str().unwrap();
    assert!(reason.starts_with("param cmd changed "), "{reason}");
    assert!(
        !reason.contains("env"),
        "compared with the cached artifact, not the last run: {reason}"
    );
    // A failure is `failed` with its last line; a run in progress is `running`.
    p.write(
        "f.toml",
        r#"
[pipeline]
name = "f"
[stage.bad]
kind = "exec"
cmd = ["sh", "-c", "printf 'ValueError: %s\\n' 'bad shape' >&2; exit 3"]
[stage.slow]
kind = "exec"
cmd = ["sh", "-c", "echo 'epoch 1/3 loss 0.5'; sleep 3"]
"#,
    );
    let (code, _, err) = pipe(&p, &["run", "f.toml", "--only", "bad"]);
    assert_eq!(code, 1);
    // The failure's log lines come inline.
    assert!(err.contains("  | ValueError: bad shape"), "{err}");
    let mut run = p
        .command(&["run", "f.toml", "--only", "slow"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let st = p.status("f.toml", &[]);
    let _ = run.wait();
    let bad = st.iter().find(|s| s["stage"] == "bad").unwrap();
    assert_eq!(bad["state"], "failed");
    assert_eq!(
        bad["reason"],
        "last run failed: command `sh -c printf 'ValueError: %s\\n' 'bad shape' >&2; exit 3` exited with status 3: ValueError: bad shape"
    );
    let slow = st.iter().find(|s| s["stage"] == "slow").unwrap();
    assert_eq!(slow["state"], "running", "{slow}");
    let reason = slow["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("pid ") && reason.ends_with(": epoch 1/3 loss 0.5"),
        "{reason}"
    );
}

#[test]
fn selectors_force_rm_and_point() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    // --point runs one point and what it needs: data, corrupt and count there.
    let (code, r) = p.run("p.toml", &["--point", "noise=0.5,seed=2"]);
    assert_eq!(code, 0);
    assert_eq!(r["executed"].as_array().unwrap().len(), 3, "{r}");
    let (code, _, err) = pipe(&p, &["run", "p.toml", "--point", "noise=0.7"]);
    assert_eq!(code, 2);
    assert!(err.contains("matches no instance"), "{err}");
    let (code, _, err) = pipe(&p, &["run", "p.toml", "--point", "nois=0.5"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `noise`"), "{err}");
    assert_eq!(p.run("p.toml", &[]).0, 0);
    // status --point.
    let st = p.status("p.toml", &["--point", "seed=1"]);
    assert_eq!(st.len(), 1 + 2 + 2, "data and the seed-1 corrupt and count");
    // show and log take stage[point], with or without the file.
    let (code, out, _) = pipe(&p, &["show", "corrupt[noise=0.5,seed=2]"]);
    assert_eq!(code, 0);
    assert!(out.contains("point noise=0.5,seed=2"), "{out}");
    let (code, out, _) = pipe(
        &p,
        &["show", "corrupt", "p.toml", "--point", "noise=0.0,seed=1"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("point noise=0.0,seed=1"), "{out}");
    let (code, _, err) = pipe(&p, &["show", "corrupt[noise=0.5]"]);
    assert_eq!(code, 2);
    assert!(err.contains("names 2 instances"), "{err}");
    let (code, out, _) = pipe(&p, &["log", "count[noise=0.5,seed=1]"]);
    assert_eq!(code, 0);
    assert!(out.contains("stage count (exec)"), "{out}");
    // --force computes one instance again; nothing else runs (its output is the same bytes).
    let (code, r) = p.run("p.toml", &["--force", "corrupt[noise=0.5,seed=1]"]);
    assert_eq!(code, 0);
    let executed: Vec<String> = r["executed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}{}", i["stage"].as_str().unwrap(), i["point"]))
        .collect();
    assert_eq!(executed, ["corrupt{\"noise\":0.5,\"seed\":1}"]);
    // rm removes every instance a selector names.
    let (code, out, _) = pipe(&p, &["rm", "count[seed=2]", "p.toml"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed 2 artifacts of 2 instances"), "{out}");
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    assert_eq!(of_stage(&r, "executed", "count").len(), 2);
}

#[test]
fn diff_shows_parameters_and_final_metrics_side_by_side() {
    let p = Project::new();
    p.write("p.toml", TINY_TRAIN);
    assert_eq!(p.run("p.toml", &["--only", "train"]).0, 0);
    let (code, out, err) = pipe(&p, &["diff", "train[noise=0.0]", "train[noise=0.5]"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("point"), "{out}");
    assert!(
        out.contains("input labels") || out.contains("input corrupt"),
        "{out}"
    );
    assert!(out.contains("final_test_acc"), "{out}");
    let d = json(
        &p,
        &["diff", "train[noise=0.0]", "train[noise=0.5]", "--json"],
    );
    let fin = d["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["what"] == "final_test_acc")
        .unwrap();
    // Test accuracies of 20 test examples: multiples of 1/20.
    for side in ["a", "b"] {
        let acc = fin[side].as_f64().unwrap();
        assert!((acc * 20.0 - (acc * 20.0).round()).abs() < 1e-9, "{acc}");
    }
    // Two runs: settings and per-instance final accuracies.
    assert_eq!(
        p.run(
            "p.toml",
            &[
                "--only",
                "train",
                "--set",
                "stage.train.epochs=1",
                "--set",
                "stage.train.checkpoints=[0,1]"
            ]
        )
        .0,
        0
    );
    let (code, out, err) = pipe(&p, &["diff", "run:20", "run:last"]);
    assert_eq!(code, 2, "run:20 is ambiguous: {out}");
    assert!(err.contains("names 2 runs"), "{err}");
    let runs = json(&p, &["runs", "--json"]);
    let (a, b) = (
        runs[1]["id"].as_str().unwrap(),
        runs[0]["id"].as_str().unwrap(),
    );
    let d = json(
        &p,
        &["diff", &format!("run:{a}"), &format!("run:{b}"), "--json"],
    );
    let over = d["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["what"] == "overrides")
        .unwrap();
    assert_eq!(over["a"], "-");
    assert!(over["b"].as_str().unwrap().contains("stage.train.epochs=1"));
    // Every final metric of each train instance, both runs' values side by side.
    let m = d["metrics"].as_array().unwrap();
    let test_acc = m
        .iter()
        .filter(|l| l["what"].as_str().unwrap().starts_with("final_test_acc "))
        .count();
    assert_eq!(test_acc, 2, "{d}");
    assert!(
        m.iter().all(|l| l["a"].is_number() && l["b"].is_number()),
        "{d}"
    );
}

#[test]
fn table_lists_train_results_filters_sorts_and_prints_csv_and_json() {
    let p = Project::new();
    p.write("p.toml", TINY_TRAIN);
    assert_eq!(p.run("p.toml", &["--only", "train"]).0, 0);
    let rows = json(&p, &["table", "p.toml", "--json"]);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    for r in rows {
        assert_eq!(r["epochs"], 2);
        assert_eq!(r["state"], "cached");
        let (fin, best) = (
            r["final_test_acc"].as_f64().unwrap(),
            r["best_test_acc"].as_f64().unwrap(),
        );
        assert!(best >= fin && (0.0..=1.0).contains(&fin));
    }
    // No corrupted examples at noise 0: nothing to fit.
    assert_eq!(rows[0]["corrupted_fit"], Json::Null);
    assert!(rows[1]["corrupted_fit"].as_f64().is_some());
    let rows = json(&p, &["table", "p.toml", "--json", "--where", "noise=0.5"]);
    assert_eq!(rows.as_array().unwrap().len(), 1);
    let (code, out, _) = pipe(&p, &["table", "p.toml", "--csv", "--sort", "-noise"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "stage,noise,final_test_acc,best_test_acc,best_epoch,corrupted_fit,clean_acc,epochs,state"
    );
    assert!(lines[1].starts_with("train,0.5,"), "{out}");
    assert!(
        lines[2].starts_with("train,0.0,") || lines[2].starts_with("train,0,"),
        "{out}"
    );
    let (code, _, err) = pipe(&p, &["table", "p.toml", "--sort", "acc"]);
    assert_eq!(code, 2);
    assert!(err.contains("final_test_acc"), "{err}");
}

#[test]
fn the_cache_is_found_from_the_pipeline_file_wherever_commands_run() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("proj/.git")).unwrap();
    p.write("proj/pipelines/p.toml", TWO);
    let run_in = |dir: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(args)
            .current_dir(p.path(dir))
            .env_remove("PIPE_CACHE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run_in("proj/pipelines", &["run", "p.toml", "-q"]);
    // The cache is the project's (the folder with .git), wherever the run started.
    assert!(p.path("proj/cache/artifacts").is_dir());
    assert!(run_in("proj", &["status", "pipelines/p.toml"]).contains("4 cached"));
    assert!(run_in(".", &["status", "proj/pipelines/p.toml"]).contains("4 cached"));
    assert!(run_in("proj/pipelines", &["status", "p.toml"]).contains("4 cached"));
    // Commands without a file find it from the working folder.
    assert_eq!(
        run_in("proj/pipelines", &["ls", "--json"])
            .matches("\"key\"")
            .count(),
        4
    );
    // `[cache] dir` in the file, relative to it.
    p.write(
        "proj/pipelines/q.toml",
        &format!(
            "[cache]\ndir = \"../elsewhere\"\n{}",
            TWO.replace("\"two\"", "\"q\"")
        ),
    );
    run_in(".", &["run", "proj/pipelines/q.toml", "-q"]);
    assert_eq!(
        std::fs::read_dir(p.path("proj/elsewhere/artifacts"))
            .unwrap()
            .count(),
        4
    );
}

#[test]
fn exec_tables_must_be_written_are_not_in_the_key_and_files_take_globs_and_folders() {
    let p = Project::new();
    let stage = |tables: &str, files: &str| {
        format!(
            "[pipeline]\nname = \"t\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo hi > $PIPE_OUT/out.txt\"]\ntables = {tables}\nfiles = {files}\n"
        )
    };
    p.write("p.toml", &stage("[\"gapp\"]", "[]"));
    let (code, _, err) = pipe(&p, &["run", "p.toml"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("declared table(s) gapp but wrote no gapp.parquet"),
        "{err}"
    );
    assert!(p.artifacts().is_empty(), "nothing cached");
    // Declaring a table does not change the key.
    let key = p.status("p.toml", &[])[0]["key"].clone();
    p.write("p.toml", &stage("[]", "[]"));
    assert_eq!(p.status("p.toml", &[])[0]["key"], key);
    // Names that would become paths are refused where they are written.
    p.write("p.toml", &stage("[\"/../../x\"]", "[]"));
    let (code, _, err) = pipe(&p, &["status", "p.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("p.toml:6:") && err.contains("is not a table name"),
        "{err}"
    );
    p.write(
        "p.toml",
        &(stage("[]", "[]") + "env = { PIPE_OUT = \"/tmp\" }\n"),
    );
    let (code, _, err) = pipe(&p, &["status", "p.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("PIPE_OUT is set by pipe itself"), "{err}");
    // Globs and folders: every file they hold goes into the key, by name.
    p.write("src/a.py", "1");
    p.write("src/sub/b.py", "2");
    p.write("src/notes.txt", "3");
    p.write("p.toml", &stage("[]", "[\"src/**/*.py\"]"));
    let k1 = p.status("p.toml", &[])[0]["key"].clone();
    p.write("src/notes.txt", "changed");
    assert_eq!(
        p.status("p.toml", &[])[0]["key"],
        k1,
        "not matched by the glob"
    );
    p.write("src/sub/b.py", "changed");
    assert_ne!(p.status("p.toml", &[])[0]["key"], k1);
    p.write("p.toml", &stage("[]", "[\"src\"]"));
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let k2 = p.status("p.toml", &[])[0]["key"].clone();
    p.write("src/notes.txt", "again");
    let st = p.status("p.toml", &[]);
    assert_ne!(st[0]["key"], k2);
    assert_eq!(st[0]["reason"], "file src/notes.txt changed");
    p.write("p.toml", &stage("[]", "[\"nothing/*.py\"]"));
    let (code, _, err) = pipe(&p, &["status", "p.toml"]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing/*.py"), "{err}");
}

#[test]
fn a_terminal_shows_the_running_instances_last_log_line() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "live"
[stage.fit]
kind = "exec"
cmd = ["sh", "-c", "for e in 1 2 3; do echo \"epoch $e/3  lr 0.1  train loss 0.$e acc 0.5  test loss 0.9 acc 0.$e  0.5s\"; sleep 0.8; done"]
"#,
    );
    let pipe_bin = env!("CARGO_BIN_EXE_pipe");
    // `script` gives the run a pseudo-terminal, as an interactive shell would.
    let out = std::process::Command::new("script")
        .args(["-qfec", &format!("{pipe_bin} run p.toml"), "/dev/null"])
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache())
        .env("COLUMNS", "160")
        .output()
        .expect("script (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("epoch 2/3 loss 0.2 test acc 0.2"),
        "the live line shows the epoch, loss and test accuracy: {text}"
    );
}

#[test]
fn report_plots_the_tables_exec_stages_write() {
    let p = Project::new();
    let pipeline = r#"
[pipeline]
name = "gaps"
[sweep]
noise = [0.0, 0.4]
seed = [1, 2]
[stage.fit]
kind = "exec"
cmd = ["python3", "-c", "import polars as pl, os; e=list(range(1,6)); pl.DataFrame({'epoch': e, 'gap': [${noise}*x + 0.01*${seed} for x in e]}).write_parquet(os.environ['PIPE_OUT'] + '/gap.parquet')"]
tables = ["gap"]
[[report.plot]]
table = "gap"
x = "epoch"
y = "gap"
series = "noise"
title = "Generalization gap by noise"
"#;
    p.write("p.toml", pipeline);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let (code, _, err) = pipe(&p, &["report", "p.toml", "--out", "rep"]);
    assert_eq!(code, 0, "{err}");
    let html = std::fs::read_to_string(p.path("rep/index.html")).unwrap();
    assert!(html.contains("The pipeline's plots") && html.contains("Generalization gap by noise"));
    let csv = std::fs::read_to_string(p.path("rep/figures/plot-1-Generalization-gap-by-noise.csv"))
        .unwrap();
    // gap = noise * epoch + 0.01 * seed: the mean over seeds 1 and 2 adds 0.015, and
    // their sample sd is 0.01 / sqrt(2).
    let rows: Vec<Vec<&str>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 10);
    for r in &rows {
        let noise: f64 = r[1].trim_start_matches("noise = ").parse().unwrap();
        let x: f64 = r[2].parse().unwrap();
        let (mean, sd): (f64, f64) = (r[3].parse().unwrap(), r[4].parse().unwrap());
        assert!((mean - (noise * x + 0.015)).abs() < 1e-12, "{r:?}");
        assert!((sd - 0.01 / 2f64.sqrt()).abs() < 1e-12, "{r:?}");
        assert_eq!(r[5], "2");
    }
    // A misspelt key or column is an error that names the file and line.
    p.write("p.toml", &pipeline.replace("series = ", "serie = "));
    let (code, _, err) = pipe(&p, &["status", "p.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("p.toml:15:1") && err.contains("did you mean `series`"),
        "{err}"
    );
    p.write("p.toml", &pipeline.replace("y = \"gap\"", "y = \"gapp\""));
    let (code, _, err) = pipe(&p, &["report", "p.toml", "--out", "rep"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("report.plot[0]") && err.contains("no column `gapp` (columns: epoch, gap)"),
        "{err}"
    );
}
