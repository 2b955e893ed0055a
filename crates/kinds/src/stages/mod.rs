//! The stage kinds `pipe` ships, one file each, and the registry of them.
//!
//! A kind that runs in the libtorch worker has a second file, `torch/src/stages/NAME.rs`,
//! with the same name constant; see ARCHITECTURE.md, "Adding a stage kind".

pub mod activations;
pub mod clean;
pub mod corrupt;
pub mod dataset;
pub mod detect;
pub mod embed;
pub mod exec;
pub mod gradnorm;
pub mod import;
pub mod probe;
pub mod rollback;
pub mod slots;
pub mod train;
pub mod trained;

use pipe_engine::stage::{ParamError, Registry};

/// Checks a list parameter naming methods (`methods = ["pca", "tsne"]`): at least one, each
/// one of `known` (with a suggestion when misspelt), none twice.
pub fn check_methods(
    param: &'static str,
    given: &[String],
    known: &[&str],
) -> Result<(), ParamError> {
    if given.is_empty() {
        return Err(ParamError::param(param, "must name at least one method"));
    }
    for (i, m) in given.iter().enumerate() {
        if !known.contains(&m.as_str()) {
            return Err(ParamError::param(
                param,
                format!(
                    "unknown method \"{m}\"{}; known: {}",
                    pipe_engine::error::suggest(m, known.iter().copied()),
                    known.join(", ")
                ),
            ));
        }
        if given[..i].contains(m) {
            return Err(ParamError::param(param, format!("\"{m}\" is listed twice")));
        }
    }
    Ok(())
}

/// Every built-in stage kind, in the order `pipe kinds` lists them.
pub fn registry() -> Registry {
    Registry::new(vec![
        &exec::Exec,
        &dataset::Dataset,
        &corrupt::Corrupt,
        &train::Train,
        &import::Import,
        &activations::Activations,
        &gradnorm::GradNorm,
        &rollback::Rollback,
        &probe::Probe,
        &embed::Embed,
        &detect::Detect,
        &clean::Clean,
    ])
}
