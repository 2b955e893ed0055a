//! `pipe-torch`: the worker that runs libtorch stage kinds for `pipe`.
//!
//! `pipe-torch serve` runs one job per stdin line, replying on stdout (see
//! `pipe_torch::serve`); `pipe-torch devices` prints the devices libtorch sees.

fn main() {
    let mut args = std::env::args().skip(1);
    let code = match args.next().as_deref() {
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
                "usage: pipe-torch serve | pipe-torch devices\n(pipe starts this worker itself)"
            );
            2
        }
    };
    std::process::exit(code);
}
