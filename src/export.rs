//! `pipe export`: gathers each table kind across all sweep points into one Parquet file,
//! with the sweep variables, the stage name and the instance key as extra columns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use petgraph::graph::NodeIndex;
use serde_json::Value as Json;

use crate::error::Error;
use crate::plan::Plan;
use crate::spec::sweep::SweepVar;
use crate::spec::template;
use crate::store::Store;
use crate::table::{read_parquet, write_parquet};

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
}

/// Reads the tables of every cached instance of the plan.
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
            let batch = read_parquet(&file)
                .map_err(|e| Error::usage(format!("{}: {e:#}", plan.label(node))))?;
            gathered.tables.entry(t).or_default().push((node, batch));
        }
    }
    Ok(gathered)
}

/// Exports every table of every cached instance of the plan into `out`.
pub fn export(plan: &Plan, store: &Store, out: &Path) -> Result<ExportReport, Error> {
    let gathered = gather(plan, store)?;
    let mut report = ExportReport {
        missing: gathered.missing,
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
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
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
        let path = out.join(format!("{name}.parquet"));
        let tmp = out.join(format!(".{name}.parquet.tmp.{}", std::process::id()));
        write_parquet(&tmp, &all).map_err(|e| Error::io(&tmp, format!("{e:#}")))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        report.tables.push(ExportedTable {
            name,
            path,
            rows: all.num_rows(),
            instances: parts.len(),
        });
    }
    Ok(report)
}
