//! Helpers shared by the integration tests: a temp project with a tiny data set, running
//! the real `pipe` binary in it, and the test pipelines of `tests/pipelines/`.

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
        self.write_idx_sized(rel, train, test, 4);
    }

    /// [`write_idx`](Self::write_idx) with `side` x `side` images (28: MNIST's shape).
    pub fn write_idx_sized(&self, rel: &str, train: usize, test: usize, side: usize) {
        use pipe_science::datasets::idx::encode;
        let d = self.path(rel);
        std::fs::create_dir_all(&d).unwrap();
        for (prefix, n) in [("train", train), ("t10k", test)] {
            let pixels: Vec<u8> = (0..n * side * side).map(|i| (i * 7 % 251) as u8).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
            std::fs::write(
                d.join(format!("{prefix}-images-idx3-ubyte")),
                encode(&[n, side, side], &pixels),
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

/// The checkout's root folder (with `pipelines/` and `scripts/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// The test pipelines, in `tests/pipelines/` so that each is written once (each file says
// what it is for). Relative paths in them (`path = "data"`) resolve against the folder the
// test writes them to: a `Project`.

/// Tiny generated data -> corrupt over noise x seed -> an exec summary; most engine tests.
pub const BASIC: &str = include_str!("../pipelines/basic.toml");
/// A small MLP on a Fashion-MNIST subset with corrupted labels (train and analysis tests).
pub const FASHION_TRAIN: &str = include_str!("../pipelines/fashion-train.toml");
/// Tiny generated data -> corrupt -> an 8-unit MLP -> rollback (the remote-cache tests).
pub const TINY_TRAIN: &str = include_str!("../pipelines/tiny-train.toml");
/// Tiny generated data (200/40) -> corrupt over noise x seed -> every stage (the report).
pub const TINY_STUDY: &str = include_str!("../pipelines/tiny-study.toml");

/// `pipeline` with some values replaced, for tests that vary a shared pipeline and still
/// write the whole file (so that `pipe` sees the values as written, not as `--set`s).
/// Each `(name, value)` names an existing key by its table and key, `"stage.train.epochs"`
/// or `"sweep.noise"`, and gives the new value as TOML text, `"12"` or `"[0.0, 0.4]"`. The
/// key's line (`epochs = 30` under `[stage.train]`) is replaced by `epochs = 12`; every
/// other line is kept, so locations in error messages stay put. Panics if the table has no
/// such line: a misspelt name must not silently leave the value alone.
pub fn with_values(pipeline: &str, values: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = pipeline.lines().map(String::from).collect();
    for (name, value) in values {
        let (table, key) = name
            .rsplit_once('.')
            .unwrap_or_else(|| panic!("{name}: expected TABLE.KEY"));
        let mut current = String::new();
        let mut found = 0;
        for line in &mut lines {
            let t = line.trim();
            if let Some(header) = t.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
                current = header.trim().to_string();
            } else if current == table
                && t.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            {
                *line = format!("{key} = {value}");
                found += 1;
            }
        }
        assert_eq!(
            found, 1,
            "{name}: no single `{key} = ...` line under [{table}]"
        );
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The tiny study at one sweep point (`noise`, seed 1) with some more values replaced (as
/// in [`with_values`]), written to `p.toml` beside its generated data set; returns the text.
pub fn tiny_study_at(p: &Project, noise: &str, values: &[(&str, &str)]) -> String {
    p.write_idx("data", 200, 40);
    let noise = format!("[{noise}]");
    let mut all = vec![("sweep.noise", noise.as_str()), ("sweep.seed", "[1]")];
    all.extend_from_slice(values);
    let text = with_values(TINY_STUDY, &all);
    p.write("p.toml", &text);
    text
}

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
    "stage.gradnorm.max_examples=30",
    "--set",
    "stage.rollback.from_epochs=[1]",
];

#[test]
fn with_values_replaces_exactly_the_named_lines() {
    let text = with_values(
        FASHION_TRAIN,
        &[("sweep.noise", "[0.0, 0.4]"), ("stage.train.epochs", "12")],
    );
    let changed: Vec<(&str, &str)> = FASHION_TRAIN
        .lines()
        .zip(text.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(
        changed,
        [
            ("noise = [0.4]", "noise = [0.0, 0.4]"),
            ("epochs = 30", "epochs = 12")
        ]
    );
    assert_eq!(text.lines().count(), FASHION_TRAIN.lines().count());
    // `seed` is in two tables: only the named one changes.
    let text = with_values(FASHION_TRAIN, &[("stage.corrupt.seed", "4")]);
    assert!(text.contains("seed = 4\n") && text.contains("seed = 7\n"));
    let misspelt = std::panic::catch_unwind(|| with_values(BASIC, &[("stage.train.epochs", "1")]));
    assert!(misspelt.is_err(), "BASIC has no train stage");
}

/// A user's own model for the tests of scripted and imported runs: a BatchNorm layer (so
/// buffers travel too) and a linear logits layer, meeting the module contract.
pub const MODEL_PY: &str = r#"from typing import List, Tuple
import torch
from torch import Tensor, nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Sequential(nn.Linear(16, 12), nn.BatchNorm1d(12))
        self.logits = nn.Linear(12, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)[-1][1]

    @torch.jit.export
    def layers(self, x: Tensor) -> List[Tuple[str, Tensor]]:
        h = self.fc1(x.flatten(1)).relu()
        return [("fc1", h), ("logits", self.logits(h))]
"#;

/// A 512 KiB tmpfs mounted at a test's folder, unmounted when dropped.
pub struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Creates `dir` and mounts a 512 KiB tmpfs there (a disk that fills up); the tests that
/// use it need root, as CI runs.
pub fn mount_small_tmpfs(dir: &Path) -> Mount {
    std::fs::create_dir_all(dir).unwrap();
    // SAFETY: geteuid(2) reads the process's user id; no memory is touched.
    let mounted = unsafe { libc::geteuid() } == 0
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        mounted,
        "this test mounts a 512 KiB tmpfs and needs root (CI runs as root)"
    );
    Mount(dir.to_path_buf())
}
