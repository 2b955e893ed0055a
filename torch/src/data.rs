//! Loads a `dataset` artifact and a `corrupt` artifact into tensors.

use std::path::Path;

use anyhow::{Context, Result, bail};
use arrow::array::{Array, BooleanArray, FixedSizeListArray, Int64Array, UInt8Array};
use tch::{Device, Kind, Tensor};

use pipe::stages::dataset::DatasetInfo;
use pipe::table::read_parquet;

/// One split: normalized images and labels, on a device.
pub struct Split {
    /// `[n, channels, height, width]`, float, standardized with the training set's statistics.
    pub x: Tensor,
    /// Labels a model is trained or scored on (`[n]`, int64).
    pub y: Tensor,
}

/// The training set with both label sets, and the test set.
pub struct TrainData {
    /// Data set facts.
    pub info: DatasetInfo,
    /// Training images with their training (possibly corrupted) labels.
    pub train: Split,
    /// The true labels of the training images.
    pub train_true: Tensor,
    /// Which training examples were corrupted (`[n]`, bool).
    pub corrupted: Tensor,
    /// Test images with true labels.
    pub test: Split,
}

fn column<'a, T: 'static>(
    batch: &'a arrow::array::RecordBatch,
    name: &str,
    file: &Path,
) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .with_context(|| {
            format!(
                "{} has no column `{name}` of the expected type",
                file.display()
            )
        })
}

/// Reads a split's images (`[n, c, h, w]`, u8) and labels.
pub fn read_images(file: &Path, info: &DatasetInfo) -> Result<(Tensor, Vec<i64>)> {
    let batch = read_parquet(file)?;
    let images: &FixedSizeListArray = column(&batch, "image", file)?;
    let labels: &Int64Array = column(&batch, "label", file)?;
    let values = images
        .values()
        .as_any()
        .downcast_ref::<UInt8Array>()
        .context("image values are not u8")?;
    let per = (info.channels * info.height * info.width) as i64;
    if images.value_length() as i64 != per {
        bail!(
            "{}: images hold {} values, expected {per}",
            file.display(),
            images.value_length()
        );
    }
    let n = batch.num_rows() as i64;
    let pixels = &values.values()[..(n * per) as usize];
    let x = Tensor::from_slice(pixels).view([
        n,
        info.channels as i64,
        info.height as i64,
        info.width as i64,
    ]);
    Ok((x, labels.values().to_vec()))
}

/// Loads training and test data; `labels_dir` holds the corrupt stage's `labels.parquet`.
pub fn load(dataset_dir: &Path, labels_dir: &Path, device: Device) -> Result<TrainData> {
    let info: DatasetInfo =
        serde_json::from_slice(&std::fs::read(dataset_dir.join("dataset.json"))?)
            .context("reading dataset.json")?;
    let (train_u8, true_labels) = read_images(&dataset_dir.join("train.parquet"), &info)?;
    let (test_u8, test_labels) = read_images(&dataset_dir.join("test.parquet"), &info)?;
    let lfile = labels_dir.join("labels.parquet");
    let lb = read_parquet(&lfile)?;
    let idx: &Int64Array = column(&lb, "index", &lfile)?;
    let truth: &Int64Array = column(&lb, "true_label", &lfile)?;
    let train_label: &Int64Array = column(&lb, "train_label", &lfile)?;
    let corrupted: &BooleanArray = column(&lb, "corrupted", &lfile)?;
    if lb.num_rows() != true_labels.len()
        || idx.values().iter().enumerate().any(|(i, &v)| v != i as i64)
        || truth.values() != true_labels.as_slice()
    {
        bail!(
            "labels.parquet does not describe this data set's training split (rows or true labels differ)"
        );
    }
    // Standardize per channel with the training set's mean and standard deviation.
    let xf = train_u8.to_kind(Kind::Float) / 255.0;
    let mean = xf.mean_dim([0i64, 2, 3].as_slice(), true, Kind::Float);
    let std = xf
        .std_dim([0i64, 2, 3].as_slice(), false, true)
        .clamp_min(1e-6);
    let norm = |x: &Tensor| ((x.to_kind(Kind::Float) / 255.0 - &mean) / &std).to_device(device);
    let flags: Vec<bool> = (0..corrupted.len()).map(|i| corrupted.value(i)).collect();
    Ok(TrainData {
        train: Split {
            x: norm(&train_u8),
            y: Tensor::from_slice(train_label.values()).to_device(device),
        },
        train_true: Tensor::from_slice(&true_labels).to_device(device),
        corrupted: Tensor::from_slice(&flags).to_device(device),
        test: Split {
            x: norm(&test_u8),
            y: Tensor::from_slice(&test_labels).to_device(device),
        },
        info,
    })
}
