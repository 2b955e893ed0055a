//! `dataset`: loads a real image data set into Parquet, optionally a class-balanced subset.
//!
//! Output: `train.parquet` and `test.parquet` (columns `index`, `source_index`, `label`,
//! `image` = fixed-size list of u8) and `dataset.json` (shape, classes, sizes).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::stages::slots;
use crate::tables::Images;
use pipe_engine::stage::{BadData, CheckEnv, DeclaredFile, Inputs, Kind, ParamError, RunContext};
use pipe_engine::table::{FixedRows, Table};
use pipe_science::datasets::{DataError, ImageSet, cifar, idx, images};

/// The kind's name, as written `kind = "dataset"`.
pub const NAME: &str = slots::names::DATASET;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

pipe_engine::param_enum! {
    /// The data sets `dataset` reads.
    pub enum DataSource {
        FashionMnist = "fashion-mnist",
        Idx = "idx",
        Cifar10 = "cifar10",
        Cifar100 = "cifar100",
        /// `path/train/CLASS/*.png|jpg` and `path/test/CLASS/...`.
        Folder = "folder",
        /// `path/train.parquet` and `path/test.parquet` with `image` and `label` columns.
        Parquet = "parquet",
    }
}

pipe_engine::stage_params! {
    /// The parameters of `dataset`.
    pub struct DatasetParams {
        source: DataSource, required, "which data set: fashion-mnist, idx (MNIST layout), cifar10, cifar100, folder (a folder per class), parquet";
        path: Option<String>, optional, "folder with the files (fashion-mnist defaults to /usr/share/datasets/fashion-mnist)";
        train_size: Option<i64>, optional, "class-balanced subset size of the training split (default: all)";
        test_size: Option<i64>, optional, "class-balanced subset size of the test split (default: all)";
        seed: i64, default "0", "seed of the subset draw";
        shape: Option<Vec<i64>>, optional, "parquet with raw pixels: [channels, height, width] of the `image` lists (CHW order)";
    }
}

/// The `dataset` stage kind.
pub struct Dataset;

const FASHION_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
const CIFAR10_NAMES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// What `dataset.json` says about a data set artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The `source` parameter.
    pub source: String,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channels.
    pub channels: usize,
    /// Pixel order of the `image` column: `HW` (gray) or `CHW`.
    pub layout: String,
    /// Number of classes.
    pub classes: usize,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// Rows of `train.parquet`.
    pub train_size: usize,
    /// Rows of `test.parquet`.
    pub test_size: usize,
}

fn folder(params: &DatasetParams, base: &Path) -> PathBuf {
    match &params.path {
        Some(p) => base.join(p),
        None => PathBuf::from(FASHION_MNIST_DIR),
    }
}

fn variant(source: DataSource) -> Option<cifar::Variant> {
    match source {
        DataSource::Cifar10 => Some(cifar::Variant::Cifar10),
        DataSource::Cifar100 => Some(cifar::Variant::Cifar100),
        _ => None,
    }
}

/// The Parquet files of a `parquet` source.
fn parquet_files(dir: &Path) -> [PathBuf; 2] {
    [dir.join(Images::TRAIN_FILE), dir.join(Images::TEST_FILE)]
}

/// Reads one split of a `parquet` source: `label` (integers 0..=255) and `image`, either
/// encoded PNG/JPEG bytes or lists of `shape` = [channels, height, width] raw bytes (CHW).
fn read_parquet_split(path: &Path, shape: Option<&[i64]>) -> Result<ImageSet, DataError> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{DataType, UInt8Type};
    let batch = pipe_engine::table::read_parquet(path)
        .map_err(|e| DataError::new(path, format!("{e:#}")))?;
    let column = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| DataError::new(path, format!("has no `{name}` column")))
    };
    let labels = arrow::compute::cast(column("label")?, &DataType::Int64)
        .map_err(|_| DataError::new(path, "`label` must be an integer column"))?;
    let labels = labels.as_primitive::<arrow::datatypes::Int64Type>();
    let mut label_bytes = Vec::with_capacity(labels.len());
    for (row, l) in labels.iter().enumerate() {
        match l {
            Some(l @ 0..=255) => label_bytes.push(l as u8),
            other => {
                return Err(DataError::new(
                    path,
                    format!("row {row}: label {other:?} is not in 0..=255"),
                ));
            }
        }
    }
    let image = column("image")?;
    let rows = image.len();
    match image.data_type() {
        DataType::Binary | DataType::LargeBinary => {
            let bytes: Vec<Vec<u8>> = match image.data_type() {
                DataType::Binary => image
                    .as_binary::<i32>()
                    .iter()
                    .map(|b| b.unwrap_or_default().to_vec())
                    .collect(),
                _ => image
                    .as_binary::<i64>()
                    .iter()
                    .map(|b| b.unwrap_or_default().to_vec())
                    .collect(),
            };
            images::decode_set(bytes.into_iter().zip(label_bytes).enumerate().map(
                |(row, (b, l))| {
                    (
                        b,
                        l,
                        PathBuf::from(format!("{}, row {row}", path.display())),
                    )
                },
            ))
        }
        DataType::FixedSizeList(_, _) | DataType::List(_) | DataType::LargeList(_) => {
            let Some(&[c, h, w]) = shape else {
                return Err(DataError::new(
                    path,
                    "`image` holds raw pixels: give the dataset `shape = [channels, height, width]`",
                ));
            };
            let per = (c * h * w) as usize;
            let flat = arrow::compute::cast(
                image,
                &DataType::List(std::sync::Arc::new(
                    arrow::datatypes::Field::new_list_field(DataType::UInt8, true),
                )),
            )
            .map_err(|_| DataError::new(path, "`image` lists must hold bytes (0..=255)"))?;
            let lists = flat.as_list::<i32>();
            let mut pixels = Vec::with_capacity(rows * per);
            for row in 0..rows {
                let v = lists.value(row);
                let v = v.as_primitive::<UInt8Type>();
                if v.len() != per {
                    return Err(DataError::new(
                        path,
                        format!(
                            "row {row}: {} pixel values, shape {c}x{h}x{w} needs {per}",
                            v.len()
                        ),
                    ));
                }
                pixels.extend(v.values().iter().copied());
            }
            Ok(ImageSet {
                height: h as usize,
                width: w as usize,
                channels: c as usize,
                pixels,
                labels: label_bytes,
            })
        }
        other => Err(DataError::new(
            path,
            format!("`image` is {other}; expected encoded PNG/JPEG bytes or lists of bytes"),
        )),
    }
}

/// Whether nothing is at `path` (data not downloaded yet, as opposed to bad data).
fn is_missing(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The data files of a data set, checked where they exist (a missing one is listed all the
/// same, so that planning goes on and says it is missing).
fn data_files(params: &DatasetParams, base: &Path) -> Result<Vec<PathBuf>, DataError> {
    let dir = folder(params, base);
    if params.source == DataSource::Folder {
        let classes = images::class_names(&dir.join("train"))?;
        let mut all = Vec::new();
        for split in ["train", "test"] {
            all.extend(
                images::folder_files(&dir.join(split), &classes)?
                    .into_iter()
                    .map(|(f, _)| f),
            );
        }
        return Ok(all);
    }
    if params.source == DataSource::Parquet {
        let files = parquet_files(&dir);
        for f in files.iter().filter(|f| !is_missing(f)) {
            if !f.is_file() {
                return Err(DataError::new(f, "cannot open: no such file"));
            }
        }
        return Ok(files.to_vec());
    }
    match variant(params.source) {
        Some(v) => {
            let (train, test) = v.files(&dir);
            let all: Vec<PathBuf> = train.into_iter().chain(test).collect();
            // A file not there yet is planned all the same (`Plan` says it is missing).
            for f in all.iter().filter(|f| !is_missing(f)) {
                cifar::check_file(f, v)?;
            }
            Ok(all)
        }
        None if is_missing(&dir) => Ok([
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ]
        .iter()
        .map(|n| dir.join(n))
        .collect()),
        None => {
            let files = idx::IdxFiles::locate(&dir)?;
            for (p, ndim) in files.all().into_iter().zip([3, 1, 3, 1]) {
                let dims = idx::read_header(p)?;
                if dims.len() != ndim {
                    return Err(DataError::new(
                        p,
                        format!("expected {ndim} dimensions, the header says {}", dims.len()),
                    ));
                }
            }
            Ok(files.all().iter().map(|p| p.to_path_buf()).collect())
        }
    }
}

/// Picks a class-balanced, seeded subset of `size` examples; indices in ascending order.
pub fn balanced_subset(
    labels: &[u8],
    classes: usize,
    size: usize,
    seed: u64,
    what: &str,
) -> Result<Vec<usize>, String> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(v) = by_class.get_mut(l as usize) {
            v.push(i);
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(size);
    for (c, members) in by_class.iter_mut().enumerate() {
        let want = size / classes + usize::from(c < size % classes);
        if members.len() < want {
            return Err(format!(
                "{what} = {size} needs {want} examples of class {c}, which has only {}",
                members.len()
            ));
        }
        members.shuffle(&mut rng);
        out.extend_from_slice(&members[..want]);
    }
    out.sort_unstable();
    Ok(out)
}

/// The chosen examples of a split as an [`Images`] table.
fn split_table(set: &ImageSet, chosen: &[usize]) -> Images {
    let size = set.image_size();
    let mut pixels = Vec::with_capacity(chosen.len() * size);
    for &i in chosen {
        pixels.extend_from_slice(set.image(i));
    }
    Images {
        index: (0..chosen.len() as i64).collect(),
        source_index: chosen.iter().map(|&i| i as i64).collect(),
        label: chosen.iter().map(|&i| set.labels[i] as i64).collect(),
        image: FixedRows {
            width: size,
            values: pixels,
        },
    }
}

/// Reads both splits of a data set: (train, test, classes, class names).
fn read_sets(p: &DatasetParams, dir: &Path) -> Result<(ImageSet, ImageSet, usize, Vec<String>)> {
    let count = |a: &ImageSet, b: &ImageSet| {
        a.labels
            .iter()
            .chain(&b.labels)
            .copied()
            .max()
            .map_or(0, |m| m as usize + 1)
    };
    match p.source {
        DataSource::Folder => {
            let names = images::class_names(&dir.join("train")).map_err(bad)?;
            let train = images::read_folder(&dir.join("train"), &names).map_err(bad)?;
            let test = images::read_folder(&dir.join("test"), &names).map_err(bad)?;
            return Ok((train, test, names.len(), names));
        }
        DataSource::Parquet => {
            let [tr, te] = parquet_files(dir);
            let train = read_parquet_split(&tr, p.shape.as_deref()).map_err(bad)?;
            let test = read_parquet_split(&te, p.shape.as_deref()).map_err(bad)?;
            let classes = count(&train, &test);
            return Ok((
                train,
                test,
                classes,
                (0..classes).map(|i| i.to_string()).collect(),
            ));
        }
        _ => {}
    }
    if let Some(v) = variant(p.source) {
        let (tr, te) = v.files(dir);
        let train = cifar::read_set(&tr, v).map_err(bad)?;
        let test = cifar::read_set(&te, v).map_err(bad)?;
        let names = match v {
            cifar::Variant::Cifar10 => CIFAR10_NAMES.iter().map(|s| s.to_string()).collect(),
            cifar::Variant::Cifar100 => std::fs::read_to_string(dir.join("fine_label_names.txt"))
                .map(|t| {
                    t.lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_else(|_| (0..100).map(|i| i.to_string()).collect()),
        };
        return Ok((train, test, v.classes(), names));
    }
    let f = idx::IdxFiles::locate(dir).map_err(bad)?;
    let train = idx::read_set(&f.train_images, &f.train_labels).map_err(bad)?;
    let test = idx::read_set(&f.test_images, &f.test_labels).map_err(bad)?;
    let classes = count(&train, &test);
    let names = if p.source == DataSource::FashionMnist && classes == 10 {
        FASHION_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..classes).map(|i| i.to_string()).collect()
    };
    Ok((train, test, classes, names))
}

fn bad(e: DataError) -> anyhow::Error {
    anyhow::Error::new(BadData(e.to_string()))
}

impl Kind for Dataset {
    type Params = DatasetParams;
    const NAME: &'static str = NAME;
    const VERSION: u32 = 1;
    const ABOUT: &'static str = "loads Fashion-MNIST, MNIST-layout IDX, CIFAR-10/100, image folders or Parquet images into Parquet, optionally a class-balanced subset";

    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[])
    }
    fn check(&self, p: &DatasetParams, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        if p.source != DataSource::FashionMnist && p.path.is_none() {
            return Err(ParamError::stage(format!(
                "source \"{}\" needs `path`, the folder with its files",
                p.source.as_str()
            )));
        }
        if let Some(shape) = &p.shape
            && (shape.len() != 3 || shape.iter().any(|&d| d < 1))
        {
            return Err(ParamError::param(
                DatasetParams::shape,
                "must be [channels, height, width], each at least 1",
            ));
        }
        for (name, size) in [("train_size", p.train_size), ("test_size", p.test_size)] {
            if size.is_some_and(|n| n < 1) {
                return Err(ParamError::param(name, "must be at least 1"));
            }
        }
        data_files(p, env.base_dir)
            .map_err(|e| ParamError::param(DatasetParams::path, e.to_string()))?;
        Ok(())
    }
    fn files(&self, p: &DatasetParams, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        data_files(p, env.base_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|p| DeclaredFile {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: p,
                data: true,
                meta: None,
            })
            .collect()
    }
    fn run(&self, p: &DatasetParams, ctx: &mut RunContext<'_>) -> Result<()> {
        let dir = folder(p, ctx.base_dir);
        let (train, test, classes, names) = read_sets(p, &dir)?;
        if test.image_size() != train.image_size() {
            return Err(anyhow::Error::new(BadData(format!(
                "train and test images differ in shape in {}",
                dir.display()
            ))));
        }
        let seed = p.seed as u64;
        let mut sizes = [0usize; 2];
        for (i, (set, name, param, size)) in [
            (&train, "train", "train_size", p.train_size),
            (&test, "test", "test_size", p.test_size),
        ]
        .into_iter()
        .enumerate()
        {
            let chosen = match size {
                Some(n) => balanced_subset(
                    &set.labels,
                    classes,
                    n as usize,
                    seed.wrapping_add(i as u64),
                    param,
                )
                .map_err(|m| anyhow::Error::new(BadData(format!("{m} (in {})", dir.display()))))?,
                None => (0..set.len()).collect(),
            };
            split_table(set, &chosen).write(&ctx.out.join(format!("{name}.parquet")))?;
            sizes[i] = chosen.len();
            writeln!(
                ctx.log,
                "{name}: {} of {} examples",
                chosen.len(),
                set.len()
            )?;
        }
        let info = DatasetInfo {
            source: p.source.as_str().to_string(),
            height: train.height,
            width: train.width,
            channels: train.channels,
            layout: if train.channels == 1 {
                "HW".into()
            } else {
                "CHW".into()
            },
            classes,
            class_names: names,
            train_size: sizes[0],
            test_size: sizes[1],
        };
        std::fs::write(
            ctx.out.join("dataset.json"),
            serde_json::to_vec_pretty(&info)?,
        )
        .context("writing dataset.json")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_is_balanced_seeded_and_sorted() {
        let labels: Vec<u8> = (0..100).map(|i| (i % 3) as u8).collect();
        let a = balanced_subset(&labels, 3, 10, 7, "train_size").unwrap();
        assert_eq!(a.len(), 10);
        let counts: Vec<usize> = (0..3)
            .map(|c| a.iter().filter(|&&i| labels[i] == c).count())
            .collect();
        assert_eq!(counts, vec![4, 3, 3]);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, balanced_subset(&labels, 3, 10, 7, "train_size").unwrap());
        assert_ne!(a, balanced_subset(&labels, 3, 10, 8, "train_size").unwrap());
        let e = balanced_subset(&labels, 3, 200, 7, "train_size").unwrap_err();
        assert!(e.contains("class 0"), "{e}");
    }
}
