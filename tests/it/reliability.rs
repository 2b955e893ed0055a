//! Reliability: kill -9 at random moments, damaged artifacts, a full disk, stage timeouts
//! and retries, and generated bad input (pipelines, sweeps, data files). Counts can be
//! raised: `PIPE_RELIABILITY_KILLS` (default 20), `PIPE_FUZZ_CASES` (default 3000).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Every artifact (checkpoints included) by key, with each file's blake3 as the manifest
/// records it.
fn snapshot(cache: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(cache.join("artifacts"))
        .unwrap()
        .flatten()
    {
        let key = e.file_name().to_string_lossy().into_owned();
        let m: Json =
            serde_json::from_slice(&std::fs::read(e.path().join("manifest.json")).unwrap())
                .unwrap();
        for f in m["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap().to_string();
            out.push((key.clone(), path, f["blake3"].as_str().unwrap().to_string()));
        }
    }
    out.sort();
    out
}

/// All metrics, per artifact, as DuckDB reads them.
fn metrics(cache: &Path) -> Json {
    python(&format!(
        "import duckdb, json\n\
         r = duckdb.sql(\"SELECT * FROM read_parquet('{}/artifacts/*/metrics.parquet', filename=true) ORDER BY filename, epoch\").fetchall()\n\
         print(json.dumps([[str(x).split('/artifacts/')[-1] for x in row] for row in r]))",
        cache.display()
    ))
}

#[test]
fn kill_minus_nine_at_random_moments_loses_nothing_and_ends_identical() {
    let file = repo().join("pipelines/quick.toml");
    let file = file.to_str().unwrap();
    let mut args = vec!["run", file, "--jobs", "2", "--quiet"];
    args.extend_from_slice(QUICK_SMALL);

    // The reference: one uninterrupted run.
    let reference = Project::new();
    let clock = Instant::now();
    let out = reference.pipe(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = clock.elapsed();

    let p = Project::new();
    let kills_wanted = env_count("PIPE_RELIABILITY_KILLS", 20);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut kills, mut restarts) = (0, 0);
    for _ in 0..kills_wanted * 10 {
        if kills >= kills_wanted {
            break;
        }
        let mut child = p
            .command(&args)
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Somewhere within the first 60% of a whole run.
        let delay =
            Duration::from_millis(30 + rng.below((full.as_millis() as usize) * 6 / 10) as u64);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            // The whole process group: pipe, its libtorch workers, exec commands.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            kills += 1;
        }
        let _ = child.wait();
        // After every crash, nothing in the cache is damaged.
        let v = p.pipe(&["verify", "--json"]);
        assert_eq!(
            v.status.code(),
            Some(0),
            "after kill {kills}: {}",
            String::from_utf8_lossy(&v.stdout)
        );
        assert_no_partial_artifacts(&p.cache());
        // Once the pipeline is complete, start over so that later kills hit real work.
        let st = p.pipe(&{
            let mut a = vec!["status", file, "--json"];
            a.extend_from_slice(QUICK_SMALL);
            a
        });
        let st: Json = serde_json::from_slice(&st.stdout).unwrap();
        if st
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "cached")
        {
            std::fs::remove_dir_all(p.cache()).unwrap();
            restarts += 1;
        }
    }
    assert!(
        kills >= kills_wanted,
        "only {kills} kills hit a running pipe"
    );
    // Finish without interruption: identical to the reference, byte for byte.
    let out = p.pipe(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot(&p.cache()), snapshot(&reference.cache()));
    assert_eq!(metrics(&p.cache()), metrics(&reference.cache()));
    eprintln!(
        "kill -9: {kills} kills survived ({restarts} full restarts), {} files identical to an uninterrupted run",
        snapshot(&p.cache()).len()
    );
}

fn keys_of(p: &Project, file: &str, stage: &str) -> Vec<(Json, String)> {
    p.status(file, &[])
        .into_iter()
        .filter(|s| s["stage"] == stage)
        .map(|s| (s["point"].clone(), s["key"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn damaged_artifacts_are_reported_and_recomputed_before_anything_reads_them() {
    let p = Project::new();
    let text = format!(
        "{BASIC}\n[stage.copy]\nkind = \"exec\"\ninputs = {{ labels = \"corrupt\" }}\n\
         cmd = [\"sh\", \"-c\", \"cp $PIPE_INPUT_LABELS/labels.parquet $PIPE_OUT/\"]\n"
    );
    p.write("p.toml", &text);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let corrupt = keys_of(&p, "p.toml", "corrupt");
    let count = keys_of(&p, "p.toml", "count");
    let dir = |k: &str| p.cache().join("artifacts").join(k);
    let good = std::fs::read(dir(&corrupt[2].1).join("labels.parquet")).unwrap();
    // A flipped byte, a truncated file, a deleted file.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 1;
    std::fs::write(dir(&corrupt[2].1).join("labels.parquet"), &flipped).unwrap();
    let f = dir(&corrupt[1].1).join("labels.parquet");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    std::fs::remove_file(dir(&count[0].1).join("listing.txt")).unwrap();

    let v = p.pipe(&["verify", "--json"]);
    assert_eq!(v.status.code(), Some(1));
    let report: Json = serde_json::from_slice(&v.stdout).unwrap();
    let mut damaged: Vec<String> = report["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["key"].as_str().unwrap().to_string())
        .collect();
    damaged.sort();
    let mut want = vec![
        corrupt[1].1.clone(),
        corrupt[2].1.clone(),
        count[0].1.clone(),
    ];
    want.sort();
    assert_eq!(damaged, want, "{report}");

    // The next run recomputes the truncated and deleted ones (cheap size checks) and,
    // before `copy` reads it, the flipped one: the copies hold the good bytes.
    let (code, r) = p.run("p.toml", &["--set", "stage.copy.env={ AGAIN = \"1\" }"]);
    assert_eq!(code, 0, "{r}");
    let executed: Vec<&str> = r["executed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    for k in &want {
        assert!(executed.contains(&k.as_str()), "{k} recomputed: {r}");
    }
    assert_eq!(
        std::fs::read(dir(&corrupt[2].1).join("labels.parquet")).unwrap(),
        good
    );
    for (point, k) in keys_of(&p, "p.toml", "copy") {
        let (_, ck) = corrupt.iter().find(|(pt, _)| *pt == point).unwrap();
        assert_eq!(
            std::fs::read(dir(&k).join("labels.parquet")).unwrap(),
            std::fs::read(dir(ck).join("labels.parquet")).unwrap()
        );
    }
    assert_eq!(p.pipe(&["verify"]).status.code(), Some(0));
    eprintln!("corruption: 3 damaged artifacts detected by verify, 3 recomputed by run");
}

#[test]
fn timeouts_stop_a_stage_and_retries_rerun_flaky_ones() {
    let p = Project::new();
    p.write(
        "t.toml",
        r#"
[pipeline]
name = "flaky"
[stage.flaky]
kind = "exec"
# Fails the first time, succeeds the second.
cmd = ["sh", "-c", "n=$(cat tries 2>/dev/null || echo 0); echo $((n + 1)) > tries; [ $n -ge 1 ] && echo ok > $PIPE_OUT/ok.txt"]
retries = 1
[stage.hopeless]
kind = "exec"
cmd = ["sh", "-c", "echo $$ >> hopeless; exit 3"]
retries = 2
[stage.slow]
kind = "exec"
cmd = ["sh", "-c", "sleep 30 & echo $! > sleeper; wait"]
timeout = "1s"
"#,
    );
    let clock = Instant::now();
    let (code, r) = p.run("t.toml", &[]);
    let took = clock.elapsed();
    assert_eq!(code, 1, "{r}");
    assert_eq!(of_stage(&r, "executed", "flaky").len(), 1);
    assert_eq!(
        std::fs::read_to_string(p.path("tries")).unwrap().trim(),
        "2"
    );
    assert_eq!(
        std::fs::read_to_string(p.path("hopeless"))
            .unwrap()
            .lines()
            .count(),
        3,
        "1 try + 2 retries"
    );
    assert_eq!(of_stage(&r, "failed", "slow").len(), 1);
    assert!(
        took < Duration::from_secs(15),
        "the timeout stopped it: {took:?}"
    );
    // The sleep the command started is gone too (its process group was killed).
    let sleeper = std::fs::read_to_string(p.path("sleeper")).unwrap();
    let gone = || {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", sleeper.trim())).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        matches!(state, None | Some("Z"))
    };
    // SIGKILL is delivered asynchronously: allow the kernel a moment on a loaded machine.
    let t = Instant::now();
    while !gone() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(), "the command's sleep still runs");
    let out = p.pipe(&["run", "t.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("timed out") && err.contains("after 3 attempts"),
        "{err}"
    );
    assert_no_partial_artifacts(&p.cache());
    // Bad values are pipeline errors.
    p.write(
        "bad.toml",
        "[pipeline]\nname = \"b\"\n[stage.a]\nkind = \"exec\"\ncmd = [\"true\"]\ntimeout = \"2 hours\"\n",
    );
    let out = p.pipe(&["run", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.toml:6:11: `stage.a.timeout`"));
}

#[test]
fn a_full_disk_fails_the_instance_cleanly_and_keeps_earlier_artifacts() {
    let p = Project::new();
    let cache = p.path("small-disk");
    let _guard = mount_small_tmpfs(&cache);
    p.write(
        "d.toml",
        r#"
[pipeline]
name = "disk"
[stage.small]
kind = "exec"
cmd = ["sh", "-c", "head -c 10000 /dev/zero > $PIPE_OUT/small.bin"]
[stage.big]
kind = "exec"
inputs = { small = "small" }
cmd = ["sh", "-c", "head -c 2000000 /dev/zero > $PIPE_OUT/big.bin"]
"#,
    );
    let out = p
        .command(&["run", "d.toml", "--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed: big"), "{err}");
    let log = std::fs::read_dir(cache.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("No space left on device"), "{log}");
    assert_no_partial_artifacts(&cache);
    let v = p
        .command(&["verify", "--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(0));
    assert_eq!(
        std::fs::read_dir(cache.join("artifacts")).unwrap().count(),
        1,
        "small is kept"
    );
    assert!(
        String::from_utf8_lossy(&v.stdout).contains("1 artifacts"),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
}

/// Valid pipelines the generator mutates.
fn corpus() -> Vec<String> {
    vec![
        BASIC.to_string(),
        std::fs::read_to_string(repo().join("pipelines/quick.toml")).unwrap(),
        std::fs::read_to_string(repo().join("pipelines/sweep.toml")).unwrap(),
        "[pipeline]\nname = \"s\"\n[sweep]\na = [1, 2]\nb = [\"x\", \"y\"]\nexclude = [{ a = 1, b = \"x\" }]\ninclude = [{ a = 3, b = \"z\" }]\n[stage.e]\nkind = \"exec\"\ncmd = [\"echo\", \"${a}-${b}\", \"$$\"]\nresources = { cpus = 2, mem = \"1G\" }\ntimeout = \"1h\"\nretries = 1\n".to_string(),
    ]
}

const TOKENS: &[&str] = &[
    "",
    "[",
    "]",
    "{",
    "}",
    "=",
    "\"",
    ",",
    ".",
    "\n",
    "${noise}",
    "${x",
    "$",
    "-1",
    "0",
    "1e400",
    "nan",
    "inf",
    "true",
    "[[stage.x]]",
    "[stage.x]",
    "kind = \"exec\"",
    "inputs = [\"data\"]",
    "inputs = { a = \"a\" }",
    "cmd = []",
    "noise = []",
    "include = [{}]",
    "exclude = [1]",
    "\u{0}",
    "é",
    "\"\"\"",
    "'''",
    "#",
    "9999999999999999999999",
    "[sweep]",
    "[pipeline]",
    // Names that would become paths, and hostile keys.
    "tables = [\"/../../x\"]",
    "tables = [\"ok\", \"a/b\"]",
    "env = { PIPE_OUT = \"/tmp\" }",
    "env = { \"A=B\" = \"x\" }",
    "files = [\"/dev/zero\"]",
    "files = [\"**/*\"]",
    "[[report.plot]]",
    "[report]",
    "table = \"../x\"",
    "[cache]\ndir = \"\"",
    "ééééééééééééé",
];

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut s: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(s.len() + 1);
        match rng.below(4) {
            0 => {
                let end = (at + rng.below(40)).min(s.len());
                s.drain(at..end);
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                for (i, c) in t.chars().enumerate() {
                    s.insert(at + i, c);
                }
            }
            2 if !s.is_empty() => {
                let i = at.min(s.len() - 1);
                s[i] = TOKENS[rng.below(TOKENS.len())]
                    .chars()
                    .next()
                    .unwrap_or('x');
            }
            _ => {
                // Duplicate a line elsewhere.
                let lines: Vec<String> = s
                    .iter()
                    .collect::<String>()
                    .lines()
                    .map(String::from)
                    .collect();
                if !lines.is_empty() {
                    let l = &lines[rng.below(lines.len())];
                    for (i, c) in format!("\n{l}\n").chars().enumerate() {
                        s.insert(at + i, c);
                    }
                }
            }
        }
    }
    s.into_iter().collect()
}

#[test]
fn generated_pipelines_and_sweeps_never_panic_and_errors_exit_2() {
    let p = Project::new();
    let registry = pipe_kinds::stages::registry();
    let cases = env_count("PIPE_FUZZ_CASES", 3000);
    let corpus = corpus();
    let mut rng = Rng(42);
    let (mut accepted, mut rejected) = (0, 0);
    for case in 0..cases {
        let text = mutate(&corpus[case % corpus.len()], &mut rng);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let spec =
                pipe_engine::spec::Spec::parse("gen.toml", &text, p.dir.path(), &[], &registry)?;
            let plan = pipe_engine::plan::Plan::build(spec)?;
            // Whatever was accepted names no table that would leave an artifact's folder.
            for &n in &plan.order {
                let inst = &plan.graph[n];
                for t in plan.spec.stages[inst.stage].kind.tables(&inst.params) {
                    assert!(
                        !t.is_empty()
                            && t.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
                        "case {case}: table name {t:?} accepted"
                    );
                }
            }
            Ok::<(), pipe_engine::error::Error>(())
        }));
        match result {
            Ok(Ok(())) => accepted += 1,
            Ok(Err(e)) => {
                rejected += 1;
                assert_eq!(e.exit_code(), 2, "case {case}: {e}\n{text}");
                assert!(
                    !e.to_string().trim().is_empty(),
                    "case {case}: empty error\n{text}"
                );
            }
            Err(_) => panic!("case {case} panicked on:\n{text}"),
        }
    }
    assert!(
        accepted > 0 && rejected > 0,
        "{accepted} accepted, {rejected} rejected"
    );
    eprintln!(
        "fuzz: {cases} generated pipelines, {accepted} accepted, {rejected} rejected with exit code 2, 0 panics"
    );
}

#[test]
fn malformed_idx_and_cifar_files_are_data_errors_never_panics() {
    use pipe_science::datasets::{cifar, idx};
    let p = Project::new();
    let images = idx::encode(&[20, 4, 4], &vec![7u8; 20 * 16]);
    let labels = idx::encode(&[20], &[3u8; 20]);
    let dir = p.path("bad");
    std::fs::create_dir_all(&dir).unwrap();
    let (ip, lp) = (dir.join("images"), dir.join("labels"));
    let mut rng = Rng(7);
    let mut cases = 0;
    // Every truncation of the image file, and random header bytes.
    for cut in 0..images.len() {
        std::fs::write(&ip, &images[..cut]).unwrap();
        std::fs::write(&lp, &labels).unwrap();
        let r = std::panic::catch_unwind(|| idx::read_set(&ip, &lp));
        assert!(matches!(r, Ok(Err(_))), "truncated at {cut}");
        cases += 1;
    }
    for _ in 0..500 {
        let mut bad = images.clone();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(16);
            bad[i] = rng.next() as u8;
        }
        std::fs::write(&ip, &bad).unwrap();
        let r = std::panic::catch_unwind(|| idx::read_set(&ip, &lp));
        assert!(r.is_ok(), "header {:?} panicked", &bad[..16]);
        cases += 1;
    }
    // CIFAR-10 records are 1 + 3072 bytes: every other length is refused.
    for len in [0usize, 1, 3072, 3074, 3073 * 2 - 1] {
        let f = dir.join("data_batch_1.bin");
        std::fs::write(&f, vec![1u8; len]).unwrap();
        let r = std::panic::catch_unwind(|| cifar::check_file(&f, cifar::Variant::Cifar10));
        assert!(matches!(r, Ok(Err(_))), "length {len}");
        cases += 1;
    }
    // And through the binary: exit code 2 with the file named.
    p.write_idx("data", 60, 20);
    let f = p.path("data/train-images-idx3-ubyte");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 7]).unwrap();
    p.write("p.toml", BASIC);
    let out = p.pipe(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("train-images-idx3-ubyte"));
    eprintln!("data files: {cases} malformed IDX/CIFAR files refused without a panic");
}

#[test]
fn concurrent_runs_of_overlapping_sweeps_compute_each_key_once() {
    let p = Project::new();
    let counter = p.path("computed.txt");
    p.write(
        "p.toml",
        &format!(
            r#"
[pipeline]
name = "overlap"
[sweep]
i = [1, 2, 3, 4, 5, 6]
[stage.a]
kind = "exec"
cmd = ["sh", "-c", "echo a${{i}} >> {c}; sleep 0.2; echo ${{i}} > $PIPE_OUT/out"]
[stage.b]
kind = "exec"
inputs = ["a"]
cmd = ["sh", "-c", "echo b${{i}} >> {c}; cat $PIPE_INPUT_A/out > $PIPE_OUT/out"]
"#,
            c = counter.display()
        ),
    );
    // Four processes over overlapping slices of the sweep, all at once.
    let sweeps = ["[1,2,3,4]", "[3,4,5,6]", "[1,3,5]", "[1,2,3,4,5,6]"];
    let children: Vec<_> = sweeps
        .iter()
        .map(|s| {
            p.command(&[
                "run",
                "p.toml",
                "--json",
                "--jobs",
                "2",
                "--set",
                &format!("sweep.i={s}"),
            ])
            .stderr(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let mut lines: Vec<String> = std::fs::read_to_string(&counter)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    let mut want: Vec<String> = (1..=6)
        .flat_map(|i| [format!("a{i}"), format!("b{i}")])
        .collect();
    want.sort();
    assert_eq!(lines, want, "each of the 12 keys computed exactly once");
    assert_eq!(p.pipe(&["verify"]).status.code(), Some(0));
}
