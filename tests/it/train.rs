//! The `train` stage through the real binary, on a small Fashion-MNIST subset.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value as Json;

/// The shared Fashion-MNIST pipeline at these noise levels, epochs and kept checkpoints.
fn pipeline(noise: &[f64], epochs: i64, checkpoints: &str) -> String {
    with_values(
        FASHION_TRAIN,
        &[
            ("sweep.noise", &format!("{noise:?}")),
            ("stage.train.epochs", &epochs.to_string()),
            ("stage.train.checkpoints", checkpoints),
        ],
    )
}

fn artifact(p: &Project, key: &Json) -> PathBuf {
    p.cache().join("artifacts").join(key.as_str().unwrap())
}

fn train_items(p: &Project, file: &str) -> Vec<Json> {
    p.status(file, &[])
        .into_iter()
        .filter(|s| s["stage"] == "train")
        .collect()
}

/// Metrics rows (all columns but `seconds`), read by DuckDB.
fn metrics(dir: &Path) -> Vec<Json> {
    python(&format!(
        "import duckdb, json\n\
         rows = duckdb.sql(\"SELECT epoch, lr, train_loss, train_acc, clean_acc, corrupted_train_acc, corrupted_true_acc, \
         test_loss, test_acc FROM '{}/metrics.parquet' ORDER BY epoch\").fetchall()\n\
         print(json.dumps([list(r) for r in rows]))",
        dir.display()
    ))
    .as_array()
    .unwrap()
    .clone()
}

fn blake3_file(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).unwrap())
        .to_hex()
        .to_string()
}

#[test]
fn training_beats_chance_and_memorizes_corrupted_labels() {
    let p = Project::new();
    const E: usize = 40;
    p.write("t.toml", &pipeline(&[0.0, 0.4], E as i64, "[0, 1]"));
    let (code, r) = p.run("t.toml", &[]);
    assert_eq!(code, 0, "{r}");
    for item in of_stage(&r, "executed", "train") {
        let noise = item["point"]["noise"].as_f64().unwrap();
        let rows = metrics(&artifact(&p, &item["key"]));
        assert_eq!(rows.len(), E + 1, "epochs 0..=E");
        let col = |i: usize| -> Vec<f64> {
            rows.iter()
                .map(|r| r[i].as_f64().unwrap_or(f64::NAN))
                .collect()
        };
        let test_acc = col(8);
        // Chance on 10 balanced classes is 0.1.
        assert!(test_acc[0] < 0.3, "untrained: {}", test_acc[0]);
        let best = test_acc.iter().cloned().fold(0.0, f64::max);
        assert!(best > 0.6, "noise {noise}: best test accuracy {best}");
        if noise == 0.0 {
            assert!(
                rows[E][5].is_null() && rows[E][6].is_null(),
                "no corrupted examples, no accuracy"
            );
            assert!(col(3)[E] > 0.95, "clean data is fitted: {}", col(3)[E]);
        } else {
            let mem = col(5);
            let truth = col(6);
            // Memorization: the corrupted examples end up predicted as their (random) training labels...
            assert!(
                mem[E] > 0.8,
                "corrupted examples fitted to their training labels: {}",
                mem[E]
            );
            assert!(mem[1] < 0.3, "early on they are not: {}", mem[1]);
            // ...while their true labels, learned early through the clean examples, are forgotten.
            let peak_true = truth.iter().cloned().fold(0.0, f64::max);
            assert!(
                peak_true > 0.5 && truth[E] < peak_true - 0.25,
                "true-label accuracy {peak_true} -> {}",
                truth[E]
            );
            // Test accuracy peaks early and falls.
            assert!(
                test_acc[E] < best - 0.05,
                "test accuracy {best} -> {}",
                test_acc[E]
            );
        }
    }
}

#[test]
fn resume_equals_a_straight_run_bit_for_bit() {
    let a = Project::new();
    a.write("t.toml", &pipeline(&[0.4], 6, "[0, 2, 4]"));
    assert_eq!(a.run("t.toml", &[]).0, 0);
    let st = a.status("t.toml", &["--set", "stage.train.epochs=12"]);
    let train = st.iter().find(|s| s["stage"] == "train").unwrap();
    assert_eq!(train["reason"], "param epochs changed 6 -> 12");
    // The longer run keeps epochs 0, 2, 4 and 12: the first three are cached from the shorter
    // run (whose final epoch 6 is cached too, and is where training resumes).
    let parts: Vec<(&str, bool)> = train["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["cached"] == true))
        .collect();
    assert_eq!(
        parts,
        [
            ("epoch 0", true),
            ("epoch 2", true),
            ("epoch 4", true),
            ("epoch 12", false)
        ]
    );
    let (code, r) = a.run("t.toml", &["--set", "stage.train.epochs=12"]);
    assert_eq!(code, 0);
    let resumed = of_stage(&r, "executed", "train")[0].clone();
    let log = std::fs::read_to_string(
        a.cache()
            .join("logs")
            .join(format!("{}.log", resumed["key"].as_str().unwrap())),
    )
    .unwrap();
    assert!(
        log.contains("resumed from the checkpoint of epoch 6"),
        "{log}"
    );
    assert_eq!(
        log.matches("\nepoch ").count(),
        6,
        "only epochs 7..12 trained:\n{log}"
    );

    let b = Project::new();
    b.write("t.toml", &pipeline(&[0.4], 12, "[0, 2, 4]"));
    let (code, r) = b.run("t.toml", &[]);
    assert_eq!(code, 0);
    let straight = of_stage(&r, "executed", "train")[0].clone();
    assert_eq!(straight["key"], resumed["key"], "same parameters, same key");
    assert_eq!(
        metrics(&artifact(&a, &resumed["key"])),
        metrics(&artifact(&b, &straight["key"]))
    );
    let cks = |p: &Project, key: &Json| -> Vec<Json> {
        serde_json::from_slice(&std::fs::read(artifact(p, key).join("checkpoints.json")).unwrap())
            .unwrap()
    };
    let (ca, cb) = (cks(&a, &resumed["key"]), cks(&b, &straight["key"]));
    assert_eq!(ca, cb);
    assert_eq!(
        ca.iter()
            .map(|c| c["epoch"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [0, 2, 4, 12]
    );
    for c in &ca {
        for f in ["weights.safetensors", "optimizer.safetensors"] {
            assert_eq!(
                blake3_file(&artifact(&a, &c["key"]).join(f)),
                blake3_file(&artifact(&b, &c["key"]).join(f)),
                "epoch {} {f}",
                c["epoch"]
            );
        }
    }
}

#[test]
fn checkpoints_load_in_python_torch_with_layer_names() {
    let p = Project::new();
    p.write("t.toml", &pipeline(&[0.0], 2, "[0, 1]"));
    let (code, r) = p.run("t.toml", &[]);
    assert_eq!(code, 0);
    let train = artifact(&p, &of_stage(&r, "executed", "train")[0]["key"]);
    let cks: Vec<Json> =
        serde_json::from_slice(&std::fs::read(train.join("checkpoints.json")).unwrap()).unwrap();
    let final_ck = artifact(&p, &cks.last().unwrap()["key"]);
    let q = python(&format!(
        "import json, torch\nfrom safetensors.torch import load_file\n\
         w = load_file('{}/weights.safetensors')\n\
         x = torch.zeros(3, 784)\n\
         h = torch.relu(x @ w['fc1.weight'].T + w['fc1.bias'])\n\
         h = torch.relu(h @ w['fc2.weight'].T + w['fc2.bias'])\n\
         y = h @ w['logits.weight'].T + w['logits.bias']\n\
         print(json.dumps({{'shapes': {{k: list(v.shape) for k, v in w.items()}}, 'dtype': str(w['fc1.weight'].dtype), 'out': list(y.shape)}}))",
        final_ck.display()
    ));
    assert_eq!(
        q["shapes"],
        serde_json::json!({
            "fc1.weight": [256, 784], "fc1.bias": [256],
            "fc2.weight": [256, 256], "fc2.bias": [256],
            "logits.weight": [10, 256], "logits.bias": [10]
        })
    );
    assert_eq!(q["dtype"], "torch.float32");
    assert_eq!(q["out"], serde_json::json!([3, 10]));
    let model: Json =
        serde_json::from_slice(&std::fs::read(train.join("model.json")).unwrap()).unwrap();
    let layers: Vec<&str> = model["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["input", "fc1", "fc2", "logits"]);
    assert_eq!(
        model["layers"][1]["variables"],
        serde_json::json!(["fc1.bias", "fc1.weight"])
    );
}

#[test]
fn two_runs_give_identical_weights_and_metrics() {
    let runs: Vec<(Project, Json)> = (0..2)
        .map(|_| {
            let p = Project::new();
            p.write("t.toml", &pipeline(&[0.4], 3, "[0]"));
            let (code, r) = p.run("t.toml", &["--jobs", "1"]);
            assert_eq!(code, 0);
            let key = of_stage(&r, "executed", "train")[0]["key"].clone();
            (p, key)
        })
        .collect();
    let (a, b) = (&runs[0], &runs[1]);
    assert_eq!(a.1, b.1);
    assert_eq!(
        metrics(&artifact(&a.0, &a.1)),
        metrics(&artifact(&b.0, &b.1))
    );
    let parts = train_items(&a.0, "t.toml")[0]["parts"].clone();
    for part in parts.as_array().unwrap() {
        let f = |p: &Project| blake3_file(&artifact(p, &part["key"]).join("weights.safetensors"));
        assert_eq!(f(&a.0), f(&b.0));
    }
}

#[test]
fn frozen_random_features_with_squared_loss_as_pytorch_computes_them() {
    // Random ReLU features: fc1 frozen at its (PyTorch-style) initialization, the readout
    // trained by full-batch Adam on squared loss to one-hot targets.
    let p = Project::new();
    let mut text = pipeline(&[0.2], 6, "[0, 3]");
    text = with_values(
        &text,
        &[
            ("stage.train.hidden", "[64]"),
            ("stage.train.batch_size", "1000"),
        ],
    );
    let text = text.replace(
        "device = \"cpu\"",
        "device = \"cpu\"\nfreeze = [\"fc1\"]\nloss = \"mse\"\ninit = \"torch\"\noptimizer = \"adam\"",
    );
    p.write("t.toml", &text);
    let (code, r) = p.run("t.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let train = artifact(&p, &of_stage(&r, "executed", "train")[0]["key"]);
    let cks: Vec<Json> =
        serde_json::from_slice(&std::fs::read(train.join("checkpoints.json")).unwrap()).unwrap();
    let ck = |e: i64| artifact(&p, &cks.iter().find(|c| c["epoch"] == e).unwrap()["key"]);
    let data = artifact(&p, &of_stage(&r, "executed", "data")[0]["key"]);
    let labels = artifact(&p, &of_stage(&r, "executed", "corrupt")[0]["key"]);
    let q = python(&format!(
        "import json, numpy as np, torch, pyarrow.parquet as pq\n\
         from safetensors.torch import load_file\n\
         t = pq.read_table('{d}/train.parquet')\n\
         x = torch.tensor(np.stack(t.column('image').to_numpy(zero_copy_only=False)).astype(np.float32) / 255)\n\
         x = ((x - x.mean()) / x.std(unbiased=False)).double()\n\
         y = torch.tensor(pq.read_table('{l}/labels.parquet').column('train_label').to_numpy())\n\
         w0, w3, w6 = (load_file(f'{{c}}/weights.safetensors') for c in ['{c0}', '{c3}', '{c6}'])\n\
         def mse(w):\n\
         \x20   h = torch.relu(x @ w['fc1.weight'].double().T + w['fc1.bias'].double())\n\
         \x20   z = h @ w['logits.weight'].double().T + w['logits.bias'].double()\n\
         \x20   return torch.nn.functional.mse_loss(z, torch.nn.functional.one_hot(y, 10).double()).item()\n\
         b = 1 / 784 ** 0.5\n\
         print(json.dumps({{'loss0': mse(w0), 'loss6': mse(w6), 'fc1_same': all(torch.equal(w0[k], w6[k]) for k in ['fc1.weight', 'fc1.bias']), \
           'logits_moved': not torch.equal(w0['logits.weight'], w3['logits.weight']), \
           'in_bound': max(w0['fc1.weight'].abs().max().item(), w0['fc1.bias'].abs().max().item()) <= b, \
           'sd_ratio': w0['fc1.weight'].std().item() / (b / 3 ** 0.5)}}))",
        d = data.display(),
        l = labels.display(),
        c0 = ck(0).display(),
        c3 = ck(3).display(),
        c6 = ck(6).display(),
    ));
    let m = metrics(&train);
    let (loss0, loss6) = (m[0][2].as_f64().unwrap(), m[6][2].as_f64().unwrap());
    assert!(
        (loss0 - q["loss0"].as_f64().unwrap()).abs() < 1e-5 * loss0,
        "{q} {loss0}"
    );
    assert!(
        (loss6 - q["loss6"].as_f64().unwrap()).abs() < 1e-5 * loss6,
        "{q} {loss6}"
    );
    assert!(loss6 < loss0, "the readout learns: {loss0} -> {loss6}");
    assert_eq!(q["fc1_same"], true, "the frozen layer never moves");
    assert_eq!(q["logits_moved"], true);
    assert_eq!(q["in_bound"], true, "U(-1/sqrt(784), 1/sqrt(784))");
    assert!((q["sd_ratio"].as_f64().unwrap() - 1.0).abs() < 0.02, "{q}");
    let model: Json =
        serde_json::from_slice(&std::fs::read(train.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["frozen"], serde_json::json!(["fc1"]));
    assert_eq!(
        (model["loss"].as_str(), model["init"].as_str()),
        (Some("mse"), Some("torch"))
    );
    // fc1: 784 x 64 + 64; logits: 64 x 10 + 10.
    assert_eq!(model["frozen_parameters"], 784 * 64 + 64);
    assert_eq!(model["parameters"], 784 * 64 + 64 + 64 * 10 + 10);
}

#[test]
fn gpus_must_exist_and_run_locally() {
    let p = Project::new();
    p.write("t.toml", &pipeline(&[0.0], 1, "[0]"));
    for (args, want) in [
        (vec!["--gpus", "99"], "--gpus 99: this machine has"),
        (vec!["--gpus", "0,0", "--dry-run"], "GPU 0 twice"),
        (
            vec!["--gpus", "0", "--executor", "slurm"],
            "--gpus places instances on this machine's GPUs",
        ),
        (
            vec!["--per-gpu", "4"],
            "--per-gpu shares the GPUs that --gpus names",
        ),
        (
            vec!["--gpus", "0", "--per-gpu", "0"],
            "--per-gpu must be at least 1",
        ),
    ] {
        let mut a = vec!["run", "t.toml"];
        a.extend(args);
        let out = p.pipe(&a);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(want) || (want.contains("twice") && err.contains("CUDA device")),
            "{err}"
        );
    }
    assert!(!p.cache().exists());
}

#[test]
fn bad_training_parameters_exit_2_before_work() {
    let p = Project::new();
    p.write("t.toml", &pipeline(&[0.0], 5, "[0, 1]"));
    let cases = [
        ("stage.train.model=transformer", "expected one of \"mlp\""),
        ("stage.train.lr=-0.1", "`stage.train.lr`: must be positive"),
        (
            "stage.train.checkpoints=[0, 9]",
            "`stage.train.checkpoints`: epoch 9 is outside 0..=5",
        ),
        (
            "stage.train.device=\"cuda\"",
            "`stage.train.device`: device \"cuda\" is not available",
        ),
        (
            "stage.train.device=\"tpu\"",
            "is not one of auto, cpu, cuda, cuda:N",
        ),
        (
            "stage.train.epochs=0",
            "`stage.train.epochs`: must be at least 1",
        ),
        (
            "stage.train.freeze=[\"fc3\"]",
            "`stage.train.freeze`: unknown layer \"fc3\" (did you mean `fc1`?); this model's layers: fc1, fc2, logits",
        ),
        (
            "stage.train.freeze=[\"fc1\", \"fc2\", \"logits\"]",
            "freezes every layer",
        ),
        ("stage.train.width=2", "mlp takes its widths from `hidden`"),
        (
            "stage.train.loss=\"hinge\"",
            "expected one of \"cross_entropy\"",
        ),
        ("stage.train.init=\"xavier\"", "expected one of \"kaiming\""),
    ];
    for (set, want) in cases {
        let out = p.pipe(&["run", "t.toml", "--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{set}: {stderr}");
        assert!(
            stderr.contains(want),
            "{set}: expected {want:?} in {stderr}"
        );
        assert!(
            stderr.contains("t.toml:") || stderr.contains("--set"),
            "{stderr}"
        );
    }
    assert!(!p.cache().exists(), "nothing ran");
}

/// Tiny CIFAR-10 and CIFAR-100 binary files (20 records per CIFAR-10 batch: 100 train and
/// 20 test images; 200 CIFAR-100 records each, of fine classes 0-3), with varied pixels.
fn write_cifar(p: &Project) -> (PathBuf, PathBuf) {
    let pixels = |i: u32| (0..3072u32).map(move |j| ((i * 31 + j * 7) % 251) as u8);
    let c10 = p.path("cifar-10-batches-bin");
    std::fs::create_dir_all(&c10).unwrap();
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let bytes: Vec<u8> = (0..20u32)
            .flat_map(|i| std::iter::once((i % 10) as u8).chain(pixels(i)))
            .collect();
        std::fs::write(c10.join(name), bytes).unwrap();
    }
    let c100 = p.path("cifar-100-binary");
    std::fs::create_dir_all(&c100).unwrap();
    for name in ["train.bin", "test.bin"] {
        let bytes: Vec<u8> = (0..200u32)
            .flat_map(|i| [(i % 20) as u8, (i % 4) as u8].into_iter().chain(pixels(i)))
            .collect();
        std::fs::write(c100.join(name), bytes).unwrap();
    }
    (c10, c100)
}

#[test]
fn paper_pipelines_plan_against_cifar_files_and_run_at_toy_size() {
    let stages = [
        "data",
        "corrupt",
        "train",
        "activations",
        "probe",
        "embed",
        "gradnorm",
        "rollback",
    ];
    for (name, cifar100, width) in [
        ("cifar10-vgg16", false, "0.0625"),
        ("cifar100-vgg16", true, "0.0625"),
        ("cifar10-resnet18", false, "4"),
    ] {
        let p = Project::new();
        let (c10, c100) = write_cifar(&p);
        let dir = if cifar100 { &c100 } else { &c10 };
        let file = repo().join(format!("pipelines/{name}.toml"));
        let file = file.to_str().unwrap();
        let path = format!("stage.data.path={:?}", dir.display().to_string());
        // As shipped: 5 noise levels x 3 seeds of every analysis, planned without running.
        let (code, r) = p.run(file, &["--dry-run", "--set", &path]);
        assert_eq!(code, 0, "{name}: {r}");
        let would = r["would_run"].as_array().unwrap();
        for stage in stages {
            let n = would.iter().filter(|i| i["stage"] == stage).count();
            let want = if stage == "data" { 1 } else { 15 };
            assert_eq!(n, want, "{name}: {stage}");
        }
        // At toy size, end to end on the CPU.
        let sets = [
            path.as_str(),
            "sweep.noise=[0.5]",
            "sweep.seed=[1]",
            "stage.train.epochs=1",
            "stage.train.checkpoints=[0, 1]",
            "stage.train.batch_size=25",
            "stage.train.device=\"cpu\"",
            "stage.train.threads=1",
            &format!("stage.train.width={width}"),
            "stage.activations.epochs=[0, 1]",
            "stage.activations.classes=2",
            "stage.activations.per_class=2",
            "stage.activations.device=\"cpu\"",
            "stage.probe.n_t=20",
            "stage.probe.threads=1",
            "stage.embed.iterations=100",
            "stage.embed.threads=1",
            "stage.gradnorm.epochs=[0, 1]",
            "stage.gradnorm.device=\"cpu\"",
            "stage.rollback.from_epochs=[0]",
            "stage.rollback.device=\"cpu\"",
        ];
        let mut args = vec![];
        for s in &sets {
            args.extend(["--set", s]);
        }
        let (code, r) = p.run(file, &args);
        assert_eq!(code, 0, "{name}: {r}");
        for stage in stages {
            assert_eq!(
                of_stage(&r, "executed", stage).len(),
                1,
                "{name}: {stage} {r}"
            );
        }
    }
    // Without the files, planning works (`--dry-run` says the data is missing) and `run`
    // fails with exit 2 before work, naming the missing file.
    let p = Project::new();
    let file = repo().join("pipelines/cifar10-vgg16.toml");
    let args = |dry: bool| {
        let mut a = vec![
            "run",
            file.to_str().unwrap(),
            "--set",
            "stage.data.path=\"/nonexistent\"",
        ];
        if dry {
            a.push("--dry-run");
        }
        p.pipe(&a)
    };
    let out = args(true);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("data missing: /nonexistent/data_batch_1.bin")
    );
    let out = args(false);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("data_batch_1.bin"));
}

/// The worker process and job number a libtorch instance's log names.
fn worker_of(p: &Project, key: &str) -> (u32, u64) {
    let log = String::from_utf8(p.pipe(&["log", key]).stdout).unwrap();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("# worker "))
        .unwrap_or_else(|| panic!("no worker line in {log}"));
    let (pid, rest) = line.split_once(": job ").unwrap();
    let job = rest.split_whitespace().next().unwrap();
    (pid.parse().unwrap(), job.parse().unwrap())
}

#[test]
fn a_run_starts_libtorch_once_per_worker_and_a_timeout_replaces_the_worker() {
    let p = Project::new();
    let text = tiny_study_at(&p, "0.5", &[]);
    let (code, r) = p.run("p.toml", &["--jobs", "1"]);
    assert_eq!(code, 0, "{r}");
    // train, activations, gradnorm, rollback: one after another on one worker.
    let mut seen: Vec<(u32, u64)> = ["train", "activations", "gradnorm", "rollback"]
        .iter()
        .map(|s| worker_of(&p, of_stage(&r, "executed", s)[0]["key"].as_str().unwrap()))
        .collect();
    seen.sort_by_key(|(_, job)| *job);
    assert!(seen.iter().all(|(pid, _)| *pid == seen[0].0), "{seen:?}");
    assert_eq!(
        seen.iter().map(|(_, j)| *j).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    // No worker outlives the run (it is killed with pipe: gone, or a zombie for a moment).
    let status = format!("/proc/{}/status", seen[0].0);
    let running = || {
        std::fs::read_to_string(&status).is_ok_and(|s| {
            !s.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
    };
    let t = std::time::Instant::now();
    while running() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!running(), "worker {} still runs", seen[0].0);

    // A train instance past its timeout: its worker is killed; the next instance in the
    // same run gets a fresh worker and succeeds.
    // (Declared before `train`, so that it runs first.)
    let slow = text
        .replace("epochs = 4", "epochs = 5")
        .replace("[0, 1, 2, 4]", "[0, 1, 2, 5]")
        .replace(
            "[stage.train]",
            "[stage.slow]\nkind = \"train\"\ninputs = [\"data\", \"corrupt\"]\nmodel = \"mlp\"\n\
             hidden = [64]\nepochs = 100000\nlr = 0.05\ndevice = \"cpu\"\ntimeout = \"1s\"\n\
             [stage.train]",
        );
    p.write("slow.toml", &slow);
    let (code, r) = p.run(
        "slow.toml",
        &["--jobs", "1", "--only", "slow", "--only", "train"],
    );
    assert_eq!(code, 1, "{r}");
    assert_eq!(of_stage(&r, "failed", "slow").len(), 1, "{r}");
    let train = of_stage(&r, "executed", "train")[0]["key"]
        .as_str()
        .unwrap();
    let slow_log = std::fs::read_to_string(p.cache().join("logs").join(format!(
        "{}.log",
        of_stage(&r, "failed", "slow")[0]["key"].as_str().unwrap()
    )))
    .unwrap();
    assert!(slow_log.contains("timed out"), "{slow_log}");
    let killed = slow_log
        .lines()
        .find_map(|l| l.strip_prefix("# worker "))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .to_string();
    let (pid, _) = worker_of(&p, train);
    assert_ne!(pid.to_string(), killed);
}
