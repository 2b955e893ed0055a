//! `dataset`: loads a real image data set into Parquet, optionally a class-balanced subset.
//!
//! Output: `train.parquet` and `test.parquet` (columns `index`, `source_index`, `label`,
//! `image` = fixed-size list of u8) and `dataset.json` (shape, classes, sizes).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::datasets::{DataError, ImageSet, cifar, idx};
use crate::stage::{
    BadData, CheckEnv, DeclaredFile, Inputs, ParamError, ParamSpec, ParamType, Params, RunContext,
    StageKind,
};
use crate::table::write_parquet;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

const SOURCES: &[&str] = &["fashion-mnist", "idx", "cifar10", "cifar100"];

/// The `dataset` stage kind.
pub struct Dataset;

const PARAMS: &[ParamSpec] = &[
    ParamSpec::required(
        "source",
        ParamType::Enum(SOURCES),
        "which data set: fashion-mnist, idx (MNIST layout), cifar10, cifar100",
    ),
    ParamSpec::optional(
        "path",
        ParamType::Str,
        "folder with the files (fashion-mnist defaults to /usr/share/datasets/fashion-mnist)",
    ),
    ParamSpec::optional(
        "train_size",
        ParamType::Int,
        "class-balanced subset size of the training split (default: all)",
    ),
    ParamSpec::optional(
        "test_size",
        ParamType::Int,
        "class-balanced subset size of the test split (default: all)",
    ),
    ParamSpec::default("seed", ParamType::Int, "0", "seed of the subset draw"),
];

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

fn folder(params: &Params, base: &Path) -> PathBuf {
    match params.str("path") {
        Some(p) => base.join(p),
        None => PathBuf::from(FASHION_MNIST_DIR),
    }
}

fn variant(source: &str) -> Option<cifar::Variant> {
    match source {
        "cifar10" => Some(cifar::Variant::Cifar10),
        "cifar100" => Some(cifar::Variant::Cifar100),
        _ => None,
    }
}

/// The data files a dataset instance reads (checked to exist and look right).
fn data_files(params: &Params, base: &Path) -> Result<Vec<PathBuf>, DataError> {
    let source = params.str("source").unwrap_or_default();
    let dir = folder(params, base);
    match variant(source) {
        Some(v) => {
            let (train, test) = v.files(&dir);
            let all: Vec<PathBuf> = train.into_iter().chain(test).collect();
            for f in &all {
                cifar::check_file(f, v)?;
            }
            Ok(all)
        }
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

fn split_batch(set: &ImageSet, chosen: &[usize]) -> Result<RecordBatch> {
    let size = set.image_size();
    let mut pixels = Vec::with_capacity(chosen.len() * size);
    for &i in chosen {
        pixels.extend_from_slice(set.image(i));
    }
    let item = Arc::new(Field::new("item", DataType::UInt8, false));
    let image = FixedSizeListArray::try_new(
        item.clone(),
        size as i32,
        Arc::new(UInt8Array::from(pixels)),
        None,
    )?;
    let schema = Schema::new(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("source_index", DataType::Int64, false),
        Field::new("label", DataType::Int64, false),
        Field::new("image", DataType::FixedSizeList(item, size as i32), false),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..chosen.len() as i64)),
        Arc::new(Int64Array::from_iter_values(
            chosen.iter().map(|&i| i as i64),
        )),
        Arc::new(Int64Array::from_iter_values(
            chosen.iter().map(|&i| set.labels[i] as i64),
        )),
        Arc::new(image),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), cols)?)
}

fn bad(e: DataError) -> anyhow::Error {
    anyhow::Error::new(BadData(e.to_string()))
}

impl StageKind for Dataset {
    fn name(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "loads Fashion-MNIST, MNIST-layout IDX or CIFAR-10/100 into Parquet, optionally a class-balanced subset"
    }
    fn params(&self) -> &'static [ParamSpec] {
        PARAMS
    }
    fn inputs(&self) -> Inputs {
        Inputs::Slots(&[])
    }
    fn check(&self, params: &Params, env: &CheckEnv<'_>) -> Result<(), ParamError> {
        let source = params.str("source").unwrap_or_default();
        if source != "fashion-mnist" && params.str("path").is_none() {
            return Err(ParamError::stage(format!(
                "source \"{source}\" needs `path`, the folder with its files"
            )));
        }
        for p in ["train_size", "test_size"] {
            if params.int(p).is_some_and(|n| n < 1) {
                return Err(ParamError::param(
                    if p == "train_size" {
                        "train_size"
                    } else {
                        "test_size"
                    },
                    "must be at least 1",
                ));
            }
        }
        data_files(params, env.base_dir).map_err(|e| ParamError::param("path", e.to_string()))?;
        Ok(())
    }
    fn files(&self, params: &Params, env: &CheckEnv<'_>) -> Vec<DeclaredFile> {
        data_files(params, env.base_dir)
            .unwrap_or_default()
            .into_iter()
            .map(|p| DeclaredFile {
                name: p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: p,
            })
            .collect()
    }
    fn run(&self, ctx: &mut RunContext<'_>) -> Result<()> {
        let source = ctx.params.str("source").unwrap_or_default().to_string();
        let dir = folder(ctx.params, ctx.base_dir);
        let (train, test, classes, names) = match variant(&source) {
            Some(v) => {
                let (tr, te) = v.files(&dir);
                let train = cifar::read_set(&tr, v).map_err(bad)?;
                let test = cifar::read_set(&te, v).map_err(bad)?;
                let names = match v {
                    cifar::Variant::Cifar10 => {
                        CIFAR10_NAMES.iter().map(|s| s.to_string()).collect()
                    }
                    cifar::Variant::Cifar100 => {
                        std::fs::read_to_string(dir.join("fine_label_names.txt"))
                            .map(|t| {
                                t.lines()
                                    .filter(|l| !l.trim().is_empty())
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_else(|_| (0..100).map(|i| i.to_string()).collect())
                    }
                };
                (train, test, v.classes(), names)
            }
            None => {
                let f = idx::IdxFiles::locate(&dir).map_err(bad)?;
                let train = idx::read_set(&f.train_images, &f.train_labels).map_err(bad)?;
                let test = idx::read_set(&f.test_images, &f.test_labels).map_err(bad)?;
                let classes = train
                    .labels
                    .iter()
                    .chain(&test.labels)
                    .copied()
                    .max()
                    .map_or(0, |m| m as usize + 1);
                let names = if source == "fashion-mnist" && classes == 10 {
                    FASHION_NAMES.iter().map(|s| s.to_string()).collect()
                } else {
                    (0..classes).map(|i| i.to_string()).collect()
                };
                (train, test, classes, names)
            }
        };
        if test.image_size() != train.image_size() {
            return Err(anyhow::Error::new(BadData(format!(
                "train and test images differ in shape in {}",
                dir.display()
            ))));
        }
        let seed = ctx.params.int("seed").unwrap_or(0) as u64;
        let mut sizes = [0usize; 2];
        for (i, (set, name, param)) in [
            (&train, "train", "train_size"),
            (&test, "test", "test_size"),
        ]
        .into_iter()
        .enumerate()
        {
            let chosen = match ctx.params.int(param) {
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
            write_parquet(
                &ctx.out.join(format!("{name}.parquet")),
                &split_batch(set, &chosen)?,
            )?;
            sizes[i] = chosen.len();
            writeln!(
                ctx.log,
                "{name}: {} of {} examples",
                chosen.len(),
                set.len()
            )?;
        }
        let info = DatasetInfo {
            source,
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
