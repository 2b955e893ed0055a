//! `pipe export`: gathers each table kind across all sweep points into one Parquet file,
//! with the sweep variables, the stage name and the instance key as extra columns.

use std::collections::BTreeMap;
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

/// The Arrow type of a sweep variable's column.
fn var_type(var: &SweepVar) -> DataType {
    let all = |f: fn(&Json) -> bool| var.values.iter().all(f);
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

fn constant_column(ty: &DataType, value: Option<&Json>, n: usize) -> ArrayRef {
    match ty {
        DataType::Int64 => Arc::new(Int64Array::from(vec![value.and_then(Json::as_i64); n])),
        DataType::Float64 => Arc::new(Float64Array::from(vec![value.and_then(Json::as_f64); n])),
        DataType::Boolean => Arc::new(BooleanArray::from(vec![value.and_then(Json::as_bool); n])),
        _ => Arc::new(StringArray::from(vec![value.map(template::display); n])),
    }
}

/// Adds the sweep variables, `stage` and `key` to one instance's table.
fn with_point(
    batch: &RecordBatch,
    plan: &Plan,
    node: NodeIndex,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let inst = &plan.graph[node];
    let n = batch.num_rows();
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    let taken = |name: &str, fields: &[Field]| fields.iter().any(|f| f.name() == name);
    let point = plan.point_of(inst);
    for var in &plan.spec.sweep.vars {
        let ty = var_type(var);
        let name = if taken(&var.name, &fields) {
            format!("point_{}", var.name)
        } else {
            var.name.clone()
        };
        cols.push(constant_column(&ty, point.get(&var.name), n));
        fields.push(Field::new(name, ty, true));
    }
    let key = inst.key().unwrap_or_default();
    for (name, value) in [("stage", plan.stage_name(node)), ("key", key.as_str())] {
        let name = if taken(name, &fields) {
            format!("pipe_{name}")
        } else {
            name.to_string()
        };
        cols.push(Arc::new(StringArray::from(vec![value; n])));
        fields.push(Field::new(name, DataType::Utf8, false));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
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
    let mut gathered = Gathered::default();
    for &node in &plan.order {
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
    let mut report = ExportReport {
        missing: gathered.missing,
        unreadable: gathered.unreadable,
        ..Default::default()
    };
    let mut by_table: BTreeMap<String, Vec<(NodeIndex, RecordBatch)>> = BTreeMap::new();
    for (name, parts) in gathered.tables {
        let mut with = Vec::with_capacity(parts.len());
        for (node, batch) in parts {
            let batch = with_point(&batch, plan, node)
                .map_err(|e| Error::usage(format!("{}: {e}", plan.label(node))))?;
            with.push((node, batch));
        }
        by_table.insert(name, with);
    }
    let tables = concat_tables(plan, by_table)?;
    let mut dir = OwnedDir::open(out)?;
    let names: Vec<String> = tables
        .iter()
        .map(|(name, _, _)| format!("{name}.parquet"))
        .collect();
    dir.claim(&names)?;
    for ((name, all, instances), file) in tables.into_iter().zip(names) {
        let path = dir.path(&file);
        dir.write_with(&file, |tmp| write_parquet(tmp, &all))?;
        report.tables.push(ExportedTable {
            name,
            path,
            rows: all.num_rows(),
            instances,
        });
    }
    dir.finish()?;
    Ok(report)
}

/// Each table's parts in one batch, with the number of instances: (name, rows, instances).
fn concat_tables(
    plan: &Plan,
    by_table: BTreeMap<String, Vec<(NodeIndex, RecordBatch)>>,
) -> Result<Vec<(String, RecordBatch, usize)>, Error> {
    let mut tables = Vec::with_capacity(by_table.len());
    for (name, parts) in by_table {
        let schema = parts[0].1.schema();
        if let Some((node, b)) = parts
            .iter()
            .find(|(_, b)| b.schema().fields() != schema.fields())
        {
            return Err(Error::usage(format!(
                "table `{name}` of {} has columns {:?}, but that of {} has {:?}; they cannot go into one file",
                plan.label(*node),
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>(),
                plan.label(parts[0].0),
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
