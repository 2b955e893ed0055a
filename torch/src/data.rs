//! Loads a `dataset` artifact and a `corrupt` artifact into tensors.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tch::{Device, Kind, Tensor};

use crate::tensors::to_bool;
use pipe_engine::table::StoredTable;
use pipe_engine::table::Table;
use pipe_kinds::stages::corrupt::ExampleGroup;
use pipe_kinds::stages::dataset::DatasetInfo;
use pipe_kinds::tables::{Images, Labels};

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
    /// Which training examples were chosen for corruption (`[n]`, bool).
    pub chosen: Tensor,
    /// Which training examples are corrupted: their label changed (`[n]`, bool).
    pub changed: Tensor,
    /// Test images with true labels.
    pub test: Split,
    /// Each training example's index in the data set's training split (all of them in
    /// order, unless a `clean` stage dropped some).
    pub indices: Vec<i64>,
}

/// Reads a split's images (`[n, c, h, w]`, u8) and labels.
pub fn read_images(file: &Path, info: &DatasetInfo) -> Result<(Tensor, Vec<i64>)> {
    let images = Images::read(file)?;
    let per = info.channels * info.height * info.width;
    if images.image.width != per {
        bail!(
            "{}: images hold {} values, expected {per}",
            file.display(),
            images.image.width
        );
    }
    let n = images.label.len() as i64;
    let x = Tensor::from_slice(&images.image.values).view([
        n,
        info.channels as i64,
        info.height as i64,
        info.width as i64,
    ]);
    Ok((x, images.label))
}

impl TrainData {
    /// The shape of one image, `[channels, height, width]`.
    pub fn input_shape(&self) -> [i64; 3] {
        let info = &self.info;
        [info.channels as i64, info.height as i64, info.width as i64]
    }

    /// The number of classes.
    pub fn classes(&self) -> i64 {
        self.info.classes as i64
    }

    /// The clean training examples: those not chosen for corruption (`[n]`, bool).
    pub fn clean(&self) -> Tensor {
        self.chosen.logical_not()
    }
    /// Every training example's group (clean, corrupted, unchanged).
    pub fn groups(&self) -> Result<Vec<ExampleGroup>> {
        let (chosen, changed) = (to_bool(&self.chosen)?, to_bool(&self.changed)?);
        Ok(ExampleGroup::all(&chosen, &changed))
    }
}

/// Loads training and test data; `labels_dir` holds the `labels.parquet` of a `corrupt`
/// stage (every training example) or of a `clean` stage (some may be dropped: the rows'
/// `index` then lists those kept, in increasing order). Images are standardized with the
/// whole training split's statistics either way.
pub fn load(dataset_dir: &Path, labels_dir: &Path, device: Device) -> Result<TrainData> {
    let info: DatasetInfo =
        serde_json::from_slice(&std::fs::read(dataset_dir.join("dataset.json"))?)
            .context("reading dataset.json")?;
    let (train_u8, true_labels) = read_images(&dataset_dir.join(Images::TRAIN_FILE), &info)?;
    let (test_u8, test_labels) = read_images(&dataset_dir.join(Images::TEST_FILE), &info)?;
    let labels = Labels::read_in(labels_dir)?;
    let n = true_labels.len() as i64;
    let increasing = labels.index.windows(2).all(|w| w[0] < w[1]);
    let in_range = labels.index.iter().all(|&i| (0..n).contains(&i));
    if labels.index.is_empty()
        || !increasing
        || !in_range
        || labels
            .index
            .iter()
            .zip(&labels.true_label)
            .any(|(&i, &t)| true_labels[i as usize] != t)
    {
        bail!(
            "labels.parquet does not describe this data set's training split (its indices must increase within 0..{n}, and its true labels must be the data set's)"
        );
    }
    let consistent = (0..labels.index.len()).all(|i| {
        let changed = labels.train_label[i] != labels.true_label[i];
        labels.changed[i] == changed && (!changed || labels.chosen[i])
    });
    if !consistent {
        bail!(
            "labels.parquet: `changed` must be `train_label != true_label`, and only chosen examples may change"
        );
    }
    // Standardize per channel with the training set's mean and standard deviation.
    let xf = train_u8.to_kind(Kind::Float) / 255.0;
    let mean = xf.mean_dim([0i64, 2, 3].as_slice(), true, Kind::Float);
    let std = xf
        .std_dim([0i64, 2, 3].as_slice(), false, true)
        .clamp_min(1e-6);
    let norm = |x: &Tensor| ((x.to_kind(Kind::Float) / 255.0 - &mean) / &std).to_device(device);
    let kept = if labels.index.len() as i64 == n {
        train_u8
    } else {
        train_u8.index_select(0, &Tensor::from_slice(&labels.index))
    };
    Ok(TrainData {
        train: Split {
            x: norm(&kept),
            y: Tensor::from_slice(&labels.train_label).to_device(device),
        },
        train_true: Tensor::from_slice(&labels.true_label).to_device(device),
        chosen: Tensor::from_slice(&labels.chosen).to_device(device),
        changed: Tensor::from_slice(&labels.changed).to_device(device),
        test: Split {
            x: norm(&test_u8),
            y: Tensor::from_slice(&test_labels).to_device(device),
        },
        indices: labels.index,
        info,
    })
}
