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

/// The last `n` texts of an SVG (a legend's entries, drawn last), as plotters writes them:
/// `<text ...>\nNAME\n</text>`.
fn legend_texts(svg: &str, n: usize) -> Vec<String> {
    let texts: Vec<String> = svg
        .split("</text>")
        .filter_map(|t| t.rsplit_once('>').map(|(_, s)| s.trim().to_string()))
        .filter(|t| !t.is_empty())
        .collect();
    texts[texts.len().saturating_sub(n)..]
        .iter()
        .map(|t| t.replace("&amp;", "&"))
        .collect()
}

/// Checks that every title-size text of an SVG fits its width: its estimated width
/// (0.6 em a character) at its font size is no wider than the figure.
fn titles_fit(name: &str, svg: &str) {
    let width: f64 = svg
        .split("width=\"")
        .nth(1)
        .and_then(|w| w.split('"').next())
        .and_then(|w| w.parse().ok())
        .unwrap();
    for t in svg.split("<text").skip(1) {
        let size: f64 = t
            .split("font-size=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or(12.0);
        let text = t
            .split_once('>')
            .map(|(_, s)| s.split("</text>").next().unwrap_or("").trim())
            .unwrap_or("");
        let estimated = 0.6 * size * text.chars().count() as f64;
        assert!(
            estimated <= width,
            "{name}: `{text}` at {size}px is about {estimated:.0}px wide, the figure {width}px"
        );
    }
}

#[test]
fn report_figures_match_duckdb_and_render_in_chromium() {
    let p = Project::new();
    p.write_idx("data", 200, 40);
    p.write(
        "r.toml",
        &format!(
            "{}[stage.embed]\nkind = \"embed\"\ninputs = [\"activations\"]\nperplexity = 5.0\niterations = 300\n",
            // Fashion-MNIST's class names, written in the data set's dataset.json.
            TINY_STUDY.replace("source = \"idx\"", "source = \"fashion-mnist\"")
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
    let names_of_figures: Vec<String> = w["figures"]
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
    let names = names_of_figures.clone();
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
    assert!(svg.contains("permuted") && svg.contains("restored"));
    // The legend names the classes as the data set's dataset.json does, in label order.
    let info = p
        .artifacts()
        .into_iter()
        .map(|a| a.join("dataset.json"))
        .find(|f| f.exists())
        .expect("the dataset artifact");
    let info: Json = serde_json::from_slice(&std::fs::read(info).unwrap()).unwrap();
    let class_names: Vec<&str> = info["class_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(class_names[0], "T-shirt/top");
    assert_eq!(legend_texts(&svg, class_names.len()), class_names);
    // No title or legend text wider than its figure.
    for n in &names_of_figures {
        let svg = std::fs::read_to_string(figs.join(n)).unwrap();
        titles_fit(n, &svg);
    }
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

/// The header names the sweep of the instances the report shows: a file that declares a
/// third seed nobody ran still shows the two that ran.
#[test]
fn report_header_names_the_sweep_of_the_instances_shown() {
    let p = Project::new();
    p.write_idx("data", 200, 40);
    p.write("r.toml", TINY_STUDY);
    let (code, r) = p.run("r.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let wider = TINY_STUDY.replace("seed = [1, 2]\n", "seed = [1, 2, 3]\n");
    assert_ne!(wider, TINY_STUDY);
    p.write("wider.toml", &wider);
    let out = p.pipe(&["report", "wider.toml", "--out", "report"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The sweep values of the instances run: those `pipe status` lists as cached.
    let mut noise: Vec<String> = Vec::new();
    let mut seed: Vec<String> = Vec::new();
    for s in p.status("r.toml", &[]) {
        let point = &s["point"];
        for (name, values) in [("noise", &mut noise), ("seed", &mut seed)] {
            if let Some(v) = point.get(name) {
                let v = v.to_string();
                if !values.contains(&v) {
                    values.push(v);
                }
            }
        }
    }
    let page = std::fs::read_to_string(p.path("report/index.html")).unwrap();
    let want = format!(
        "Sweep shown: noise {{{}}} x seed {{{}}}",
        noise.join(", "),
        seed.join(", ")
    );
    assert_eq!(want, "Sweep shown: noise {0.0, 0.5} x seed {1, 2}");
    assert!(page.contains(&want), "{want} not in the page header");
}

/// A pipeline whose exec stage writes `gap = noise * epoch + width + 0.01 * seed` over a
/// noise x width x seed sweep, with `plots` as its `[[report.plot]]` tables.
fn gap_pipeline(plots: &str) -> String {
    format!(
        r#"[pipeline]
name = "gaps"
[sweep]
noise = [0.0, 0.4]
width = [1, 2]
seed = [1, 2]
[stage.fit]
kind = "exec"
cmd = ["python3", "-c", "import polars as pl, os; e=list(range(1,4)); pl.DataFrame({{'epoch': e, 'gap': [${{noise}}*x + ${{width}} + 0.01*${{seed}} for x in e]}}).write_parquet(os.environ['PIPE_OUT'] + '/gap.parquet')"]
tables = ["gap"]
{plots}"#
    )
}

/// `mean_over` says what each point averages over: by default the seeds, with a panel per
/// width; named, exactly those variables. The points equal DuckDB's means over the same
/// variables, and the caption says what was averaged. An unknown variable exits 2 at its line.
#[test]
fn report_plot_means_over_exactly_the_variables_it_names_and_says_so() {
    let p = Project::new();
    let plots = "[[report.plot]]\ntable = \"gap\"\nx = \"epoch\"\ny = \"gap\"\nseries = \"noise\"\ntitle = \"By seed\"\n\
                 [[report.plot]]\ntable = \"gap\"\nx = \"epoch\"\ny = \"gap\"\nseries = \"noise\"\ntitle = \"By seed and width\"\nmean_over = [\"seed\", \"width\"]\n";
    p.write("p.toml", &gap_pipeline(plots));
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let out = p.pipe(&["report", "p.toml", "--out", "rep"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        p.pipe(&["export", "p.toml", "--out", "results"])
            .status
            .success()
    );
    let q = python(&format!(
        "import duckdb, json\n\
         a = duckdb.sql(\"SELECT 'width=' || width, 'noise = ' || noise, epoch, avg(gap), count(*) FROM '{d}/gap.parquet' GROUP BY ALL ORDER BY ALL\").fetchall()\n\
         b = duckdb.sql(\"SELECT 'By seed and width', 'noise = ' || noise, epoch, avg(gap), count(*) FROM '{d}/gap.parquet' GROUP BY ALL ORDER BY ALL\").fetchall()\n\
         print(json.dumps({{'a': [list(x) for x in a], 'b': [list(x) for x in b]}}))",
        d = p.path("results").display()
    ));
    for (file, key, n) in [
        ("plot-1-By-seed.csv", "a", 2),
        ("plot-2-By-seed-and-width.csv", "b", 4),
    ] {
        let mut rows = csv(&p.path("rep/figures").join(file));
        rows.sort_by(|x, y| (&x.0, &x.1, &x.2).cmp(&(&y.0, &y.1, &y.2)));
        let want = q[key].as_array().unwrap();
        assert_eq!(rows.len(), want.len(), "{file}: {rows:?}");
        for (row, w) in rows.iter().zip(want) {
            assert_eq!(row.0, w[0].as_str().unwrap(), "{file}");
            assert_eq!(row.1.parse::<String>().unwrap(), w[1].as_str().unwrap());
            assert_eq!(row.2, w[2].to_string(), "{file}");
            assert!(
                (row.3 - w[3].as_f64().unwrap()).abs() < 1e-12,
                "{row:?} {w}"
            );
            assert_eq!(row.5, n, "{file}");
            assert_eq!(w[4].as_u64(), Some(n));
        }
    }
    let page = std::fs::read_to_string(p.path("rep/index.html")).unwrap();
    assert!(
        page.contains("Each point: mean over seed (2 values); a panel per width"),
        "{page}"
    );
    assert!(page.contains("Each point: mean over seed x width (4 values)"));

    let bad = gap_pipeline(&plots.replace("[\"seed\", \"width\"]", "[\"seed\", \"widht\"]"));
    let line = bad
        .lines()
        .position(|l| l.starts_with("mean_over"))
        .unwrap()
        + 1;
    p.write("p.toml", &bad);
    let out = p.pipe(&["report", "p.toml", "--out", "rep2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("p.toml:{line}:"))
            && err.contains("report.plot[1].mean_over")
            && err.contains("widht")
            && err.contains("noise, width, seed"),
        "{err}"
    );
    assert!(!p.path("rep2").exists());
}
