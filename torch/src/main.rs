//! `pipe-torch`: the worker that runs libtorch stage kinds for `pipe`.
//!
//! `pipe-torch run` reads a job (JSON) on stdin and runs it; `pipe-torch serve` runs one job
//! per stdin line, replying on stdout (see `pipe_torch::serve`); `pipe-torch devices` prints
//! the devices libtorch sees. Errors end with a line `pipe-torch: error: MESSAGE` on stderr
//! and exit code 1, or 3 when the user's data is at fault.

use std::io::Read;

fn main() {
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
        Some("run") => {
            let mut input = String::new();
            let result = std::io::stdin()
                .read_to_string(&mut input)
                .map_err(anyhow::Error::from)
                .and_then(|_| {
                    serde_json::from_str::<pipe::worker::WorkerJob>(&input)
                        .map_err(anyhow::Error::from)
                })
                .and_then(pipe_torch::run_worker_job);
            match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("pipe-torch: error: {}", format!("{e:#}").replace('\n', " "));
                    if e.chain().any(|c| c.is::<pipe::stage::BadData>()) {
                        pipe::worker::EXIT_BAD_DATA
                    } else {
                        1
                    }
                }
            }
        }
        Some("serve") => pipe_torch::serve::serve(),
        Some("devices") => {
            let cuda = if tch::Cuda::is_available() {
                tch::Cuda::device_count()
            } else {
                0
            };
            println!("{}", serde_json::json!({"cuda": cuda}));
            0
        }
        _ => {
            eprintln!(
                "usage: pipe-torch run < job.json | pipe-torch serve | pipe-torch devices\n(pipe starts this worker itself)"
            );
            2
        }
    };
    std::process::exit(code);
}
