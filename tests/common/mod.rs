//! Helpers shared by the integration tests: a temp project with a tiny data set, and
//! running the real `pipe` binary in it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

/// A temporary project folder: pipeline files, a tiny IDX data set, a cache.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new() -> Project {
        let p = Project {
            dir: tempfile::tempdir().unwrap(),
        };
        p.write_idx("data", 60, 20);
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cache(&self) -> PathBuf {
        self.path("cache")
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }

    /// An MNIST-layout folder of 4x4 images, 10 classes, labels i % 10.
    pub fn write_idx(&self, rel: &str, train: usize, test: usize) {
        use pipe::datasets::idx::encode;
        let d = self.path(rel);
        std::fs::create_dir_all(&d).unwrap();
        for (prefix, n) in [("train", train), ("t10k", test)] {
            let pixels: Vec<u8> = (0..n * 16).map(|i| (i * 7 % 251) as u8).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            std::fs::write(
                d.join(format!("{prefix}-images-idx3-ubyte")),
                encode(&[n, 4, 4], &pixels),
            )
            .unwrap();
            std::fs::write(
                d.join(format!("{prefix}-labels-idx1-ubyte")),
                encode(&[n], &labels),
            )
            .unwrap();
        }
    }

    /// Runs `pipe ARGS` in the project folder with its cache.
    pub fn pipe(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pipe"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("PIPE_CACHE", self.cache());
        c
    }

    /// Runs `pipe run FILE --json ARGS` and returns (exit code, the JSON report).
    pub fn run(&self, file: &str, extra: &[&str]) -> (i32, Json) {
        let mut args = vec!["run", file, "--json"];
        args.extend_from_slice(extra);
        let out = self.pipe(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), json)
    }

    /// `pipe status FILE --json`.
    pub fn status(&self, file: &str, extra: &[&str]) -> Vec<Json> {
        let mut args = vec!["status", file, "--json"];
        args.extend_from_slice(extra);
        let out = self.pipe(&args);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Json>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Every artifact folder in the cache.
    pub fn artifacts(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(self.cache().join("artifacts")) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

/// Runs a Python snippet with the virtualenv's python3 and parses its stdout as JSON.
pub fn python(code: &str) -> Json {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .output()
        .expect("python3 on PATH (run the tests with scripts/test)");
    assert!(
        out.status.success(),
        "python failed (are duckdb, polars, torch installed? run scripts/setup):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Items of one list in a run report that belong to `stage`.
pub fn of_stage<'a>(report: &'a Json, list: &str, stage: &str) -> Vec<&'a Json> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["stage"] == stage)
        .collect()
}

/// Number of items in a run report's list.
pub fn count(report: &Json, list: &str) -> usize {
    report[list].as_array().unwrap().len()
}

/// Asserts that every artifact is complete: a manifest listing exactly its files.
pub fn assert_no_partial_artifacts(cache: &Path) {
    if let Ok(rd) = std::fs::read_dir(cache.join("artifacts")) {
        for e in rd {
            let dir = e.unwrap().path();
            let m: Json =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap_or_else(
                    |_| panic!("{} has no manifest: a partial artifact", dir.display()),
                ))
                .unwrap();
            for f in m["files"].as_array().unwrap() {
                let p = dir.join(f["path"].as_str().unwrap());
                assert_eq!(
                    std::fs::metadata(&p).unwrap().len(),
                    f["size"].as_u64().unwrap()
                );
            }
        }
    }
}

/// The pipeline used by most tests: tiny data -> corrupt over noise x seed -> an exec summary.
pub const BASIC: &str = r#"
[pipeline]
name = "basic"

[sweep]
noise = [0.0, 0.5]
seed = [1, 2]

[stage.data]
kind = "dataset"
source = "idx"
path = "data"
train_size = 40
test_size = 10

[stage.corrupt]
kind = "corrupt"
inputs = ["data"]
fraction = "${noise}"
seed = "${seed}"

[stage.count]
kind = "exec"
inputs = { labels = "corrupt" }
cmd = ["sh", "-c", "ls $PIPE_INPUT_LABELS > $PIPE_OUT/listing.txt"]
"#;

/// `--set` overrides that make the shipped quick pipeline small enough for tests that run it
/// many times or through Slurm (every stage kind still runs).
pub const QUICK_SMALL: &[&str] = &[
    "--set",
    "stage.data.train_size=400",
    "--set",
    "stage.data.test_size=200",
    "--set",
    "stage.train.epochs=3",
    "--set",
    "stage.train.checkpoints=[0,1,3]",
    "--set",
    "stage.activations.epochs=[0,3]",
    "--set",
    "stage.activations.per_class=5",
    "--set",
    "stage.probe.n_t=30",
    "--set",
    "stage.gradnorm.epochs=[0,3]",
    "--set",
    "stage.gradnorm.subset=30",
    "--set",
    "stage.rollback.from_epochs=[1]",
];
