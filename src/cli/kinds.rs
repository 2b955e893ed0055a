//! `pipe kinds`: the stage kinds and their parameters.

use crate::cli::outln;
use pipe_engine::stage::Presence;
use pipe_kinds::stages;

/// Runs `pipe kinds`; returns its exit code.
pub fn kinds() -> i32 {
    for k in stages::registry().all() {
        outln!("{} (version {}): {}", k.name(), k.version(), k.about());
        for p in k.params() {
            let presence = match p.presence {
                Presence::Required => "required".to_string(),
                Presence::Optional => "optional".to_string(),
                Presence::Default(d) => format!("default {d}"),
            };
            outln!(
                "  {:<12} {} ({presence}{}): {}",
                p.name,
                p.ty.describe(),
                if p.in_key { "" } else { ", not in key" },
                p.doc
            );
        }
    }
    0
}
