//! The `[sweep]` table: variables, their values, and the points they expand to.

use std::collections::HashSet;

use serde_json::Value as Json;

use super::node::{KeyNode, Node, Value};
use super::template;
use crate::error::{Error, Loc};

/// Largest number of sweep points a pipeline may expand to.
pub const MAX_POINTS: usize = 10_000_000;

/// One sweep variable and the values it takes.
#[derive(Clone, Debug)]
pub struct SweepVar {
    /// The variable's name, as referenced by `${name}`.
    pub name: String,
    /// Where the variable was declared.
    pub loc: Loc,
    /// Its distinct values, in declaration order (values only named in `include` last).
    pub values: Vec<Json>,
}

/// The expanded sweep: every point is one value index per variable.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// The variables, in declaration order.
    pub vars: Vec<SweepVar>,
    /// The points: `points[p][v]` indexes `vars[v].values`.
    pub points: Vec<Vec<usize>>,
    /// Where the `[sweep]` table was written (none without one).
    pub loc: Option<Loc>,
}

/// Two sweep values are the same point coordinate (numbers compare by value: 0 == 0.0).
pub fn same_value(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A sweep value as a hashable key that is equal exactly when [`same_value`] says so, so
/// that duplicate values are found in linear time.
#[derive(Hash, PartialEq, Eq)]
enum ValueKey {
    /// A number, by the bits of its `f64` value (`-0.0` as `0.0`).
    Number(u64),
    /// Any other scalar, by its JSON text.
    Other(String),
}

impl ValueKey {
    fn of(v: &Json) -> ValueKey {
        match v.as_f64() {
            Some(x) if v.is_number() => ValueKey::Number(if x == 0.0 { 0 } else { x.to_bits() }),
            _ => ValueKey::Other(v.to_string()),
        }
    }
}

impl Sweep {
    /// The variables' names, in declaration order.
    pub fn var_names(&self) -> Vec<&str> {
        self.vars.iter().map(|v| v.name.as_str()).collect()
    }

    /// A point given as (variable, value) indices, as a JSON object `{"noise": 0.4}`.
    pub fn point_json(&self, ids: &[(u32, u32)]) -> Json {
        Json::Object(
            ids.iter()
                .map(|&(v, i)| {
                    let var = &self.vars[v as usize];
                    (var.name.clone(), var.values[i as usize].clone())
                })
                .collect(),
        )
    }

    /// Parses the `[sweep]` table; no table means a single point with no variables.
    pub fn parse(node: Option<&Node>) -> Result<Sweep, Error> {
        let Some(node) = node else {
            return Ok(Sweep {
                vars: Vec::new(),
                points: vec![Vec::new()],
                loc: None,
            });
        };
        let table = node.as_table("sweep")?;
        let vars = table
            .iter()
            .filter(|(name, _)| *name != "include" && *name != "exclude")
            .map(|(name, (key, value))| parse_var(name, key, value))
            .collect::<Result<Vec<_>, _>>()?;
        let points = product(&vars, node)?;
        let mut sweep = Sweep {
            vars,
            points,
            loc: Some(node.loc.clone()),
        };
        if let Some((_, ex)) = table.get("exclude") {
            sweep.exclude(ex)?;
        }
        if let Some((_, inc)) = table.get("include") {
            sweep.include(inc)?;
        }
        if sweep.points.is_empty() {
            return Err(Error::at(
                &node.loc,
                "sweep",
                "the sweep has no points left after `exclude`",
            ));
        }
        Ok(sweep)
    }

    /// Removes the points each `exclude` pattern matches; a pattern that matches no point
    /// (left) is an error.
    fn exclude(&mut self, ex: &Node) -> Result<(), Error> {
        for (i, pattern) in self.patterns(ex, "sweep.exclude")?.into_iter().enumerate() {
            let before = self.points.len();
            self.points
                .retain(|p| !pattern.iter().all(|(v, idx)| p[*v] == *idx));
            if before == self.points.len() {
                let loc = match &ex.value {
                    Value::Array(items) => &items[i].loc,
                    _ => &ex.loc,
                };
                return Err(Error::at(
                    loc,
                    "sweep.exclude",
                    "this pattern matches no sweep point",
                ));
            }
        }
        Ok(())
    }

    /// Adds each `include` point that is not already a point, in order.
    fn include(&mut self, inc: &Node) -> Result<(), Error> {
        let Value::Array(items) = &inc.value else {
            return Err(Error::at(
                &inc.loc,
                "sweep.include",
                "expected an array of tables",
            ));
        };
        for item in items {
            let point = self.include_point(item)?;
            if !self.points.contains(&point) {
                self.points.push(point);
            }
        }
        Ok(())
    }

    /// One `include` table as a point: it must give every variable a value; a value the
    /// variable does not list yet is added to its values.
    fn include_point(&mut self, item: &Node) -> Result<Vec<usize>, Error> {
        let t = item.as_table("sweep.include")?;
        let mut point = vec![usize::MAX; self.vars.len()];
        for (name, (key, value)) in t {
            let Some(v) = self.vars.iter().position(|v| &v.name == name) else {
                return Err(Error::at(
                    &key.loc,
                    "sweep.include",
                    format!("unknown sweep variable `{name}`"),
                ));
            };
            let value = scalar(value, "sweep.include")?;
            let values = &mut self.vars[v].values;
            point[v] = match values.iter().position(|x| same_value(x, &value)) {
                Some(i) => i,
                None => {
                    values.push(value);
                    values.len() - 1
                }
            };
        }
        if let Some(missing) = point.iter().position(|i| *i == usize::MAX) {
            return Err(Error::at(
                &item.loc,
                "sweep.include",
                format!(
                    "an included point must give every sweep variable; `{}` is missing",
                    self.vars[missing].name
                ),
            ));
        }
        Ok(point)
    }

    /// Parses `exclude` patterns: each a table of variable -> value index.
    fn patterns(&self, node: &Node, path: &str) -> Result<Vec<Vec<(usize, usize)>>, Error> {
        let Value::Array(items) = &node.value else {
            return Err(Error::at(&node.loc, path, "expected an array of tables"));
        };
        let mut out = Vec::new();
        for item in items {
            let t = item.as_table(path)?;
            let mut pattern = Vec::new();
            for (name, (key, value)) in t {
                let Some(v) = self.vars.iter().position(|v| &v.name == name) else {
                    return Err(Error::at(
                        &key.loc,
                        path,
                        format!("unknown sweep variable `{name}`"),
                    ));
                };
                let value = scalar(value, path)?;
                let Some(idx) = self.vars[v]
                    .values
                    .iter()
                    .position(|x| same_value(x, &value))
                else {
                    return Err(Error::at(
                        &value_loc(item, name),
                        path,
                        format!("{value} is not a value of `{name}`"),
                    ));
                };
                pattern.push((v, idx));
            }
            out.push(pattern);
        }
        Ok(out)
    }

    /// Index of a variable by name.
    pub fn var_index(&self, name: &str) -> Option<usize> {
        self.vars.iter().position(|v| v.name == name)
    }
}

/// One sweep variable `name = [values...]`: a valid name and at least one value, no value
/// listed twice.
fn parse_var(name: &str, key: &KeyNode, value: &Node) -> Result<SweepVar, Error> {
    let path = format!("sweep.{name}");
    if template::parse(&format!("${{{name}}}")).is_err() {
        return Err(Error::at(
            &key.loc,
            &path,
            "a sweep variable name may hold only letters, digits, `_` and `-`",
        ));
    }
    let Value::Array(items) = &value.value else {
        return Err(Error::at(
            &value.loc,
            &path,
            format!(
                "expected an array of values, found {}",
                value.value.type_name()
            ),
        ));
    };
    if items.is_empty() {
        return Err(Error::at(
            &value.loc,
            &path,
            "a sweep variable needs at least one value",
        ));
    }
    let mut values: Vec<Json> = Vec::with_capacity(items.len());
    let mut seen: HashSet<ValueKey> = HashSet::with_capacity(items.len());
    for item in items {
        let v = scalar(item, &path)?;
        if !seen.insert(ValueKey::of(&v)) {
            return Err(Error::at(
                &item.loc,
                &path,
                format!("value {v} is listed twice"),
            ));
        }
        values.push(v);
    }
    Ok(SweepVar {
        name: name.to_string(),
        loc: key.loc.clone(),
        values,
    })
}

/// Every combination of the variables' values, the last variable varying fastest; more
/// than [`MAX_POINTS`] is an error at the `[sweep]` table `node`.
fn product(vars: &[SweepVar], node: &Node) -> Result<Vec<Vec<usize>>, Error> {
    let total = vars
        .iter()
        .try_fold(1usize, |acc, v| acc.checked_mul(v.values.len()))
        .filter(|n| *n <= MAX_POINTS)
        .ok_or_else(|| {
            Error::at(
                &node.loc,
                "sweep",
                format!("the sweep expands to more than {MAX_POINTS} points"),
            )
        })?;
    let mut points = Vec::with_capacity(total);
    let mut current = vec![0usize; vars.len()];
    for _ in 0..total {
        points.push(current.clone());
        for v in (0..vars.len()).rev() {
            current[v] += 1;
            if current[v] < vars[v].values.len() {
                break;
            }
            current[v] = 0;
        }
    }
    Ok(points)
}

/// Where the value of `key` in `table` was written (the table's location if it has none).
fn value_loc(table: &Node, key: &str) -> Loc {
    match &table.value {
        Value::Table(t) => t
            .get(key)
            .map(|(_, n)| n.loc.clone())
            .unwrap_or_else(|| table.loc.clone()),
        _ => table.loc.clone(),
    }
}

/// A sweep value: a string, a (finite) number or a boolean.
fn scalar(node: &Node, path: &str) -> Result<Json, Error> {
    let v = match &node.value {
        Value::Str(s) => Json::String(s.clone()),
        Value::Int(i) => Json::from(*i),
        Value::Float(x) => template::float(*x)
            .ok_or_else(|| Error::at(&node.loc, path, "expected a finite number"))?,
        Value::Bool(b) => Json::Bool(*b),
        other => {
            return Err(Error::at(
                &node.loc,
                path,
                format!(
                    "sweep values must be strings, numbers or booleans, found {}",
                    other.type_name()
                ),
            ));
        }
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Source;

    fn parse_sweep(text: &str) -> Result<Sweep, Error> {
        let source = Source::new("s.toml", text.to_string());
        let doc = super::super::node::parse_document(&source)?;
        let Value::Table(t) = &doc.value else {
            unreachable!("a document is a table")
        };
        Sweep::parse(t.get("sweep").map(|(_, n)| n))
    }

    #[test]
    fn duplicates_are_found_by_value_whatever_their_spelling() {
        for (values, twice) in [
            ("[1, 1.0]", Some("1.0")),
            ("[0.0, -0.0]", Some("0.0")),
            ("[\"a\", \"b\", \"a\"]", Some("\"a\"")),
            ("[true, false, true]", Some("true")),
            ("[1, \"1\", true]", None),
            ("[0.1, 0.2, 0.30000000000000004, 0.3]", None),
        ] {
            let r = parse_sweep(&format!("[sweep]\nv = {values}\n"));
            match twice {
                Some(v) => {
                    let e = r.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(
                        e.contains(&format!("value {v} is listed twice")),
                        "{values}: {e}"
                    );
                }
                None => assert_eq!(
                    r.map(|s| s.points.len()).ok(),
                    Some(values.matches(',').count() + 1)
                ),
            }
        }
    }
}
