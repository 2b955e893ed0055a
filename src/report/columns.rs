//! Reading typed columns out of a stage's table by name, whatever integer or float type
//! the stage wrote them with.

use anyhow::{Context, Result, anyhow};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type};

/// A column as `f64`s (nulls as `None`); integers are converted.
pub fn floats(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("the table has no column `{name}`"))?;
    let col = arrow::compute::cast(col, &DataType::Float64)
        .with_context(|| format!("column `{name}` is not numeric"))?;
    let col = col.as_primitive::<Float64Type>();
    Ok((0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i)))
        .collect())
}

/// A column as strings (nulls as `None`); numbers are formatted.
pub fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| anyhow!("the table has no column `{name}`"))?;
    let col = arrow::compute::cast(col, &DataType::Utf8)
        .with_context(|| format!("column `{name}` cannot be read as text"))?;
    let col = col.as_string::<i32>();
    Ok((0..col.len())
        .map(|i| col.is_valid(i).then(|| col.value(i).to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn integers_become_floats_and_nulls_stay_none() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("epoch", DataType::Int64, true),
                Field::new("layer", DataType::Utf8, false),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(3), None])),
                Arc::new(StringArray::from(vec!["fc1", "fc2"])),
            ],
        )
        .unwrap();
        assert_eq!(floats(&batch, "epoch").unwrap(), [Some(3.0), None]);
        assert_eq!(
            strings(&batch, "layer").unwrap(),
            [Some("fc1".to_string()), Some("fc2".to_string())]
        );
        assert!(floats(&batch, "layer").is_err() || floats(&batch, "nope").is_err());
        assert!(floats(&batch, "nope").is_err());
    }
}
