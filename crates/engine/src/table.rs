//! Arrow record batches <-> Parquet files, with fixed writer settings.
//!
//! Every table `pipe` writes goes through [`write_parquet`], so that the same batch
//! always gives the same bytes (deterministic artifacts) and DuckDB/Polars read it.
//! Artifact tables are declared once with [`table!`]: a struct of [`Column`]s whose
//! schema, writer and reader come from that one declaration.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use arrow::array::{
    Array, ArrayRef, BooleanArray, FixedSizeListArray, Float32Array, Float64Array, Int64Array,
    RecordBatch, StringArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field};

use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

/// Writes one batch to a Parquet file (snappy, fixed `created_by`).
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("pipe {}", env!("CARGO_PKG_VERSION")))
        .build();
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// Most rows a Parquet file may hold to be read (its metadata is checked before decoding).
pub const MAX_TABLE_ROWS: i64 = 50_000_000;

/// Most cells (rows times leaf columns) a Parquet file may hold to be read.
pub const MAX_TABLE_CELLS: i64 = 500_000_000;

/// Reads a whole Parquet file into one batch; a file whose metadata gives more than
/// [`MAX_TABLE_ROWS`] rows or [`MAX_TABLE_CELLS`] cells is refused before any decoding.
pub fn read_parquet(path: &Path) -> Result<RecordBatch> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let meta = builder.metadata().file_metadata();
    let rows = meta.num_rows();
    let columns = i64::try_from(meta.schema_descr().num_columns()).unwrap_or(i64::MAX);
    if rows > MAX_TABLE_ROWS {
        bail!(
            "{} has {rows} rows, more than the bound of {MAX_TABLE_ROWS} rows",
            path.display()
        );
    }
    if rows.saturating_mul(columns) > MAX_TABLE_CELLS {
        bail!(
            "{} has {rows} rows of {columns} columns, more than the bound of {MAX_TABLE_CELLS} cells",
            path.display()
        );
    }
    let schema = builder.schema().clone();
    let reader = builder.build()?;
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(arrow::compute::concat_batches(&schema, &batches)?)
}

/// A column of a [`Table`]: a Rust container that becomes one Arrow array and back.
pub trait Column: Sized {
    /// What the column holds, for error messages (`int64`, `list of float32`, ...).
    const DESCRIPTION: &'static str;
    /// Its Arrow field under `name`.
    fn field(&self, name: &str) -> Field;
    /// Its values as an Arrow array.
    fn to_array(&self) -> ArrayRef;
    /// Reads an Arrow array back; `None` when the array has another type.
    fn from_array(array: &dyn Array) -> Option<Self>;
    /// Its number of rows.
    fn rows(&self) -> usize;
    /// Appends `other`'s rows (of the same width, for fixed-size rows).
    fn append(&mut self, other: Self);
    /// The Arrow type other numeric or text arrays are cast to before reading, so that a
    /// table written by another tool (int32 epochs, float32 values) reads as declared.
    fn cast_to() -> Option<DataType> {
        None
    }
}

macro_rules! primitive_column {
    ($t:ty, $arrow:ty, $dt:expr, $desc:literal) => {
        impl Column for Vec<$t> {
            const DESCRIPTION: &'static str = $desc;
            fn field(&self, name: &str) -> Field {
                Field::new(name, $dt, false)
            }
            fn to_array(&self) -> ArrayRef {
                Arc::new(<$arrow>::from(self.clone()))
            }
            fn from_array(array: &dyn Array) -> Option<Self> {
                let a = array.as_any().downcast_ref::<$arrow>()?;
                (a.null_count() == 0)
                    .then(|| a.iter().map(|v| v.unwrap_or_default().into()).collect())
            }
            fn rows(&self) -> usize {
                self.len()
            }
            fn append(&mut self, other: Self) {
                self.extend(other);
            }
            fn cast_to() -> Option<DataType> {
                Some($dt)
            }
        }
        impl Column for Vec<Option<$t>> {
            const DESCRIPTION: &'static str = concat!($desc, " (nullable)");
            fn field(&self, name: &str) -> Field {
                Field::new(name, $dt, true)
            }
            fn to_array(&self) -> ArrayRef {
                Arc::new(self.iter().cloned().collect::<$arrow>())
            }
            fn from_array(array: &dyn Array) -> Option<Self> {
                let a = array.as_any().downcast_ref::<$arrow>()?;
                Some(a.iter().map(|v| v.map(Into::into)).collect())
            }
            fn rows(&self) -> usize {
                self.len()
            }
            fn append(&mut self, other: Self) {
                self.extend(other);
            }
            fn cast_to() -> Option<DataType> {
                Some($dt)
            }
        }
    };
}

primitive_column!(i64, Int64Array, DataType::Int64, "int64");
primitive_column!(f64, Float64Array, DataType::Float64, "float64");
primitive_column!(bool, BooleanArray, DataType::Boolean, "boolean");

impl Column for Vec<String> {
    const DESCRIPTION: &'static str = "string";
    fn field(&self, name: &str) -> Field {
        Field::new(name, DataType::Utf8, false)
    }
    fn to_array(&self) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(self.iter()))
    }
    fn from_array(array: &dyn Array) -> Option<Self> {
        let a = array.as_any().downcast_ref::<StringArray>()?;
        (a.null_count() == 0).then(|| {
            a.iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect()
        })
    }
    fn rows(&self) -> usize {
        self.len()
    }
    fn append(&mut self, other: Self) {
        self.extend(other);
    }
    fn cast_to() -> Option<DataType> {
        Some(DataType::Utf8)
    }
}

/// Rows of a fixed width stored flat, row after row (images, feature vectors): an Arrow
/// fixed-size list column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FixedRows<T> {
    /// Values per row.
    pub width: usize,
    /// `rows * width` values.
    pub values: Vec<T>,
}

impl<T> FixedRows<T> {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[T] {
        &self.values[i * self.width..(i + 1) * self.width]
    }
}

macro_rules! fixed_rows_column {
    ($t:ty, $arrow:ty, $dt:expr, $desc:literal) => {
        impl Column for FixedRows<$t> {
            const DESCRIPTION: &'static str = $desc;
            fn field(&self, name: &str) -> Field {
                let item = Arc::new(Field::new("item", $dt, false));
                Field::new(
                    name,
                    DataType::FixedSizeList(item, self.width as i32),
                    false,
                )
            }
            fn to_array(&self) -> ArrayRef {
                let item = Arc::new(Field::new("item", $dt, false));
                Arc::new(FixedSizeListArray::new(
                    item,
                    self.width as i32,
                    Arc::new(<$arrow>::from(self.values.clone())),
                    None,
                ))
            }
            fn from_array(array: &dyn Array) -> Option<Self> {
                let list = array.as_any().downcast_ref::<FixedSizeListArray>()?;
                let values = list.values().as_any().downcast_ref::<$arrow>()?;
                let width = list.value_length() as usize;
                let start = list.offset() * width;
                Some(FixedRows {
                    width,
                    values: values.values()[start..start + list.len() * width].to_vec(),
                })
            }
            fn rows(&self) -> usize {
                self.values.len().checked_div(self.width).unwrap_or(0)
            }
            fn append(&mut self, other: Self) {
                if self.values.is_empty() {
                    self.width = other.width;
                }
                self.values.extend(other.values);
            }
        }
    };
}

fixed_rows_column!(u8, UInt8Array, DataType::UInt8, "list of uint8");
fixed_rows_column!(f32, Float32Array, DataType::Float32, "list of float32");

/// A table of an artifact as one typed value: one field per column, declared with
/// [`table!`], written and read through [`write_parquet`]/[`read_parquet`].
pub trait Table: Sized {
    /// Its columns' names, in order.
    const COLUMNS: &'static [&'static str];
    /// The columns as one record batch.
    fn to_batch(&self) -> Result<RecordBatch>;
    /// Reads the declared columns of a batch (others are ignored); fails naming a missing
    /// or mistyped column.
    fn from_batch(batch: &RecordBatch) -> Result<Self>;
    /// Its number of rows.
    fn rows(&self) -> usize;
    /// Appends `other`'s rows (tables of one kind from several parts make one table).
    fn append(&mut self, other: Self);
    /// Writes it as a Parquet file.
    fn write(&self, path: &Path) -> Result<()> {
        write_parquet(path, &self.to_batch()?)
    }
    /// Reads it from a Parquet file.
    fn read(path: &Path) -> Result<Self> {
        Self::from_batch(&read_parquet(path)?)
            .with_context(|| format!("reading {}", path.display()))
    }
}

/// A table stored under one file name in an artifact (declared with `table! { pub struct
/// T in "name" { .. } }`): readers and writers name the folder, never the file.
pub trait StoredTable: Table {
    /// The table's name, as `pipe export` and `tables = [...]` lists name it (`probe`).
    const NAME: &'static str;
    /// Its file in an artifact folder (`probe.parquet`).
    const FILE: &'static str;
    /// Its path inside the artifact folder `dir`.
    fn path_in(dir: &Path) -> std::path::PathBuf {
        dir.join(Self::FILE)
    }
    /// Reads it from the artifact folder `dir`.
    fn read_in(dir: &Path) -> Result<Self> {
        Self::read(&Self::path_in(dir))
    }
    /// Writes it into the folder `dir` (an instance's output or a part's folder).
    fn write_in(&self, dir: &Path) -> Result<()> {
        self.write(&Self::path_in(dir))
    }
}

/// Reads one column of a batch as `C` (casting other numeric or text types to the declared
/// one), or says which column is missing or mistyped.
pub fn column<C: Column>(batch: &RecordBatch, name: &str) -> Result<C> {
    let array = batch
        .column_by_name(name)
        .with_context(|| format!("no column `{name}`"))?;
    let cast = || {
        let to = C::cast_to()?;
        let cast = arrow::compute::cast(array, &to).ok()?;
        C::from_array(cast.as_ref())
    };
    if array.null_count() > 0 && C::cast_to().as_ref() == Some(array.data_type()) {
        if let Some(c) = C::from_array(array.as_ref()) {
            return Ok(c);
        }
        bail!(
            "column `{name}` has {} missing values where every row needs one",
            array.null_count()
        );
    }
    C::from_array(array.as_ref())
        .or_else(cast)
        .with_context(|| {
            format!(
                "column `{name}` is {}, not {}",
                array.data_type(),
                C::DESCRIPTION
            )
        })
}

/// Declares an artifact table: a struct with one [`Column`] field per column (in order)
/// and its [`Table`] implementation, so that the schema, the writer and the reader are one
/// declaration. `name as "Col": Type` names a column that is not a Rust field name.
/// `pub struct Probe in "probe" { .. }` also names the file an artifact holds it in
/// (`probe.parquet`, a [`StoredTable`]), so no other code spells it.
#[macro_export]
macro_rules! table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident $(in $stem:literal)? {
            $($(#[doc = $d:literal])* $col:ident $(as $rename:literal)? : $ty:ty,)*
        }
    ) => {
        $(
            impl $crate::table::StoredTable for $name {
                const NAME: &'static str = $stem;
                const FILE: &'static str = concat!($stem, ".parquet");
            }
        )?
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct $name {
            $($(#[doc = $d])* pub $col: $ty,)*
        }

        impl $crate::table::Table for $name {
            const COLUMNS: &'static [&'static str] = &[$($crate::table!(@name $col $($rename)?)),*];
            fn to_batch(&self) -> anyhow::Result<arrow::array::RecordBatch> {
                use $crate::table::Column;
                let fields = vec![$(self.$col.field($crate::table!(@name $col $($rename)?))),*];
                let arrays = vec![$(self.$col.to_array()),*];
                Ok(arrow::array::RecordBatch::try_new(
                    std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
                    arrays,
                )?)
            }
            fn from_batch(batch: &arrow::array::RecordBatch) -> anyhow::Result<Self> {
                Ok($name {
                    $($col: $crate::table::column(batch, $crate::table!(@name $col $($rename)?))?,)*
                })
            }
            fn rows(&self) -> usize {
                use $crate::table::Column;
                [$(self.$col.rows()),*].into_iter().next().unwrap_or(0)
            }
            fn append(&mut self, other: Self) {
                $($crate::table::Column::append(&mut self.$col, other.$col);)*
            }
        }
    };
    (@name $col:ident) => { stringify!($col) };
    (@name $col:ident $rename:literal) => { $rename };
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use arrow::datatypes::Schema;

    crate::table! {
        /// A table with every kind of column.
        pub struct Sample {
            /// An integer.
            n: Vec<i64>,
            /// A float that may be missing.
            x as "X": Vec<Option<f64>>,
            /// A name.
            name: Vec<String>,
            /// Fixed-width rows.
            pixels: FixedRows<u8>,
        }
    }

    #[test]
    fn a_declared_table_has_the_declared_schema_and_reads_back() {
        let t = Sample {
            n: vec![1, 2],
            x: vec![Some(0.5), None],
            name: vec!["a".into(), "b".into()],
            pixels: FixedRows {
                width: 3,
                values: vec![1, 2, 3, 4, 5, 6],
            },
        };
        let batch = t.to_batch().unwrap();
        let schema = batch.schema();
        let described: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {} {}", f.name(), f.data_type(), f.is_nullable()))
            .collect();
        assert_eq!(
            described,
            [
                "n Int64 false",
                "X Float64 true",
                "name Utf8 false",
                "pixels FixedSizeList(3 x non-null UInt8) false"
            ]
        );
        assert_eq!(Sample::COLUMNS, ["n", "X", "name", "pixels"]);
        assert_eq!(t.rows(), 2);
        assert_eq!(t.pixels.row(1), [4, 5, 6]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.parquet");
        t.write(&path).unwrap();
        assert_eq!(Sample::read(&path).unwrap(), t);
    }

    #[test]
    fn other_integer_widths_are_cast_and_missing_columns_named() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)])),
            vec![Arc::new(Int32Array::from(vec![7, -1]))],
        )
        .unwrap();
        assert_eq!(column::<Vec<i64>>(&batch, "n").unwrap(), [7, -1]);
        assert_eq!(column::<Vec<f64>>(&batch, "n").unwrap(), [7.0, -1.0]);
        let e = Sample::from_batch(&batch).unwrap_err().to_string();
        assert_eq!(e, "no column `X`");
        let with_null = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        let e = column::<Vec<i64>>(&with_null, "n").unwrap_err().to_string();
        assert_eq!(
            e,
            "column `n` has 1 missing values where every row needs one"
        );
        assert_eq!(
            column::<Vec<Option<i64>>>(&with_null, "n").unwrap(),
            [Some(1), None]
        );
        let e = column::<FixedRows<u8>>(&batch, "n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "column `n` is Int32, not list of uint8");
    }
}
