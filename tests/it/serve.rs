//! `pipe serve`: while a run trains, `/api/curves` grows epoch by epoch with the numbers of
//! the live metrics file, the page drawn in headless Chromium shows them, and after the run
//! the curves are the artifact's; a bad path is 404, a bad pipeline exits 2 before serving.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

/// Two train instances (noise 0.0 and 0.4) on a 2,000-example version of the tiny data,
/// 150 epochs of 100 steps: several seconds of training to watch.
const PIPELINE: &str = r#"[pipeline]
name = "serve-test"
[sweep]
noise = [0.0, 0.4]
[stage.data]
kind = "dataset"
source = "idx"
path = "data"
train_size = 2000
test_size = 200
[stage.corrupt]
kind = "corrupt"
inputs = ["data"]
fraction = "${noise}"
seed = 1
[stage.train]
kind = "train"
inputs = ["data", "corrupt"]
model = "mlp"
hidden = [64, 64]
epochs = 150
batch_size = 20
lr = 0.05
seed = 1
device = "cpu"
"#;

/// A child process that is killed and reaped when the test ends, passing or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pipe serve ARGS --port 0` in the project; returns it and the URL of its first line.
fn serve(p: &Project, args: &[&str]) -> (Running, String) {
    let mut all = vec!["serve"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--port", "0"]);
    let mut child = p
        .command(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim_end()
        .strip_prefix("serving ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    (server, url)
}

/// `GET PATH` from the server at `url` over a plain socket: (status code, body).
fn get(url: &str, path: &str) -> (u16, String) {
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = TcpStream::connect(&host).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

/// `/api/curves`, parsed.
fn curves(url: &str) -> Json {
    let (code, body) = get(url, "/api/curves");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The curves' instance labelled `label`.
fn instance<'a>(curves: &'a Json, label: &str) -> &'a Json {
    curves["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["label"] == label)
        .unwrap_or_else(|| panic!("no {label} in {curves}"))
}

/// The rows of a metrics Parquet file as Polars reads them (the file opened once).
fn parquet_rows(path: &Path) -> Vec<Json> {
    python(&format!(
        "import json, polars as pl\n\
         print(json.dumps(pl.read_parquet(open({path:?}, 'rb')).select(\
         'clean_acc', 'corrupted_train_acc', 'corrupted_true_acc', 'epoch', 'lr', 'test_acc', \
         'test_loss', 'train_acc', 'train_loss').to_dicts()))",
        path = path.display().to_string()
    ))
    .as_array()
    .unwrap()
    .clone()
}

/// The instances of a DOM that Chromium dumped: (label, state, data-epochs, the point
/// counts of its test accuracy polyline as declared and as drawn).
fn dom_instances(dom: &str) -> Vec<(String, String, i64, usize, usize)> {
    let attr = |tag: &str, name: &str| -> String {
        let start = tag
            .find(&format!(" {name}=\""))
            .unwrap_or_else(|| panic!("no {name} in {tag}"))
            + name.len()
            + 3;
        tag[start..start + tag[start..].find('"').unwrap()].to_string()
    };
    dom.split("<section ")
        .skip(1)
        .filter(|s| s.starts_with("class=\"instance\" data-label"))
        .map(|s| {
            let tag = &s[..s.find('>').unwrap()];
            let line = s
                .split("<polyline ")
                .skip(1)
                .find(|l| l.contains("data-series=\"test_acc\""))
                .unwrap_or_else(|| panic!("no test_acc polyline in {s}"));
            let line = &line[..line.find('>').unwrap()];
            (
                attr(tag, "data-label"),
                attr(tag, "data-state"),
                attr(tag, "data-epochs").parse().unwrap(),
                attr(line, "data-points").parse().unwrap(),
                attr(line, "points").split_whitespace().count(),
            )
        })
        .collect()
}

/// Loads the page in headless Chromium (a few seconds of its virtual time, so that its
/// script polls) and returns the DOM it dumped.
fn chromium_dom(p: &Project, url: &str) -> String {
    let chromium = std::env::var("PIPE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let out = std::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--virtual-time-budget=2500",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", p.path("chromium").display()))
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{chromium} (scripts/setup-tests installs it): {e}"));
    assert!(out.status.success(), "chromium failed");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until `ok` holds for the curves (panics after `seconds`).
fn wait_for(url: &str, seconds: u64, what: &str, ok: impl Fn(&Json) -> bool) -> Json {
    let until = Instant::now() + Duration::from_secs(seconds);
    loop {
        let c = curves(url);
        if ok(&c) {
            return c;
        }
        assert!(Instant::now() < until, "no {what} after {seconds} s: {c}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether every instance runs with at least `epochs` epochs done.
fn all_running_past(c: &Json, epochs: i64) -> bool {
    c["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "running" && i["epochs"].as_i64().is_some_and(|e| e >= epochs))
}

#[test]
fn serve_redraws_live_curves_and_ends_with_the_artifacts() {
    let p = Project::new();
    p.write_idx("data", 2000, 200);
    p.write("t.toml", PIPELINE);
    let labels = ["train[noise=0.0]", "train[noise=0.4]"];

    // Before the run: both not run, no rows; a bad path is 404.
    let (mut server, url) = serve(&p, &["t.toml"]);
    let before = curves(&url);
    assert_eq!(before["pipeline"], "serve-test");
    for l in labels {
        let i = instance(&before, l);
        assert_eq!(i["state"], "missing", "{i}");
        assert_eq!(i["epochs_total"], 150);
        assert_eq!(i["rows"], serde_json::json!([]));
    }
    let (code, body) = get(&url, "/no/such/page");
    assert_eq!(code, 404, "{body}");
    let (code, page) = get(&url, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("<svg") || page.contains("createElementNS"),
        "{page}"
    );
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "the page loads nothing from elsewhere"
    );

    let mut run = Running(
        p.command(&["run", "t.toml", "-q"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // While it trains: the epochs grow, and the rows are the live file's.
    let first = wait_for(&url, 60, "two running instances", |c| {
        all_running_past(c, 2)
    });
    for l in labels {
        let i = instance(&first, l);
        let rows = i["rows"].as_array().unwrap();
        assert_eq!(rows.len() as i64, i["epochs"].as_i64().unwrap() + 1, "{i}");
        let live = p
            .cache()
            .join("logs")
            .join(format!("{}.metrics.parquet", i["key"].as_str().unwrap()));
        // Read after the API answered: the file has these epochs, perhaps more.
        let file = parquet_rows(&live);
        assert!(file.len() >= rows.len(), "{} < {}", file.len(), rows.len());
        assert_eq!(
            &file[..rows.len()],
            &rows[..],
            "{l}: API rows differ from {live:?}"
        );
    }
    let grown = wait_for(&url, 30, "a later epoch", |c| {
        labels
            .iter()
            .all(|l| instance(c, l)["epochs"].as_i64() > instance(&first, l)["epochs"].as_i64())
    });
    for l in labels {
        let a = instance(&first, l)["rows"].as_array().unwrap();
        let b = instance(&grown, l)["rows"].as_array().unwrap();
        assert_eq!(&b[..a.len()], &a[..], "{l}: epochs done do not change");
    }

    // The page in Chromium: per instance, a test accuracy line of one point per epoch
    // so far, as many as the API said around the load; a later load shows more.
    let mut seen = Vec::new();
    for load in 0..2 {
        let low = curves(&url);
        let dom = chromium_dom(&p, &url);
        let high = curves(&url);
        let shown = dom_instances(&dom);
        assert_eq!(
            shown.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
            labels,
            "{dom}"
        );
        for (label, state, epochs, declared, drawn) in &shown {
            let (lo, hi) = (instance(&low, label), instance(&high, label));
            assert!(
                lo["epochs"].as_i64().unwrap() <= *epochs
                    && *epochs <= hi["epochs"].as_i64().unwrap(),
                "load {load}: {label} shows epoch {epochs}, the API said {} then {}",
                lo["epochs"],
                hi["epochs"]
            );
            assert_eq!(*declared as i64, epochs + 1, "{label}");
            assert_eq!(drawn, declared, "{label}");
            assert!(state == "running" || state == "cached", "{state}");
        }
        seen.push(shown);
        std::thread::sleep(Duration::from_millis(500));
    }
    for (a, b) in seen[0].iter().zip(&seen[1]) {
        assert!(
            b.2 > a.2,
            "the second load shows no later epoch: {a:?} {b:?}"
        );
    }

    // After the run: cached, every epoch, the artifact's numbers.
    let until = Instant::now() + Duration::from_secs(120);
    while run.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < until, "the run did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(run.0.try_wait().unwrap().unwrap().code(), Some(0));
    let last = curves(&url);
    for l in labels {
        let i = instance(&last, l);
        assert_eq!(i["state"], "cached", "{i}");
        assert_eq!(i["epochs"], 150);
        let artifact = p
            .cache()
            .join("artifacts")
            .join(i["key"].as_str().unwrap())
            .join("metrics.parquet");
        assert_eq!(
            i["rows"].as_array().unwrap(),
            &parquet_rows(&artifact),
            "{l}"
        );
    }

    // Ctrl-C ends it as it ends a run: exit 130.
    // SAFETY: kill(2) on the child this test started.
    unsafe {
        libc::kill(server.0.id() as i32, libc::SIGINT);
    }
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn serve_refuses_a_bad_pipeline_before_serving() {
    let p = Project::new();
    p.write(
        "t.toml",
        &PIPELINE.replace("kind = \"train\"", "kind = \"trian\""),
    );
    let out = p.pipe(&["serve", "t.toml", "--port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trian") && err.contains("train"), "{err}");
    assert!(out.stdout.is_empty(), "nothing served");

    // A pipeline without a train instance has no curves to draw.
    p.write("b.toml", BASIC);
    let out = p.pipe(&["serve", "b.toml", "--port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no train or import instance"), "{err}");
}
