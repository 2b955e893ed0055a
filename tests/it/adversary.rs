//! Trying to break it: commands that leave children behind, signals, names that would
//! become paths, FIFOs and devices where files belong, hostile locks, damaged cache folders.
//! Every command here runs under `timeout`, so a hang fails the test instead of stalling it.

use std::os::unix::fs::FileTypeExt;
use std::process::Output;
use std::time::Duration;

use serde_json::Value as Json;

use crate::common::*;

/// Runs `pipe ARGS` under `timeout 30`; a hang shows as exit code 124.
fn pipe_t(p: &Project, args: &[&str]) -> Output {
    let mut c = std::process::Command::new("timeout");
    c.arg("30")
        .arg(env!("CARGO_BIN_EXE_pipe"))
        .args(args)
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache());
    c.output().unwrap()
}

/// This machine's host name, as `pipe` writes it in lock files and temp folder names.
fn hostname() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The pids of processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmd).contains(marker) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_background_child_cannot_change_a_sealed_artifact_or_outlive_its_command() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "bg"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "(sleep 1.5; echo late > $PIPE_OUT/x.txt; echo late > $PIPE_OUT/late.txt) & echo on-time > $PIPE_OUT/x.txt"]
"#,
    );
    let out = pipe_t(&p, &["run", "p.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::thread::sleep(Duration::from_millis(2500));
    let dir = &p.artifacts()[0];
    assert_eq!(
        std::fs::read_to_string(dir.join("x.txt")).unwrap(),
        "on-time\n"
    );
    assert!(!dir.join("late.txt").exists());
    assert_eq!(code(&pipe_t(&p, &["verify"])), 0);
    // Sealed files are read-only.
    let perm = std::fs::metadata(dir.join("x.txt")).unwrap().permissions();
    assert!(perm.readonly());
    // A hard-linked output is copied: changing the outside file leaves the artifact alone.
    p.write("outside.txt", "original\n");
    p.write(
        "h.toml",
        "[pipeline]\nname = \"h\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"ln outside.txt $PIPE_OUT/linked.txt\"]\n",
    );
    let out = pipe_t(&p, &["run", "h.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::write(p.path("outside.txt"), "changed\n").unwrap();
    let status: Json =
        serde_json::from_slice(&pipe_t(&p, &["status", "h.toml", "--json"]).stdout).unwrap();
    let key = status[0]["key"].as_str().unwrap();
    let linked = p.cache().join("artifacts").join(key).join("linked.txt");
    assert_eq!(std::fs::read_to_string(linked).unwrap(), "original\n");
    assert_eq!(code(&pipe_t(&p, &["verify"])), 0);
}

#[test]
fn sigterm_kills_every_command_and_cleans_temp_folders_and_locks() {
    let p = Project::new();
    // `exec -a` names each sleep with a marker this test can find in /proc.
    let marker = format!("pipe-test-sleeper-{}", std::process::id());
    p.write(
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "term"
[stage.e]
kind = "exec"
cmd = ["bash", "-c", "(exec -a {marker} sleep 1000) & exec -a {marker} sleep 1000"]
"#
        ),
    );
    let mut run = p.command(&["run", "p.toml"]).spawn().unwrap();
    let t = std::time::Instant::now();
    while processes_with(&marker).len() < 2 && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(processes_with(&marker).len(), 2, "both sleeps started");
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(run.id() as i32, libc::SIGTERM);
    }
    let status = run.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        processes_with(&marker).is_empty(),
        "no command outlives pipe"
    );
    let left = |d: &str| {
        std::fs::read_dir(p.cache().join(d))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    assert_eq!(left("tmp"), 0, "temp folders removed");
    assert_eq!(left("locks"), 0, "locks removed");
    let runs: Json = serde_json::from_slice(&pipe_t(&p, &["runs", "--json"]).stdout).unwrap();
    assert_eq!(runs[0]["state"], "interrupted");
}

#[test]
fn names_that_would_become_paths_are_refused() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("victim")).unwrap();
    std::fs::write(p.path("victim/keep.txt"), "x").unwrap();
    std::fs::create_dir_all(p.cache().join("artifacts")).unwrap();
    let job = serde_json::json!({
        "pipeline": "p", "stage": "s", "kind": "exec", "version": 1,
        "key": "../../victim", "recipe": "r", "point": {}, "params": {"cmd": ["true"]},
        "key_params": {}, "inputs": [], "files": [], "base_dir": p.dir.path(),
    });
    p.write("job.json", &job.to_string());
    let out = pipe_t(
        &p,
        &["job", "job.json", "--cache", p.cache().to_str().unwrap()],
    );
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a key"), "{}", stderr(&out));
    assert!(p.path("victim/keep.txt").exists());
    // NUL bytes in env or cmd are refused where they are written.
    for (what, extra) in [
        ("env", "env = { A = \"x\\u0000y\" }"),
        ("cmd", "cmd = [\"echo\", \"a\\u0000b\"]"),
        ("env", "env = { \"A=B\" = \"x\" }"),
    ] {
        let base = "[pipeline]\nname = \"n\"\n[stage.e]\nkind = \"exec\"\n";
        let text = if what == "cmd" {
            format!("{base}{extra}\n")
        } else {
            format!("{base}cmd = [\"true\"]\n{extra}\n")
        };
        p.write("n.toml", &text);
        let out = pipe_t(&p, &["status", "n.toml"]);
        assert_eq!(code(&out), 2, "{extra}: {}", stderr(&out));
        assert!(stderr(&out).contains("n.toml:"), "{}", stderr(&out));
    }
}

#[test]
fn fifos_devices_and_hostile_locks_do_not_hang() {
    let p = Project::new();
    let fifo = p.path("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    for declared in ["fifo", "/dev/zero"] {
        p.write(
            "p.toml",
            &format!("[pipeline]\nname = \"f\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"true\"]\nfiles = [\"{declared}\"]\n"),
        );
        for cmd in ["status", "run"] {
            let out = pipe_t(&p, &[cmd, "p.toml"]);
            assert_eq!(code(&out), 2, "{cmd} with {declared}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("not a regular file"),
                "{}",
                stderr(&out)
            );
        }
    }
    // A manifest replaced by a FIFO: every command answers.
    p.write("p.toml", BASIC);
    assert_eq!(code(&pipe_t(&p, &["run", "p.toml"])), 0);
    let victim = p.artifacts()[0].clone();
    let manifest = victim.join("manifest.json");
    std::fs::remove_file(&manifest).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&manifest)
            .status()
            .unwrap()
            .success()
    );
    for args in [&["status", "p.toml"][..], &["ls"], &["verify"]] {
        let out = pipe_t(&p, args);
        assert_ne!(code(&out), 124, "{args:?} hung");
        assert_ne!(code(&out), 101, "{args:?} panicked: {}", stderr(&out));
    }
    let out = pipe_t(&p, &["verify"]);
    assert_eq!(code(&out), 1, "damage found: {}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not a regular file"));
    let out = pipe_t(&p, &["verify", "--fix"]);
    assert_eq!(code(&out), 0, "removed: {}", stderr(&out));
    assert_eq!(code(&pipe_t(&p, &["run", "p.toml"])), 0, "recomputed");
    // A lock naming an unrelated live process (pid 1) with start time 0: stale once its
    // file is older than PIPE_LOCK_STALE_SECS, not a wait forever.
    let key = p.status("p.toml", &[])[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = p.cache().join("artifacts").join(&key);
    let out = pipe_t(&p, &["rm", &key]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(!dir.exists());
    let host = hostname();
    std::fs::write(
        p.cache().join("locks").join(format!("{key}.lock")),
        format!("{} 1 0 7\n", host),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let out = std::process::Command::new("timeout")
        .args(["30", env!("CARGO_BIN_EXE_pipe"), "run", "p.toml"])
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache())
        .env("PIPE_LOCK_STALE_SECS", "1")
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(dir.exists());
}

#[test]
fn damaged_cache_folders_neither_panic_nor_leak() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(code(&pipe_t(&p, &["run", "p.toml"])), 0);
    let arts = p.cache().join("artifacts");
    // Non-ASCII folder names, a stray file, a manifest holding a short key.
    std::fs::create_dir_all(arts.join("abé")).unwrap();
    std::fs::create_dir_all(arts.join("ab日本")).unwrap();
    std::fs::write(arts.join("stray"), "x").unwrap();
    let short = arts.join("ab");
    std::fs::create_dir_all(&short).unwrap();
    std::fs::write(short.join("manifest.json"), r#"{"key":"ab","kind":"exec","version":1,"stage":"s","pipeline":"p","point":{},"params":{},"inputs":{},"files":[],"started":0,"seconds":0,"pipe_version":"x","host":"h"}"#).unwrap();
    for args in [
        &["ls"][..],
        &["show", "ab"],
        &["show", "abé"],
        &["verify"],
        &["gc", "--dry-run", "--keep-days", "0"],
    ] {
        let out = pipe_t(&p, args);
        assert_ne!(code(&out), 101, "{args:?} panicked: {}", stderr(&out));
        assert_ne!(code(&out), 124, "{args:?} hung");
    }
    let out = pipe_t(&p, &["verify", "--fix"]);
    assert_ne!(code(&out), 101, "{}", stderr(&out));
    assert!(
        !arts.join("stray").exists(),
        "verify --fix removes a stray file"
    );
    // A folder left by an interrupted removal (dead pid) is cleaned by the next run.
    let host = hostname();
    let left = p
        .cache()
        .join("tmp")
        .join(format!("{}.removed.{}.999999.0", "ab".repeat(32), host));
    std::fs::create_dir_all(&left).unwrap();
    assert_eq!(code(&pipe_t(&p, &["run", "p.toml"])), 0);
    assert!(!left.exists(), "left-over removal folder cleaned");
    // A sweep string longer than 65,535 characters.
    let long = "x".repeat(70_000);
    p.write(
        "long.toml",
        &format!("[pipeline]\nname = \"long\"\n[sweep]\nv = [\"{long}\"]\n[stage.e]\nkind = \"exec\"\ncmd = [\"echo\", \"${{v}}\"]\n"),
    );
    let out = pipe_t(&p, &["status", "long.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
}

#[test]
fn output_names_must_be_utf8_and_empty_folders_are_not_kept() {
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"u\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"printf x > $PIPE_OUT/$(printf 'bad\\\\377name')\"]\n",
    );
    let out = pipe_t(&p, &["run", "p.toml"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("file names must be UTF-8"),
        "{}",
        stderr(&out)
    );
    assert!(p.artifacts().is_empty());
    p.write(
        "p.toml",
        "[pipeline]\nname = \"u\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"mkdir -p $PIPE_OUT/empty/inner $PIPE_OUT/full; echo 1 > $PIPE_OUT/full/a\"]\n",
    );
    let out = pipe_t(&p, &["run", "p.toml"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let dir = &p.artifacts()[0];
    assert!(dir.join("full/a").exists() && !dir.join("empty").exists());
}

/// A one-instance pipeline whose `exec` stage writes table `gap` (`x`, `y` from `ys`) and a
/// report plot of it titled `title`.
fn gap_pipeline(p: &Project, file: &str, ys: &str, title: &str) {
    p.write(
        file,
        &format!(
            r#"
[pipeline]
name = "gaps"
[stage.fit]
kind = "exec"
cmd = ["python3", "-c", "import polars as pl, os; pl.DataFrame({{'x': [0.0, 1.0], 'y': {ys}}}).write_parquet(os.environ['PIPE_OUT'] + '/gap.parquet')"]
tables = ["gap"]
[[report.plot]]
table = "gap"
x = "x"
y = "y"
title = "{title}"
"#
        ),
    );
}

#[test]
fn report_out_never_touches_files_pipe_did_not_write() {
    let p = Project::new();
    gap_pipeline(&p, "p.toml", "[1.0, 2.0]", "First");
    gap_pipeline(&p, "q.toml", "[1.0, 2.0]", "Second");
    assert_eq!(p.run("p.toml", &[]).0, 0);
    // A site of the user's with a logo among the figures and notes beside the page.
    p.write("site/figures/logo.svg", "<svg>mine</svg>");
    p.write("site/NOTES.md", "mine");
    let out = pipe_t(&p, &["report", "p.toml", "--out", "site"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(p.path("site/figures/plot-1-First.svg").is_file());
    // Written again, with another figure: pipe's old figure goes, the user's files stay.
    let out = pipe_t(&p, &["report", "q.toml", "--out", "site"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(p.path("site/figures/plot-1-Second.svg").is_file());
    assert!(!p.path("site/figures/plot-1-First.svg").exists());
    assert_eq!(
        std::fs::read_to_string(p.path("site/figures/logo.svg")).unwrap(),
        "<svg>mine</svg>"
    );
    assert_eq!(
        std::fs::read_to_string(p.path("site/NOTES.md")).unwrap(),
        "mine"
    );
    // A page of the user's where pipe's would go: refused, nothing written.
    p.write("own/index.html", "<p>mine</p>");
    let out = pipe_t(&p, &["report", "p.toml", "--out", "own"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(stderr(&out).contains("own/index.html"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(p.path("own/index.html")).unwrap(),
        "<p>mine</p>"
    );
    assert!(!p.path("own/figures").exists());
}

#[test]
fn export_out_never_touches_files_pipe_did_not_write() {
    let p = Project::new();
    gap_pipeline(&p, "p.toml", "[1.0, 2.0]", "First");
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let out = pipe_t(&p, &["export", "p.toml", "--out", "results"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The user's notes and analysis beside an earlier export survive the next one.
    p.write("results/NOTES.md", "mine");
    p.write("results/analysis/plot.py", "print(1)");
    let out = pipe_t(&p, &["export", "p.toml", "--out", "results"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(p.path("results/gap.parquet").is_file());
    assert_eq!(
        std::fs::read_to_string(p.path("results/NOTES.md")).unwrap(),
        "mine"
    );
    assert_eq!(
        std::fs::read_to_string(p.path("results/analysis/plot.py")).unwrap(),
        "print(1)"
    );
    // A table of the user's where pipe's would go: refused, left as it was.
    p.write("mine/gap.parquet", "not pipe's");
    let out = pipe_t(&p, &["export", "p.toml", "--out", "mine"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mine/gap.parquet"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(p.path("mine/gap.parquet")).unwrap(),
        "not pipe's"
    );
}

#[test]
fn report_of_values_spanning_more_than_a_float_finishes() {
    let p = Project::new();
    gap_pipeline(&p, "p.toml", "[-1.7e308, 1.7e308]", "Huge");
    gap_pipeline(&p, "q.toml", "[-8e307, 8e307]", "Large");
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let out = pipe_t(&p, &["report", "p.toml", "--out", "rep"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("table `gap`") && err.contains("the y axis would span"),
        "{err}"
    );
    // Just within range: drawn.
    assert_eq!(p.run("q.toml", &[]).0, 0);
    let out = pipe_t(&p, &["report", "q.toml", "--out", "rep"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(p.path("rep/figures/plot-1-Large.svg").is_file());
}

/// Runs `pipe ARGS` under `timeout -k 5 20`: a hang shows as 124 (or 137 when even SIGTERM
/// is not answered).
fn pipe_k(p: &Project, args: &[&str]) -> Output {
    std::process::Command::new("timeout")
        .args(["-k", "5", "20", env!("CARGO_BIN_EXE_pipe")])
        .args(args)
        .current_dir(p.dir.path())
        .env("PIPE_CACHE", p.cache())
        .output()
        .unwrap()
}

fn mkfifo(path: &std::path::Path) {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    let _ = std::fs::remove_file(path);
    assert!(
        std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap()
            .success()
    );
}

#[test]
fn fifos_in_bookkeeping_files_do_not_hang() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(code(&pipe_k(&p, &["run", "p.toml"])), 0);
    let key = p.status("p.toml", &[])[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let cache = p.cache();
    let fifos = [
        cache
            .join("runs")
            .join("20000101-000000-dead")
            .join("run.json"),
        cache.join("index").join("basic.json"),
        cache.join("logs").join(format!("{key}.log")),
        cache.join("locks").join(format!("{key}.lock")),
    ];
    for fifo in &fifos {
        // The key is removed so that `run` must compute it again (its lock, its log).
        if cache.join("artifacts").join(&key).exists() {
            assert_eq!(code(&pipe_k(&p, &["rm", &key])), 0);
        }
        mkfifo(fifo);
        for args in [
            &["status", "p.toml"][..],
            &["runs"],
            &["gc", "--dry-run", "--keep-days", "0"],
            &["log", &key],
            &["run", "p.toml"],
        ] {
            let out = pipe_k(&p, args);
            let c = code(&out);
            assert!(
                c != 124 && c != 137,
                "{args:?} hung with a FIFO at {}",
                fifo.display()
            );
            assert_ne!(c, 101, "{args:?} panicked: {}", stderr(&out));
        }
        assert!(
            std::fs::symlink_metadata(fifo)
                .unwrap()
                .file_type()
                .is_fifo(),
            "a FIFO pipe did not make is left alone: {}",
            fifo.display()
        );
        std::fs::remove_file(fifo).unwrap();
    }
    assert_eq!(code(&pipe_k(&p, &["run", "p.toml"])), 0);
}

#[test]
fn a_lease_from_a_host_whose_clock_runs_ahead_keeps_its_run_live() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(code(&pipe_k(&p, &["run", "p.toml"])), 0);
    let keys: Vec<String> = p
        .status("p.toml", &[])
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let id = "20300101-000000-beef";
    let record = serde_json::json!({
        "id": id, "pipeline": "basic", "submitted": now, "finished": false,
        "host": "node-ahead", "pid": 1234, "keys": keys,
    });
    p.write(&format!("cache/runs/{id}/run.json"), &record.to_string());
    let lease = p.write(
        &format!("cache/locks/run-{id}.lock"),
        "node-ahead 1234 99 0\n",
    );
    std::fs::File::options()
        .append(true)
        .open(&lease)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + Duration::from_secs(30))
        .unwrap();
    let out = pipe_k(&p, &["runs", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let runs: Json = serde_json::from_slice(&out.stdout).unwrap();
    let run = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap();
    assert_eq!(run["state"], "running", "{run}");
    let out = pipe_k(&p, &["gc", "--dry-run", "--keep-days", "0", "--json"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let gc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gc["removed"].as_array().unwrap().len(), 0, "{gc}");
}

#[test]
fn keys_and_job_files_named_by_outcome_files_cannot_leave_the_cache() {
    let p = Project::new();
    std::fs::create_dir_all(p.path("outside/fake")).unwrap();
    std::fs::write(p.path("outside/fake/keep.txt"), "x").unwrap();
    let jobs = p.cache().join("runs/r1/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::create_dir_all(p.cache().join("artifacts")).unwrap();
    // The upstream job's outcome file records a key that would name a path outside.
    std::fs::write(jobs.join("up.json"), "{}").unwrap();
    std::fs::write(
        jobs.join("up.outcome.json"),
        r#"{"outcome":"executed","message":null,"bad_data":false,"seconds":0,"key":"../../outside/fake"}"#,
    )
    .unwrap();
    // An outcome file outside the cache, with a well-formed key.
    std::fs::write(p.path("outside/up.json"), "{}").unwrap();
    std::fs::write(
        p.path("outside/up.outcome.json"),
        format!(
            r#"{{"outcome":"executed","message":null,"bad_data":false,"seconds":0,"key":"{}"}}"#,
            "a".repeat(64)
        ),
    )
    .unwrap();
    for (up, says) in [
        (jobs.join("up.json"), "is not a key"),
        (p.path("outside/up.json"), "must lie inside the cache"),
        (
            jobs.join("../jobs/../../../outside/up.json"),
            "must lie inside the cache",
        ),
    ] {
        let job = serde_json::json!({
            "pipeline": "p", "stage": "s", "kind": "exec", "version": 1,
            "key": null, "recipe": "down", "point": {}, "params": {"cmd": ["true"]},
            "key_params": {}, "files": [], "base_dir": p.dir.path(),
            "inputs": [{"slot": "in", "key": null, "job": up, "label": "up[]"}],
        });
        let down = jobs.join("down.json");
        std::fs::write(&down, job.to_string()).unwrap();
        let out = pipe_t(
            &p,
            &[
                "job",
                down.to_str().unwrap(),
                "--cache",
                p.cache().to_str().unwrap(),
            ],
        );
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
        assert!(!jobs.join("down.outcome.json").exists());
        let mut outside: Vec<_> = std::fs::read_dir(p.path("outside"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        outside.sort();
        assert_eq!(outside, ["fake", "up.json", "up.outcome.json"]);
        assert_eq!(
            std::fs::read_dir(p.path("outside/fake")).unwrap().count(),
            1
        );
    }
}

/// The (key, stage) of every artifact in `cache`.
fn cached(cache: &std::path::Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(cache.join("artifacts"))
        .map(|rd| rd.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let m: Json =
                serde_json::from_slice(&std::fs::read(e.path().join("manifest.json")).ok()?)
                    .ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                m["stage"].as_str()?.to_string(),
            ))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn rm_removes_only_instances_with_every_named_variable_and_refuses_unknown_ones() {
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"r\"\n[sweep]\nn = [1, 2]\n[stage.data]\nkind = \"exec\"\ncmd = [\"true\"]\n[stage.train]\nkind = \"exec\"\ninputs = [\"data\"]\ncmd = [\"echo\", \"${n}\"]\n",
    );
    let cache = p.cache();
    let c = cache.to_str().unwrap();
    let (code_, r) = p.run("p.toml", &[]);
    assert_eq!(code_, 0, "{r}");
    let all = cached(&cache);
    assert_eq!(all.len(), 3, "{all:?}");
    // A misspelt variable matches nothing and removes nothing, with or without the file.
    for args in [
        &["rm", "nosie=1", "--cache", c][..],
        &["rm", "nosie=1", "p.toml", "--cache", c][..],
        &["rm", "train", "--point", "nosie=1", "--cache", c][..],
    ] {
        let out = pipe_t(&p, args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("nosie"), "{}", stderr(&out));
        assert!(stderr(&out).contains("n"), "{}", stderr(&out));
        assert_eq!(cached(&cache), all, "{args:?}");
    }
    let out = pipe_t(&p, &["rm", "nosie=1", "--cache", c]);
    assert!(stderr(&out).contains("variables: n"), "{}", stderr(&out));
    // `n=1` names train[n=1] only: data, which has no `n`, is shared with n=2 and stays.
    let out = pipe_t(&p, &["rm", "n=1", "p.toml", "--cache", c]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let left = cached(&cache);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|(_, s)| s == "data"), "{left:?}");
    // The same without the file: train[n=2] goes, data stays.
    let out = pipe_t(&p, &["rm", "n=2", "--cache", c]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let left = cached(&cache);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, "data");
}

#[test]
fn a_stage_name_is_a_stage_never_a_key_prefix() {
    let p = Project::new();
    // Salts until some stage `x` in a-f is the unique key prefix of another stage's
    // artifact (keys are content hashes, so this is deterministic for a given build).
    for salt in 0..40 {
        let dir = p.path(&format!("c{salt}"));
        let c = dir.to_str().unwrap().to_string();
        let mut text = format!("[pipeline]\nname = \"s{salt}\"\n");
        for s in ["a", "b", "c", "d", "e", "f", "g"] {
            text.push_str(&format!(
                "[stage.{s}]\nkind = \"exec\"\ncmd = [\"echo\", \"{s}{salt}\"]\n"
            ));
        }
        p.write("p.toml", &text);
        let out = pipe_t(&p, &["run", "p.toml", "--cache", &c]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let all = cached(&dir);
        let Some((x, other)) = ["a", "b", "c", "d", "e", "f"].iter().find_map(|x| {
            let with: Vec<&(String, String)> =
                all.iter().filter(|(k, _)| k.starts_with(x)).collect();
            (with.len() == 1 && with[0].1 != *x).then(|| (x.to_string(), with[0].0.clone()))
        }) else {
            continue;
        };
        for with_file in [true, false] {
            let mut args = vec!["rm", x.as_str()];
            if with_file {
                args.push("p.toml");
            }
            args.extend(["--cache", &c, "--dry-run"]);
            let out = pipe_t(&p, &args);
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(code(&out), 0, "{}", stderr(&out));
            assert!(said.contains(&format!("would remove {x}")), "{said}");
            assert!(said.contains("of 1 instances"), "{said}");
            assert!(!said.contains(&other[..12]), "{said}");
        }
        let out = pipe_t(&p, &["rm", &x, "p.toml", "--cache", &c]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let left = cached(&dir);
        assert!(left.iter().any(|(k, _)| *k == other), "{left:?}");
        assert!(!left.iter().any(|(_, s)| *s == x), "{left:?}");
        // A longer prefix still names the key.
        let out = pipe_t(&p, &["rm", &other[..8], "--cache", &c]);
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        assert!(!cached(&dir).iter().any(|(k, _)| *k == other));
        return;
    }
    panic!("no salt made a stage name a unique key prefix of another stage's artifact");
}

#[test]
fn a_sweep_of_too_many_instances_is_refused_before_planning() {
    let p = Project::new();
    let values: Vec<String> = (0..215).map(|i| i.to_string()).collect();
    let list = values.join(", ");
    p.write(
        "p.toml",
        &format!(
            "[pipeline]\nname = \"big\"\n[sweep]\na = [{list}]\nb = [{list}]\nc = [{list}]\n[stage.e]\nkind = \"exec\"\ncmd = [\"echo\", \"${{a}}\", \"${{b}}\", \"${{c}}\"]\n"
        ),
    );
    let start = std::time::Instant::now();
    let out = pipe_t(&p, &["status", "p.toml"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    let err = stderr(&out);
    assert!(err.contains("p.toml:3:1: `sweep`"), "{err}");
    assert!(err.contains("9938375 instances"), "{err}");
    assert!(err.contains("2000000"), "{err}");
}

#[test]
fn a_table_of_too_many_rows_is_left_out_of_export_with_a_message() {
    let p = Project::new();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "rows"
[stage.big]
kind = "exec"
cmd = ["python3", "-c", "import polars as pl, os; pl.DataFrame({'z': pl.zeros(100_000_000, dtype=pl.Int8, eager=True)}).write_parquet(os.environ['PIPE_OUT'] + '/huge.parquet')"]
tables = ["huge"]
"#,
    );
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let out = pipe_t(&p, &["export", "p.toml", "--out", "results"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("left out table `huge`"), "{err}");
    assert!(err.contains("huge.parquet has 100000000 rows"), "{err}");
    assert!(err.contains("50000000"), "{err}");
    assert!(!p.path("results/huge.parquet").exists());
}

#[test]
fn a_link_put_in_place_of_the_output_folder_is_never_followed() {
    use std::os::unix::fs::PermissionsExt;
    let p = Project::new();
    let target = p.path("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::create_dir(target.join("empty")).unwrap();
    std::fs::write(target.join("keep.txt"), "mine\n").unwrap();
    // A second name for keep.txt: a store that followed the link would copy it over.
    std::fs::hard_link(target.join("keep.txt"), p.path("keep-link.txt")).unwrap();
    std::fs::set_permissions(
        target.join("keep.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    p.write(
        "p.toml",
        r#"
[pipeline]
name = "link"
[stage.e]
kind = "exec"
cmd = ["sh", "-c", "rm -rf \"$PIPE_OUT\" && ln -s \"$PWD/target\" \"$PIPE_OUT\""]
"#,
    );
    let (c, r) = p.run("p.toml", &[]);
    assert_eq!(c, 1, "{r}");
    assert_eq!(count(&r, "failed"), 1, "{r}");
    let out = pipe_t(&p, &["run", "p.toml"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the stage replaced its output folder with a link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("keep.txt")).unwrap(),
        "mine\n"
    );
    let mode = std::fs::metadata(target.join("keep.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(target.join("keep.txt")).unwrap().nlink(),
        2
    );
    assert!(
        target.join("empty").is_dir(),
        "empty folder in the target kept"
    );
    assert!(p.artifacts().is_empty());
    let tmp: Vec<_> = std::fs::read_dir(p.cache().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "the temp link is removed");
    // A link inside the output that points outside is refused as before.
    p.write(
        "q.toml",
        "[pipeline]\nname = \"inner\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"ln -s \\\"$PWD/target\\\" \\\"$PIPE_OUT/t\\\"\"]\n",
    );
    let out = pipe_t(&p, &["run", "q.toml"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("artifacts may hold only regular files and folders"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(target.join("keep.txt")).unwrap(),
        "mine\n"
    );
    assert!(target.join("empty").is_dir());
    assert!(p.artifacts().is_empty());
}

#[test]
fn an_artifact_with_read_only_folders_is_removed_by_force() {
    let p = Project::new();
    p.write(
        "p.toml",
        "[pipeline]\nname = \"ro\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"mkdir -p $PIPE_OUT/d/e && echo 1 > $PIPE_OUT/d/e/a && chmod 555 $PIPE_OUT/d/e $PIPE_OUT/d\"]\n",
    );
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let (c, r) = p.run("p.toml", &["--force", "e"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(count(&r, "executed"), 1, "{r}");
    assert_eq!(code(&pipe_t(&p, &["verify"])), 0);
    let removed: Vec<_> = std::fs::read_dir(p.cache().join("tmp")).unwrap().collect();
    assert!(removed.is_empty(), "nothing left aside");
}

/// Every checkpoint folder of the cache with its `optimizer.safetensors`.
fn optimizer_files(p: &Project) -> Vec<std::path::PathBuf> {
    p.artifacts()
        .into_iter()
        .map(|d| d.join("optimizer.safetensors"))
        .filter(|f| f.is_file())
        .collect()
}

#[test]
fn a_damaged_checkpoint_is_computed_again_without_verify_fix() {
    let p = Project::new();
    p.write("p.toml", TINY_TRAIN);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let files = optimizer_files(&p);
    assert!(!files.is_empty());
    let victim = files[0].clone();
    let original = std::fs::read(&victim).unwrap();
    // `run --force train` recomputes it.
    std::fs::remove_file(&victim).unwrap();
    let (c, r) = p.run("p.toml", &["--force", "train"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(std::fs::read(&victim).unwrap(), original);
    assert_eq!(code(&pipe_t(&p, &["verify"])), 0);
    // So does a plain run of what reads it.
    std::fs::remove_file(&victim).unwrap();
    let (c, r) = p.run("p.toml", &["--force", "rollback"]);
    assert_eq!(c, 0, "{r}");
    assert_eq!(std::fs::read(&victim).unwrap(), original);
    assert_eq!(code(&pipe_t(&p, &["verify"])), 0);
}
