//! The image-folder and Parquet data-set sources, on generated PNG files, through training
//! a small CNN on images of a size no shipped data set has.

use std::path::Path;

use crate::common::*;
use serde_json::Value as Json;

/// Pixel (channel c, row y, column x) of image `i` of class `k`: a formula the checks
/// below recompute.
fn pixel(k: u32, i: u32, c: u32, y: u32, x: u32) -> u8 {
    ((k * 100 + i * 10 + c * 3 + y * 7 + x) % 256) as u8
}

/// Writes `dir/SPLIT/CLASS/i.png` (RGB, 6 rows x 8 columns), `n` per class.
fn write_folder(dir: &Path, n: u32) {
    for (split, count) in [("train", n), ("test", 2)] {
        for (k, class) in ["ant", "cat"].iter().enumerate() {
            let d = dir.join(split).join(class);
            std::fs::create_dir_all(&d).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(8, 6, |x, y| {
                    image::Rgb([0, 1, 2].map(|c| pixel(k as u32, i, c, y, x)))
                });
                img.save(d.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

fn artifact(p: &Project, r: &Json, stage: &str) -> std::path::PathBuf {
    p.cache()
        .join("artifacts")
        .join(of_stage(r, "executed", stage)[0]["key"].as_str().unwrap())
}

#[test]
fn image_folders_and_parquet_images_load_and_train() {
    let p = Project::new();
    write_folder(&p.path("imgs"), 10);
    // The same images as Parquet: encoded PNG bytes, and raw CHW lists with a shape.
    python(&format!(
        "import json, pyarrow as pa, pyarrow.parquet as pq, os\n\
         os.makedirs('{d}-png', exist_ok=True)\n\
         for split in ['train', 'test']:\n\
         \x20   rows = [(open(os.path.join(r, f), 'rb').read(), ['ant', 'cat'].index(os.path.basename(r))) \
                  for r, _, fs in sorted(os.walk('{d}/' + split)) for f in sorted(fs, key=lambda f: int(f[:-4]))]\n\
         \x20   pq.write_table(pa.table({{'image': [b for b, _ in rows], 'label': pa.array([l for _, l in rows], pa.int32())}}), '{d}-png/' + split + '.parquet')\n\
         print(json.dumps(0))",
        d = p.path("imgs").display()
    ));
    let pipeline = |source: &str, path: &str, extra: &str| {
        format!(
            "[pipeline]\nname = \"imgs\"\n[stage.data]\nkind = \"dataset\"\nsource = \"{source}\"\npath = \"{path}\"\n{extra}\n\
             [stage.corrupt]\nkind = \"corrupt\"\ninputs = [\"data\"]\nfraction = 0.2\n\
             [stage.train]\nkind = \"train\"\ninputs = [\"data\", \"corrupt\"]\nmodel = \"cnn\"\nwidth = 0.25\nepochs = 2\nbatch_size = 5\nlr = 0.01\ndevice = \"cpu\"\n"
        )
    };
    p.write("f.toml", &pipeline("folder", "imgs", ""));
    let (code, r) = p.run("f.toml", &[]);
    assert_eq!(code, 0, "{r}");
    let data = artifact(&p, &r, "data");
    let info: Json =
        serde_json::from_slice(&std::fs::read(data.join("dataset.json")).unwrap()).unwrap();
    assert_eq!(info["class_names"], serde_json::json!(["ant", "cat"]));
    assert_eq!(
        (
            &info["channels"],
            &info["height"],
            &info["width"],
            &info["train_size"],
            &info["test_size"]
        ),
        (
            &Json::from(3),
            &Json::from(6),
            &Json::from(8),
            &Json::from(20),
            &Json::from(4)
        )
    );
    // Every stored pixel is the formula's, in CHW order, class `cat` = label 1.
    let q = python(&format!(
        "import json, duckdb\nprint(json.dumps(duckdb.sql(\"SELECT label, image FROM '{}/train.parquet' ORDER BY index\").fetchall()))",
        data.display()
    ));
    let rows = q.as_array().unwrap();
    assert_eq!(rows.len(), 20);
    // Files are read in name order within a class.
    let mut order: Vec<u32> = (0..10).collect();
    order.sort_by_key(|i| format!("{i}.png"));
    for (row, want) in rows
        .iter()
        .zip((0..2u32).flat_map(|k| order.iter().map(move |&i| (k, i))))
    {
        let (k, i) = want;
        assert_eq!(row[0], k);
        let img: Vec<u8> = row[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let expect: Vec<u8> = (0..3)
            .flat_map(|c| (0..6).flat_map(move |y| (0..8).map(move |x| pixel(k, i, c, y, x))))
            .collect();
        assert_eq!(img, expect, "class {k} image {i}");
    }
    let train = artifact(&p, &r, "train");
    let model: Json =
        serde_json::from_slice(&std::fs::read(train.join("model.json")).unwrap()).unwrap();
    assert_eq!(model["input"], serde_json::json!([3, 6, 8]));

    // The Parquet source with PNG bytes gives the same images (its rows in file order).
    p.write("pq.toml", &pipeline("parquet", "imgs-png", ""));
    let (code, r2) = p.run("pq.toml", &[]);
    assert_eq!(code, 0, "{r2}");
    let q2 = python(&format!(
        "import json, duckdb\nprint(json.dumps(duckdb.sql(\"SELECT count(*), count(DISTINCT image), min(len(image)), sum(label) FROM '{}/train.parquet'\").fetchall()[0]))",
        artifact(&p, &r2, "data").display()
    ));
    assert_eq!(q2, serde_json::json!([20, 20, 144, 10]));

    // Raw pixel lists need their shape; with it, they load.
    python(&format!(
        "import pyarrow as pa, pyarrow.parquet as pq, os\n\
         os.makedirs('{d}-raw', exist_ok=True)\n\
         for split in ['train', 'test']:\n\
         \x20   t = pq.read_table('{src}/' + split + '.parquet')\n\
         \x20   pq.write_table(t, '{d}-raw/' + split + '.parquet')\n\
         print(0)",
        d = p.path("imgs").display(),
        src = artifact(&p, &r2, "data").display()
    ));
    p.write("raw.toml", &pipeline("parquet", "imgs-raw", ""));
    let out = p.pipe(&["run", "raw.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("shape = [channels, height, width]"), "{err}");
    p.write(
        "raw.toml",
        &pipeline("parquet", "imgs-raw", "shape = [3, 6, 8]"),
    );
    let (code, r3) = p.run("raw.toml", &[]);
    assert_eq!(code, 0, "{r3}");

    // An image of another size is refused by name, before anything is stored.
    let odd = p.path("imgs/train/cat/odd.png");
    image::RgbImage::new(5, 5).save(&odd).unwrap();
    p.write("f2.toml", &pipeline("folder", "imgs", "train_size = 10"));
    let out = p.pipe(&["run", "f2.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("odd.png") && err.contains("is 5x5"), "{err}");
}
