//! `pipe-reap`: the server that supervises `exec` commands, and nothing else (see the
//! `pipe_reap` crate). `pipe` starts it, when it lies beside `pipe`, instead of a second
//! copy of itself: it forks once per command, and this binary is a small fraction of
//! `pipe`'s size.

fn main() {
    match pipe_reap::main_if_server() {
        Some(code) => std::process::exit(code),
        None => {
            eprintln!("pipe-reap: internal: started by `pipe` to supervise its commands");
            std::process::exit(2);
        }
    }
}
