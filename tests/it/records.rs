//! What commands say about instances and runs is true: a selector names an instance (never
//! one of its parts), a narrowed run does not redefine the pipeline for later commands, a
//! detached cluster run's record reaches its end, a failure told once per cause.

use std::process::Output;

use serde_json::Value as Json;

use crate::common::*;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_selector_without_a_file_names_the_instance_not_a_checkpoint() {
    let p = Project::new();
    p.write("p.toml", TINY_TRAIN);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let train = p
        .status("p.toml", &[])
        .into_iter()
        .find(|s| s["stage"] == "train" && s["point"]["noise"] == 0.5)
        .unwrap();
    let key = train["key"].as_str().unwrap().to_string();
    // `show` of the instance: the train artifact itself, whichever checkpoint is newer.
    let out = p.pipe(&["show", "train[noise=0.5]", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["key"], key.as_str());
    assert_eq!(m["kind"], "train");
    assert!(
        !text(&out).contains("artifacts of"),
        "one instance, no note of others: {}",
        text(&out)
    );
    // `log` finds the instance's log (checkpoints have none of their own).
    let out = p.pipe(&["log", "train[noise=0.5]"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains(&key), "{}", text(&out));
    // `rm` of the instance removes it and its checkpoints, and says so once.
    let before = p.artifacts().len();
    let out = p.pipe(&["rm", "train[noise=0.5]"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("removed train"))
            .count(),
        1,
        "{}",
        text(&out)
    );
    // The train artifact and its 3 checkpoints.
    assert_eq!(p.artifacts().len(), before - 4);
}

#[test]
fn one_traceback_is_printed_once_with_the_instances_that_failed_the_same_way() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "same-bug"
[sweep]
seed = [1, 2, 3, 4]
[stage.s]
kind = "exec"
cmd = ["sh", "-c", "echo 'Traceback (most recent call last):'; echo '  File fit.py, line 3'; echo 'KeyError: width' >&2; exit 1", "x", "${seed}"]
"#,
    );
    let out = p.pipe(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("  | KeyError: width").count(), 1, "{err}");
    assert_eq!(err.matches("failed: s[seed=").count(), 4, "{err}");
    assert_eq!(
        err.matches("(its log ends as s[seed=1]'s above)").count(),
        3,
        "{err}"
    );
    assert!(
        err.contains("4 instances failed the same way: s[seed=1], s[seed=2], s[seed=3], s[seed=4]"),
        "{err}"
    );
}

#[test]
fn a_narrowed_run_does_not_redefine_the_file_for_later_commands() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "narrowed"
[sweep]
n = [1, 2, 3]
[stage.s]
kind = "exec"
cmd = ["sh", "-c", "echo ${n} $GREETING > $PIPE_OUT/o"]
env = { GREETING = "hi" }
"#,
    );
    assert_eq!(p.run("p.toml", &[]).0, 0);
    // A one-off variant of one point.
    let (c, r) = p.run(
        "p.toml",
        &["--set", "stage.s.env.GREETING=yo", "--point", "n=2"],
    );
    assert_eq!(c, 0, "{r}");
    assert_eq!(count(&r, "executed"), 1, "{r}");
    // Later commands see the file as its last full run ran it: everything cached.
    let out = p.pipe(&["status", "p.toml", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let st: Json = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<&str> = st
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["cached", "cached", "cached"], "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("covered only") && err.contains("n=2") && err.contains("GREETING=yo"),
        "{err}"
    );
    // `runs` shows how the run was narrowed.
    let out = p.pipe(&["runs"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("only") && listing.contains("n=2"),
        "{listing}"
    );
}

#[test]
fn messages_name_the_values_that_exist_and_read_right() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "words"
[sweep]
noise = [0.0, 0.4]
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "echo ${noise} > $PIPE_OUT/a"]
[stage.acts]
kind = "activations"
inputs = ["e"]
epochs = ["final"]
"#,
    );
    // An exec stage, with its article.
    let out = p.pipe(&["status", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "\"e\" is an `exec` stage, which no free input slot of an `activations` stage takes"
        ),
        "{err}"
    );
    // A value the sweep does not have: the values it has.
    p.write(
        "q.toml",
        "[pipeline]\nname = \"q\"\n[sweep]\nnoise = [0.0, 0.4]\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo ${noise} > $PIPE_OUT/a\"]\n",
    );
    let out = p.pipe(&["status", "q.toml", "--point", "noise=0.5"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`noise=0.5` matches no instance of pipeline q: noise is one of 0.0, 0.4"),
        "{err}"
    );
}

#[test]
fn an_instance_pipe_stopped_on_sigterm_is_said_stopped_not_failed() {
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"stop\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"touch started; sleep 30\"]\n",
    );
    let run = p
        .command(&["run", "p.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while !p.path("started").exists() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGTERM);
    }
    let out = run.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("FAILED e"), "{err}");
    assert!(err.contains("stopped e: pipe was interrupted"), "{err}");
}

/// Runs `pipe ARGS` under `strace -f -e trace=CALLS` in the project (failing unless it
/// succeeds): its JSON output and the trace.
fn traced(p: &Project, calls: &str, args: &[&str]) -> (Json, String) {
    let out = std::process::Command::new("strace")
        .args(["-f", "-e", &format!("trace={calls}"), "-o"])
        .arg(p.path("trace.txt"))
        .arg(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache())
        .output()
        .expect("strace (scripts/setup-tests installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (json, std::fs::read_to_string(p.path("trace.txt")).unwrap())
}

#[test]
fn a_no_op_run_syncs_nothing_and_its_record_is_whole() {
    // Run records are bookkeeping: written whole (a temp file renamed over) but not synced,
    // so a rerun with everything cached makes no fsync, fdatasync or syncfs at all.
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"n\"\n[sweep]\ni = [1, 2, 3]\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo ${i} > $PIPE_OUT/x.txt\"]\n",
    );
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let (report, trace) = traced(
        &p,
        "fsync,fdatasync,syncfs,sync",
        &["run", "p.toml", "--json"],
    );
    assert_eq!(count(&report, "cached"), 3, "{report}");
    let syncs: Vec<&str> = trace
        .lines()
        .filter(|l| {
            ["fsync(", "fdatasync(", "syncfs(", "sync("]
                .iter()
                .any(|c| l.contains(c))
        })
        .collect();
    assert!(syncs.is_empty(), "{syncs:?}");
    // The record of that run parses and says what it did.
    let runs = p.pipe(&["runs", "--json"]);
    let listed: Json = serde_json::from_slice(&runs.stdout).unwrap_or(Json::Null);
    let text = listed.to_string();
    assert!(
        text.contains("\"cached\":3") || text.contains("\"cached\": 3"),
        "{text}"
    );
}

#[test]
fn a_status_of_cached_instances_reads_no_index_and_no_run_record() {
    // What a status of cached instances needs is each key and its artifact: the index (the
    // reasons of stale instances) and the run records (live Slurm jobs of instances not
    // cached) are read only when some instance is not cached.
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"s\"\n[sweep]\ni = [1, 2]\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo ${i} > $PIPE_OUT/x.txt\"]\n",
    );
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let status = || -> (Vec<Json>, String) {
        let (items, trace) = traced(
            &p,
            "openat,open",
            &["status", "p.toml", "--json", "--run", "none"],
        );
        (serde_json::from_value(items).unwrap(), trace)
    };
    let (items, trace) = status();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["state"] == "cached"), "{items:?}");
    let opened = |trace: &str, dir: &str| trace.lines().any(|l| l.contains(&format!("/{dir}/")));
    assert!(!opened(&trace, "index"), "{trace}");
    assert!(!opened(&trace, "runs"), "{trace}");
    // One instance changed: now the index tells why it is stale.
    p.write(
        "p.toml",
        "[pipeline]\nname = \"s\"\n[sweep]\ni = [1, 2]\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo ${i}${i} > $PIPE_OUT/x.txt\"]\n",
    );
    let (items, trace) = status();
    assert!(items.iter().all(|i| i["state"] == "stale"), "{items:?}");
    assert!(
        items
            .iter()
            .all(|i| i["reason"].as_str().unwrap().contains("cmd")),
        "{items:?}"
    );
    assert!(opened(&trace, "index"), "{trace}");
}
