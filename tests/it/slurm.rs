//! The Slurm executor against a real single-node Slurm (scripts/slurm-up starts one):
//! same keys and numbers as a local run, nothing resubmitted, failures isolated, cancel.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

/// Fails the test unless a Slurm cluster answers (scripts/slurm-up starts one).
pub fn require_slurm() {
    let ok = Command::new("sinfo")
        .args(["-h", "-o", "%T"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    assert!(
        ok,
        "these tests need a running Slurm: run scripts/slurm-up (scripts/test does)"
    );
}

/// Every artifact's files and their blake3, from the manifests.
fn file_hashes(cache: &Path, keys: &[String]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for k in keys {
        let m: Json = serde_json::from_slice(
            &std::fs::read(cache.join("artifacts").join(k).join("manifest.json")).unwrap(),
        )
        .unwrap();
        for f in m["files"].as_array().unwrap() {
            out.push((
                k.clone(),
                f["path"].as_str().unwrap().to_string(),
                f["blake3"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    out.sort();
    out
}

fn keys(r: &Json, list: &str) -> Vec<String> {
    let mut v: Vec<String> = r[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Metrics of every training instance, from DuckDB.
fn metrics(cache: &Path, keys: &[String]) -> Json {
    let files: Vec<String> = keys
        .iter()
        .map(|k| cache.join("artifacts").join(k).join("metrics.parquet"))
        .filter(|f| f.exists())
        .map(|f| format!("'{}'", f.display()))
        .collect();
    python(&format!(
        "import duckdb, json\n\
         r = duckdb.sql(\"SELECT * FROM read_parquet([{}], filename=true) ORDER BY filename, epoch\").fetchall()\n\
         print(json.dumps([[str(x).split('/artifacts/')[-1] for x in row] for row in r]))",
        files.join(", ")
    ))
}

#[test]
fn quick_pipeline_through_slurm_equals_a_local_run_and_is_not_resubmitted() {
    require_slurm();
    let file = repo().join("pipelines/quick.toml");
    let file = file.to_str().unwrap();
    let local = Project::new();
    let mut args = vec!["--jobs", "2"];
    args.extend_from_slice(QUICK_SMALL);
    let (code, lr) = local.run(file, &args);
    assert_eq!(code, 0, "{lr}");

    let slurm = Project::new();
    let mut args = vec!["--executor", "slurm", "--poll", "0.3"];
    args.extend_from_slice(QUICK_SMALL);
    let (code, sr) = slurm.run(file, &args);
    assert_eq!(code, 0, "{sr}");
    let executed = keys(&sr, "executed");
    assert_eq!(executed, keys(&lr, "executed"), "the same keys");
    // 33 jobs; one (a summary at noise 0.0, whose labels are the same bytes for both
    // seeds) resolves on its node to the key its twin computed and exits at once.
    assert_eq!(executed.len(), 32);
    assert_eq!(keys(&sr, "cached").len(), 1);
    assert_eq!(keys(&sr, "cached"), keys(&lr, "cached"));
    assert_eq!(sr["submitted"], 33);
    // Every job ran on the node through `pipe job`, its Slurm log in the run's folder.
    for j in sr["jobs"].as_array().unwrap() {
        assert!(Path::new(j["slurm_log"].as_str().unwrap()).exists(), "{j}");
    }
    // The same numbers: every file is byte-identical, and DuckDB reads the same metrics.
    assert_eq!(
        file_hashes(&slurm.cache(), &executed),
        file_hashes(&local.cache(), &executed)
    );
    let m = metrics(&slurm.cache(), &executed);
    assert_eq!(m.as_array().unwrap().len(), 4 * 4, "4 runs x epochs 0..=3");
    assert_eq!(m, metrics(&local.cache(), &executed));

    // A second Slurm run finds everything cached and submits nothing.
    let (code, again) = slurm.run(file, &args);
    assert_eq!(code, 0, "{again}");
    assert_eq!(keys(&again, "cached").len(), 33);
    assert!(again["executed"].as_array().unwrap().is_empty());
    assert_eq!(again["submitted"], 0, "{again}");
    // Both runs are recorded; only the first has jobs.
    let with_jobs = std::fs::read_dir(slurm.cache().join("runs"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("jobs").exists())
        .count();
    assert_eq!(with_jobs, 1, "no second job folder");
}

const BRANCHES: &str = r#"
[pipeline]
name = "branches"
[sweep]
noise = [0.0, 0.5]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "echo ${noise} > $PIPE_OUT/a.txt"]
[stage.b]
kind = "exec"
inputs = { a = "a" }
cmd = ["sh", "-c", "test ${noise} = 0.0 && cp $PIPE_INPUT_A/a.txt $PIPE_OUT/b.txt"]
resources = { cpus = 1, mem = "100M", time = "00:05:00" }
[stage.c]
kind = "exec"
inputs = { b = "b" }
cmd = ["sh", "-c", "cp $PIPE_INPUT_B/b.txt $PIPE_OUT/c.txt"]
"#;

#[test]
fn a_failing_job_stops_only_its_branch_and_names_its_slurm_log() {
    require_slurm();
    let p = Project::new();
    p.write("b.toml", BRANCHES);
    let (code, r) = p.run("b.toml", &["--executor", "slurm", "--poll", "0.3"]);
    assert_eq!(code, 1, "{r}");
    let failed = of_stage(&r, "failed", "b");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["point"]["noise"], 0.5);
    assert_eq!(of_stage(&r, "skipped", "c").len(), 1);
    assert_eq!(count(&r, "executed"), 4, "a x2, b and c of the good branch");
    // The good branch's result went through the node and is in the cache.
    let c = of_stage(&r, "executed", "c")[0]["key"].as_str().unwrap();
    let text = std::fs::read_to_string(p.cache().join("artifacts").join(c).join("c.txt")).unwrap();
    assert_eq!(text.trim(), "0.0");
    assert_no_partial_artifacts(&p.cache());
    // The failure names the Slurm log, which holds the job's own error output.
    let out = p.pipe(&["run", "b.toml", "--executor", "slurm", "--poll", "0.3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let log = err
        .split("slurm log ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_else(|| panic!("no slurm log in: {err}"));
    let slurm_log = std::fs::read_to_string(log).unwrap();
    assert!(slurm_log.contains("exited with status 1"), "{slurm_log}");
    assert!(
        err.contains("1 failed, 1 skipped") || err.contains("failed: b[noise=0.5]"),
        "{err}"
    );
}

#[test]
fn jobs_resolve_their_keys_on_the_node_and_exit_at_once_on_identical_input() {
    require_slurm();
    let p = Project::new();
    p.write("p.toml", BASIC);
    let slurm = ["--executor", "slurm", "--poll", "0.3"];
    let (code, r) = p.run("p.toml", &slurm);
    assert_eq!(code, 0, "{r}");
    // Another corruption mode: corrupt reruns; each count's key depends on what corrupt
    // writes, so its job resolves it on the node. At noise 0.0 the labels are the same
    // bytes: those jobs find their key cached and exit; at 0.5 they compute.
    let mode = ["--set", "stage.corrupt.mode=\"uniform\""];
    let (code, r) = p.run("p.toml", &[&slurm[..], &mode[..]].concat());
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["submitted"], 8, "{r}");
    assert_eq!(of_stage(&r, "executed", "corrupt").len(), 4);
    let counts = of_stage(&r, "executed", "count");
    assert_eq!(counts.len(), 2, "{r}");
    assert!(counts.iter().all(|i| i["point"]["noise"] == 0.5), "{r}");
    let cached = of_stage(&r, "cached", "count");
    assert_eq!(cached.len(), 2, "{r}");
    assert!(cached.iter().all(|i| i["point"]["noise"] == 0.0), "{r}");
    // The keys the nodes resolved are the ones a local plan now computes.
    let st = p.status("p.toml", &mode);
    assert!(st.iter().all(|s| s["state"] == "cached"), "{st:?}");
    for c in counts.iter().chain(&cached) {
        let s = st
            .iter()
            .find(|s| s["stage"] == "count" && s["point"] == c["point"])
            .unwrap();
        assert_eq!(s["key"], c["key"]);
    }
}

const SLOW: &str = r#"
[pipeline]
name = "slow"
[sweep]
i = [1, 2, 3]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "sleep 60; echo ${i} > $PIPE_OUT/a.txt"]
[stage.b]
kind = "exec"
inputs = { a = "a" }
cmd = ["sh", "-c", "cp $PIPE_INPUT_A/a.txt $PIPE_OUT/b.txt"]
"#;

fn queue_states(ids: &[String]) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%T", "-j", &ids.join(",")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn detach_status_and_cancel_then_ctrl_c() {
    require_slurm();
    let p = Project::new();
    p.write("s.toml", SLOW);
    let out = p.pipe(&["run", "s.toml", "--executor", "slurm", "--detach", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    let run = r["run"].as_str().unwrap().to_string();
    let ids: Vec<String> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6);
    // `pipe status` shows every instance's job.
    let st = p.status("s.toml", &[]);
    for s in &st {
        let state = s["job"]["state"].as_str().unwrap_or("");
        assert!(["PENDING", "RUNNING"].contains(&state), "{s}");
        assert_eq!(s["job"]["run"], run.as_str());
    }
    let out = p.pipe(&["cancel", &run[..6]]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cancelled 6"));
    wait_until("every job cancelled", || {
        queue_states(&ids).iter().all(|s| s == "CANCELLED")
    });
    assert!(
        p.status("s.toml", &[])
            .iter()
            .all(|s| s.get("job").is_none())
    );
    assert!(p.artifacts().is_empty());
    let bad = p.pipe(&["cancel", "nosuchrun"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains(&run));

    // Ctrl-C on a waiting `pipe run` cancels its jobs and exits 130.
    let child = p
        .command(&["run", "s.toml", "--executor", "slurm", "--poll", "0.2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let runs = p.cache().join("runs");
    let mut second: Vec<String> = Vec::new();
    wait_until("the second run's record", || {
        for e in std::fs::read_dir(&runs).unwrap().flatten() {
            if e.file_name().to_string_lossy() != run
                && let Ok(b) = std::fs::read(e.path().join("run.json"))
                && let Ok(rec) = serde_json::from_slice::<Json>(&b)
            {
                second = rec["jobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|j| j["job_id"].as_str().unwrap().to_string())
                    .collect();
            }
        }
        !second.is_empty()
    });
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    wait_until("the second run's jobs cancelled", || {
        queue_states(&second).iter().all(|s| s == "CANCELLED")
    });
    assert!(p.artifacts().is_empty());
}

/// The one run record `pipe runs --json` lists.
fn only_run(p: &Project) -> Json {
    let out = p.pipe(&["runs", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let runs: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    runs[0].clone()
}

#[test]
fn a_detached_runs_record_reaches_its_end_with_true_counts() {
    require_slurm();
    let p = Project::new();
    // 3 instances of `a` (one fails) and the 3 of `b` after them: 2 done, 1 failed, 1 never run.
    p.write(
        "d.toml",
        r#"
[pipeline]
name = "detached"
[sweep]
i = [1, 2, 3]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "test ${i} != 3 && echo ${i} > $PIPE_OUT/a.txt"]
"#,
    );
    let out = p.pipe(&["run", "d.toml", "--executor", "slurm", "--detach", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let r: Json = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<String> = r["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    wait_until("every job ended", || {
        queue_states(&ids)
            .iter()
            .all(|s| !["PENDING", "RUNNING", "CONFIGURING", "COMPLETING"].contains(&s.as_str()))
    });
    let run = only_run(&p);
    assert_eq!(run["state"], "failed (exit 1)", "{run}");
    assert_eq!(run["counts"]["executed"], 2, "{run}");
    assert_eq!(run["counts"]["failed"], 1, "{run}");
    assert_eq!(run["counts"]["planned"], 3, "{run}");
    assert!(run["ended"].as_f64().is_some(), "{run}");

    // A cancelled detached run says so, with what it had done.
    let p = Project::new();
    p.write("s.toml", SLOW);
    let out = p.pipe(&["run", "s.toml", "--executor", "slurm", "--detach", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let run = only_run(&p);
    assert_eq!(run["state"], "submitted", "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    assert_eq!(p.pipe(&["cancel", &id]).status.code(), Some(0));
    let run = only_run(&p);
    assert_eq!(run["state"], "cancelled", "{run}");
    assert_eq!(run["counts"]["executed"], 0, "{run}");
    assert_eq!(run["counts"]["skipped"], 6, "{run}");
}
