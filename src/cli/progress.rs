//! The progress display of `pipe run`: an [`Observer`] that turns executor events into a
//! progress bar (on a terminal) or log lines (otherwise), on stderr.

use crate::cli::errln;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use petgraph::graph::NodeIndex;

use super::Verbosity;
use pipe_engine::exec::{Event, Observer, Outcome};
use pipe_engine::plan::Plan;

/// Turns executor events into a progress bar (terminal) or log lines (otherwise).
pub struct Progress {
    /// The bar, when stderr is a terminal and the run is not quiet.
    bar: Option<ProgressBar>,
    /// How much to say.
    level: Verbosity,
    /// Instances that have ended.
    done: Mutex<usize>,
    /// Instances to run.
    total: Mutex<usize>,
    /// The running instances' labels and logs, for the live line under the bar.
    running: Arc<Mutex<Vec<(NodeIndex, String, PathBuf)>>>,
    /// Where logs are: the cache's `logs/` folder.
    logs: PathBuf,
    /// Set when the run ends, to stop the thread that follows the logs.
    stop: Arc<AtomicBool>,
}

/// How often the live line is refreshed from the running instances' logs.
const FOLLOW: Duration = Duration::from_millis(500);

/// A log line made short for the live line: a training epoch becomes
/// `epoch 3/10 loss 0.512 test acc 0.812`; other lines are kept as they are.
pub fn compact(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |a: &str, b: &str| {
        words
            .windows(3)
            .find(|w| w[0] == a && w[1] == b)
            .map(|w| w[2])
    };
    match (words.first(), words.get(1)) {
        (Some(&"epoch"), Some(e)) => {
            let mut s = format!("epoch {e}");
            if let Some(l) = after("train", "loss") {
                s.push_str(&format!(" loss {l}"));
            }
            let test_acc = words
                .windows(5)
                .find(|w| w[0] == "test" && w[1] == "loss" && w[3] == "acc")
                .map(|w| w[4]);
            if let Some(a) = test_acc {
                s.push_str(&format!(" test acc {a}"));
            }
            s
        }
        _ => line.trim().to_string(),
    }
}

/// Every [`FOLLOW`], shows the last line of each running instance's log on the bar.
fn follow(
    bar: ProgressBar,
    running: Arc<Mutex<Vec<(NodeIndex, String, PathBuf)>>>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(FOLLOW);
        let now: Vec<(String, PathBuf)> = running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, l, p)| (l.clone(), p.clone()))
            .collect();
        let parts: Vec<String> = now
            .iter()
            .map(|(label, log)| {
                let text = pipe_engine::status::read_log(log).unwrap_or_default();
                match pipe_engine::status::last_line(&text) {
                    Some(l) => format!("{label}: {}", compact(&l)),
                    None => label.clone(),
                }
            })
            .collect();
        if !parts.is_empty() {
            bar.set_message(parts.join(" | "));
        }
    }
}

impl Progress {
    /// A display for a run at `level` on cache `cache`: a bar if stderr is a terminal
    /// (with the running instances' last log lines), lines otherwise.
    pub fn new(level: Verbosity, cache: &std::path::Path) -> Progress {
        let terminal = std::io::stderr().is_terminal() && level != Verbosity::Quiet;
        let bar = terminal.then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len}\n  {wide_msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let running = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        if let Some(b) = &bar {
            let (b, r, s) = (b.clone(), running.clone(), stop.clone());
            std::thread::spawn(move || follow(b, r, s));
        }
        Progress {
            bar,
            level,
            done: Mutex::new(0),
            total: Mutex::new(0),
            running,
            logs: cache.join("logs"),
            stop,
        }
    }

    /// Removes the bar, if there is one, before the summary is printed.
    pub fn finish(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// Prints a line above the bar, or on stderr; nothing when quiet.
    fn say(&self, msg: String) {
        if self.level == Verbosity::Quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => errln!("{msg}"),
        }
    }

    /// The run starts: sets the bar's length and says how much there is to do.
    fn begin(&self, to_run: usize, cached: usize) {
        *self.total.lock().unwrap_or_else(|e| e.into_inner()) = to_run;
        if let Some(b) = &self.bar {
            b.set_length(to_run as u64);
        }
        self.say(format!("pipe: {to_run} instances to run, {cached} cached"));
    }

    /// An instance started with `threads` threads.
    fn started(&self, plan: &Plan, n: NodeIndex, threads: usize) {
        if let Some(b) = &self.bar {
            b.set_message(plan.label(n));
            if let Some(key) = plan.key(n) {
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((n, plan.label(n), self.logs.join(format!("{key}.log"))));
            }
        }
        if self.bar.is_none() || self.level == Verbosity::Verbose {
            self.say(format!(
                "start {} ({threads} thread{})",
                plan.label(n),
                if threads == 1 { "" } else { "s" }
            ));
        }
    }

    /// An instance ended: counts it and says how, except for successes under a bar.
    fn finished(&self, plan: &Plan, n: NodeIndex, outcome: &Outcome) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|r| r.0 != n);
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        *done += 1;
        let total = *self.total.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = &self.bar {
            b.inc(1);
        }
        let label = plan.label(n);
        let msg = match outcome {
            Outcome::Executed { seconds } => {
                format!("[{}/{total}] done   {label} ({seconds:.2}s)", *done)
            }
            Outcome::Cached => format!(
                "[{}/{total}] cached {label} (its inputs were known, its key was in the cache)",
                *done
            ),
            // pipe itself stopped it (Ctrl-C or SIGTERM): not the instance's failure.
            Outcome::Failed { .. } if pipe_engine::stage::stopping() => {
                format!("[{}/{total}] stopped {label}: pipe was interrupted", *done)
            }
            Outcome::Failed { message, .. } => {
                format!("[{}/{total}] FAILED {label}: {message}", *done)
            }
            Outcome::Skipped { reason } => {
                format!("[{}/{total}] skip   {label}: {reason}", *done)
            }
        };
        drop(done);
        if self.bar.is_none() || !matches!(outcome, Outcome::Executed { .. }) {
            self.say(msg);
        }
    }

    /// A note about an instance; warnings are printed even when quiet.
    fn note(&self, plan: &Plan, node: NodeIndex, message: &str, warning: bool) {
        let msg = format!("{}: {message}", plan.label(node));
        if warning {
            match &self.bar {
                Some(b) => b.println(format!("warning: {msg}")),
                None => errln!("warning: {msg}"),
            }
        } else {
            self.say(msg);
        }
    }
}

impl Observer for Progress {
    fn event(&self, plan: &Plan, event: Event<'_>) {
        match event {
            Event::Begin { to_run, cached } => self.begin(to_run, cached),
            Event::Started(n, threads) => self.started(plan, n, threads),
            Event::Waiting(n, holder) => self.say(format!(
                "wait  {}: another pipe ({holder}) is computing it",
                plan.label(n)
            )),
            Event::Finished(n, outcome) => self.finished(plan, n, outcome),
            Event::Note {
                node,
                message,
                warning,
            } => self.note(plan, node, &message, warning),
        }
    }
}
