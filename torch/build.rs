//! Two jobs at build time:
//! - embeds an rpath to libtorch's lib directory, so that `pipe-torch` runs without
//!   LD_LIBRARY_PATH (torch-sys, a direct dependency for this reason, exports the directory
//!   it linked against);
//! - registers the worker's stage kinds: every file `src/stages/NAME.rs` (but `mod.rs`) is
//!   the worker side of the kind whose `pipe` side is `pipe_kinds::stages::NAME`, and gets a
//!   module and a dispatch arm in `$OUT_DIR/worker_kinds.rs`. Adding a libtorch kind is
//!   adding that file; nothing else on this side changes.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    register_worker_kinds();
}

fn register_worker_kinds() {
    let dir = Path::new("src/stages");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("torch/src/stages exists")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".rs")?;
            (stem != "mod").then(|| stem.to_string())
        })
        .collect();
    names.sort();
    let mut code = String::new();
    for n in &names {
        let path = std::fs::canonicalize(dir.join(format!("{n}.rs"))).expect("listed file");
        let _ = writeln!(
            code,
            "#[path = {:?}]\npub mod {n};",
            path.display().to_string()
        );
    }
    code.push_str(
        "\n/// Runs an instance of the worker kind `kind` with its typed parameters.\n\
         pub fn run(kind: &str, ctx: &mut pipe_engine::stage::RunContext<'_>) -> anyhow::Result<()> {\n    match kind {\n",
    );
    for n in &names {
        let _ = writeln!(
            code,
            "        pipe_kinds::stages::{n}::NAME => with_params(ctx, {n}::run),"
        );
    }
    code.push_str(
        "        other => anyhow::bail!(\"the worker has no stage kind `{other}`\"),\n    }\n}\n",
    );
    let out =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("worker_kinds.rs");
    std::fs::write(out, code).expect("OUT_DIR is writable");
}
