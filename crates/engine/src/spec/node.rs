//! A TOML value tree that remembers where every value and key came from.
//!
//! Pipeline files and `--set` overrides are parsed into [`Node`]s so that any later
//! error (unknown key, wrong type, bad reference) can name the file, line and column.

use std::ops::Range;
use std::sync::Arc;

use indexmap::IndexMap;
use toml::de::{DeTable, DeValue};

use crate::error::{Error, Loc, Source};

/// A parsed value with its location.
#[derive(Clone, Debug)]
pub struct Node {
    /// The value itself.
    pub value: Value,
    /// Where the value was written.
    pub loc: Loc,
}

/// A table entry's key with its location.
#[derive(Clone, Debug)]
pub struct KeyNode {
    /// The key's text.
    pub name: String,
    /// Where the key was written.
    pub loc: Loc,
}

/// The TOML data model, minus datetimes (which pipelines never need).
#[derive(Clone, Debug)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// An array.
    Array(Vec<Node>),
    /// A table, in source order.
    Table(IndexMap<String, (KeyNode, Node)>),
}

impl Value {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

impl Node {
    /// The table entries, or an error naming `what`.
    pub fn as_table(&self, what: &str) -> Result<&IndexMap<String, (KeyNode, Node)>, Error> {
        match &self.value {
            Value::Table(t) => Ok(t),
            other => Err(Error::at(
                &self.loc,
                what,
                format!("expected a table, found {}", other.type_name()),
            )),
        }
    }

    /// The string, or an error naming `what`.
    pub fn as_str(&self, what: &str) -> Result<&str, Error> {
        match &self.value {
            Value::Str(s) => Ok(s),
            other => Err(Error::at(
                &self.loc,
                what,
                format!("expected a string, found {}", other.type_name()),
            )),
        }
    }
}

/// Parses TOML text into a [`Node`] table, mapping syntax errors to located errors.
pub fn parse_document(source: &Arc<Source>) -> Result<Node, Error> {
    let text = source.text.as_str();
    match DeTable::parse(text) {
        Ok(doc) => {
            let span = doc.span();
            convert_table(doc.into_inner(), span, source)
        }
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let loc = Loc::new(source, span);
            Err(Error::at(
                &loc,
                "",
                format!("invalid TOML: {}", e.message().trim()),
            ))
        }
    }
}

fn convert_table(
    table: DeTable<'_>,
    span: Range<usize>,
    source: &Arc<Source>,
) -> Result<Node, Error> {
    let mut out = IndexMap::with_capacity(table.len());
    for (k, v) in table {
        let key = KeyNode {
            name: k.get_ref().to_string(),
            loc: Loc::new(source, k.span()),
        };
        let vspan = v.span();
        let node = convert_value(v.into_inner(), vspan, source)?;
        out.insert(key.name.clone(), (key, node));
    }
    Ok(Node {
        value: Value::Table(out),
        loc: Loc::new(source, span),
    })
}

fn convert_value(
    value: DeValue<'_>,
    span: Range<usize>,
    source: &Arc<Source>,
) -> Result<Node, Error> {
    let loc = Loc::new(source, span.clone());
    let value = match value {
        DeValue::String(s) => Value::Str(s.into_owned()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::Int(n),
            Err(_) => return Err(Error::at(&loc, "", "integer out of range")),
        },
        DeValue::Float(f) => match f.as_str().parse::<f64>() {
            Ok(x) => Value::Float(x),
            Err(_) => return Err(Error::at(&loc, "", "invalid float")),
        },
        DeValue::Boolean(b) => Value::Bool(b),
        DeValue::Datetime(_) => {
            return Err(Error::at(
                &loc,
                "",
                "dates and times are not supported in pipeline files; use a string",
            ));
        }
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                let ispan = item.span();
                out.push(convert_value(item.get_ref().clone(), ispan, source)?);
            }
            Value::Array(out)
        }
        DeValue::Table(t) => return convert_table(t, span, source),
    };
    Ok(Node { value, loc })
}
