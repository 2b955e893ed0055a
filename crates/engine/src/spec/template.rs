//! `${var}` references inside string values, and their substitution.
//!
//! A string that is exactly one reference (`"${noise}"`) takes the variable's value with
//! its type; a reference inside a longer string is replaced by the value's text.
//! `$$` writes a literal `$`.

use serde_json::Value as Json;

use super::node::{Node, Value};
use crate::error::Error;

/// One piece of a parsed string.
#[derive(Debug, PartialEq)]
pub enum Piece<'a> {
    /// Literal text.
    Lit(std::borrow::Cow<'a, str>),
    /// A `${name}` reference.
    Var(&'a str),
}

/// Splits a string into literal text and variable references.
pub fn parse(s: &str) -> Result<Vec<Piece<'_>>, String> {
    if !s.contains('$') {
        return Ok(vec![Piece::Lit(s.into())]);
    }
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        lit.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            lit.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in {s:?}"))?;
            let name = &r[..end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!("bad variable name {name:?} in {s:?}"));
            }
            if !lit.is_empty() {
                out.push(Piece::Lit(std::mem::take(&mut lit).into()));
            }
            out.push(Piece::Var(name));
            rest = &r[end + 1..];
        } else {
            lit.push('$');
            rest = after;
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() || out.is_empty() {
        out.push(Piece::Lit(lit.into()));
    }
    Ok(out)
}

/// Calls `f` for every variable referenced anywhere in `node`, with the string's node.
pub fn for_each_reference<'a>(
    node: &'a Node,
    f: &mut dyn FnMut(&'a str, &'a Node) -> Result<(), Error>,
) -> Result<(), Error> {
    match &node.value {
        Value::Str(s) => {
            let pieces = parse(s).map_err(|m| Error::at(&node.loc, "", m))?;
            for p in pieces {
                if let Piece::Var(name) = p {
                    f(name, node)?;
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|n| for_each_reference(n, f)),
        Value::Table(t) => t.values().try_for_each(|(_, n)| for_each_reference(n, f)),
        _ => Ok(()),
    }
}

/// Text of a value when it is substituted into a longer string.
pub fn display(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Resolves `node` into plain JSON, substituting variables through `lookup`.
pub fn resolve(
    node: &Node,
    lookup: &dyn Fn(&str) -> Option<Json>,
    path: &str,
) -> Result<Json, Error> {
    Ok(match &node.value {
        Value::Str(s) => {
            let pieces = parse(s).map_err(|m| Error::at(&node.loc, path, m))?;
            let unknown =
                |name: &str| Error::at(&node.loc, path, format!("unknown sweep variable `{name}`"));
            match pieces.as_slice() {
                [Piece::Lit(l)] => Json::String(l.to_string()),
                [Piece::Var(name)] => lookup(name).ok_or_else(|| unknown(name))?,
                _ => {
                    let mut out = String::new();
                    for p in &pieces {
                        match p {
                            Piece::Lit(l) => out.push_str(l),
                            Piece::Var(name) => {
                                out.push_str(&display(&lookup(name).ok_or_else(|| unknown(name))?))
                            }
                        }
                    }
                    Json::String(out)
                }
            }
        }
        Value::Int(i) => Json::from(*i),
        Value::Float(x) => {
            float(*x).ok_or_else(|| Error::at(&node.loc, path, "expected a finite number"))?
        }
        Value::Bool(b) => Json::Bool(*b),
        Value::Array(items) => {
            // Exactly as long as the list (collecting through `Result` would start at 4
            // elements): a large sweep holds one of these per instance.
            let mut out = Vec::with_capacity(items.len());
            for n in items {
                out.push(resolve(n, lookup, path)?);
            }
            Json::Array(out)
        }
        Value::Table(t) => {
            let mut m = serde_json::Map::new();
            for (k, (_, n)) in t {
                m.insert(k.clone(), resolve(n, lookup, path)?);
            }
            Json::Object(m)
        }
    })
}

pub use crate::key::float;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_escapes() {
        assert_eq!(parse("plain").unwrap(), vec![Piece::Lit("plain".into())]);
        assert_eq!(parse("${noise}").unwrap(), vec![Piece::Var("noise")]);
        assert_eq!(
            parse("n-${noise}.txt").unwrap(),
            vec![
                Piece::Lit("n-".into()),
                Piece::Var("noise"),
                Piece::Lit(".txt".into())
            ]
        );
        assert_eq!(
            parse("cost $$5").unwrap(),
            vec![Piece::Lit("cost $5".into())]
        );
        assert!(parse("${open").is_err());
        assert!(parse("${}").is_err());
    }

    #[test]
    fn display_of_numbers_keeps_float_form() {
        assert_eq!(display(&float(0.0).unwrap()), "0.0");
        assert_eq!(display(&float(-0.0).unwrap()), "0.0");
        assert_eq!(display(&float(0.4).unwrap()), "0.4");
        assert_eq!(display(&Json::from(3)), "3");
        assert!(float(f64::NAN).is_none());
    }
}
