//! Training throughput: `pipe`'s train stage against the same training in PyTorch, and
//! against its own bare training loop (no engine, no checkpoints), on Fashion-MNIST, for
//! the built-in MLP 512-512, a scripted copy of it (`model = "script"`: the module of
//! `benches/mlp_script.py`, scripted by `pipelines/models/export.py` in an exec stage) and
//! the built-in CNN. pipe runs the three in one run after a tiny warm-up instance, as a
//! sweep runs them, so each is served by a worker whose libtorch has started.
//!
//! `cargo bench -p pipe-torch --bench train` (after `cargo build --release --workspace`, with
//! the virtualenv's python3 on PATH: `source scripts/env.sh`). `PIPE_BENCH_SCALE=0.2` runs
//! a smaller version. Prints examples/s for each and the ratios against the goals:
//! pipe / PyTorch >= 1.0 (for the scripted MLP, PyTorch trains the same module eagerly, as
//! a plain PyTorch script does), the scripted MLP at least 0.9x the built-in's throughput,
//! and pipe's overhead over the bare run < 3% of wall time: the time pipe's instance spends
//! outside its training loop, minus the time the bare run spends outside the same loop,
//! over the instance's wall time.
//! pipe's loop time is the sum of the per-epoch times in the train instance's log (`pipe
//! log KEY`); the benchmark exits 1, saying why, if any time is missing or not positive.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use pipe_torch::data;
use pipe_torch::models::Arch;
use pipe_torch::optim::{OptimizerConfig, Schedule};
use pipe_torch::trainer::{TrainConfig, Trainer};
use serde_json::Value as Json;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Prints why the benchmark cannot report its figures and exits with status 1.
fn fail(msg: &str) -> ! {
    eprintln!("train bench: {msg}");
    std::process::exit(1)
}

/// The seconds of each epoch trained in the last attempt of a train instance, from its log
/// (`pipe log KEY`): the train stage writes one line per epoch, `epoch    3  lr ...  1.23s`,
/// after a `# pipe ...` header per attempt. An error if there are none or one is not a
/// positive number (the log rounds to 0.01 s: an epoch under 5 ms reads as zero).
fn epoch_seconds(log: &str) -> Result<Vec<f64>, String> {
    let attempt = log.rsplit_once("# pipe ").map_or(log, |(_, last)| last);
    let mut seconds = Vec::new();
    for line in attempt.lines().filter(|l| l.starts_with("epoch ")) {
        let s = line
            .split_whitespace()
            .last()
            .and_then(|t| t.strip_suffix('s'))
            .and_then(|t| t.parse::<f64>().ok())
            .ok_or_else(|| format!("no time at the end of the log line {line:?}"))?;
        if !s.is_finite() {
            return Err(format!("epoch time {s} in the log line {line:?}"));
        }
        if s <= 0.0 {
            return Err(format!(
                "epoch time {s} in the log line {line:?}: too short to measure, raise PIPE_BENCH_SCALE"
            ));
        }
        seconds.push(s);
    }
    if seconds.is_empty() {
        return Err(format!(
            "no per-epoch times (`epoch N ... X.XXs` lines) in its log:\n{log}"
        ));
    }
    Ok(seconds)
}

/// The key of `stage` in `pipe status --json`'s output, or exit 1 if it has none yet.
fn key_of(status: &Json, stage: &str) -> String {
    status
        .as_array()
        .and_then(|all| all.iter().find(|s| s["stage"] == stage))
        .and_then(|s| s["key"].as_str())
        .unwrap_or_else(|| fail(&format!("{stage}: no key in `pipe status`")))
        .to_string()
}

/// Examples per second, or exit 1 if `seconds` is no positive finite time.
fn rate(what: &str, examples: f64, seconds: f64) -> f64 {
    if !seconds.is_finite() || seconds <= 0.0 {
        fail(&format!(
            "{what}: loop time {seconds} s is not a positive finite time"
        ));
    }
    examples / seconds
}

fn main() {
    let scale: f64 = std::env::var("PIPE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let pipe_bin = repo.join("target/release/pipe");
    if !pipe_bin.exists() || !repo.join("target/release/pipe-torch").exists() {
        eprintln!("build first: cargo build --release --workspace");
        std::process::exit(1);
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n_train = ((10_000.0 * scale) as usize).max(100);
    let batch = 128;
    let (e_mlp, e_cnn) = (
        ((15.0 * scale) as i64).max(2),
        ((3.0 * scale) as i64).max(1),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("bench.toml");
    let benches = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches");
    let module_py = benches.join("mlp_script.py");
    let export_py = repo.join("pipelines/models/export.py");
    std::fs::write(
        &file,
        format!(
            r#"
[pipeline]
name = "train-bench"
[stage.data]
kind = "dataset"
source = "fashion-mnist"
train_size = {n_train}
test_size = 2000
[stage.corrupt]
kind = "corrupt"
inputs = ["data"]
fraction = 0.0
[stage.net]
kind = "exec"
cmd = ["python3", {export:?}, "{module}:MLP", "--input", "1", "28", "28", "--classes", "10"]
[stage.warmup]
kind = "train"
inputs = ["data", "corrupt"]
model = "mlp"
hidden = [8]
epochs = 1
batch_size = {batch}
lr = 0.05
device = "cpu"
threads = {threads}
[stage.train_mlp]
kind = "train"
inputs = ["data", "corrupt"]
model = "mlp"
hidden = [512, 512]
epochs = {e_mlp}
batch_size = {batch}
lr = 0.05
device = "cpu"
threads = {threads}
checkpoints = [0]
[stage.train_script]
kind = "train"
inputs = ["data", "corrupt", "net"]
model = "script"
epochs = {e_mlp}
batch_size = {batch}
lr = 0.05
device = "cpu"
threads = {threads}
checkpoints = [0]
[stage.train_cnn]
kind = "train"
inputs = ["data", "corrupt"]
model = "cnn"
epochs = {e_cnn}
batch_size = {batch}
lr = 0.05
device = "cpu"
threads = {threads}
checkpoints = [0]
"#,
            export = export_py.to_str().expect("a UTF-8 path"),
            module = module_py.to_str().expect("a UTF-8 path"),
        ),
    )
    .expect("write pipeline");
    let cache = dir.path().join("cache");
    let pipe = |args: &[&str]| -> Json {
        let mut c = Command::new(&pipe_bin);
        c.args(args)
            .arg(&file)
            .arg("--cache")
            .arg(&cache)
            .arg("--json");
        serde_json::from_slice(&run(&mut c)).expect("json")
    };
    pipe(&["run", "--only", "corrupt"]);
    let status = pipe(&["status"]);
    let art = |k: &str| -> PathBuf { cache.join("artifacts").join(k) };
    let (data_dir, labels_dir) = (
        art(&key_of(&status, "data")),
        art(&key_of(&status, "corrupt")),
    );

    println!(
        "training throughput on Fashion-MNIST ({n_train} train, 2000 test examples), batch {batch}, {threads} threads, CPU"
    );
    println!(
        "{:<6} {:>6} {:>14} {:>14} {:>14} {:>13} {:>15}",
        "model",
        "epochs",
        "pipe ex/s",
        "PyTorch ex/s",
        "bare loop ex/s",
        "pipe/PyTorch",
        "pipe overhead"
    );
    // pipe: one run of a tiny warm-up instance and the three models, as a sweep runs them:
    // the warm-up's worker (libtorch started once) then serves them all; each train
    // instance's wall time is the `seconds` its manifest records (handing the job to the
    // worker, loading data and, for the scripted MLP, the module, training, checkpoints and
    // metrics).
    let t0 = Instant::now();
    pipe(&["run", "--jobs", &threads.to_string()]);
    let run_wall = t0.elapsed().as_secs_f64();
    // The scripted MLP's key takes the `net` artifact's digest: known only now.
    let status = pipe(&["status"]);
    let key = |stage: &str| key_of(&status, stage);
    let manifest_seconds = |stage: &str| -> f64 {
        let m: Json = serde_json::from_slice(
            &std::fs::read(art(&key(stage)).join("manifest.json")).expect("manifest"),
        )
        .expect("manifest json");
        m["seconds"].as_f64().unwrap_or(0.0)
    };
    let warmup = manifest_seconds("warmup");
    let module_pt = art(&key("net")).join("model.pt");
    let mut examples_per_second = std::collections::HashMap::new();
    for (model, epochs) in [("mlp", e_mlp), ("script", e_mlp), ("cnn", e_cnn)] {
        let pipe_wall = manifest_seconds(&format!("train_{model}"));
        if pipe_wall.is_nan() || pipe_wall <= 0.0 {
            fail(&format!(
                "train_{model}: no positive `seconds` in its manifest"
            ));
        }
        // Its per-epoch loop times, from the instance's log (metrics.parquet holds none).
        let train_key = key(&format!("train_{model}"));
        let log = run(Command::new(&pipe_bin)
            .args(["log", &train_key, "--cache"])
            .arg(&cache));
        let pipe_epochs = epoch_seconds(&String::from_utf8_lossy(&log))
            .unwrap_or_else(|e| fail(&format!("train_{model} ({train_key}): {e}")));
        if pipe_epochs.len() != epochs as usize {
            fail(&format!(
                "train_{model} ({train_key}): the log has {} epoch lines, expected {epochs}",
                pipe_epochs.len()
            ));
        }
        let pipe_loop: f64 = pipe_epochs.iter().sum();

        // The bare loop in this process: load, initialize, evaluate epoch 0, train.
        tch::set_num_threads(threads as i32);
        let t0 = Instant::now();
        let d = data::load(&data_dir, &labels_dir, tch::Device::Cpu).expect("load");
        let cfg = TrainConfig {
            arch: match model {
                "mlp" => Arch::Mlp {
                    hidden: vec![512, 512],
                },
                "script" => Arch::Script {
                    file: module_pt.clone(),
                },
                _ => Arch::Cnn { mult: 1.0 },
            },
            epochs,
            batch_size: batch,
            optimizer: OptimizerConfig::Sgd {
                momentum: 0.9,
                nesterov: false,
                weight_decay: 0.0,
            },
            lr: 0.05,
            schedule: Schedule::Constant,
            augment: false,
            seed: 0,
            loss: pipe_torch::trainer::Loss::CrossEntropy,
            init: pipe_torch::models::WeightInit::Kaiming,
            freeze: Vec::new(),
            device: tch::Device::Cpu,
            record_examples: false,
        };
        let mut t = Trainer::new(cfg, &d).expect("a model to train");
        t.evaluate_initial();
        let mut bare_loop = 0.0;
        for _ in 0..epochs {
            bare_loop += t.train_epoch().scores.seconds;
        }
        let bare_wall = t0.elapsed().as_secs_f64();

        // PyTorch on the same Parquet inputs; for the scripted MLP, the same module file
        // trained eagerly, as a plain PyTorch script would.
        let mut py = Command::new("python3");
        py.arg(benches.join("train_torch.py"))
            .args([
                "--data",
                data_dir.to_str().unwrap(),
                "--labels",
                labels_dir.to_str().unwrap(),
            ])
            .args([
                "--epochs",
                &epochs.to_string(),
                "--batch",
                &batch.to_string(),
            ])
            .args(["--threads", &threads.to_string()]);
        if model == "script" {
            py.args(["--model", "module", "--module"])
                .arg(format!("{}:MLP", module_py.display()));
        } else {
            py.args(["--model", model]);
        }
        let py: Json = serde_json::from_slice(&run(&mut py)).expect("json from python");
        let py_loop: f64 = py["seconds"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Json::as_f64)
            .sum();

        let ex = (n_train as i64 * epochs) as f64;
        // What pipe adds around the training loop (worker handoff, data loading, checkpoints,
        // metrics) beyond what the bare run spends around the same loop: the loops are the
        // same code, and their run-to-run noise (several percent here) is not overhead.
        let overhead = ((pipe_wall - pipe_loop) - (bare_wall - bare_loop)) / pipe_wall;
        let (pipe_rate, py_rate, bare_rate) = (
            rate(&format!("{model}: pipe"), ex, pipe_loop),
            rate(&format!("{model}: PyTorch"), ex, py_loop),
            rate(&format!("{model}: bare loop"), ex, bare_loop),
        );
        examples_per_second.insert(model, (pipe_rate, py_rate, bare_rate));
        println!(
            "{model:<6} {epochs:>6} {pipe_rate:>14.0} {py_rate:>14.0} {bare_rate:>14.0} {:>12.2}x {:>14.1}%",
            pipe_rate / py_rate,
            overhead * 100.0
        );
        println!(
            "       wall: pipe instance {pipe_wall:.2}s (loop {pipe_loop:.2}s), bare {bare_wall:.2}s (loop {bare_loop:.2}s), PyTorch loop {py_loop:.2}s; wall ratio pipe/bare {:.3}",
            pipe_wall / bare_wall
        );
    }
    // The scripted MLP against the built-in one: pipe's train stage, and the bare loop.
    let (mlp, script) = (examples_per_second["mlp"], examples_per_second["script"]);
    println!(
        "scripted MLP 512-512 / built-in MLP 512-512: pipe {:.2}x, bare loop {:.2}x; scripted in pipe / the same module in PyTorch {:.2}x",
        script.0 / mlp.0,
        script.2 / mlp.2,
        script.0 / script.1
    );
    println!(
        "the whole run: {run_wall:.2}s, of which the warm-up instance {warmup:.2}s (it starts the worker: libtorch's start is paid there, once per worker)"
    );
    println!(
        "goals: pipe/PyTorch >= 1.00x; scripted/built-in >= 0.90x; pipe overhead over the bare loop < 3% of wall time"
    );
}
