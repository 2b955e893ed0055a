//! Ctrl-C keeps work: SIGINT or SIGTERM during training keeps a resume point at the last
//! epoch boundary, and the next run continues from it bit for bit; `resume_every` keeps
//! them periodically. Planning without the data: `dag`, `status` and `run --dry-run` say
//! what is missing, `run` refuses before work.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

/// A train stage on a 2,000-example version of the tiny data, long enough (300 epochs of
/// 100 steps) that a signal lands mid-run.
fn pipeline(extra: &str) -> String {
    format!(
        r#"[pipeline]
name = "interrupt"
[stage.data]
kind = "dataset"
source = "idx"
path = "data"
train_size = 2000
test_size = 200
[stage.corrupt]
kind = "corrupt"
inputs = ["data"]
fraction = 0.2
seed = 1
[stage.train]
kind = "train"
inputs = ["data", "corrupt"]
model = "mlp"
hidden = [64, 64]
epochs = 300
batch_size = 20
lr = 0.05
seed = 1
device = "cpu"
checkpoints = [0, 150]
{extra}
"#
    )
}

fn project(extra: &str) -> Project {
    let p = Project::new();
    p.write_idx("data", 2000, 200);
    p.write("t.toml", &pipeline(extra));
    p
}

/// `pipe run t.toml` started in a process group of its own (as a shell's job is).
fn start(p: &Project) -> Child {
    p.command(&["run", "t.toml"])
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The last epoch the train instance's log reports in this run, if any.
fn last_logged_epoch(p: &Project) -> Option<i64> {
    let logs = std::fs::read_dir(p.cache().join("logs")).ok()?;
    logs.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(|l| l.strip_prefix("epoch "))
                .filter_map(|l| l.split('/').next()?.trim().parse::<i64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
}

/// Waits until the log shows epoch `epoch` done (panics after 120 s).
fn wait_for_epoch(p: &Project, child: &mut Child, epoch: i64) {
    let until = Instant::now() + Duration::from_secs(120);
    while last_logged_epoch(p).is_none_or(|e| e < epoch) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        assert!(Instant::now() < until, "no epoch {epoch} in the log");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `signal` (to the process group when `group`), waits for the run to end; returns
/// its exit code, stderr and the seconds from the signal to its end.
fn interrupt(child: Child, signal: i32, group: bool) -> (i32, String, f64) {
    let pid = child.id() as i32;
    let clock = Instant::now();
    // SAFETY: kill(2) on the child (group) this test started.
    unsafe {
        libc::kill(if group { -pid } else { pid }, signal);
    }
    let out = child.wait_with_output().unwrap();
    let seconds = clock.elapsed().as_secs_f64();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        seconds,
    )
}

/// The epoch in `kept train at epoch N of 300: the next run continues from there`.
fn kept_epoch(stderr: &str) -> i64 {
    kept_epoch_of(stderr, 300)
}

/// The epoch in `kept train at epoch N of EPOCHS: the next run continues from there`.
fn kept_epoch_of(stderr: &str, epochs: i64) -> i64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("kept train at epoch "))
        .unwrap_or_else(|| panic!("no kept line:\n{stderr}"));
    assert!(
        line.ends_with(&format!(" of {epochs}: the next run continues from there")),
        "{line}"
    );
    line["kept train at epoch ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The train artifact's files and every kept checkpoint's files, by name, as bytes.
fn results(p: &Project) -> BTreeMap<String, Vec<u8>> {
    let st = p.status("t.toml", &[]);
    let train = st.iter().find(|s| s["stage"] == "train").unwrap();
    assert_eq!(train["state"], "cached", "{train}");
    let dir = p
        .cache()
        .join("artifacts")
        .join(train["key"].as_str().unwrap());
    let mut files = BTreeMap::new();
    read_files(&dir, "train", &mut files);
    let cks: Vec<Json> =
        serde_json::from_slice(&std::fs::read(dir.join("checkpoints.json")).unwrap()).unwrap();
    assert_eq!(cks.len(), 3, "{cks:?}");
    for c in cks {
        let d = p.cache().join("artifacts").join(c["key"].as_str().unwrap());
        read_files(&d, &format!("epoch {}", c["epoch"]), &mut files);
    }
    files
}

fn read_files(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path: PathBuf = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "manifest.json" {
            continue;
        }
        files.insert(format!("{prefix}/{name}"), std::fs::read(&path).unwrap());
    }
}

/// The epochs of the checkpoint parts in the cache.
fn checkpoint_epochs(p: &Project) -> Vec<i64> {
    let mut epochs: Vec<i64> = p
        .artifacts()
        .iter()
        .filter_map(|d| {
            let m: Json =
                serde_json::from_slice(&std::fs::read(d.join("manifest.json")).ok()?).ok()?;
            (m["kind"] == "train.checkpoint").then(|| m["params"]["epoch"].as_i64().unwrap())
        })
        .collect();
    epochs.sort();
    epochs
}

/// The folder of the checkpoint part of `epoch`.
fn checkpoint_dir(p: &Project, epoch: i64) -> PathBuf {
    p.artifacts()
        .into_iter()
        .find(|d| {
            std::fs::read(d.join("manifest.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
                .is_some_and(|m| m["kind"] == "train.checkpoint" && m["params"]["epoch"] == epoch)
        })
        .unwrap_or_else(|| panic!("no checkpoint of epoch {epoch}"))
}

/// `cp -a from to`.
fn copy_tree(from: &Path, to: &Path) {
    let ok = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// `pipe run t.toml`, which must succeed.
fn run_ok(p: &Project) {
    let out = p.pipe(&["run", "t.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The train log of the last run.
fn train_log(p: &Project) -> String {
    std::fs::read_dir(p.cache().join("logs"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .find(|t| t.contains("stage train (train)"))
        .unwrap()
}

fn assert_same(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, bytes) in a {
        assert!(bytes == &b[name], "{name} differs");
    }
}

#[test]
fn ctrl_c_keeps_the_epoch_reached_and_the_next_run_continues_bit_for_bit() {
    let straight = project("");
    run_ok(&straight);
    let expected = results(&straight);
    assert_eq!(checkpoint_epochs(&straight), [0, 150, 300]);

    let p = project("");
    // Ctrl-C in a terminal: SIGINT to the whole process group, the worker included.
    let mut child = start(&p);
    wait_for_epoch(&p, &mut child, 5);
    let (code, stderr, seconds) = interrupt(child, libc::SIGINT, true);
    assert_eq!(code, 130, "{stderr}");
    let first = kept_epoch(&stderr);
    assert!((5..300).contains(&first), "{stderr}");
    eprintln!("SIGINT to the group: kept epoch {first}, pipe ended {seconds:.3}s after the signal");
    assert!(seconds < 10.0, "{seconds}");
    assert!(checkpoint_epochs(&p).contains(&first));
    // The resume point is not one of the instance's checkpoints.
    let st = p.status("t.toml", &[]);
    let train = st.iter().find(|s| s["stage"] == "train").unwrap();
    let parts: Vec<&str> = train["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["epoch 0", "epoch 150", "epoch 300"]);

    // SIGTERM to pipe alone: pipe asks the worker.
    let mut child = start(&p);
    wait_for_epoch(&p, &mut child, first + 5);
    assert!(train_log(&p).contains(&format!("resumed from the checkpoint of epoch {first}")));
    let (code, stderr, seconds) = interrupt(child, libc::SIGTERM, false);
    assert_eq!(code, 130, "{stderr}");
    let second = kept_epoch(&stderr);
    assert!(second >= first + 5, "{stderr}");
    eprintln!("SIGTERM to pipe: kept epoch {second}, pipe ended {seconds:.3}s after the signal");
    assert!(seconds < 10.0, "{seconds}");

    run_ok(&p);
    let log = train_log(&p);
    assert!(
        log.contains(&format!("resumed from the checkpoint of epoch {second}")),
        "{log}"
    );
    assert_eq!(
        log.matches("\nepoch ").count() as i64,
        300 - second,
        "{log}"
    );
    assert_same(&expected, &results(&p));
    // The resume point is gone once the final epoch is stored.
    assert_eq!(checkpoint_epochs(&p), [0, 150, 300]);
}

#[test]
fn resume_every_keeps_one_resume_point_that_survives_kill_9() {
    let straight = project("");
    run_ok(&straight);
    let expected = results(&straight);

    // Not in the key: the same instance, the same files, no resume point left at the end.
    let p = project("resume_every = \"0.001s\"");
    run_ok(&p);
    assert!(train_log(&p).contains("resume point (periodic): epoch 1 kept"));
    assert_same(&expected, &results(&p));
    assert_eq!(checkpoint_epochs(&p), [0, 150, 300], "{}", train_log(&p));

    // kill -9 of the whole group: the periodic resume point is where the next run goes on.
    let p = project("resume_every = \"0.001s\"");
    let mut child = start(&p);
    wait_for_epoch(&p, &mut child, 20);
    let (_, _, _) = interrupt(child, libc::SIGKILL, true);
    let kept = checkpoint_epochs(&p);
    let first = *kept.iter().max().unwrap();
    assert!(first >= 15 && kept.len() <= 3, "{kept:?}");

    // A kill between keeping a resume point and removing the one before leaves both (the
    // previous run's point is put back after a second kill -9, as such a kill leaves it).
    let aside = p.dir.path().join("aside");
    let first_dir = checkpoint_dir(&p, first);
    copy_tree(&first_dir, &aside);
    let mut child = start(&p);
    wait_for_epoch(&p, &mut child, first + 10);
    let (_, _, _) = interrupt(child, libc::SIGKILL, true);
    if !first_dir.exists() {
        copy_tree(&aside, &first_dir);
    }
    let kept = checkpoint_epochs(&p);
    let point = *kept.iter().max().unwrap();
    assert!(point >= first + 5 && kept.contains(&first), "{kept:?}");
    run_ok(&p);
    assert!(
        train_log(&p).contains(&format!("resumed from the checkpoint of epoch {point}")),
        "{}",
        train_log(&p)
    );
    assert_same(&expected, &results(&p));
    assert_eq!(checkpoint_epochs(&p), [0, 150, 300]);
}

#[test]
fn an_epoch_that_would_end_too_late_is_abandoned_and_the_last_boundary_kept() {
    // `finish_within = "0s"`: any epoch under way when the signal comes would end too
    // late, so the worker abandons it and keeps the end of the last one (held in memory;
    // not a kept checkpoint). Epochs of 2,000 steps of batch 1.
    let settings = |p: &Project| {
        p.write(
            "t.toml",
            &pipeline("finish_within = \"0s\"")
                .replace("epochs = 300", "epochs = 4")
                .replace("batch_size = 20", "batch_size = 1")
                .replace("checkpoints = [0, 150]", "checkpoints = [0, 3]"),
        );
    };
    let straight = project("");
    settings(&straight);
    run_ok(&straight);
    let expected = results(&straight);

    let p = project("");
    settings(&p);
    let mut child = start(&p);
    wait_for_epoch(&p, &mut child, 1);
    // A quarter of an epoch on: past what follows an epoch (its evaluation is logged
    // first), well inside epoch 2's steps.
    let epoch_1: f64 = train_log(&p)
        .lines()
        .find(|l| l.starts_with("epoch   1/"))
        .and_then(|l| l.split_whitespace().last()?.strip_suffix('s')?.parse().ok())
        .unwrap();
    std::thread::sleep(Duration::from_secs_f64(epoch_1 / 4.0));
    let (code, stderr, _) = interrupt(child, libc::SIGINT, true);
    assert_eq!(code, 130, "{stderr}");
    assert_eq!(kept_epoch_of(&stderr, 4), 1, "{stderr}");
    let log = train_log(&p);
    assert!(
        log.contains("stopped during epoch 2: keeping the end of epoch 1"),
        "{log}"
    );
    assert_eq!(checkpoint_epochs(&p), [0, 1]);
    run_ok(&p);
    assert!(train_log(&p).contains("resumed from the checkpoint of epoch 1"));
    // The state kept from memory goes on exactly as a straight run.
    assert_same(&expected, &results(&p));
    assert_eq!(checkpoint_epochs(&p), [0, 3, 4]);

    let p = project("finish_within = \"soon\"");
    let out = p.pipe(&["run", "t.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("finish_within") && err.contains("\"soon\""),
        "{err}"
    );
}

#[test]
fn resume_every_must_be_a_duration() {
    let p = project("resume_every = \"soon\"");
    let out = p.pipe(&["run", "t.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resume_every") && err.contains("\"soon\""),
        "{err}"
    );
}

#[test]
fn plans_without_the_data_and_run_refuses_before_work() {
    let p = Project::new();
    let text = std::fs::read_to_string(repo().join("pipelines/cifar10-resnet18.toml")).unwrap();
    p.write(
        "c.toml",
        &text.replace("../data/cifar-10-batches-bin", "nodata"),
    );
    let out = p.pipe(&["dag", "c.toml"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = p.status("c.toml", &[]);
    let data = st.iter().find(|s| s["stage"] == "data").unwrap();
    assert_eq!(data["key"], Json::Null);
    let reason = data["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("data missing: ") && reason.ends_with("nodata/data_batch_1.bin"),
        "{reason}"
    );
    let out = p.pipe(&["run", "c.toml", "--dry-run"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("data (data missing: "), "{text}");
    let out = p.pipe(&["run", "c.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data missing: ") && err.contains("data_batch_1.bin"),
        "{err}"
    );
    assert!(p.artifacts().is_empty(), "nothing ran");
}
