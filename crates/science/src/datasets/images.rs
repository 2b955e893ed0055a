//! Encoded images (PNG, JPEG) into an [`ImageSet`]: an image-folder layout (one folder per
//! class) and lists of encoded images (e.g. from a Parquet column).
//!
//! Every image of a set must have the same height and width. A set is gray (1 channel)
//! when every image is gray, else RGB (3 channels, CHW; gray images are repeated into the
//! three channels, alpha is dropped).

use std::path::{Path, PathBuf};

use image::{DynamicImage, GenericImageView};

use super::{DataError, ImageSet};

/// File extensions read as images (lower case).
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// One decoded image: channels (1 or 3), height, width and CHW bytes.
struct Decoded {
    channels: usize,
    height: usize,
    width: usize,
    pixels: Vec<u8>,
}

/// Decodes PNG or JPEG bytes; `what` names the image in errors.
fn decode(bytes: &[u8], what: &Path) -> Result<Decoded, DataError> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| DataError::new(what, format!("not a readable PNG or JPEG image: {e}")))?;
    let (w, h) = img.dimensions();
    let (height, width) = (h as usize, w as usize);
    let color = img.color().has_color();
    Ok(if color {
        let rgb = img.to_rgb8();
        let hwc = rgb.as_raw();
        let mut pixels = vec![0u8; 3 * height * width];
        for (i, px) in hwc.chunks_exact(3).enumerate() {
            for c in 0..3 {
                pixels[c * height * width + i] = px[c];
            }
        }
        Decoded {
            channels: 3,
            height,
            width,
            pixels,
        }
    } else {
        Decoded {
            channels: 1,
            height,
            width,
            pixels: DynamicImage::ImageLuma8(img.to_luma8()).into_bytes(),
        }
    })
}

/// Builds an [`ImageSet`] from encoded images with their labels; the paths name each image
/// in errors (a file, or `FILE, row N`).
pub fn decode_set(
    images: impl IntoIterator<Item = (Vec<u8>, u8, PathBuf)>,
) -> Result<ImageSet, DataError> {
    let mut set = ImageSet {
        height: 0,
        width: 0,
        channels: 1,
        pixels: Vec::new(),
        labels: Vec::new(),
    };
    let mut first: Option<PathBuf> = None;
    for (bytes, label, what) in images {
        let d = decode(&bytes, &what)?;
        match &first {
            None => {
                (set.height, set.width) = (d.height, d.width);
                first = Some(what.clone());
            }
            Some(f) if (d.height, d.width) != (set.height, set.width) => {
                return Err(DataError::new(
                    &what,
                    format!(
                        "is {}x{}, but {} is {}x{}: every image of a data set must have one size",
                        d.height,
                        d.width,
                        f.display(),
                        set.height,
                        set.width
                    ),
                ));
            }
            Some(_) => {}
        }
        let plane = set.height * set.width;
        if d.channels == 3 && set.channels == 1 {
            // The first colour image: repeat the gray ones read so far into three planes.
            let gray = std::mem::take(&mut set.pixels);
            set.pixels = gray
                .chunks_exact(plane)
                .flat_map(|p| p.iter().chain(p).chain(p).copied().collect::<Vec<u8>>())
                .collect();
            set.channels = 3;
        }
        if d.channels == 1 && set.channels == 3 {
            for _ in 0..3 {
                set.pixels.extend_from_slice(&d.pixels);
            }
        } else {
            set.pixels.extend_from_slice(&d.pixels);
        }
        set.labels.push(label);
    }
    Ok(set)
}

/// The class folders of an image-folder split (`dir/CLASS/...`), sorted by name.
pub fn class_names(dir: &Path) -> Result<Vec<String>, DataError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| DataError::new(dir, format!("cannot list: {e}")))?;
    let mut names: Vec<String> = Vec::new();
    for e in entries {
        let e = e.map_err(|e| DataError::new(dir, e.to_string()))?;
        if e.path().is_dir() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    if names.is_empty() {
        return Err(DataError::new(
            dir,
            "holds no class folders (expected one folder of images per class)",
        ));
    }
    if names.len() > 256 {
        return Err(DataError::new(
            dir,
            format!(
                "holds {} class folders; at most 256 are supported",
                names.len()
            ),
        ));
    }
    Ok(names)
}

/// The image files of an image-folder split with their labels (the position of their
/// folder in `classes`), in class then file-name order. A class folder `classes` lacks is
/// an error; so is a split without images.
pub fn folder_files(dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, u8)>, DataError> {
    let mut out = Vec::new();
    for name in class_names(dir)? {
        let Some(label) = classes.iter().position(|c| *c == name) else {
            return Err(DataError::new(
                &dir.join(&name),
                format!(
                    "is a class the training split lacks; its classes: {}",
                    classes.join(", ")
                ),
            ));
        };
        let class_dir = dir.join(&name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class_dir)
            .map_err(|e| DataError::new(&class_dir, format!("cannot list: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (f, label as u8)));
    }
    if out.is_empty() {
        return Err(DataError::new(dir, "holds no PNG or JPEG images"));
    }
    Ok(out)
}

/// Reads an image-folder split (see [`folder_files`]).
pub fn read_folder(dir: &Path, classes: &[String]) -> Result<ImageSet, DataError> {
    let mut encoded = Vec::new();
    for (f, label) in folder_files(dir, classes)? {
        let bytes =
            std::fs::read(&f).map_err(|e| DataError::new(&f, format!("cannot read: {e}")))?;
        encoded.push((bytes, label, f));
    }
    decode_set(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn folders_decode_to_chw_with_sorted_classes() {
        let dir = tempfile::tempdir().unwrap();
        let split = dir.path().join("train");
        for (class, value) in [("cat", 10u8), ("ant", 200u8)] {
            std::fs::create_dir_all(split.join(class)).unwrap();
            let gray =
                image::GrayImage::from_fn(3, 2, |x, y| image::Luma([value + (x + 3 * y) as u8]));
            std::fs::write(
                split.join(class).join("a.png"),
                png(DynamicImage::ImageLuma8(gray)),
            )
            .unwrap();
        }
        // A colour JPEG-free case: one RGB PNG in `cat` makes the set RGB.
        let rgb = image::RgbImage::from_fn(3, 2, |x, _| image::Rgb([1, 2, 3 + x as u8]));
        std::fs::write(
            split.join("cat").join("b.png"),
            png(DynamicImage::ImageRgb8(rgb)),
        )
        .unwrap();
        let classes = class_names(&split).unwrap();
        assert_eq!(classes, ["ant", "cat"]);
        let set = read_folder(&split, &classes).unwrap();
        assert_eq!(
            (set.channels, set.height, set.width, set.len()),
            (3, 2, 3, 3)
        );
        assert_eq!(set.labels, [0, 1, 1]);
        // ant/a.png: gray 200..205 repeated into R, G and B planes.
        let ant: Vec<u8> = (200..206).collect();
        assert_eq!(&set.image(0)[..6], &ant[..]);
        assert_eq!(&set.image(0)[6..12], &ant[..]);
        // cat/b.png: planes R = 1, G = 2, B = 3 + x.
        assert_eq!(
            set.image(2),
            &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 4, 5, 3, 4, 5]
        );
        // A test split with an unknown class, or an image of another size, is refused.
        let test = dir.path().join("test");
        std::fs::create_dir_all(test.join("dog")).unwrap();
        let e = folder_files(&test, &classes).unwrap_err().to_string();
        assert!(e.contains("dog") && e.contains("ant, cat"), "{e}");
        let big = image::GrayImage::new(4, 4);
        std::fs::write(
            split.join("ant").join("c.png"),
            png(DynamicImage::ImageLuma8(big)),
        )
        .unwrap();
        let e = read_folder(&split, &classes).unwrap_err().to_string();
        assert!(
            e.contains("c.png") && e.contains("is 4x4") && e.contains("2x3"),
            "{e}"
        );
        std::fs::write(split.join("ant").join("c.png"), b"not an image").unwrap();
        let e = read_folder(&split, &classes).unwrap_err().to_string();
        assert!(
            e.contains("c.png") && e.contains("not a readable PNG or JPEG"),
            "{e}"
        );
    }
}
