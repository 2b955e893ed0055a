//! The binary version of CIFAR-10 and CIFAR-100.
//!
//! CIFAR-10 (`cifar-10-batches-bin/`): `data_batch_1.bin` .. `data_batch_5.bin` and
//! `test_batch.bin`, each record 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B).
//! CIFAR-100 (`cifar-100-binary/`): `train.bin` and `test.bin`, each record a coarse and a
//! fine label byte + 3072 pixel bytes; we use the fine label.

use std::path::{Path, PathBuf};

use super::{DataError, ImageSet, read_all};

/// Pixel bytes of one 32x32 RGB image.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which CIFAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// 10 classes.
    Cifar10,
    /// 100 fine classes.
    Cifar100,
}

impl Variant {
    /// Label bytes before each image.
    pub fn label_bytes(self) -> usize {
        match self {
            Variant::Cifar10 => 1,
            Variant::Cifar100 => 2,
        }
    }
    /// Number of classes.
    pub fn classes(self) -> usize {
        match self {
            Variant::Cifar10 => 10,
            Variant::Cifar100 => 100,
        }
    }
    /// The train and test files in `dir`.
    pub fn files(self, dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
        match self {
            Variant::Cifar10 => (
                (1..=5)
                    .map(|i| dir.join(format!("data_batch_{i}.bin")))
                    .collect(),
                vec![dir.join("test_batch.bin")],
            ),
            Variant::Cifar100 => (vec![dir.join("train.bin")], vec![dir.join("test.bin")]),
        }
    }
}

/// Checks that a file exists and its length is a whole number of records.
pub fn check_file(path: &Path, variant: Variant) -> Result<(), DataError> {
    let meta =
        std::fs::metadata(path).map_err(|e| DataError::new(path, format!("cannot open: {e}")))?;
    let record = variant.label_bytes() + IMAGE_BYTES;
    if meta.len() == 0 || meta.len() % record as u64 != 0 {
        return Err(DataError::new(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte records: truncated or not CIFAR binary",
                meta.len()
            ),
        ));
    }
    Ok(())
}

/// Reads batch files into one [`ImageSet`] (CHW pixel order).
pub fn read_set(paths: &[PathBuf], variant: Variant) -> Result<ImageSet, DataError> {
    let lb = variant.label_bytes();
    let record = lb + IMAGE_BYTES;
    let mut set = ImageSet {
        height: 32,
        width: 32,
        channels: 3,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    for p in paths {
        check_file(p, variant)?;
        let bytes = read_all(p)?;
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[lb - 1];
            if label as usize >= variant.classes() {
                return Err(DataError::new(
                    p,
                    format!(
                        "record {i} has label {label}, beyond {} classes",
                        variant.classes()
                    ),
                ));
            }
            set.labels.push(label);
            set.pixels.extend_from_slice(&rec[lb..]);
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_records_and_rejects_partial_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.bin");
        let mut bytes = Vec::new();
        for (coarse, fine) in [(1u8, 42u8), (0, 99)] {
            bytes.push(coarse);
            bytes.push(fine);
            bytes.extend(std::iter::repeat_n(fine, IMAGE_BYTES));
        }
        std::fs::write(&p, &bytes).unwrap();
        let set = read_set(std::slice::from_ref(&p), Variant::Cifar100).unwrap();
        assert_eq!(set.labels, vec![42, 99]);
        assert_eq!(set.image(1)[0], 99);
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = read_set(&[p], Variant::Cifar100).unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
    }
}
