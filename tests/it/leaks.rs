//! What killed or failed processes leave behind, and that the next command removes: temp
//! files and staging folders in `export --out` and `report --out` folders, artifacts set
//! aside for removal by any host, and lock files a full disk left without their token.

use std::path::Path;

use crate::common::*;

/// A pid that no process can have: beyond the kernel's largest, `pid_max` (2^22).
const DEAD: u32 = 4_194_305;

/// Runs `pipe ARGS` and asserts it succeeds.
fn ok(p: &Project, args: &[&str]) {
    let out = p.pipe(args);
    assert!(
        out.status.success(),
        "pipe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The files pipe lists as written in an output folder.
fn listed(dir: &Path) -> Vec<String> {
    let mark: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(".pipe-written.json")).unwrap()).unwrap();
    mark["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// Writes a file of `bytes` bytes at `path`, making its folder.
fn put(path: &Path, bytes: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, vec![7u8; bytes]).unwrap();
}

#[test]
fn export_removes_the_temp_files_of_killed_exports_only() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    ok(&p, &["export", "p.toml", "--out", "results"]);
    let out = p.path("results");
    let table = listed(&out)
        .into_iter()
        .find(|f| f.ends_with(".parquet"))
        .expect("a table");
    let me = std::process::id();
    // What `kill -9` during an export leaves: a table's temp file (1 MB), the mark's, and
    // (earlier versions) a whole staging folder beside the output folder.
    let stale = [
        out.join(format!(".{table}.tmp.{DEAD}")),
        out.join(format!("..pipe-written.json.tmp.{DEAD}.3")),
    ];
    for f in &stale {
        put(f, 1 << 20);
    }
    let stale_dir = p.path(&format!(".results.new.{DEAD}"));
    put(&stale_dir.join(&table), 1 << 20);
    // A live process's temp files and folder, and names pipe does not make: kept.
    let kept = [
        out.join(format!(".{table}.tmp.{me}")),
        out.join(format!(".notes.txt.tmp.{DEAD}")),
        out.join(format!(".{table}.tmp.{DEAD}.x")),
        out.join(format!("{table}.tmp.{DEAD}")),
    ];
    for f in &kept {
        put(f, 10);
    }
    let live_dir = p.path(&format!(".results.new.{me}"));
    put(&live_dir.join(&table), 10);

    ok(&p, &["export", "p.toml", "--out", "results"]);
    for f in &stale {
        assert!(!f.exists(), "{} is left", f.display());
    }
    assert!(!stale_dir.exists(), "{} is left", stale_dir.display());
    for f in &kept {
        assert!(f.is_file(), "{} was removed", f.display());
    }
    assert!(live_dir.join(&table).is_file());
    assert!(out.join(&table).is_file());
}

#[test]
fn report_removes_the_temp_files_of_killed_reports_only() {
    let p = Project::new();
    let plot = "[[report.plot]]\ntable = \"labels\"\nx = \"index\"\ny = \"train_label\"\ntitle = \"Labels\"\n";
    p.write("p.toml", &format!("{BASIC}\n{plot}"));
    assert_eq!(p.run("p.toml", &[]).0, 0);
    ok(&p, &["report", "p.toml", "--out", "rep"]);
    let out = p.path("rep");
    let me = std::process::id();
    // A figure's temp file, the page's, and (earlier versions) the figures' staging folder.
    assert!(listed(&out).contains(&"figures/plot-1-Labels.svg".to_string()));
    let stale = [
        out.join(format!(".index.html.tmp.{DEAD}.0")),
        out.join(format!("figures/.plot-1-Labels.svg.tmp.{DEAD}.12")),
    ];
    for f in &stale {
        put(f, 1 << 20);
    }
    let stale_dir = out.join(format!(".figures.tmp.{DEAD}"));
    put(&stale_dir.join("1-a.svg"), 1 << 20);
    let live = [
        out.join(format!(".index.html.tmp.{me}.0")),
        out.join(format!(".figures.tmp.{me}/1-a.svg")),
    ];
    for f in &live {
        put(f, 10);
    }

    ok(&p, &["report", "p.toml", "--out", "rep"]);
    for f in &stale {
        assert!(!f.exists(), "{} is left", f.display());
    }
    assert!(!stale_dir.exists(), "{} is left", stale_dir.display());
    for f in &live {
        assert!(f.is_file(), "{} was removed", f.display());
    }
    assert!(out.join("index.html").is_file());
}

#[test]
fn artifacts_set_aside_for_removal_by_any_host_are_removed_by_the_next_run() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    assert_eq!(p.run("p.toml", &[]).0, 0);
    let key = p.status("p.toml", &[])[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let tmp = p.cache().join("tmp");
    // Another host's interrupted removal (renamed aside, then killed), with a read-only
    // folder inside, and this host's live process's.
    let theirs = tmp.join(format!("{key}.removed.otherhost.123.0"));
    let mine = tmp.join(format!("{key}.removed.{}.{}.0", host(), std::process::id()));
    for d in [&theirs, &mine] {
        put(&d.join("ckpt/weights.bin"), 1 << 20);
        let mut perm = std::fs::metadata(d.join("ckpt")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o500);
        std::fs::set_permissions(d.join("ckpt"), perm).unwrap();
    }
    // Another host's artifact being written: its process may be running.
    let writing = tmp.join(format!("{key}.otherhost.123.1"));
    put(&writing.join("x"), 10);

    let (code, r) = p.run("p.toml", &[]);
    assert_eq!(code, 0, "{r}");
    assert!(!theirs.exists(), "{} is left", theirs.display());
    assert!(!mine.exists(), "{} is left", mine.display());
    assert!(
        writing.join("x").is_file(),
        "a temp folder in use was removed"
    );
    assert!(p.pipe(&["verify"]).status.success());
}

/// This machine's host name, as `pipe` writes it in temp folder names.
fn host() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_full_disk_at_lease_creation_leaves_no_lock_file() {
    let p = Project::new();
    let cache = p.path("full-disk");
    let _guard = mount_small_tmpfs(&cache);
    // A cache pipe made (marked, with its folders).
    p.write(
        "first.toml",
        "[pipeline]\nname = \"first\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"true\"]\n",
    );
    let first = p
        .command(&["run", "first.toml", "--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(0), "{first:?}");
    std::fs::create_dir_all(cache.join("runs")).unwrap();
    // Fill the disk: a new file can still be created (tmpfs has inodes left), but not
    // written, so the run's lease file would be created and its token fail.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(cache.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
    }
    p.write(
        "d.toml",
        "[pipeline]\nname = \"d\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo 1 > $PIPE_OUT/x\"]\n",
    );
    let out = p
        .command(&["run", "d.toml", "--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let locks: Vec<_> = std::fs::read_dir(cache.join("locks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(locks.is_empty(), "left: {locks:?}");
    // Room again: the next run takes its lease and succeeds.
    std::fs::remove_file(cache.join("filler")).unwrap();
    let out = p
        .command(&["run", "d.toml", "--cache"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
