//! The shipped double-descent pipeline at three widths: below, at and far above the
//! interpolation threshold (500 training examples), checked from the exported tables.

use crate::common::*;

#[test]
fn double_descent_peaks_at_the_interpolation_threshold() {
    let p = Project::new();
    let file = repo().join("pipelines/double-descent.toml");
    let file = file.to_str().unwrap();
    let sets = [
        "sweep.width=[100, 500, 4000]",
        "sweep.noise=[0.2]",
        "sweep.seed=[1]",
        "stage.data.test_size=1000",
    ];
    let mut args = vec!["--jobs", "2"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let (code, r) = p.run(file, &args);
    assert_eq!(code, 0, "{r}");
    let mut export = vec!["export", file, "--out", "results"];
    for s in &sets {
        export.extend(["--set", s]);
    }
    assert!(p.pipe(&export).status.success());
    // Polars, as a user reads it: the final epoch's errors by width.
    let q = python(&format!(
        "import polars as pl, json\n\
         m = pl.read_parquet('{}/metrics.parquet')\n\
         last = m.filter(pl.col('epoch') == m['epoch'].max()).sort('width')\n\
         print(json.dumps({{'width': last['width'].to_list(), 'test': (1 - last['test_acc']).to_list(), 'train': (1 - last['train_acc']).to_list()}}))",
        p.path("results").display()
    ));
    assert_eq!(q["width"], serde_json::json!([100, 500, 4000]));
    let err = |k: &str, i: usize| q[k][i].as_f64().unwrap();
    // README's exploration: 0.33, 0.58, 0.32 at 100, 500, 4000 (noise 0.2, 2,000 test images).
    assert!(err("test", 1) > err("test", 0) + 0.1, "{q}");
    assert!(err("test", 1) > err("test", 2) + 0.1, "{q}");
    assert!(err("train", 1) <= 0.01, "interpolates at width 500: {q}");
    assert!(
        err("train", 0) > 0.1,
        "cannot interpolate at width 100: {q}"
    );
    // The report states it in its sixth section's heading.
    let mut report = vec!["report", file, "--out", "report"];
    for s in &sets {
        report.extend(["--set", s]);
    }
    assert!(p.pipe(&report).status.success());
    let page = std::fs::read_to_string(p.path("report/index.html")).unwrap();
    assert!(
        page.contains("<h2>6. Double descent with model size: test error at noise=0.2"),
        "{page}"
    );
    assert!(p.path("report/figures/6-double-descent-train.svg").exists());
}
