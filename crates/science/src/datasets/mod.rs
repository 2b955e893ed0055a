//! Readers for image classification data sets in their standard file formats.
//!
//! - IDX (MNIST, Fashion-MNIST), plain or gzip-compressed: [`idx`];
//! - CIFAR-10 / CIFAR-100 binary version: [`cifar`];
//! - PNG and JPEG images, in class folders or from a list: [`images`].
//!
//! Every reader checks magic numbers, dimensions and lengths and reports malformed files
//! as [`DataError`]s naming the file, never by panicking.

pub mod cifar;
pub mod idx;
pub mod images;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A malformed or missing data file: the user's data is at fault, not the code.
#[derive(Debug)]
pub struct DataError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

impl DataError {
    /// An error about `path`.
    pub fn new(path: &Path, message: impl Into<String>) -> DataError {
        DataError {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad data file {}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for DataError {}

/// Images with labels, all of one shape, pixels as bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Channels (1 for gray, 3 for RGB).
    pub channels: usize,
    /// `len * height * width * channels` bytes; channel-major (CHW) for RGB.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes per image.
    pub fn image_size(&self) -> usize {
        self.height * self.width * self.channels
    }
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.pixels[i * s..(i + 1) * s]
    }
}

/// Opens a file, transparently decompressing gzip (detected by its magic bytes).
pub fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read>, DataError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| DataError::new(path, format!("cannot open: {e}")))?;
    let mut magic = [0u8; 2];
    let n = f
        .read(&mut magic)
        .map_err(|e| DataError::new(path, e.to_string()))?;
    let head = std::io::Cursor::new(magic[..n].to_vec());
    let chained = head.chain(f);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

/// Reads a whole (possibly gzipped) file.
pub fn read_all(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::new();
    open_maybe_gz(path)?.read_to_end(&mut out).map_err(|e| {
        DataError::new(
            path,
            format!("cannot read (truncated or corrupt compressed data?): {e}"),
        )
    })?;
    Ok(out)
}
