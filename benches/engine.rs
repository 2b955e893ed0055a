//! Engine benchmarks: planning big sweeps, populating the cache, `status` and no-op reruns.
//!
//! Run with `cargo bench --bench engine`. Smaller sizes, for a quick check:
//! `PIPE_BENCH_SCALE=0.1 cargo bench --bench engine` or `cargo bench --bench engine -- 0.1`
//! (the scale multiplies the size of the inner sweep variable of every pipeline).
//!
//! Every measurement is the best wall time of N runs (std::time::Instant). Beside each
//! one the table prints its goal, if it has one, and a "peer": a raw cost measured in the
//! same process over the same number of instances (blake3 of the canonical key of each
//! instance via `compute_key`, or one bare `stat` of each artifact's manifest), so that
//! the engine's overhead reads as a ratio independent of the machine.
//!
//! The binary end-to-end measurement needs the release binary (`target/release/pipe`,
//! which `cargo bench` builds); it is skipped with a note when the binary is absent. With
//! Snakemake installed (`scripts/bench-peers`), the same run compares the two tools on the
//! same workflows (`peers/snakemake.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pipe_engine::exec::{Outcome, RunOptions, Silent, local};
use pipe_engine::plan::{Plan, compute_key};
use pipe_engine::spec::Spec;
use pipe_engine::stage::Registry;
use pipe_engine::status::{self, State};
use pipe_engine::store::{MANIFEST, Manifest, Store};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[path = "peers/floor.rs"]
mod floor;
#[path = "peers/snakemake.rs"]
mod snakemake;

/// One line of the table.
struct Row {
    name: String,
    instances: usize,
    runs: usize,
    best: Duration,
    goal: Option<Duration>,
    /// Name and time of the peer measurement this row is compared with.
    peer: Option<(&'static str, Duration)>,
}

/// A generated pipeline: `[sweep] a = [0..na], b = [0..nb]`, `stages` exec stages.
struct Pipeline {
    name: String,
    path: PathBuf,
    text: String,
    instances: usize,
}

impl Pipeline {
    fn new(dir: &Path, name: &str, na: usize, nb: usize, stages: usize) -> Res<Pipeline> {
        let list = |n: usize| (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
        let mut text = format!(
            "[pipeline]\nname = \"{name}\"\n\n[sweep]\na = [{}]\nb = [{}]\n",
            list(na),
            list(nb)
        );
        for s in 0..stages {
            text.push_str(&format!(
                "\n[stage.s{s}]\nkind = \"exec\"\ncmd = [\"true\", \"{s}\", \"${{a}}\", \"${{b}}\"]\n"
            ));
        }
        let path = dir.join(format!("{name}.toml"));
        fs::write(&path, &text)?;
        Ok(Pipeline {
            name: name.to_string(),
            path,
            text,
            instances: na * nb * stages,
        })
    }

    /// Spec::parse + Plan::build, as the CLI does it.
    fn plan(&self, registry: &Registry) -> Res<Plan> {
        let base = self.path.parent().unwrap_or(Path::new("."));
        let spec = Spec::parse(
            &self.path.display().to_string(),
            &self.text,
            base,
            &[],
            registry,
        )?;
        let plan = Plan::build(spec)?;
        if plan.order.len() != self.instances {
            return Err(format!(
                "{}: planned {} instances, expected {}",
                self.name,
                plan.order.len(),
                self.instances
            )
            .into());
        }
        Ok(plan)
    }
}

/// Runs `f` `n` times; returns the best wall time and the last result. Results are dropped
/// outside the timed region (dropping a big plan is not what is being measured).
fn best<T>(n: usize, mut f: impl FnMut() -> Res<T>) -> Res<(Duration, T)> {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..n.max(1) {
        drop(last.take());
        let t = Instant::now();
        let v = f()?;
        best = best.min(t.elapsed());
        last = Some(v);
    }
    Ok((best, last.expect("at least one run")))
}

/// Writes one small artifact for every instance, as a run would, but without spawning
/// the command; then records every instance in the pipeline's index in one update.
fn populate(plan: &Plan, store: &Store) -> Res<()> {
    store.prepare()?;
    let mut updates = Vec::with_capacity(plan.order.len());
    for &n in &plan.order {
        let inst = &plan.graph[n];
        let stage = &plan.spec.stages[inst.stage];
        let key = plan
            .resolve(n, store)
            .ok_or("populate: an input's key is unknown")?;
        let tmp = store.begin(&key)?;
        fs::write(tmp.join("out.txt"), plan.point(n).to_string())?;
        let draft = Manifest {
            key,
            kind: stage.kind.name().to_string(),
            version: stage.kind.version(),
            stage: stage.name.clone(),
            pipeline: plan.spec.name.clone(),
            point: plan.point(n),
            params: serde_json::Value::Object(plan.key_params(inst)),
            inputs: inst
                .inputs
                .iter()
                .map(|(s, up)| (s.clone(), plan.key(*up).unwrap_or_default()))
                .collect(),
            declared_files: inst.files.iter().cloned().collect(),
            files: Vec::new(),
            parts: Default::default(),
            started: 0.0,
            seconds: 0.0,
            pipe_version: "bench".to_string(),
            host: store.host().to_string(),
        };
        store.commit(&tmp, draft)?;
        updates.push(status::index_entry(plan, inst));
    }
    store.update_index(&plan.spec.name, updates)?;
    Ok(())
}

fn run_options() -> RunOptions {
    RunOptions {
        jobs: std::thread::available_parallelism().map_or(1, |n| n.get()),
        fail_fast: false,
        only: Vec::new(),
        remote: None,
        gpus: Vec::new(),
        per_gpu: 1,
    }
}

/// A run that must find everything cached.
fn noop_run(plan: &Plan, store: &Store) -> Res<()> {
    let report = local::run(plan, store, &run_options(), &Silent)?;
    if let Some((n, o)) = report
        .outcomes
        .iter()
        .find(|(_, o)| !matches!(o, Outcome::Cached))
    {
        return Err(format!("no-op run: {} was not cached: {o:?}", plan.label(*n)).into());
    }
    if report.outcomes.len() != plan.order.len() {
        return Err("no-op run: not every instance has an outcome".into());
    }
    Ok(())
}

/// Panics early (before anything spawns 10,000 processes) unless every instance is cached.
fn check_all_cached(plan: &Plan, store: &Store) -> Res<()> {
    let index = store.read_index(&plan.spec.name);
    let st = status::status(plan, store, &index);
    match st.iter().find(|s| s.state != State::Cached) {
        Some(s) => Err(format!(
            "{} is {:?} after populating: {}",
            plan.label(s.node),
            s.state,
            s.reason
        )
        .into()),
        None => Ok(()),
    }
}

/// Peer: blake3 over the canonical key of every instance (compute_key on the planned params).
fn key_hash_peer(plan: &Plan, runs: usize) -> Res<Duration> {
    let ingredients: Vec<_> = plan
        .order
        .iter()
        .map(|&n| {
            let inst = &plan.graph[n];
            let stage = &plan.spec.stages[inst.stage];
            let resolved = inst
                .resolved
                .get()
                .unwrap_or_else(|| pipe_engine::plan::Resolved {
                    key: String::new(),
                    input_ids: Vec::new(),
                    input_parts: Vec::new(),
                });
            (
                stage.kind.name(),
                stage.kind.version(),
                plan.key_params(inst),
                resolved.input_ids,
                &inst.files,
                resolved.key,
            )
        })
        .collect();
    let (t, ok) = best(runs, || {
        let mut ok = true;
        for (kind, version, params, inputs, files, key) in &ingredients {
            ok &= compute_key(kind, *version, params, inputs, files) == *key;
        }
        Ok(ok)
    })?;
    if !ok {
        return Err("key-hash peer: compute_key disagrees with the plan's keys".into());
    }
    Ok(t)
}

/// Breakdown of the key-hash peer: blake3 alone over the canonical key text of every
/// instance (the text built beforehand, as `compute_key` builds it, and checked against
/// the plan's keys).
fn blake3_peer(plan: &Plan, runs: usize) -> Res<Duration> {
    use serde_json::Value as Json;
    let texts: Vec<String> = plan
        .order
        .iter()
        .map(|&n| {
            let inst = &plan.graph[n];
            let stage = &plan.spec.stages[inst.stage];
            let mut doc = serde_json::Map::new();
            doc.insert("schema".into(), Json::from(pipe_engine::plan::KEY_SCHEMA));
            doc.insert("kind".into(), Json::from(stage.kind.name()));
            doc.insert("version".into(), Json::from(stage.kind.version()));
            doc.insert("params".into(), Json::Object(plan.key_params(inst)));
            let ids = inst.resolved.get().map(|r| r.input_ids).unwrap_or_default();
            let inputs = ids.into_iter().map(|(s, id)| (s, Json::from(id)));
            doc.insert("inputs".into(), Json::Object(inputs.collect()));
            let files = inst
                .files
                .iter()
                .map(|(f, h)| (f.clone(), Json::from(h.as_str())));
            doc.insert("files".into(), Json::Object(files.collect()));
            let mut text = String::new();
            pipe_engine::plan::canonical_json(&Json::Object(doc), &mut text);
            text
        })
        .collect();
    let (t, hashes) = best(runs, || {
        Ok(texts
            .iter()
            .map(|t| blake3::hash(t.as_bytes()))
            .collect::<Vec<_>>())
    })?;
    if hashes
        .iter()
        .zip(&plan.order)
        .any(|(h, &n)| Some(h.to_hex().to_string()) != plan.key(n))
    {
        return Err("blake3 peer: the canonical text does not give the plan's keys".into());
    }
    Ok(t)
}

/// Breakdown of `is_complete`: reading every manifest's bytes, without parsing them.
fn read_peer(plan: &Plan, store: &Store, runs: usize) -> Res<Duration> {
    let paths: Vec<PathBuf> = plan
        .order
        .iter()
        .map(|&n| {
            store
                .artifact_dir(&plan.key(n).unwrap_or_default())
                .join(MANIFEST)
        })
        .collect();
    let (t, bytes) = best(runs, || {
        let mut total = 0;
        for p in &paths {
            total += fs::read(p)?.len();
        }
        Ok(total)
    })?;
    if bytes == 0 {
        return Err("read peer: the manifests are empty".into());
    }
    Ok(t)
}

/// Peer: one bare `stat` of every artifact's manifest (paths built beforehand).
fn stat_peer(plan: &Plan, store: &Store, runs: usize) -> Res<Duration> {
    let paths: Vec<PathBuf> = plan
        .order
        .iter()
        .map(|&n| {
            store
                .artifact_dir(&plan.key(n).unwrap_or_default())
                .join(MANIFEST)
        })
        .collect();
    let (t, ok) = best(runs, || {
        Ok(paths
            .iter()
            .all(|p| fs::metadata(p).is_ok_and(|m| m.is_file())))
    })?;
    if !ok {
        return Err("stat peer: a manifest is missing".into());
    }
    Ok(t)
}

/// The release binary, if it was built.
fn pipe_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PIPE_BENCH_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("release").join("pipe"));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("release")
            .join("pipe"),
    );
    // The bench itself lives in target/release/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(release) = exe.parent().and_then(Path::parent)
    {
        candidates.push(release.join("pipe"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Best of `runs` wall times of `pipe run FILE --cache DIR --json`, which must execute nothing.
fn binary_noop(bin: &Path, pipeline: &Pipeline, cache: &Path, runs: usize) -> Res<Duration> {
    let (t, out) = best(runs, || {
        let out = Command::new(bin)
            .arg("run")
            .arg(&pipeline.path)
            .arg("--cache")
            .arg(cache)
            .arg("--json")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()?;
        Ok(out)
    })?;
    if !out.status.success() {
        return Err(format!("{} run exited with {}", bin.display(), out.status).into());
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let count = |k: &str| report[k].as_array().map_or(usize::MAX, Vec::len);
    if count("executed") != 0 || count("cached") != pipeline.instances {
        return Err(format!("{} run was not a no-op: {report}", bin.display()).into());
    }
    Ok(t)
}

/// `pipe status FILE` through the binary: its wall time.
fn binary_status(bin: &Path, file: &Path, cache: &Path) -> Res<Duration> {
    let start = Instant::now();
    let status = Command::new(bin)
        .arg("status")
        .arg(file)
        .arg("--cache")
        .arg(cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("`pipe status {}` failed ({status})", file.display()).into());
    }
    Ok(start.elapsed())
}

/// Peak resident memory (MB) of `pipe status FILE`, through GNU time (`/usr/bin/time -f
/// %M`, which reports its own child's high-water mark); `None` without GNU time.
fn binary_status_memory(bin: &Path, file: &Path, cache: &Path) -> Option<f64> {
    let report = file.with_extension("time");
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(bin)
        .arg("status")
        .arg(file)
        .arg("--cache")
        .arg(cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let kib: f64 = fs::read_to_string(&report)
        .ok()?
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Planning through the binary: one-variable sweeps of `n / 10` and `n` values and a
/// product of 100 x `n / 100` points, each `pipe status` timed (best of 3) and its peak
/// memory measured (GNU time). Goals: `n` = 100,000 instances under 0.5 s and 150 MB, 10x
/// the instances at most 10x the time.
fn binary_planning(bin: &Path, dir: &Path, n: usize) -> Res<Vec<String>> {
    let write = |name: &str, sweep: String| -> Res<PathBuf> {
        let path = dir.join(format!("{name}.toml"));
        let vars: Vec<&str> = sweep
            .lines()
            .filter_map(|l| l.split(" = ").next())
            .collect();
        let args: Vec<String> = vars.iter().map(|v| format!("\"${{{v}}}\"")).collect();
        fs::write(
            &path,
            format!(
                "[pipeline]\nname = \"{name}\"\n[sweep]\n{sweep}\n[stage.a]\nkind = \"exec\"\ncmd = [\"true\", {}]\n",
                args.join(", ")
            ),
        )?;
        Ok(path)
    };
    let list = |k: usize| (0..k).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let cache = dir.join("status-cache");
    let small = (n / 10).max(1);
    let a = 100.min(n);
    let b = n.div_ceil(a);
    let cases = [
        (small, write("one_small", format!("v = [{}]", list(small)))?),
        (n, write("one_large", format!("v = [{}]", list(n)))?),
        (
            a * b,
            write("product", format!("a = [{}]\nb = [{}]", list(a), list(b)))?,
        ),
    ];
    let mut lines = Vec::new();
    let mut times = Vec::new();
    for (count, file) in &cases {
        let mut t = binary_status(bin, file, &cache)?;
        for _ in 0..2 {
            t = t.min(binary_status(bin, file, &cache)?);
        }
        times.push(t);
        let memory = binary_status_memory(bin, file, &cache)
            .map_or("peak memory: no /usr/bin/time".to_string(), |mb| {
                format!("peak {mb:>6.0} MB (goal 150 MB)")
            });
        lines.push(format!(
            "`pipe status` (process), {:<10} {count:>8} instances {:>9.3} s (goal 0.5 s at 100,000)  {memory}",
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            t.as_secs_f64(),
        ));
    }
    lines.push(format!(
        "10x the instances (one variable) took {:.1}x the time (goal <= 10x)",
        times[1].as_secs_f64() / times[0].as_secs_f64().max(1e-9)
    ));
    Ok(lines)
}

fn scale_from_args() -> Res<f64> {
    let mut scale = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if let Some(v) = a.strip_prefix("--scale=") {
            scale = Some(v.to_string());
        } else if a == "--scale" {
            scale = args.next();
        } else if a.parse::<f64>().is_ok() {
            scale = Some(a);
        }
        // Anything else (cargo passes `--bench`) is ignored.
    }
    let s = match scale.or_else(|| std::env::var("PIPE_BENCH_SCALE").ok()) {
        Some(s) => s
            .parse::<f64>()
            .map_err(|e| format!("bad scale {s:?}: {e}"))?,
        None => 1.0,
    };
    if !(s > 0.0 && s <= 10.0) {
        return Err(format!("scale must be in (0, 10], got {s}").into());
    }
    Ok(s)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn print_table(rows: &[Row]) {
    println!(
        "{:<40} {:>9} {:>4} {:>12} {:>10} {:>10} {:>11}  {:<22} {:>11}",
        "measurement",
        "instances",
        "runs",
        "best",
        "us/inst",
        "goal",
        "goal/actual",
        "peer",
        "actual/peer"
    );
    println!("{}", "-".repeat(40 + 10 + 5 + 13 + 11 + 11 + 12 + 24 + 12));
    for r in rows {
        let secs = r.best.as_secs_f64();
        let per = secs * 1e6 / r.instances.max(1) as f64;
        let (goal, ratio) = match r.goal {
            Some(g) => (ms(g), format!("{:.2}", g.as_secs_f64() / secs)),
            None => ("-".to_string(), "-".to_string()),
        };
        let (peer, pratio) = match r.peer {
            Some((name, t)) => (
                format!("{name} {}", ms(t)),
                format!("{:.1}x", secs / t.as_secs_f64()),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<40} {:>9} {:>4} {:>12} {:>10.2} {:>10} {:>11}  {:<22} {:>11}",
            r.name,
            r.instances,
            r.runs,
            ms(r.best),
            per,
            goal,
            ratio,
            peer,
            pratio
        );
    }
    println!(
        "goal/actual > 1 means faster than the goal; actual/peer is how many times the raw peer cost."
    );
}

fn main() -> Res<()> {
    let scale = scale_from_args()?;
    let inner = |n: usize| ((n as f64 * scale).round() as usize).max(1);
    let dir = tempfile::tempdir()?;
    let registry = pipe_kinds::stages::registry();
    let mut rows: Vec<Row> = Vec::new();
    let row = |name: &str, instances: usize, runs: usize, best: Duration| Row {
        name: name.to_string(),
        instances,
        runs,
        best,
        goal: None,
        peer: None,
    };
    println!(
        "pipe engine benchmark (scale {scale}, {} cores, temp dir {})",
        run_options().jobs,
        dir.path().display()
    );

    // 1. Planning a 10k sweep.
    let p10k = Pipeline::new(dir.path(), "sweep10k", 100, inner(100), 1)?;
    let n10k = p10k.instances;
    let (t_plan10k, plan10k) = best(5, || p10k.plan(&registry))?;
    let base = dir.path();
    let (t_parse10k, _) = best(5, || {
        Ok(Spec::parse("p", &p10k.text, base, &[], &registry)?)
    })?;
    let keys10k = key_hash_peer(&plan10k, 5)?;
    let blake10k = blake3_peer(&plan10k, 5)?;
    rows.push(Row {
        peer: Some(("key-hash", keys10k)),
        ..row("plan: parse + build", n10k, 5, t_plan10k)
    });
    rows.push(row("  of which Spec::parse", n10k, 5, t_parse10k));

    // 2. Planning a 100k sweep.
    let p100k = Pipeline::new(dir.path(), "sweep100k", 100, inner(1000), 1)?;
    let n100k = p100k.instances;
    let (t_plan100k, plan100k) = best(3, || p100k.plan(&registry))?;
    let keys100k = key_hash_peer(&plan100k, 3)?;
    drop(plan100k);
    rows.push(Row {
        goal: Some(Duration::from_millis(500)),
        peer: Some(("key-hash", keys100k)),
        ..row("plan: parse + build", n100k, 3, t_plan100k)
    });
    let p2x50k = Pipeline::new(dir.path(), "sweep2x50k", 100, inner(500), 2)?;
    let (t_plan2x50k, plan2x50k) = best(3, || p2x50k.plan(&registry))?;
    let keys2x50k = key_hash_peer(&plan2x50k, 3)?;
    drop(plan2x50k);
    rows.push(Row {
        goal: Some(Duration::from_millis(500)),
        peer: Some(("key-hash", keys2x50k)),
        ..row(
            "plan: parse + build, 2 stages",
            p2x50k.instances,
            3,
            t_plan2x50k,
        )
    });

    // 3. Populating the cache for the 10k sweep (no process is spawned).
    let store10k = Store::new(dir.path().join("cache10k"));
    let t = Instant::now();
    populate(&plan10k, &store10k)?;
    let t_pop10k = t.elapsed();
    check_all_cached(&plan10k, &store10k)?;
    let stat10k = stat_peer(&plan10k, &store10k, 5)?;
    let read10k = read_peer(&plan10k, &store10k, 5)?;
    rows.push(Row {
        peer: Some(("stat", stat10k)),
        ..row("populate cache (begin/commit + index)", n10k, 1, t_pop10k)
    });

    // 4. `status` of the cached 10k sweep.
    let (t_status10k, st) = best(5, || {
        let index = store10k.read_index(&plan10k.spec.name);
        Ok(status::status(&plan10k, &store10k, &index))
    })?;
    if st.iter().any(|s| s.state != State::Cached) || st.len() != n10k {
        return Err("status: not every instance is cached".into());
    }
    rows.push(Row {
        peer: Some(("stat", stat10k)),
        ..row("status: read_index + status", n10k, 5, t_status10k)
    });
    let (t_index10k, index) = best(5, || Ok(store10k.read_index(&plan10k.spec.name)))?;
    if index.entries.len() != n10k {
        return Err(format!(
            "index holds {} entries, expected {n10k}",
            index.entries.len()
        )
        .into());
    }
    rows.push(row("  of which read_index", n10k, 5, t_index10k));
    let (t_complete10k, ok) = best(5, || {
        Ok(plan10k
            .order
            .iter()
            .all(|&n| plan10k.key(n).is_some_and(|k| store10k.is_complete(&k))))
    })?;
    if !ok {
        return Err("is_complete: an artifact is incomplete".into());
    }
    rows.push(Row {
        peer: Some(("stat", stat10k)),
        ..row("  of which is_complete x N", n10k, 5, t_complete10k)
    });

    // 5. No-op reruns.
    let (t_noop10k, ()) = best(3, || noop_run(&plan10k, &store10k))?;
    rows.push(Row {
        peer: Some(("stat", stat10k)),
        ..row("no-op run (local::run, plan prebuilt)", n10k, 3, t_noop10k)
    });

    let p1k = Pipeline::new(dir.path(), "sweep1k", 10, inner(100), 1)?;
    let n1k = p1k.instances;
    let store1k = Store::new(dir.path().join("cache1k"));
    let plan1k = p1k.plan(&registry)?;
    populate(&plan1k, &store1k)?;
    check_all_cached(&plan1k, &store1k)?;
    let stat1k = stat_peer(&plan1k, &store1k, 5)?;
    drop(plan1k);
    let (t_noop1k, ()) = best(5, || noop_run(&p1k.plan(&registry)?, &store1k))?;
    rows.push(Row {
        goal: Some(Duration::from_millis(15)),
        peer: Some(("stat", stat1k)),
        ..row("no-op run incl. planning", n1k, 5, t_noop1k)
    });

    // 6. The real binary, end to end.
    let mut notes = Vec::new();
    match pipe_binary() {
        Some(bin) => {
            let t_bin1k = binary_noop(&bin, &p1k, store1k.root(), 5)?;
            rows.push(Row {
                goal: Some(Duration::from_millis(15)),
                peer: Some(("stat", stat1k)),
                ..row("no-op `pipe run --json` (process)", n1k, 5, t_bin1k)
            });
            notes.push(format!("binary: {}", bin.display()));
            notes.extend(floor::compare(&bin, dir.path(), inner(1_000))?);
            notes.extend(binary_planning(&bin, dir.path(), inner(100_000))?);
            match snakemake::find() {
                Some(sm) => notes.extend(snakemake::compare(
                    &bin,
                    &sm,
                    dir.path(),
                    inner(1_000),
                    inner(100_000),
                )?),
                None => notes.push(
                    "skipped the Snakemake comparison: no snakemake (scripts/bench-peers installs it)"
                        .to_string(),
                ),
            }
        }
        None => notes.push(format!(
            "skipped the binary end-to-end run: {} does not exist (run `cargo build --release`)",
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/release/pipe")
                .display()
        )),
    }

    // The peers themselves, for reference.
    rows.push(row("peer: compute_key x N", n10k, 5, keys10k));
    rows.push(row("peer: compute_key x N", n100k, 3, keys100k));
    rows.push(row(
        "peer: blake3(canonical key text) x N",
        n10k,
        5,
        blake10k,
    ));
    rows.push(row("peer: stat(manifest) x N", n10k, 5, stat10k));
    rows.push(row("peer: read(manifest) x N", n10k, 5, read10k));
    rows.push(row("peer: stat(manifest) x N", n1k, 5, stat1k));

    println!();
    print_table(&rows);
    for n in notes {
        println!("{n}");
    }
    Ok(())
}
