//! Probe benchmark: manifold capacity analysis (MFTMA) in Rust against a numpy/scipy
//! implementation of the same algorithm, and against the reference figures of science.md.
//!
//! Run with `cargo bench --bench probe`. Smaller sizes, for a quick check:
//! `PIPE_BENCH_SCALE=0.1 cargo bench --bench probe` or `cargo bench --bench probe -- 0.1`
//! (the scale multiplies P, M and N).
//!
//! The data are the science.md check: P = 100 manifolds of M = 50 standard Gaussian points
//! in N = 5000 dimensions, kappa 0, n_t = 200 Gaussian vectors per manifold, all seeded.
//! Points and Gaussian vectors go to a temporary folder as raw little-endian f64 files
//! (plus `shapes.json`); `benches/mftma_reference.py` reads them and runs the analysis
//! with `scipy.optimize.nnls` per vector. Both sides run without center-correlation
//! removal and with the same Gaussian vectors, so their figures must agree to rounding.
//! Python's BLAS runs on one thread (`OPENBLAS_NUM_THREADS=1`): its threaded tall-skinny
//! QR is many times slower on small machines, which would flatter the ratio.
//!
//! Times are wall times (std::time::Instant): Rust the best of three runs, Python one run
//! of its analysis (file reading excluded on both sides). The Rust analysis with removal
//! on (its default) is then compared with the science.md figures.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pipe_science::geometry::{
    LinearProbeOptions, Mat, MatRef, MftmaOptions, anchor_dimension, linear_probe,
    manifold_analysis, manifold_analysis_with_t,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// The science.md reference figures for this data set.
const REFERENCE: [(&str, f64); 3] = [("capacity", 0.04), ("radius", 1.48), ("dimension", 36.0)];

fn scale() -> f64 {
    std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<f64>().ok())
        .or_else(|| std::env::var("PIPE_BENCH_SCALE").ok()?.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .unwrap_or(1.0)
}

fn gaussian(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| StandardNormal.sample(rng))
}

/// Writes the columns of each matrix one after the other as little-endian f64.
fn write_columns(path: &Path, ms: &[Mat<f64>]) -> Res<()> {
    let mut out = BufWriter::new(fs::File::create(path)?);
    for m in ms {
        for j in 0..m.ncols() {
            for v in m.col_as_slice(j) {
                out.write_all(&v.to_le_bytes())?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn best_of<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..runs {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("at least one run"))
}

struct Python {
    capacity: f64,
    radius: f64,
    dimension: f64,
    seconds: f64,
}

fn run_python(dir: &Path) -> Res<Python> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/mftma_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(dir)
        .env("OPENBLAS_NUM_THREADS", "1")
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .output()?;
    if !out.status.success() {
        return Err(format!("python3: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let field = |k: &str| {
        v[k].as_f64()
            .ok_or_else(|| format!("python output lacks {k}: {v}"))
    };
    Ok(Python {
        capacity: field("capacity")?,
        radius: field("radius")?,
        dimension: field("dimension")?,
        seconds: field("seconds")?,
    })
}

fn main() -> Res<()> {
    let scale = scale();
    let p = ((100.0 * scale).round() as usize).max(2);
    let m = ((50.0 * scale).round() as usize).max(2);
    let n = ((5000.0 * scale).round() as usize).max(2);
    let n_t = 200;
    let kappa = 0.0;
    let d = anchor_dimension(n, m);
    println!(
        "MFTMA: P = {p} manifolds of M = {m} Gaussian points in N = {n} dimensions, n_t = {n_t}, \
         kappa = {kappa}, {} threads",
        rayon::current_num_threads()
    );

    let start = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let manifolds: Vec<Mat<f64>> = (0..p).map(|_| gaussian(&mut rng, n, m)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t_vectors: Vec<Mat<f64>> = (0..p).map(|_| gaussian(&mut rng, d + 1, n_t)).collect();
    let dir = tempfile::tempdir()?;
    write_columns(&dir.path().join("points.f64"), &manifolds)?;
    write_columns(&dir.path().join("t.f64"), &t_vectors)?;
    let shapes = serde_json::json!({"p": p, "m": m, "n": n, "n_t": n_t, "d": d, "kappa": kappa});
    fs::write(dir.path().join("shapes.json"), shapes.to_string())?;
    println!("data generated and written in {:.2?}", start.elapsed());

    let xs: Vec<MatRef<'_, f64>> = manifolds.iter().map(|x| x.as_ref()).collect();
    let ts: Vec<MatRef<'_, f64>> = t_vectors.iter().map(|t| t.as_ref()).collect();
    let off = MftmaOptions {
        kappa,
        n_t,
        center_correlation: false,
        ..MftmaOptions::default()
    };
    let (rust_time, rust) = best_of(3, || manifold_analysis_with_t(&xs, &off, &ts));
    let rust = rust?;
    let python = match run_python(dir.path()) {
        Ok(py) => Some(py),
        Err(e) => {
            println!("python reference skipped: {e}");
            None
        }
    };

    println!();
    println!("Removal off, same points and Gaussian vectors:");
    println!(
        "{:<12} {:>14} {:>14} {:>14} {:>10}",
        "", "Rust", "Python", "Rust/Python", "goal"
    );
    let rust_s = rust_time.as_secs_f64();
    match &python {
        Some(py) => {
            println!(
                "{:<12} {:>14.3} {:>14.3} {:>13.1}x {:>10}",
                "seconds",
                rust_s,
                py.seconds,
                py.seconds / rust_s,
                ">= 10x"
            );
            for (name, r, q) in [
                ("capacity", rust.capacity, py.capacity),
                ("radius", rust.radius, py.radius),
                ("dimension", rust.dimension, py.dimension),
            ] {
                println!(
                    "{:<12} {:>14.6} {:>14.6} {:>14} {:>10}",
                    name,
                    r,
                    q,
                    format!("{:.1e} rel", (r - q).abs() / q.abs()),
                    "<= 1%"
                );
            }
        }
        None => {
            println!("{:<12} {:>14.3}", "seconds", rust_s);
            for (name, r) in [
                ("capacity", rust.capacity),
                ("radius", rust.radius),
                ("dimension", rust.dimension),
            ] {
                println!("{name:<12} {r:>14.6}");
            }
        }
    }

    let on = MftmaOptions {
        kappa,
        n_t,
        ..MftmaOptions::default()
    };
    let (on_time, with_removal) = best_of(1, || manifold_analysis(&xs, &on));
    let with_removal = with_removal?;
    println!();
    println!(
        "Removal on (Rust, seed 0, own Gaussian vectors): K = {}, {:.3} s",
        with_removal.k,
        on_time.as_secs_f64()
    );
    println!(
        "{:<22} {:>12} {:>12} {:>10}",
        "", "Rust", "science.md", "rel diff"
    );
    for ((name, reference), value) in REFERENCE.iter().zip([
        with_removal.capacity,
        with_removal.radius,
        with_removal.dimension,
    ]) {
        println!(
            "{:<22} {:>12.4} {:>12} {:>9.1}%",
            name,
            value,
            reference,
            100.0 * (value - reference) / reference
        );
    }
    println!(
        "{:<22} {:>12.4} {:>12}",
        "center correlation", with_removal.center_correlation, "about 0"
    );
    println!(
        "{:<22} {:>12.4}",
        "residual correlation", with_removal.residual_center_correlation
    );
    if (scale - 1.0).abs() > 1e-12 {
        println!("(the science.md figures hold for P = 100, M = 50, N = 5000 only: scale 1)");
    }

    // Linear probe on the same points: P * M examples, N features, chance 1 / P.
    let examples = p * m;
    let features = Mat::from_fn(examples, n, |e, f| manifolds[e / m][(f, e % m)]);
    let labels: Vec<usize> = (0..examples).map(|e| e / m).collect();
    let (probe_time, probe) = best_of(1, || {
        linear_probe(features.as_ref(), &labels, &LinearProbeOptions::default())
    });
    let probe = probe?;
    println!();
    println!(
        "Linear probe ({examples} examples x {n} features, {p} classes): test accuracy {:.3} \
         (chance {:.3}), train accuracy {:.3}, {:.3} s",
        probe.test_accuracy,
        1.0 / p as f64,
        probe.train_accuracy,
        probe_time.as_secs_f64()
    );
    Ok(())
}
