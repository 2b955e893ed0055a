//! The first-run workload against its floor: `n` instances, each `cat` of its own input
//! file into its output (`sh -c "cat in/I.txt > $PIPE_OUT/out.txt"`), run by `pipe run
//! --jobs 2`, beside the same `n` shell commands started by `xargs -P2 sh -c` with nothing
//! recorded (the floor: what spawning the commands costs). Then, on the cache the first
//! run made, the no-op rerun, `pipe status`, and a rerun after one input changed.
//!
//! Every figure is the best of a few runs, pipe and the floor alternating; each first run
//! gets a fresh cache (earlier ones are kept until the end: deleting thousands of files
//! between runs would slow the next run's file creation on some file systems).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Goal: the first run within this factor of the floor.
const FIRST_RUN_GOAL: f64 = 1.5;
/// Goal for the no-op rerun and `status` of 1,000 cached instances.
const NOOP_GOAL: Duration = Duration::from_millis(15);
/// Goal for the rerun after one input changed.
const ONE_CHANGED_GOAL: Duration = Duration::from_millis(40);

/// Runs `cmd`; its wall time, failing if it fails.
fn timed(cmd: &mut Command) -> Res<Duration> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).stdout(Stdio::null()).output()?;
    let t = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    Ok(t)
}

/// Writes `dir/in/I.txt` for `I` in `0..n` and the pipeline `dir/p.toml`.
fn write_workflow(dir: &Path, n: usize) -> Res<()> {
    write_copy_pipeline(dir, n, "floor", "cat in/${i}.txt > $PIPE_OUT/out.txt")
}

/// Writes `dir/in/I.txt` for `I` in `0..n` and `dir/p.toml`, pipeline `name`: one `exec`
/// instance per `I`, declaring its input file and running `sh -c COMMAND` (where `${i}`
/// is the instance's `I`).
pub fn write_copy_pipeline(dir: &Path, n: usize, name: &str, command: &str) -> Res<()> {
    fs::create_dir_all(dir.join("in"))?;
    for i in 0..n {
        fs::write(dir.join(format!("in/{i}.txt")), format!("{i}\n"))?;
    }
    let list = (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    fs::write(
        dir.join("p.toml"),
        format!(
            "[pipeline]\nname = \"{name}\"\n[sweep]\ni = [{list}]\n[stage.copy]\nkind = \"exec\"\n\
             files = [\"in/${{i}}.txt\"]\n\
             cmd = [\"sh\", \"-c\", \"{command}\"]\n"
        ),
    )?;
    Ok(())
}

fn pipe(bin: &Path, dir: &Path, cache: &str, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .arg("p.toml")
        .arg("--cache")
        .arg(dir.join(cache))
        .current_dir(dir);
    c
}

/// The floor: the same `n` commands through `xargs -P2 sh -c`, writing into `out`.
fn floor(dir: &Path, n: usize, out: &str) -> Res<Duration> {
    fs::create_dir_all(dir.join(out))?;
    let script = format!(
        "seq 0 {} | xargs -P2 -I{{}} sh -c 'cat in/{{}}.txt > {out}/{{}}.txt'",
        n - 1
    );
    timed(Command::new("sh").arg("-c").arg(script).current_dir(dir))
}

/// The lines this part of the benchmark prints.
pub fn compare(bin: &Path, root: &Path, n: usize) -> Res<Vec<String>> {
    let dir = root.join("floor");
    write_workflow(&dir, n)?;
    let run = ["run", "--jobs", "2", "--quiet"];
    let (mut first, mut bottom) = (Duration::MAX, Duration::MAX);
    for r in 0..2 {
        first = first.min(timed(&mut pipe(bin, &dir, &format!("cache{r}"), &run))?);
        bottom = bottom.min(floor(&dir, n, &format!("out{r}"))?);
    }
    let ratio = first.as_secs_f64() / bottom.as_secs_f64().max(1e-9);
    let mut lines = vec![
        format!("first run, {n} instances `cat in/I.txt > out`, 2 jobs (best of 2):"),
        format!(
            "  pipe run {:>8.3} s   xargs -P2 floor {:>8.3} s   pipe/floor {ratio:.2}x (goal <= {FIRST_RUN_GOAL}x{})",
            first.as_secs_f64(),
            bottom.as_secs_f64(),
            if ratio <= FIRST_RUN_GOAL {
                ": met"
            } else {
                ": not met"
            }
        ),
    ];
    let best = |f: &mut dyn FnMut() -> Res<Duration>| -> Res<Duration> {
        let mut b = Duration::MAX;
        for _ in 0..5 {
            b = b.min(f()?);
        }
        Ok(b)
    };
    let noop = best(&mut || timed(&mut pipe(bin, &dir, "cache0", &run)))?;
    let status = best(&mut || timed(&mut pipe(bin, &dir, "cache0", &["status"])))?;
    let mut k = 0;
    let changed = best(&mut || {
        k += 1;
        fs::write(dir.join("in/7.txt"), format!("changed {k}\n"))?;
        timed(&mut pipe(bin, &dir, "cache0", &run))
    })?;
    if fs::read_to_string(dir.join("in/7.txt"))? != format!("changed {k}\n") {
        return Err("the changed input was overwritten".into());
    }
    for (task, t, goal) in [
        ("no-op rerun", noop, NOOP_GOAL),
        ("`pipe status`", status, NOOP_GOAL),
        ("one input changed, rerun", changed, ONE_CHANGED_GOAL),
    ] {
        lines.push(format!(
            "  {task:<28} {n} cached {:>8.1} ms   goal {:>4} ms{}",
            t.as_secs_f64() * 1e3,
            goal.as_millis(),
            if t <= goal { ": met" } else { ": not met" }
        ));
    }
    Ok(lines)
}
