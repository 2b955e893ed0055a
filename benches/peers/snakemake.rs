//! `pipe` against Snakemake on the same workflows, through both command lines: 1,000 trivial
//! shell stages (first run, no-op rerun, status, one changed input) and planning 100,000
//! instances (time and peak memory). Each figure is the best of a few runs; the ratios
//! (Snakemake / pipe) are what the bench prints.
//!
//! Snakemake is found as `$PIPE_SNAKEMAKE`, in the virtualenv `scripts/bench-peers` makes
//! (`~/.cache/pipe/snakemake-venv`), or on `PATH`; without it the comparison is skipped with
//! a note.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The `snakemake` executable, if one is installed.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PIPE_SNAKEMAKE") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(c) = cache {
        let p = c.join("pipe/snakemake-venv/bin/snakemake");
        if p.is_file() {
            return Some(p);
        }
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("snakemake"))
            .find(|p| p.is_file())
    })
}

/// Runs `cmd` in `dir`; its wall time, failing if it fails.
fn timed(cmd: &mut Command) -> Res<Duration> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let t = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        )
        .into());
    }
    Ok(t)
}

/// Wall time and peak resident memory (KiB) of `cmd`, through GNU time.
fn timed_with_memory(cmd: &[&str], dir: &Path) -> Res<(Duration, u64)> {
    let report = dir.join("time.txt");
    let start = Instant::now();
    let status = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .args(cmd)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let t = start.elapsed();
    if !status.success() {
        return Err(format!("{cmd:?} failed ({status})").into());
    }
    let kib = fs::read_to_string(&report)?
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("GNU time printed no peak memory")?;
    Ok((t, kib))
}

/// One workflow written for both tools in `dir`: `n` stages, each copying its input file
/// `in/I.txt` to its output.
fn write_workflow(dir: &Path, n: usize) -> Res<()> {
    super::floor::write_copy_pipeline(dir, n, "peer", "cp in/${i}.txt $PIPE_OUT/out.txt")?;
    fs::write(
        dir.join("Snakefile"),
        format!(
            "rule all:\n    input: expand(\"out/{{i}}.txt\", i=range({n}))\n\n\
             rule copy:\n    input: \"in/{{i}}.txt\"\n    output: \"out/{{i}}.txt\"\n    \
             shell: \"cp {{input}} {{output}}\"\n"
        ),
    )?;
    Ok(())
}

fn pipe_cmd(bin: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args)
        .arg("--cache")
        .arg(dir.join("cache"))
        .current_dir(dir);
    c
}

fn snake_cmd(snakemake: &Path, dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(snakemake);
    c.args(["--cores", "2", "--quiet", "all"])
        .args(args)
        .current_dir(dir);
    c
}

/// The comparison's lines: `task  pipe  snakemake  ratio`.
pub fn compare(
    bin: &Path,
    snakemake: &Path,
    root: &Path,
    n_small: usize,
    n_large: usize,
) -> Res<Vec<String>> {
    let mut lines = vec![format!(
        "Snakemake ({}) against pipe, same workflow, both through their command lines:",
        String::from_utf8_lossy(&Command::new(snakemake).arg("--version").output()?.stdout).trim()
    )];
    let mut line = |task: String, p: Duration, s: Duration| {
        lines.push(format!(
            "  {task:<44} pipe {:>9.3} s  snakemake {:>9.3} s  snakemake/pipe {:>7.1}x",
            p.as_secs_f64(),
            s.as_secs_f64(),
            s.as_secs_f64() / p.as_secs_f64().max(1e-9)
        ));
    };
    let dir = root.join("peer-small");
    write_workflow(&dir, n_small)?;
    let jobs = ["--jobs", "2", "--quiet"];
    let first_p = timed(
        pipe_cmd(bin, &dir, &[&["run", "p.toml"][..], &jobs[..]].concat()).stdout(Stdio::null()),
    )?;
    let first_s = timed(snake_cmd(snakemake, &dir, &[]).stdout(Stdio::null()))?;
    line(format!("first run, {n_small} stages"), first_p, first_s);
    let best = |mut f: Box<dyn FnMut() -> Res<Duration>>| -> Res<Duration> {
        let mut b = Duration::MAX;
        for _ in 0..3 {
            b = b.min(f()?);
        }
        Ok(b)
    };
    let noop_p = best(Box::new(|| {
        timed(
            pipe_cmd(bin, &dir, &[&["run", "p.toml"][..], &jobs[..]].concat())
                .stdout(Stdio::null()),
        )
    }))?;
    let noop_s = best(Box::new(|| {
        timed(snake_cmd(snakemake, &dir, &[]).stdout(Stdio::null()))
    }))?;
    line(format!("no-op rerun, {n_small} stages"), noop_p, noop_s);
    let status_p = best(Box::new(|| {
        timed(pipe_cmd(bin, &dir, &["status", "p.toml"]).stdout(Stdio::null()))
    }))?;
    let status_s = best(Box::new(|| {
        timed(snake_cmd(snakemake, &dir, &["--dry-run"]).stdout(Stdio::null()))
    }))?;
    line(
        format!("status (snakemake --dry-run), {n_small} stages"),
        status_p,
        status_s,
    );
    // One input changes: each tool must find it and rerun that one stage.
    fs::write(dir.join("in/7.txt"), "seven\n")?;
    std::thread::sleep(Duration::from_millis(20));
    let one_p = timed(
        pipe_cmd(bin, &dir, &[&["run", "p.toml"][..], &jobs[..]].concat()).stdout(Stdio::null()),
    )?;
    let one_s = timed(snake_cmd(snakemake, &dir, &[]).stdout(Stdio::null()))?;
    line(format!("one input changed, {n_small} stages"), one_p, one_s);
    if fs::read_to_string(dir.join("out/7.txt"))? != "seven\n" {
        return Err("snakemake did not rerun the changed stage".into());
    }

    // Planning a large sweep: `pipe status` and `snakemake --dry-run` on an empty output.
    let big = root.join("peer-large");
    write_workflow(&big, n_large)?;
    let bin_s = bin.to_string_lossy().into_owned();
    let cache = big.join("cache").to_string_lossy().into_owned();
    let (tp, mp) = timed_with_memory(&[&bin_s, "status", "p.toml", "--cache", &cache], &big)?;
    let snake_s = snakemake.to_string_lossy().into_owned();
    let (ts, ms) = timed_with_memory(
        &[&snake_s, "--cores", "2", "--quiet", "--dry-run", "all"],
        &big,
    )?;
    line(format!("planning {n_large} instances (time)"), tp, ts);
    lines.push(format!(
        "  {:<44} pipe {:>7.0} MB  snakemake {:>7.0} MB  snakemake/pipe {:>7.1}x",
        format!("planning {n_large} instances (peak memory)"),
        mp as f64 / 1024.0,
        ms as f64 / 1024.0,
        ms as f64 / (mp as f64).max(1.0)
    ));
    Ok(lines)
}
