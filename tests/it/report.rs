//! `pipe report`: the figures' numbers against DuckDB over the exported tables, the run
//! table against `pipe status`, and the page opened in headless Chromium.

use std::path::Path;

use crate::common::*;
use serde_json::{Value as Json, json};

/// Rows of a figure's CSV as (panel, series, x, mean, sd, n).
fn csv(path: &Path) -> Vec<(String, String, String, f64, f64, u64)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("panel,series,x,mean,sd,n"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn report_figures_match_duckdb_and_render_in_chromium() {
    let p = Project::new();
    p.write_idx("data", 200, 40);
    p.write(
        "r.toml",
        &format!(
            "{TINY_STUDY}[stage.embed]\nkind = \"embed\"\ninputs = [\"activations\"]\nperplexity = 5.0\niterations = 300\n"
        ),
    );
    let (code, r) = p.run("r.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let out = p.pipe(&["report", "r.toml", "--out", "report", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(w["without_figure"], json!([]));
    let names: Vec<String> = w["figures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            Path::new(f.as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // One accuracy figure for the training stage; geometry and rollback per noise level;
    // gradient shares only where there are corrupted examples.
    assert_eq!(
        names,
        [
            "1-accuracy-train.svg",
            "2-geometry-probe-noise-0.0.svg",
            "2-geometry-probe-noise-0.5.svg",
            "3-gradients-gradnorm-noise-0.5.svg",
            "4-rollback-rollback-noise-0.0.svg",
            "4-rollback-rollback-noise-0.5.svg",
            "5-embedding-embed-noise-0.0.svg",
            "5-embedding-embed-noise-0.5.svg",
        ]
    );

    // The plotted means and spreads equal DuckDB's over the exported tables.
    let ex = p.pipe(&["export", "r.toml", "--out", "results"]);
    assert!(ex.status.success());
    let figs = p.path("report/figures");
    let q = python(&format!(
        "import duckdb, json\n\
         m = duckdb.sql(\"SELECT noise, epoch, avg(test_acc), stddev_samp(test_acc), count(*) FROM '{d}/metrics.parquet' GROUP BY ALL ORDER BY ALL\").fetchall()\n\
         g = duckdb.sql(\"SELECT k.layer, k.epoch, avg(k.label_dependent / c.label_dependent), count(*) FROM '{d}/gradnorm.parquet' k JOIN '{d}/gradnorm.parquet' c USING (noise, seed, layer, epoch) WHERE k.group = 'corrupted' AND c.group = 'clean' AND k.noise = 0.5 GROUP BY ALL ORDER BY ALL\").fetchall()\n\
         b = duckdb.sql(\"SELECT r.noise, avg(r.test_acc), avg(m.test_acc) FROM '{d}/rollback.parquet' r JOIN '{d}/metrics.parquet' m ON r.noise = m.noise AND r.seed = m.seed AND m.epoch = 4 WHERE r.cutoff_index < 0 GROUP BY ALL ORDER BY ALL\").fetchall()\n\
         print(json.dumps({{'m': [list(x) for x in m], 'g': [list(x) for x in g], 'b': [list(x) for x in b]}}))",
        d = p.path("results").display()
    ));
    let acc = csv(&figs.join("1-accuracy-train.csv"));
    let test: Vec<_> = acc.iter().filter(|r| r.0 == "test_acc").collect();
    let m = q["m"].as_array().unwrap();
    assert_eq!(test.len(), m.len(), "2 noise levels x 5 epochs");
    for (row, want) in test.iter().zip(m) {
        let noise = want[0].as_f64().unwrap();
        assert_eq!(row.1, format!("noise={noise:?}"));
        assert_eq!(row.2, want[1].to_string());
        assert!(
            (row.3 - want[2].as_f64().unwrap()).abs() < 1e-12,
            "{row:?} {want}"
        );
        assert!(
            (row.4 - want[3].as_f64().unwrap()).abs() < 1e-12,
            "{row:?} {want}"
        );
        assert_eq!(row.5, 2, "two seeds");
    }
    let grad: Vec<_> = csv(&figs.join("3-gradients-gradnorm-noise-0.5.csv"))
        .into_iter()
        .filter(|r| r.0 == "label-dependent ratio")
        .collect();
    let g = q["g"].as_array().unwrap();
    assert_eq!(grad.len(), g.len());
    for want in g {
        let row = grad
            .iter()
            .find(|r| {
                r.1 == want[0].as_str().unwrap() && r.2.parse::<i64>().ok() == want[1].as_i64()
            })
            .unwrap_or_else(|| panic!("no row for {want}"));
        assert!((row.3 - want[2].as_f64().unwrap()).abs() < 1e-12);
    }
    // The rollback map's reference column: the stage's own no-rollback row, which must be
    // the final test accuracy the training stage recorded.
    for want in q["b"].as_array().unwrap() {
        let noise = want[0].as_f64().unwrap();
        let text =
            std::fs::read_to_string(figs.join(format!("4-rollback-rollback-noise-{noise:?}.csv")))
                .unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(",no rollback,"))
            .unwrap();
        let mean: f64 = line.split(',').nth(2).unwrap().parse().unwrap();
        assert!((mean - want[1].as_f64().unwrap()).abs() < 1e-12);
        assert!((mean - want[2].as_f64().unwrap()).abs() < 1e-6, "{want}");
    }

    // The run table lists every instance with its key.
    let page = std::fs::read_to_string(p.path("report/index.html")).unwrap();
    // Each finding's heading states a measured number, or says the run does not show it.
    let headings: Vec<&str> = page
        .split("<h2>")
        .skip(1)
        .filter_map(|h| h.split("</h2>").next())
        .collect();
    assert_eq!(headings.len(), 6, "{headings:?}");
    for (i, h) in headings[..5].iter().enumerate() {
        assert!(h.starts_with(&format!("{}. ", i + 1)), "{h}");
        let (_, said) = h
            .split_once(": ")
            .unwrap_or_else(|| panic!("no result in {h}"));
        assert!(said.chars().any(|c| c.is_ascii_digit()), "{h}");
        assert!(
            !h.contains('?') || h.contains("? Not shown by this run: "),
            "{h}"
        );
    }
    // The embedding at noise 0.0 has only clean examples: one view per epoch.
    let svg = std::fs::read_to_string(figs.join("5-embedding-embed-noise-0.0.svg")).unwrap();
    assert!(svg.contains("unpermuted") && !svg.contains("restored"));
    let svg = std::fs::read_to_string(figs.join("5-embedding-embed-noise-0.5.svg")).unwrap();
    assert!(svg.contains("permuted") && svg.contains("restored") && svg.contains("class 9"));
    let out = p.pipe(&["report", "r.toml", "--out", "other", "--embed-layer", "fc9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--embed-layer fc9") && err.contains("input, fc1, logits"),
        "{err}"
    );
    assert!(!p.path("other").exists());
    let out = p.pipe(&["report", "r.toml", "--out", "other", "--embed-layer", "fc1"]);
    assert!(out.status.success());
    let svg =
        std::fs::read_to_string(p.path("other/figures/5-embedding-embed-noise-0.5.svg")).unwrap();
    assert!(svg.contains("layer fc1"));
    let status = p.status("r.toml", &[]);
    for s in &status {
        assert!(page.contains(s["key"].as_str().unwrap()), "{s}");
    }
    assert!(page.contains(&format!(
        "{n} instances, {n} cached, 0 not in the cache",
        n = status.len()
    )));

    // Headless Chromium: no console messages, every image decoded and non-empty. A broken
    // copy (one figure deleted, one console error) shows that the check can fail.
    let bad = p.path("bad");
    std::fs::create_dir_all(bad.join("figures")).unwrap();
    for n in &names[1..] {
        std::fs::copy(figs.join(n), bad.join("figures").join(n)).unwrap();
    }
    std::fs::write(
        bad.join("index.html"),
        page.replace("</body>", "<script>console.error('broken')</script></body>"),
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/check_page.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(p.path("report/index.html"))
        .arg(bad.join("index.html"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Chromium check failed (scripts/setup installs chromium and chromium-driver):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pages: Json = serde_json::from_slice(&out.stdout).unwrap();
    let good = &pages[0];
    assert_eq!(good["title"], "pipe report: report-test");
    assert_eq!(good["console"], json!([]), "{good}");
    let images = good["images"].as_array().unwrap();
    assert_eq!(images.len(), names.len());
    for (img, name) in images.iter().zip(&names) {
        assert_eq!(img["src"], format!("figures/{name}"));
        assert_eq!(img["decoded"], true, "{img}");
        assert!(img["width"].as_u64().unwrap() > 100 && img["height"].as_u64().unwrap() > 100);
        assert!(std::fs::metadata(figs.join(name)).unwrap().len() > 1000);
    }
    let broken = &pages[1];
    assert_eq!(broken["images"][0]["decoded"], false);
    assert_eq!(broken["images"][0]["width"], 0);
    let console = broken["console"].to_string();
    assert!(
        console.contains("ERR_FILE_NOT_FOUND") && console.contains("broken"),
        "{console}"
    );
}

#[test]
fn report_rejects_an_unknown_over_variable_and_says_which_exist() {
    let p = Project::new();
    p.write("r.toml", TINY_STUDY);
    let out = p.pipe(&["report", "r.toml", "--out", "report", "--over", "sead"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sead") && err.contains("seed") && err.contains("noise"),
        "{err}"
    );
    assert!(!p.path("report").exists());
}
