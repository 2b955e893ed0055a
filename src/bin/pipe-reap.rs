//! `pipe-reap`: the reaper of `exec` commands and nothing else (see
//! `pipe_engine::stage::reaper_main`). `pipe` starts it, when it lies beside `pipe`, instead
//! of a second copy of itself: this binary holds only the reaper, so it starts in a
//! fraction of the time the whole `pipe` binary takes to load, once per command.

fn main() {
    match pipe_engine::stage::reaper_main() {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!("pipe-reap: internal: started by `pipe` to supervise a command");
            std::process::exit(2);
        }
    }
}
