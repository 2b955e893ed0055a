//! The IDX format of MNIST and Fashion-MNIST.
//!
//! A file starts with two zero bytes, a type code (0x08 = unsigned byte), the number of
//! dimensions, then each dimension as a big-endian u32, then the data.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, ImageSet, open_maybe_gz, read_all};

/// The four files of an MNIST-layout folder, as (images, labels) for train and test.
pub struct IdxFiles {
    /// Training images.
    pub train_images: PathBuf,
    /// Training labels.
    pub train_labels: PathBuf,
    /// Test images.
    pub test_images: PathBuf,
    /// Test labels.
    pub test_labels: PathBuf,
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [
        format!("{stem}.gz"),
        stem.to_string(),
        stem.replacen("-idx", ".idx", 1),
    ] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::new(
        &dir.join(format!("{stem}.gz")),
        format!("missing: expected {stem} or {stem}.gz in {}", dir.display()),
    ))
}

impl IdxFiles {
    /// Locates the standard file names (gzipped or not) in `dir`.
    pub fn locate(dir: &Path) -> Result<IdxFiles, DataError> {
        Ok(IdxFiles {
            train_images: find(dir, "train-images-idx3-ubyte")?,
            train_labels: find(dir, "train-labels-idx1-ubyte")?,
            test_images: find(dir, "t10k-images-idx3-ubyte")?,
            test_labels: find(dir, "t10k-labels-idx1-ubyte")?,
        })
    }

    /// All four paths.
    pub fn all(&self) -> [&Path; 4] {
        [
            &self.train_images,
            &self.train_labels,
            &self.test_images,
            &self.test_labels,
        ]
    }
}

/// Parses an IDX header: returns the dimensions and the header length.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, usize), DataError> {
    if bytes.len() < 4 {
        return Err(DataError::new(
            path,
            format!("too short for an IDX header ({} bytes)", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::new(
            path,
            format!(
                "wrong magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(DataError::new(
            path,
            format!(
                "IDX type code 0x{:02x} is not unsigned byte (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < header {
        return Err(DataError::new(
            path,
            format!("truncated IDX header ({ndim} dimensions)"),
        ));
    }
    let dims = (0..ndim)
        .map(|i| {
            u32::from_be_bytes([
                bytes[4 + 4 * i],
                bytes[5 + 4 * i],
                bytes[6 + 4 * i],
                bytes[7 + 4 * i],
            ]) as usize
        })
        .collect();
    Ok((dims, header))
}

/// Reads and checks just the header of a (possibly gzipped) IDX file.
pub fn read_header(path: &Path) -> Result<Vec<usize>, DataError> {
    let mut head = Vec::with_capacity(16);
    open_maybe_gz(path)?
        .take(16)
        .read_to_end(&mut head)
        .map_err(|e| DataError::new(path, format!("cannot read: {e}")))?;
    let ndim = head.get(3).copied().unwrap_or(0) as usize;
    let need = (4 + 4 * ndim).min(16);
    parse_header(path, &head[..need.min(head.len())]).map(|(d, _)| d)
}

fn read_array(path: &Path, want_ndim: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bytes = read_all(path)?;
    let (dims, header) = parse_header(path, &bytes)?;
    if dims.len() != want_ndim {
        return Err(DataError::new(
            path,
            format!(
                "expected {want_ndim} dimensions, the header says {}",
                dims.len()
            ),
        ));
    }
    let n: usize = dims.iter().product();
    let have = bytes.len() - header;
    if have != n {
        return Err(DataError::new(
            path,
            format!(
                "the header promises {n} bytes of data ({dims:?}) but the file holds {have}: truncated or padded"
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Reads an images file and its labels file into an [`ImageSet`].
pub fn read_set(images: &Path, labels: &Path) -> Result<ImageSet, DataError> {
    let (idims, pixels) = read_array(images, 3)?;
    let (ldims, labels_data) = read_array(labels, 1)?;
    if idims[0] != ldims[0] {
        return Err(DataError::new(
            labels,
            format!(
                "{} labels for {} images in {}",
                ldims[0],
                idims[0],
                images.display()
            ),
        ));
    }
    Ok(ImageSet {
        height: idims[1],
        width: idims[2],
        channels: 1,
        pixels,
        labels: labels_data,
    })
}

/// Writes an IDX file of unsigned bytes (used by tests and tools that make small data sets).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&(*d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("i");
        let lab = dir.path().join("l");
        let pixels: Vec<u8> = (0..2 * 3 * 4).map(|x| x as u8).collect();
        std::fs::write(&img, encode(&[2, 3, 4], &pixels)).unwrap();
        std::fs::write(&lab, encode(&[2], &[7, 1])).unwrap();
        let set = read_set(&img, &lab).unwrap();
        assert_eq!((set.len(), set.height, set.width), (2, 3, 4));
        assert_eq!(set.image(1), &pixels[12..24]);
        assert_eq!(set.labels, vec![7, 1]);

        std::fs::write(&img, &encode(&[2, 3, 4], &pixels)[..20]).unwrap();
        let e = read_set(&img, &lab).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");

        std::fs::write(&img, [0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0]).unwrap();
        let e = read_set(&img, &lab).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");
    }
}
