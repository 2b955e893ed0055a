//! Results and housekeeping: `pipe export` read back from DuckDB and Polars, `show`,
//! `log`, `ls` with key prefixes, and `gc`.

use crate::common::*;
use serde_json::Value as Json;

fn with_table_stage() -> String {
    format!(
        "{BASIC}\n[stage.table]\nkind = \"exec\"\ninputs = {{ labels = \"corrupt\" }}\ntables = [\"summary\"]\n\
         cmd = [\"python3\", \"-c\", \"import os, pyarrow as pa, pyarrow.parquet as pq; \
         t = pq.read_table(os.environ['PIPE_INPUT_LABELS'] + '/labels.parquet'); \
         pq.write_table(pa.table({{'n': [t.num_rows], 'chosen_rows': [sum(t.column('chosen').to_pylist())]}}), \
         os.environ['PIPE_OUT'] + '/summary.parquet')\"]\n"
    )
}

#[test]
fn export_gathers_tables_with_sweep_columns_and_matches_the_artifacts() {
    let p = Project::new();
    p.write("p.toml", &with_table_stage());
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let out = p.pipe(&["export", "p.toml", "--out", "results", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["labels", "summary"]);
    let results = p.path("results");
    // DuckDB: per sweep point, exactly the requested fraction; 40 rows per instance.
    let q = python(&format!(
        "import duckdb, json\n\
         r = duckdb.sql(\"SELECT noise, seed, count(*), avg(chosen::INT), count(DISTINCT key), min(stage) FROM '{d}/labels.parquet' GROUP BY ALL ORDER BY ALL\").fetchall()\n\
         s = duckdb.sql(\"SELECT noise, seed, n, chosen_rows FROM '{d}/summary.parquet' ORDER BY ALL\").fetchall()\n\
         print(json.dumps({{'labels': [list(x) for x in r], 'summary': [list(x) for x in s]}}))",
        d = results.display()
    ));
    assert_eq!(
        q["labels"],
        serde_json::json!([
            [0.0, 1, 40, 0.0, 1, "corrupt"],
            [0.0, 2, 40, 0.0, 1, "corrupt"],
            [0.5, 1, 40, 0.5, 1, "corrupt"],
            [0.5, 2, 40, 0.5, 1, "corrupt"]
        ])
    );
    assert_eq!(
        q["summary"],
        serde_json::json!([
            [0.0, 1, 40, 0],
            [0.0, 2, 40, 0],
            [0.5, 1, 40, 20],
            [0.5, 2, 40, 20]
        ])
    );
    // Polars: every exported row equals the row of its own artifact.
    let q = python(&format!(
        "import polars as pl, json\n\
         e = pl.read_parquet('{d}/labels.parquet')\n\
         ok = all(e.filter(pl.col('key') == k).drop(['noise', 'seed', 'stage', 'key']).equals(pl.read_parquet('{c}/artifacts/' + k + '/labels.parquet')) for k in e['key'].unique())\n\
         print(json.dumps({{'ok': ok, 'columns': e.columns}}))",
        d = results.display(),
        c = p.cache().display()
    ));
    assert_eq!(q["ok"], true);
    assert_eq!(
        q["columns"],
        serde_json::json!([
            "index",
            "true_label",
            "train_label",
            "chosen",
            "changed",
            "noise",
            "seed",
            "stage",
            "key"
        ])
    );

    // After changing the sweep, a re-export holds exactly the current points; the new
    // point's instances are reported missing until they run.
    let out = p.pipe(&[
        "export",
        "p.toml",
        "--out",
        "results",
        "--json",
        "--set",
        "sweep.noise=[0.5, 0.25]",
    ]);
    let report: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["missing"].as_array().unwrap().len(), 4, "{report}");
    let q = python(&format!(
        "import duckdb, json\nprint(json.dumps(duckdb.sql(\"SELECT list(DISTINCT noise) FROM '{}/labels.parquet'\").fetchall()[0][0]))",
        results.display()
    ));
    assert_eq!(q, serde_json::json!([0.5]));
}

#[test]
fn show_log_and_ls_take_unique_key_prefixes() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let (_, r) = p.run("p.toml", &[]);
    let key = of_stage(&r, "executed", "data")[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let out = p.pipe(&["show", &key[..10], "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let m: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["key"], key.as_str());
    assert_eq!(m["kind"], "dataset");
    assert_eq!(m["params"]["train_size"], 40);
    let text = String::from_utf8(p.pipe(&["show", &key[..10]]).stdout).unwrap();
    assert!(
        text.contains("train.parquet") && text.contains("kind      dataset"),
        "{text}"
    );
    let log = String::from_utf8(p.pipe(&["log", &key[..10]]).stdout).unwrap();
    assert!(log.contains("train: 40 of 60 examples"), "{log}");
    let ls: Json =
        serde_json::from_slice(&p.pipe(&["ls", "--json", "--stage", "corrupt"]).stdout).unwrap();
    assert_eq!(ls.as_array().unwrap().len(), 4);
    // A prefix shared by two keys is ambiguous; one matching nothing is unknown: both exit 2.
    let ls_keys = || -> Vec<String> {
        let all: Json = serde_json::from_slice(&p.pipe(&["ls", "--json"]).stdout).unwrap();
        all.as_array()
            .unwrap()
            .iter()
            .map(|a| a["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ls_keys().len(),
        8,
        "the two counts at noise 0.0 share one artifact"
    );
    // With 17 artifacts (five seeds), two keys share a first digit.
    assert_eq!(p.run("p.toml", &["--set", "sweep.seed=[1,2,3,4,5]"]).0, 0);
    let keys = ls_keys();
    assert_eq!(keys.len(), 1 + 10 + 6);
    let shared = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|c| keys.iter().filter(|k| k.starts_with(c.as_str())).count() >= 2)
        .expect("17 keys over 16 first digits share one");
    let out = p.pipe(&["show", &shared]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ambiguous"));
    let unused = (0..=255u32)
        .map(|d| format!("{d:02x}"))
        .find(|c| !keys.iter().any(|k| k.starts_with(c.as_str())))
        .unwrap();
    let out = p.pipe(&["log", &unused]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no artifact or log"));
    assert_eq!(p.pipe(&["show", "not-hex"]).status.code(), Some(2));
}

#[test]
fn gc_keeps_what_pipelines_reach_and_dry_run_changes_nothing() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    // Rerun with another corruption mode: the old corrupt and count artifacts become unreachable.
    let changed = BASIC.replace(
        "seed = \"${seed}\"",
        "seed = \"${seed}\"\nmode = \"uniform\"",
    );
    p.write("p.toml", &changed);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    // data; 4 + 4 corrupt; 3 counts (noise 0.0 shares one) + the 2 new ones at 0.5 (at
    // 0.0 the new labels are the same bytes, so the counts there are reused).
    assert_eq!(p.artifacts().len(), 1 + 8 + 3 + 2);
    let before = p.artifacts();
    // By default gc keeps what any run of the last 30 days used: everything here.
    let kept: Json = serde_json::from_slice(&p.pipe(&["gc", "p.toml", "--json"]).stdout).unwrap();
    assert_eq!(kept["removed"].as_array().unwrap().len(), 0);
    assert_eq!(kept["runs_kept"], 2);
    let dry: Json = serde_json::from_slice(
        &p.pipe(&["gc", "p.toml", "--keep-days", "0", "--dry-run", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(dry["removed"].as_array().unwrap().len(), 6);
    assert!(dry["freed_bytes"].as_u64().unwrap() > 0);
    assert_eq!(p.artifacts(), before, "--dry-run removes nothing");
    // Recent artifacts survive a --keep-days cut-off even when no recent run used them.
    let kept: Json = serde_json::from_slice(
        &p.pipe(&[
            "gc",
            "p.toml",
            "--keep-days",
            "1",
            "--run",
            "last",
            "--json",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(kept["removed"].as_array().unwrap().len(), 0);
    let done: Json = serde_json::from_slice(
        &p.pipe(&["gc", "p.toml", "--keep-days", "0", "--json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(done["removed"].as_array().unwrap().len(), 6);
    assert_eq!(p.artifacts().len(), 8);
    // Everything the pipeline reaches is still there.
    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    assert_eq!(count(&r, "executed"), 0);
    assert_no_partial_artifacts(&p.cache());
    // A number of days that is not one is refused.
    assert_eq!(p.pipe(&["gc", "--keep-days=-2"]).status.code(), Some(2));
}

#[test]
fn quiet_verbose_and_completions() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let out = p.pipe(&["run", "p.toml", "--quiet"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "quiet run printed: {out:?}"
    );
    p.write("f.toml", "[pipeline]\nname = \"f\"\n[stage.a]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo the-cause >&2; exit 4\"]\n");
    let out = p.pipe(&["run", "f.toml", "--verbose"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("start a") && stderr.contains("  | the-cause"),
        "{stderr}"
    );
    let out = p.pipe(&["run", "f.toml", "-q"]);
    assert!(out.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exited with status 4"),
        "failures still show"
    );
    for shell in ["bash", "zsh", "fish"] {
        let out = p.pipe(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("verify"),
            "{shell}"
        );
    }
}

#[test]
fn a_closed_output_pipe_ends_every_command_quietly() {
    // `pipe ls | head -1`: the reader goes away. Here it is gone before pipe writes, so
    // every write fails with EPIPE, deterministically.
    let p = Project::new();
    p.write("p.toml", BASIC);
    let (code, _) = p.run("p.toml", &[]);
    assert_eq!(code, 0);
    let key = p.pipe(&["ls", "--json"]);
    let listed: Json = serde_json::from_slice(&key.stdout).unwrap();
    let key = listed[0]["key"].as_str().unwrap().to_string();
    for args in [
        vec!["ls"],
        vec!["ls", "--json"],
        vec!["kinds"],
        vec!["status", "p.toml"],
        vec!["show", key.as_str(), "--json"],
        vec!["log", key.as_str()],
        vec!["dag", "p.toml"],
        vec!["completions", "fish"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = p.command(&args).stdout(writer).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    } // `pipe run ... 2>&1 | head`: progress and errors go to a closed stderr; the command
    // still ends with its own exit code, not a panic's 101.
    for (args, code) in [
        (vec!["run", "p.toml", "--set", "stage.corrupt.seed=9"], 0),
        (vec!["status", "missing.toml"], 2),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = p.command(&args).stderr(writer).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
    }
}

#[test]
fn export_reads_every_parquet_codec_skips_unreadable_tables_and_replaces_its_folder() {
    let p = Project::new();
    // Polars writes zstd by default; pyarrow writes the other codecs on request; one more
    // "table" is not Parquet at all.
    p.write(
        "p.toml",
        &format!(
            "{BASIC}\n[stage.tables]\nkind = \"exec\"\ninputs = {{ labels = \"corrupt\" }}\n\
             tables = [\"polars\", \"lz4\", \"gzip\", \"brotli\", \"broken\"]\n\
             cmd = [\"python3\", \"-c\", \"import os, polars as pl, pyarrow as pa, pyarrow.parquet as pq; \
             o = os.environ['PIPE_OUT']; \
             pl.DataFrame({{'n': [1, 2, 3]}}).write_parquet(o + '/polars.parquet'); \
             [pq.write_table(pa.table({{'n': [4, 5]}}), o + '/' + c + '.parquet', compression=c) for c in ['lz4', 'gzip', 'brotli']]; \
             open(o + '/broken.parquet', 'w').write('not parquet')\"]\n"
        ),
    );
    let sets = ["--set", "sweep.noise=[0.0, 0.5]"];
    let (code, r) = p.run("p.toml", &sets);
    assert_eq!(code, 0, "{r}");
    // An earlier export with a table this one will not have.
    std::fs::create_dir_all(p.path("results")).unwrap();
    std::fs::write(p.path("results/stale.parquet"), b"old").unwrap();
    std::fs::write(
        p.path("results/.pipe-written.json"),
        br#"{"files": ["stale.parquet"]}"#,
    )
    .unwrap();
    let out = p.pipe(&[
        "export",
        "p.toml",
        "--out",
        "results",
        "--set",
        "sweep.noise=[0.0, 0.5]",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: left out table `broken` of tables[noise=0.0,seed=1]"),
        "{err}"
    );
    let mut names: Vec<String> = std::fs::read_dir(p.path("results"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "brotli.parquet",
            "gzip.parquet",
            "labels.parquet",
            "lz4.parquet",
            "polars.parquet"
        ],
        "the stale table is gone"
    );
    let q = python(&format!(
        "import duckdb, json\nprint(json.dumps([duckdb.sql(f\"SELECT sum(n), count(*) FROM '{d}/{{t}}.parquet'\").fetchall()[0] for t in ['polars', 'lz4', 'gzip', 'brotli']]))",
        d = p.path("results").display()
    ));
    // Four instances (2 noise x 2 seeds) each.
    assert_eq!(q, serde_json::json!([[24, 12], [36, 8], [36, 8], [36, 8]]));
    // A smaller sweep exported into the same folder: only its rows remain.
    let out = p.pipe(&[
        "export",
        "p.toml",
        "--out",
        "results",
        "--set",
        "sweep.noise=[0.5]",
    ]);
    assert!(out.status.success());
    let q = python(&format!(
        "import duckdb, json\nprint(json.dumps(duckdb.sql(\"SELECT DISTINCT noise FROM '{}/labels.parquet'\").fetchall()))",
        p.path("results").display()
    ));
    assert_eq!(q, serde_json::json!([[0.5]]));
    // A folder holding a table pipe did not write where one of its own would go is refused
    // before anything is written; the user's files stay as they were.
    std::fs::create_dir_all(p.path("other")).unwrap();
    std::fs::write(p.path("other/notes.txt"), b"mine").unwrap();
    std::fs::write(p.path("other/labels.parquet"), b"mine").unwrap();
    let out = p.pipe(&["export", "p.toml", "--out", "other"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other/labels.parquet") && err.contains("did not write"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(p.path("other/labels.parquet")).unwrap(),
        b"mine"
    );
    assert_eq!(std::fs::read(p.path("other/notes.txt")).unwrap(), b"mine");
}
