//! `pipe show`: an artifact's manifest, in words or as stored (JSON).

use crate::cli::outln;
use pipe_engine::error::Error;
use pipe_engine::store::{Manifest, Store};

/// Arguments of `pipe show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// A key (or unique prefix), or `stage[var=value,...]`.
    pub key: String,
    /// The pipeline file to look it up in, its overrides and cache (as `status` plans it)
    /// [default: without a file or `--run`, the cache's manifests].
    #[command(flatten)]
    pub pipeline: super::PipelineArgs,
    /// Narrow `stage` to this point: `--point noise=0.4,seed=1`.
    #[arg(long, value_name = "VAR=VALUE,...")]
    pub point: Option<String>,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `pipe show`; returns its exit code.
pub fn show(args: &ShowArgs) -> Result<i32, Error> {
    let (store, found) = super::target::resolve(
        &args.key,
        &args.pipeline,
        args.point.as_deref(),
        false,
        false,
    )?;
    let key = super::target::one(&args.key, found)?.key;
    if !store.is_complete(&key) {
        return Err(Error::usage(format!(
            "{} is not in the cache (`pipe status` says why)",
            pipe_engine::key::short(&key, 12)
        )));
    }
    let m = store.manifest(&key).ok_or_else(|| {
        Error::usage(format!(
            "artifact {key} has no readable manifest; `pipe verify` checks the cache"
        ))
    })?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
    } else {
        print_text(&store, &key, &m);
    }
    Ok(0)
}

/// Prints the manifest of artifact `key` one field per line.
fn print_text(store: &Store, key: &str, m: &Manifest) {
    outln!("key       {}", m.key);
    outln!("kind      {} (version {})", m.kind, m.version);
    outln!(
        "stage     {} in pipeline {}, point {}",
        m.stage,
        m.pipeline,
        pipe_engine::plan::point_label(&m.point)
    );
    outln!("params    {}", m.params);
    for (slot, k) in &m.inputs {
        outln!("input     {slot} = {k}");
    }
    for (name, h) in &m.declared_files {
        outln!("declared  {name} = {h}");
    }
    outln!(
        "ran       {:.2}s on {} with pipe {}",
        m.seconds,
        m.host,
        m.pipe_version
    );
    outln!("folder    {}", store.artifact_dir(key).display());
    for f in &m.files {
        outln!("file      {} ({} bytes)", f.path, f.size);
    }
}
