//! `pipe export`: gathers each table kind across all sweep points into one Parquet file,
//! with the sweep variables, the stage name and the instance key as extra columns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use crate::owned::OwnedDir;
use pipe_engine::error::Error;
use pipe_engine::plan::Plan;
use pipe_engine::spec::sweep::SweepVar;
use pipe_engine::spec::template;
use pipe_engine::store::Store;
use pipe_engine::table::{read_parquet, write_parquet};

/// One exported table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExportedTable {
    /// Table kind (`metrics`, `labels`, ...).
    pub name: String,
    /// The file written.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: usize,
    /// Instances it gathers.
    pub instances: usize,
}

/// What an export did.
#[derive(Debug, Default)]
pub struct ExportReport {
    /// The tables written, by name.
    pub tables: Vec<ExportedTable>,
    /// Instances with tables whose artifacts are not in the cache (not exported).
    pub missing: Vec<NodeIndex>,
    /// Tables that could not be read, left out: what and why.
    pub unreadable: Vec<String>,
}

/// The Arrow type of a column holding these values (nulls aside): integers, numbers,
/// booleans, or else text.
fn json_type<'a>(values: impl Iterator<Item = &'a Json> + Clone) -> DataType {
    let all = |f: fn(&Json) -> bool| values.clone().filter(|v| !v.is_null()).all(f);
    if all(|v| v.is_i64()) {
        DataType::Int64
    } else if all(Json::is_number) {
        DataType::Float64
    } else if all(Json::is_boolean) {
        DataType::Boolean
    } else {
        DataType::Utf8
    }
}

/// The Arrow type of a sweep variable's column.
fn var_type(var: &SweepVar) -> DataType {
    json_type(var.values.iter())
}

fn constant_column(ty: &DataType, value: Option<&Json>, n: usize) -> ArrayRef {
    match ty {
        DataType::Int64 => Arc::new(Int64Array::from(vec![value.and_then(Json::as_i64); n])),
        DataType::Float64 => Arc::new(Float64Array::from(vec![value.and_then(Json::as_f64); n])),
        DataType::Boolean => Arc::new(BooleanArray::from(vec![value.and_then(Json::as_bool); n])),
        _ => Arc::new(StringArray::from(vec![
            value
                .filter(|v| !v.is_null())
                .map(template::display);
            n
        ])),
    }
}

/// A column added to every exported table: its name, the prefix it takes when the table
/// has a column of that name already, and its type.
struct Extra {
    /// The column's name.
    name: String,
    /// Prepended to the name when a table's own column has it (`point_`, `pipe_`).
    prefix: &'static str,
    /// Its type.
    ty: DataType,
    /// Whether it may hold nulls.
    nullable: bool,
}

impl Extra {
    /// A column that may hold nulls.
    fn new(name: &str, prefix: &'static str, ty: DataType) -> Extra {
        Extra {
            name: name.to_string(),
            prefix,
            ty,
            nullable: true,
        }
    }

    /// A text column that always has a value.
    fn text(name: &str) -> Extra {
        Extra {
            name: name.to_string(),
            prefix: "pipe_",
            ty: DataType::Utf8,
            nullable: false,
        }
    }
}

/// Adds the extra columns, each with one value for every row, to one instance's table.
fn with_extras(
    batch: &RecordBatch,
    extras: &[Extra],
    values: &[Option<Json>],
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = batch.num_rows();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    let taken = |name: &str, fields: &[Field]| fields.iter().any(|f| f.name() == name);
    for (extra, value) in extras.iter().zip(values) {
        let name = if taken(&extra.name, &fields) {
            format!("{}{}", extra.prefix, extra.name)
        } else {
            extra.name.clone()
        };
        cols.push(constant_column(&extra.ty, value.as_ref(), n));
        fields.push(Field::new(name, extra.ty.clone(), extra.nullable));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
}

/// The sweep variables' columns of one plan, then `stage` and `key`.
fn point_extras(plan: &Plan) -> Vec<Extra> {
    let mut extras: Vec<Extra> = plan
        .spec
        .sweep
        .vars
        .iter()
        .map(|v| Extra::new(&v.name, "point_", var_type(v)))
        .collect();
    extras.extend([Extra::text("stage"), Extra::text("key")]);
    extras
}

/// The values of [`point_extras`] for instance `node`.
fn point_values(plan: &Plan, node: NodeIndex, vars: &[String]) -> Vec<Option<Json>> {
    let point = plan.point(node);
    let mut values: Vec<Option<Json>> = vars.iter().map(|v| point.get(v).cloned()).collect();
    values.push(Some(Json::String(plan.stage_name(node).to_string())));
    values.push(Some(Json::String(plan.key(node).unwrap_or_default())));
    values
}

/// Every table of every cached instance of a plan, as the stages wrote them.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Table kind -> (instance, its table), in plan order.
    pub tables: BTreeMap<String, Vec<(NodeIndex, RecordBatch)>>,
    /// Instances with tables whose artifacts are not in the cache.
    pub missing: Vec<NodeIndex>,
    /// Tables that could not be read (a codec or type this build cannot read, a damaged
    /// file), each as "table `NAME` of STAGE[POINT]: why": left out, not fatal.
    pub unreadable: Vec<String>,
}

/// Reads the tables of every cached instance of the plan; a table that cannot be read is
/// left out and named in [`Gathered::unreadable`].
pub fn gather(plan: &Plan, store: &Store) -> Result<Gathered, Error> {
    gather_nodes(plan, store, &plan.order)
}

/// [`gather`] over some of the plan's instances.
fn gather_nodes(plan: &Plan, store: &Store, nodes: &[NodeIndex]) -> Result<Gathered, Error> {
    let mut gathered = Gathered::default();
    for &node in nodes {
        let inst = &plan.graph[node];
        let kind = plan.spec.stages[inst.stage].kind;
        let tables = kind.tables(&inst.params);
        if tables.is_empty() {
            continue;
        }
        let Some(key) = inst.key().filter(|k| store.is_complete(k)) else {
            gathered.missing.push(node);
            continue;
        };
        let dir = store.artifact_dir(&key);
        for t in tables {
            let file = dir.join(format!("{t}.parquet"));
            match read_parquet(&file) {
                Ok(batch) => gathered.tables.entry(t).or_default().push((node, batch)),
                Err(e) => gathered
                    .unreadable
                    .push(format!("table `{t}` of {}: {e:#}", plan.label(node))),
            }
        }
    }
    Ok(gathered)
}

/// Exports every table of every cached instance of the plan into `out`, one Parquet file
/// per table, each replaced atomically. Tables of an earlier export that this one does not
/// have are removed; files in `out` that pipe did not write are never touched, and one in
/// the way of a table refuses the export before anything is written.
pub fn export(plan: &Plan, store: &Store, out: &Path) -> Result<ExportReport, Error> {
    let gathered = gather(plan, store)?;
    let extras = point_extras(plan);
    let vars: Vec<String> = plan
        .spec
        .sweep
        .var_names()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let mut by_table: BTreeMap<String, Vec<(String, RecordBatch)>> = BTreeMap::new();
    for (name, parts) in gathered.tables {
        let mut with = Vec::with_capacity(parts.len());
        for (node, batch) in parts {
            let batch = with_extras(&batch, &extras, &point_values(plan, node, &vars))
                .map_err(|e| Error::usage(format!("{}: {e}", plan.label(node))))?;
            with.push((plan.label(node), batch));
        }
        by_table.insert(name, with);
    }
    let mut report = ExportReport {
        missing: gathered.missing,
        unreadable: gathered.unreadable,
        ..Default::default()
    };
    report.tables = write_tables(by_table, out)?;
    Ok(report)
}

/// What an export of several runs did.
#[derive(Debug, Default)]
pub struct RunsExport {
    /// The tables written, by name.
    pub tables: Vec<ExportedTable>,
    /// Each run's instances with tables whose artifacts are not in the cache, as
    /// `stage[point] of run ID`.
    pub missing: Vec<String>,
    /// Tables that could not be read, left out: what and why.
    pub unreadable: Vec<String>,
    /// The parameter columns added (those that differ between the runs).
    pub params: Vec<String>,
}

/// Exports the tables of several runs' plans into `out` as [`export`] does, one row per
/// (run, instance, table row), with columns for the sweep variables of every plan, the
/// parameters that differ between runs ([`crate::compare::differing`], as `stage.param`),
/// `run`, `run_name` (when a run has a name), `stage` and `key`.
pub fn export_runs(
    sides: &[crate::compare::Side<'_>],
    store: &Store,
    out: &Path,
) -> Result<RunsExport, Error> {
    use crate::compare::{differing, settings};
    let mut report = RunsExport::default();
    let mut gathered = Vec::with_capacity(sides.len());
    for side in sides {
        let g = gather_nodes(side.plan, store, &side.nodes)?;
        report.missing.extend(
            g.missing
                .iter()
                .map(|&n| format!("{} of run {}", side.plan.label(n), side.run.id)),
        );
        report.unreadable.extend(
            g.unreadable
                .iter()
                .map(|u| format!("{u} (run {})", side.run.id)),
        );
        gathered.push(g);
    }
    // The rows' settings, for the instances with tables.
    let mut set_of: Vec<BTreeMap<NodeIndex, BTreeMap<String, Json>>> = Vec::new();
    for (side, g) in sides.iter().zip(&gathered) {
        let nodes: BTreeSet<NodeIndex> = g.tables.values().flatten().map(|(n, _)| *n).collect();
        set_of.push(
            nodes
                .into_iter()
                .map(|n| (n, settings(side.plan, n)))
                .collect(),
        );
    }
    let rows: Vec<(usize, &BTreeMap<String, Json>)> = set_of
        .iter()
        .enumerate()
        .flat_map(|(i, m)| m.values().map(move |s| (i, s)))
        .collect();
    report.params = differing(&rows);
    // The sweep variables of every plan, in order of first appearance, typed over all.
    let mut vars: Vec<String> = Vec::new();
    let mut var_values: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for side in sides {
        for v in &side.plan.spec.sweep.vars {
            if !vars.contains(&v.name) {
                vars.push(v.name.clone());
            }
            var_values
                .entry(v.name.clone())
                .or_default()
                .extend(v.values.iter().cloned());
        }
    }
    let named = sides.iter().any(|s| s.run.name.is_some());
    let mut extras: Vec<Extra> = vars
        .iter()
        .map(|v| Extra::new(v, "point_", json_type(var_values[v].iter())))
        .collect();
    for p in &report.params {
        let values = rows.iter().filter_map(|(_, s)| s.get(p));
        extras.push(Extra::new(p, "param_", json_type(values)));
    }
    extras.push(Extra::text("run"));
    if named {
        extras.push(Extra::new("run_name", "pipe_", DataType::Utf8));
    }
    extras.extend([Extra::text("stage"), Extra::text("key")]);
    let mut by_table: BTreeMap<String, Vec<(String, RecordBatch)>> = BTreeMap::new();
    for (i, (side, g)) in sides.iter().zip(gathered).enumerate() {
        let plan = side.plan;
        for (name, parts) in g.tables {
            for (node, batch) in parts {
                let point = plan.point(node);
                let s = &set_of[i][&node];
                let mut values: Vec<Option<Json>> =
                    vars.iter().map(|v| point.get(v).cloned()).collect();
                values.extend(report.params.iter().map(|p| s.get(p).cloned()));
                values.push(Some(Json::String(side.run.id.clone())));
                if named {
                    values.push(side.run.name.clone().map(Json::String));
                }
                values.push(Some(Json::String(plan.stage_name(node).to_string())));
                values.push(Some(Json::String(plan.key(node).unwrap_or_default())));
                let label = format!("{} of run {}", plan.label(node), side.run.id);
                let batch = with_extras(&batch, &extras, &values)
                    .map_err(|e| Error::usage(format!("{label}: {e}")))?;
                by_table
                    .entry(name.clone())
                    .or_default()
                    .push((label, batch));
            }
        }
    }
    report.tables = write_tables(by_table, out)?;
    Ok(report)
}

/// Writes each table's parts (labelled by instance) into one file in `out`, atomically;
/// removes tables of an earlier export that this one lacks.
fn write_tables(
    by_table: BTreeMap<String, Vec<(String, RecordBatch)>>,
    out: &Path,
) -> Result<Vec<ExportedTable>, Error> {
    let tables = concat_tables(by_table)?;
    let mut dir = OwnedDir::open(out)?;
    let names: Vec<String> = tables
        .iter()
        .map(|(name, _, _)| format!("{name}.parquet"))
        .collect();
    dir.claim(&names)?;
    let mut written = Vec::with_capacity(tables.len());
    for ((name, all, instances), file) in tables.into_iter().zip(names) {
        let path = dir.path(&file);
        dir.write_with(&file, |tmp| write_parquet(tmp, &all))?;
        written.push(ExportedTable {
            name,
            path,
            rows: all.num_rows(),
            instances,
        });
    }
    dir.finish()?;
    Ok(written)
}

/// Each table's parts in one batch, with the number of instances: (name, rows, instances).
fn concat_tables(
    by_table: BTreeMap<String, Vec<(String, RecordBatch)>>,
) -> Result<Vec<(String, RecordBatch, usize)>, Error> {
    let mut tables = Vec::with_capacity(by_table.len());
    for (name, parts) in by_table {
        let schema = parts[0].1.schema();
        if let Some((label, b)) = parts
            .iter()
            .find(|(_, b)| b.schema().fields() != schema.fields())
        {
            return Err(Error::usage(format!(
                "table `{name}` of {label} has columns {:?}, but that of {} has {:?}; they cannot go into one file",
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>(),
                parts[0].0,
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
            )));
        }
        let batches: Vec<RecordBatch> = parts.iter().map(|(_, b)| b.clone()).collect();
        let all = arrow::compute::concat_batches(&schema, &batches)
            .map_err(|e| Error::usage(format!("table `{name}`: {e}")))?;
        tables.push((name, all, parts.len()));
    }
    Ok(tables)
}
