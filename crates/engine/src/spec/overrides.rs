//! `--set KEY=VALUE` overrides: each parsed into a small document and merged over the
//! pipeline file's tree before the spec is checked, so that an overridden value is checked
//! exactly like one written in the file (and its errors point into the `--set` argument).

use std::sync::Arc;

use indexmap::IndexMap;

use super::node::{self, KeyNode, Node, Value};
use crate::error::{Error, Loc, Source};

/// Applies one `--set key.path=VALUE` (VALUE parsed as TOML, or taken as a string if it is not TOML).
pub(super) fn apply_set(doc: &mut Node, arg: &str) -> Result<(), Error> {
    let Some(eq) = arg.find('=') else {
        return Err(Error::usage(format!(
            "--set {arg}: expected KEY=VALUE, e.g. --set stage.train.epochs=40"
        )));
    };
    let source = Source::new(format!("--set {arg}"), arg);
    let key = arg[..eq].trim();
    if key.is_empty() || key.split('.').any(|s| s.trim().is_empty()) {
        return Err(Error::usage(format!(
            "--set {arg}: the key must be a dotted path such as stage.train.epochs"
        )));
    }
    let overlay = match node::parse_document(&source) {
        Ok(n) => n,
        // Not TOML: take VALUE as a plain string, so `--set stage.train.model=mlp` works.
        Err(_) => string_overlay(&source, key, eq),
    };
    merge(doc, overlay);
    Ok(())
}

/// The document `key = "VALUE"` for an argument `KEY=VALUE` (its `=` at byte `eq`) whose
/// VALUE is not TOML: nested tables down the dotted key, the whole VALUE as a string.
fn string_overlay(source: &Arc<Source>, key: &str, eq: usize) -> Node {
    let arg = source.text.as_str();
    let mut n = Node {
        value: Value::Str(arg[eq + 1..].to_string()),
        loc: Loc::new(source, eq + 1..arg.len()),
    };
    for seg in key.rsplit('.') {
        let seg = seg.trim().to_string();
        let k = KeyNode {
            name: seg.clone(),
            loc: Loc::new(source, 0..eq),
        };
        let mut t = IndexMap::new();
        t.insert(seg, (k, n));
        n = Node {
            value: Value::Table(t),
            loc: Loc::new(source, 0..arg.len()),
        };
    }
    n
}

/// Merges `overlay` into `base`: tables key by key (recursively where both sides hold a
/// table), anything else replaced together with its location.
fn merge(base: &mut Node, overlay: Node) {
    match (&mut base.value, overlay.value) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, (key, v)) in o {
                match b.get_mut(&k) {
                    Some((_, existing))
                        if matches!(existing.value, Value::Table(_))
                            && matches!(v.value, Value::Table(_)) =>
                    {
                        merge(existing, v)
                    }
                    _ => {
                        b.insert(k, (key, v));
                    }
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.loc = overlay.loc;
        }
    }
}
