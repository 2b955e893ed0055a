//! `--set KEY=VALUE` overrides: each parsed into a small document and merged over the
//! pipeline file's tree before the spec is checked, so that an overridden value is checked
//! exactly like one written in the file (and its errors point into the `--set` argument).

use std::sync::Arc;

use indexmap::IndexMap;

use super::node::{self, KeyNode, Node, Value};
use crate::error::{Error, Loc, Source};

/// Applies one `--set key.path=VALUE`: VALUE parsed as TOML, or, when it is a bare word
/// that is not TOML (`mlp`, `cuda:1`, `../data/x`), taken as a string. Anything else that
/// is not TOML (`0.1.2`, `[1, 2`) is an error.
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
    check_stage_named(doc, key, arg)?;
    let value = arg[eq + 1..].trim();
    let overlay = match node::parse_document(&source) {
        Ok(n) => n,
        // Not TOML: take a bare word as a plain string, so `--set stage.train.model=mlp` works.
        Err(_) if bare_word(value) => string_overlay(&source, key, eq),
        Err(_) => {
            return Err(Error::usage(format!(
                "--set {arg}: `{value}` is not a TOML value (a number, boolean, string, array or table); \
                 to mean the text, quote it: --set '{key}=\"{value}\"'"
            )));
        }
    };
    merge(doc, overlay);
    Ok(())
}

/// Refuses `--set stage.NAME.KEY=...` for a stage the pipeline lacks (unless it sets the
/// new stage's `kind`), suggesting the nearest name.
fn check_stage_named(doc: &Node, key: &str, arg: &str) -> Result<(), Error> {
    let mut parts = key.split('.').map(str::trim);
    let (Some("stage"), Some(name), rest) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(());
    };
    let stages: Vec<&str> = match &doc.value {
        Value::Table(top) => match top.get("stage").map(|(_, n)| &n.value) {
            Some(Value::Table(t)) => t.keys().map(String::as_str).collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    if stages.contains(&name) || rest == Some("kind") || rest.is_none() {
        return Ok(());
    }
    Err(Error::usage(format!(
        "--set {arg}: the pipeline has no stage `{name}`{}; its stages: {}",
        crate::error::suggest(name, stages.iter().copied()),
        stages.join(", ")
    )))
}

/// Whether `value` reads as a word meant as text: it starts with a letter, `_`, `.`, `/`
/// or `~` and holds no space, quote, bracket, brace, comma or `=` (so `0.1.2`, `-x` or
/// `[1, 2` are not words but broken values).
fn bare_word(value: &str) -> bool {
    let Some(first) = value.chars().next() else {
        return false;
    };
    (first.is_alphabetic() || "_./~".contains(first))
        && !value
            .chars()
            .any(|c| c.is_whitespace() || "\"'[]{},=#".contains(c))
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
