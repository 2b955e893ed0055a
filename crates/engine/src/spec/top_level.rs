//! The top level of a pipeline file: which keys may appear there, the `[pipeline]` and
//! `[cache]` tables, and the `[stage]` table that holds the stages.

use super::node::{Node, Value};
use super::{Table, unknown_key, valid_name};
use crate::error::{Error, Loc};

/// The keys a pipeline file may have at the top.
const TOP_KEYS: &[&str] = &["pipeline", "sweep", "stage", "cache", "report"];

/// Rejects the first top-level key that is not one of [`TOP_KEYS`].
pub(super) fn check_keys(top: &Table) -> Result<(), Error> {
    for (name, (key, _)) in top {
        if !TOP_KEYS.contains(&name.as_str()) {
            return Err(unknown_key(key, name, TOP_KEYS));
        }
    }
    Ok(())
}

/// The `[pipeline]` table: its `name` (required, letters, digits, `_` and `-` only) and its
/// `description`, if any. `start` is where an error about a missing table points.
pub(super) fn pipeline(top: &Table, start: &Loc) -> Result<(String, Option<String>), Error> {
    let Some((_, pipeline)) = top.get("pipeline") else {
        return Err(Error::at(
            start,
            "pipeline",
            "missing `[pipeline]` table with a `name`",
        ));
    };
    let pt = pipeline.as_table("pipeline")?;
    let mut name = None;
    let mut description = None;
    for (k, (key, v)) in pt {
        match k.as_str() {
            "name" => name = Some(v.as_str("pipeline.name")?.to_string()),
            "description" => description = Some(v.as_str("pipeline.description")?.to_string()),
            _ => {
                return Err(unknown_key(
                    key,
                    &format!("pipeline.{k}"),
                    &["name", "description"],
                ));
            }
        }
    }
    let name = name.ok_or_else(|| {
        Error::at(
            &pipeline.loc,
            "pipeline.name",
            "missing: every pipeline needs a name",
        )
    })?;
    if !valid_name(&name) {
        return Err(Error::at(
            &pt["name"].1.loc,
            "pipeline.name",
            "use only letters, digits, `_` and `-`",
        ));
    }
    Ok((name, description))
}

/// The `[cache]` table: `remote = "s3://BUCKET/PREFIX"` and `dir = "PATH"`.
#[derive(Default)]
pub(super) struct CacheTable {
    /// The remote cache, if the file names one.
    pub remote: Option<String>,
    /// The local cache folder, as written (relative to the file's folder).
    pub dir: Option<String>,
}

/// The `[cache]` table, checked.
pub(super) fn cache(top: &Table) -> Result<CacheTable, Error> {
    let mut out = CacheTable::default();
    if let Some((_, cache)) = top.get("cache") {
        for (k, (key, v)) in cache.as_table("cache")? {
            match k.as_str() {
                "remote" => {
                    let url = v.as_str("cache.remote")?;
                    if !url.starts_with("s3://") || url.len() <= "s3://".len() {
                        return Err(Error::at(
                            &v.loc,
                            "cache.remote",
                            format!("\"{url}\" is not a remote cache; write s3://BUCKET/PREFIX"),
                        ));
                    }
                    out.remote = Some(url.to_string());
                }
                "dir" => {
                    let dir = v.as_str("cache.dir")?;
                    if dir.is_empty() || dir.contains('\0') {
                        return Err(Error::at(&v.loc, "cache.dir", "name a folder"));
                    }
                    out.dir = Some(dir.to_string());
                }
                _ => return Err(unknown_key(key, &format!("cache.{k}"), &["dir", "remote"])),
            }
        }
    }
    Ok(out)
}

/// The `[stage]` table, which must hold at least one stage. `start` is where an error
/// about a missing table points.
pub(super) fn stages<'a>(top: &'a Table, start: &Loc) -> Result<&'a Table, Error> {
    let Some((_, stages_node)) = top.get("stage") else {
        return Err(Error::at(
            start,
            "stage",
            "no stages: add at least one `[stage.NAME]` table",
        ));
    };
    let stage_table = stages_node.as_table("stage")?;
    if stage_table.is_empty() {
        return Err(Error::at(
            &stages_node.loc,
            "stage",
            "no stages: add at least one `[stage.NAME]` table",
        ));
    }
    Ok(stage_table)
}

/// One `[[report.plot]]`: a figure of a table the stages write (an `exec` stage's
/// `tables`), `y` against `x`, a line per value of `series`.
#[derive(Clone, Debug)]
pub struct PlotSpec {
    /// The table's name (`gap` for `gap.parquet`).
    pub table: String,
    /// The column (or sweep variable) on the x axis.
    pub x: String,
    /// The column plotted.
    pub y: String,
    /// The column or sweep variable whose values are the lines, if any.
    pub series: Option<String>,
    /// The figure's title [default: `y against x`].
    pub title: Option<String>,
    /// The sweep variables each point averages over, with where the list is written
    /// [default: `pipe report --over`'s, the seeds]; the figure has a panel per value of
    /// the other sweep variables that are neither `x` nor `series`.
    pub mean_over: Option<(Vec<String>, Loc)>,
    /// Where the plot's table starts.
    pub loc: Loc,
}

/// The keys of one `[[report.plot]]`.
const PLOT_KEYS: &[&str] = &["table", "x", "y", "series", "title", "mean_over"];

/// Checks each plot's `mean_over` against the sweep's variables: an unknown one is an
/// error at its line naming the variables there are.
pub(super) fn check_plot_vars(plots: &[PlotSpec], vars: &[&str]) -> Result<(), Error> {
    for (i, plot) in plots.iter().enumerate() {
        let Some((names, loc)) = &plot.mean_over else {
            continue;
        };
        for name in names {
            if !vars.contains(&name.as_str()) {
                return Err(Error::at(
                    loc,
                    &format!("report.plot[{i}].mean_over"),
                    format!(
                        "the sweep has no variable `{name}`{}; its variables are: {}",
                        crate::error::suggest(name, vars.iter().copied()),
                        if vars.is_empty() {
                            "none".to_string()
                        } else {
                            vars.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A `mean_over` value: a list of variable names.
fn names_list(node: &Node, what: &str) -> Result<Vec<String>, Error> {
    let Value::Array(items) = &node.value else {
        return Err(Error::at(
            &node.loc,
            what,
            format!(
                "expected a list of sweep variables (`[\"seed\"]`), found {}",
                node.value.type_name()
            ),
        ));
    };
    items
        .iter()
        .map(|v| Ok(v.as_str(what)?.to_string()))
        .collect()
}

/// The `[report]` table: `[[report.plot]]` entries, each checked for its keys and types.
pub(super) fn report(top: &Table) -> Result<Vec<PlotSpec>, Error> {
    let Some((_, report)) = top.get("report") else {
        return Ok(Vec::new());
    };
    let mut plots = Vec::new();
    for (k, (key, v)) in report.as_table("report")? {
        if k != "plot" {
            return Err(unknown_key(key, &format!("report.{k}"), &["plot"]));
        }
        let Value::Array(items) = &v.value else {
            return Err(Error::at(
                &v.loc,
                "report.plot",
                "write each plot as a `[[report.plot]]` table",
            ));
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("report.plot[{i}]");
            let t = item.as_table(&path)?;
            for (name, (key, _)) in t {
                if !PLOT_KEYS.contains(&name.as_str()) {
                    return Err(unknown_key(key, &format!("{path}.{name}"), PLOT_KEYS));
                }
            }
            let get = |name: &str| -> Result<Option<String>, Error> {
                match t.get(name) {
                    Some((_, n)) => {
                        let s = n.as_str(&format!("{path}.{name}"))?;
                        if s.trim().is_empty() {
                            return Err(Error::at(&n.loc, &format!("{path}.{name}"), "is empty"));
                        }
                        Ok(Some(s.to_string()))
                    }
                    None => Ok(None),
                }
            };
            let need = |name: &str| -> Result<String, Error> {
                get(name)?.ok_or_else(|| {
                    Error::at(
                        &item.loc,
                        &path,
                        format!("missing `{name}`: a plot names table, x and y"),
                    )
                })
            };
            plots.push(PlotSpec {
                table: need("table")?,
                x: need("x")?,
                y: need("y")?,
                series: get("series")?,
                title: get("title")?,
                mean_over: t
                    .get("mean_over")
                    .map(|(_, n)| {
                        names_list(n, &format!("{path}.mean_over")).map(|v| (v, n.loc.clone()))
                    })
                    .transpose()?,
                loc: item.loc.clone(),
            });
        }
    }
    Ok(plots)
}
