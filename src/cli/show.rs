//! `pipe show`: an artifact's manifest, in words or as stored (JSON).

use super::{ShowArgs, cache_dir};
use crate::error::Error;
use crate::store::{Manifest, Store};

/// Runs `pipe show`; returns its exit code.
pub fn show(args: &ShowArgs) -> Result<i32, Error> {
    let store = Store::new(cache_dir(&args.cache));
    let key = store.resolve_key(&args.key, false).map_err(Error::usage)?;
    let m = store.manifest(&key).ok_or_else(|| {
        Error::usage(format!(
            "artifact {key} has no readable manifest; `pipe verify` checks the cache"
        ))
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
    } else {
        print_text(&store, &key, &m);
    }
    Ok(0)
}

/// Prints the manifest of artifact `key` one field per line.
fn print_text(store: &Store, key: &str, m: &Manifest) {
    println!("key       {}", m.key);
    println!("kind      {} (version {})", m.kind, m.version);
    println!(
        "stage     {} in pipeline {}, point {}",
        m.stage,
        m.pipeline,
        crate::plan::point_label(&m.point)
    );
    println!("params    {}", m.params);
    for (slot, k) in &m.inputs {
        println!("input     {slot} = {k}");
    }
    for (name, h) in &m.declared_files {
        println!("declared  {name} = {h}");
    }
    println!(
        "ran       {:.2}s on {} with pipe {}",
        m.seconds, m.host, m.pipe_version
    );
    println!("folder    {}", store.artifact_dir(key).display());
    for f in &m.files {
        println!("file      {} ({} bytes)", f.path, f.size);
    }
}
