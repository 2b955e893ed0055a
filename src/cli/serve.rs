//! `pipe serve`: a local page that redraws the training curves of a pipeline's train (and
//! import) instances as epochs complete. `/` is the page (`serve.html`, self-contained: its
//! script draws SVG and polls); `/api/curves` is the JSON it polls: per instance its label,
//! key, state, epochs and metrics rows so far (see `trained.rs`). Read-only: it opens cache
//! files for reading and takes no lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value as Json;
use tiny_http::{Header, Method, Request, Response, Server};

use pipe_engine::error::Error;
use pipe_engine::plan::Plan;
use pipe_engine::select::Selector;
use pipe_engine::status::State;
use pipe_engine::store::Store;
use pipe_engine::table::Table;
use pipe_kinds::tables::Metrics;

use super::trained::{metrics_so_far, trained_states};
use super::{PipelineArgs, errln, load, outln, selectors};

/// The page, served at `/`.
const PAGE: &str = include_str!("serve.html");

/// Arguments of `pipe serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Pipeline, overrides, cache.
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Only instances at this point (`--point noise=0.4`).
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// The port to listen on (0: any free one; the URL printed says which).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// The address to listen on; the default serves this machine only (from elsewhere,
    /// forward the port: `ssh -L 8000:127.0.0.1:8000 HOST`).
    #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1")]
    pub bind: String,
}

/// `/api/curves`: the pipeline and its trained instances' curves.
#[derive(Serialize)]
struct CurvesView<'a> {
    /// One entry per train or import instance, in plan order.
    instances: Vec<InstanceCurves>,
    /// The pipeline's name.
    pipeline: &'a str,
}

/// One instance's curves so far.
#[derive(Serialize)]
struct InstanceCurves {
    /// The latest epoch with metrics (`null` before epoch 0 is done).
    epochs: Option<i64>,
    /// The epochs it trains for (its `epochs` parameter; an import's last epoch).
    epochs_total: Option<i64>,
    /// Why its metrics could not be read, naming the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Its key (`null` while unknown).
    key: Option<String>,
    /// `stage[noise=0.4,seed=1]`, as the command line names it.
    label: String,
    /// Its sweep point.
    point: Json,
    /// Why it is in its state, in words (as `pipe status` says it).
    reason: String,
    /// Its metrics rows, one per epoch so far.
    rows: Vec<MetricsRow>,
    /// Its stage.
    stage: String,
    /// `cached`, `missing`, `stale`, `running`, `failed`, `may-run`.
    state: State,
}

/// One epoch's metrics: a row of the `metrics` table.
#[derive(Serialize)]
struct MetricsRow {
    /// Accuracy on the clean training examples.
    clean_acc: f64,
    /// Accuracy on the corrupted examples against their training labels.
    corrupted_train_acc: Option<f64>,
    /// Accuracy on the corrupted examples against their true labels.
    corrupted_true_acc: Option<f64>,
    /// The epoch (0: before training).
    epoch: i64,
    /// The learning rate during the epoch.
    lr: f64,
    /// Test accuracy.
    test_acc: f64,
    /// Mean test loss.
    test_loss: f64,
    /// Accuracy on the training set against its labels.
    train_acc: f64,
    /// Mean loss on the training set.
    train_loss: f64,
}

/// Runs `pipe serve` until Ctrl-C or SIGTERM (exit code 130); a pipeline error or an
/// address that cannot be listened on is an error (exit 2) before anything is served.
pub fn serve(args: &ServeArgs) -> Result<i32, Error> {
    let loaded = load(&args.pipeline, true)?;
    let (plan, store) = (&loaded.plan, &loaded.store);
    let filters = selectors(plan, &[], args.point.as_deref())?;
    if trained_states(plan, store, &[]).is_empty() {
        return Err(Error::usage(format!(
            "{} has no train or import instance: no curves to draw",
            loaded.file.display()
        )));
    }
    let address = format!("{}:{}", args.bind, args.port);
    let server = Server::http(&address).map_err(|e| {
        Error::usage(format!(
            "cannot listen on {address}: {e} (--port 0 picks a free port)"
        ))
    })?;
    let url = match server.server_addr().to_ip() {
        Some(a) if a.is_ipv6() => format!("http://[{}]:{}/", a.ip(), a.port()),
        Some(a) => format!("http://{a}/"),
        None => format!("http://{address}/"),
    };
    outln!("serving {url}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    while !stop.load(Ordering::SeqCst) {
        match server.recv_timeout(Duration::from_millis(200)) {
            Ok(Some(request)) => answer(request, plan, store, &filters),
            Ok(None) => {}
            Err(e) => errln!("warning: {url}: {e}"),
        }
    }
    Ok(130)
}

/// Answers one request: the page, the curves, or 404 (405 for other methods than GET).
fn answer(request: Request, plan: &Plan, store: &Store, filters: &[Selector]) {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let response = if !matches!(request.method(), Method::Get | Method::Head) {
        text(
            405,
            "text/plain",
            format!("{} is not served here\n", request.method()),
        )
    } else {
        match path.as_str() {
            "/" | "/index.html" => text(200, "text/html; charset=utf-8", PAGE.to_string()),
            "/api/curves" => match serde_json::to_string(&CurvesView {
                instances: curves(plan, store, filters),
                pipeline: &plan.spec.name,
            }) {
                Ok(json) => text(200, "application/json", json),
                Err(e) => text(500, "text/plain", format!("cannot write JSON: {e}\n")),
            },
            _ => text(
                404,
                "text/plain",
                format!("{path}: not found (the page is at /, its data at /api/curves)\n"),
            ),
        }
    };
    // A client that went away before the answer: nothing to do.
    let _ = request.respond(response);
}

/// A response with this status, content type and body, never cached by the browser, with
/// its length (not chunked, whatever its size: a plain client reads it whole).
fn text(status: u16, content_type: &str, body: String) -> Response<std::io::Cursor<Vec<u8>>> {
    let mut response = Response::from_string(body)
        .with_status_code(status)
        .with_chunked_threshold(usize::MAX);
    for (name, value) in [
        ("Content-Type", content_type),
        ("Cache-Control", "no-store"),
    ] {
        if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(h);
        }
    }
    response
}

/// Every trained instance's curves as they are now.
fn curves(plan: &Plan, store: &Store, filters: &[Selector]) -> Vec<InstanceCurves> {
    trained_states(plan, store, filters)
        .into_iter()
        .map(|s| {
            let key = plan.key(s.node);
            let (metrics, error) = match metrics_so_far(store, key.as_deref(), s.state) {
                Ok(m) => (m, None),
                Err(e) => (Metrics::default(), Some(e)),
            };
            let rows = metrics_rows(&metrics);
            let epochs = rows.last().map(|r| r.epoch);
            let epochs_total = plan.graph[s.node]
                .params
                .get("epochs")
                .and_then(Json::as_i64)
                .or(if s.state == State::Cached {
                    epochs
                } else {
                    None
                });
            InstanceCurves {
                epochs,
                epochs_total,
                error,
                key,
                label: plan.label(s.node),
                point: plan.point(s.node),
                reason: s.reason,
                rows,
                stage: plan.stage_name(s.node).to_string(),
                state: s.state,
            }
        })
        .collect()
}

/// The rows of a metrics table, one per epoch.
fn metrics_rows(m: &Metrics) -> Vec<MetricsRow> {
    (0..m.rows())
        .map(|i| MetricsRow {
            clean_acc: m.clean_acc[i],
            corrupted_train_acc: m.corrupted_train_acc[i],
            corrupted_true_acc: m.corrupted_true_acc[i],
            epoch: m.epoch[i],
            lr: m.lr[i],
            test_acc: m.test_acc[i],
            test_loss: m.test_loss[i],
            train_acc: m.train_acc[i],
            train_loss: m.train_loss[i],
        })
        .collect()
}
