//! A cache identifies itself: pipe writes `CACHEDIR.TAG` (with its own line) into a new or
//! empty cache folder, and refuses to write or remove anything in a folder without it, so
//! a wrong `--cache` or an empty `PIPE_CACHE` never cleans someone's files. A cache made by
//! an older pipe is adopted with `pipe verify --adopt` when it holds only what pipe writes.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// This machine's host name, as `pipe` writes it in temp folder names.
fn hostname() -> String {
    let out = std::process::Command::new("hostname").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every path under `dir` (folders and files), relative and sorted, with each file's bytes.
fn tree(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            if path.is_dir() {
                out.push((rel, None));
                stack.push(path);
            } else {
                out.push((rel, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

/// A pipeline of one `exec` stage.
const ONE: &str = "[pipeline]\nname = \"one\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo hi > $PIPE_OUT/a.txt\"]\n";

/// A project whose `BASIC` run made a cache, from which the marker was then deleted: what
/// an older pipe left.
fn old_cache() -> Project {
    let p = Project::new();
    p.write("p.toml", BASIC);
    let (c, r) = p.run("p.toml", &[]);
    assert_eq!(c, 0, "{r}");
    std::fs::remove_file(p.cache().join("CACHEDIR.TAG")).unwrap();
    p
}

#[test]
fn a_folder_that_is_not_a_cache_is_never_written_or_cleaned() {
    let p = Project::new();
    p.write("p.toml", ONE);
    p.write("home/artifacts/photos/x.jpg", "a photo");
    // A folder whose name matches pipe's temp folders, of a process that is not running.
    p.write(
        &format!("home/tmp/backup.{}.999999.d/disk.img", hostname()),
        "a backup",
    );
    for tag in [
        None,
        Some("Signature: 8a477f597d28d172789f06886806bc55\n# backup tool\n"),
    ] {
        if let Some(t) = tag {
            // Another program's cache tag does not make the folder pipe's.
            p.write("home/CACHEDIR.TAG", t);
        }
        let before = tree(&p.path("home"));
        for args in [
            &["verify", "--fix", "--cache", "home"][..],
            &["gc", "--keep-days", "0", "--cache", "home"],
            &["rm", "photos", "--cache", "home"],
            &["run", "p.toml", "--cache", "home"],
        ] {
            let out = p.pipe(args);
            assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
            assert!(
                stderr(&out).contains("home: not a pipe cache"),
                "{args:?}: {}",
                stderr(&out)
            );
            assert!(
                stderr(&out).contains("pipe verify --adopt --cache home"),
                "{args:?}: {}",
                stderr(&out)
            );
            assert_eq!(tree(&p.path("home")), before, "{args:?} changed the folder");
        }
        // Reading is allowed, and changes nothing.
        let out = p.pipe(&["verify", "--cache", "home"]);
        assert_ne!(code(&out), 2, "{}", stderr(&out));
        assert_eq!(tree(&p.path("home")), before);
    }
}

#[test]
fn an_empty_pipe_cache_variable_is_refused() {
    let p = Project::new();
    p.write("p.toml", ONE);
    let before = tree(p.dir.path());
    for args in [
        &["run", "p.toml"][..],
        &["status", "p.toml"],
        &["verify", "--fix"],
        &["gc", "--keep-days", "0"],
        &["ls"],
        &["runs"],
    ] {
        let out = p.command(args).env("PIPE_CACHE", "").output().unwrap();
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("PIPE_CACHE is set but empty"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert_eq!(
            tree(p.dir.path()),
            before,
            "{args:?} wrote into the project"
        );
    }
}

#[test]
fn a_new_or_empty_folder_becomes_a_marked_cache_that_works() {
    let p = Project::new();
    p.write("p.toml", BASIC);
    // The default cache exists and is empty before the first run; `fresh` does not exist.
    std::fs::create_dir(p.cache()).unwrap();
    for cache in [p.cache(), p.path("fresh")] {
        let cache = cache.to_str().unwrap();
        let (c, r) = p.run("p.toml", &["--cache", cache]);
        assert_eq!(
            (c, count(&r, "executed") + count(&r, "cached")),
            (0, 9),
            "{r}"
        );
        let tag = std::fs::read_to_string(Path::new(cache).join("CACHEDIR.TAG")).unwrap();
        assert!(
            tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55\n"),
            "{tag}"
        );
        assert!(tag.lines().any(|l| l.contains("pipe cache")), "{tag}");
        let (c, r) = p.run("p.toml", &["--cache", cache]);
        assert_eq!((c, count(&r, "cached")), (0, 9), "{r}");
        for args in [
            &["verify", "--fix", "--cache", cache][..],
            &["gc", "p.toml", "--keep-days", "0", "--cache", cache],
            &["rm", "count", "--cache", cache],
        ] {
            let out = p.pipe(args);
            assert_eq!(code(&out), 0, "{args:?}: {}", stderr(&out));
        }
        let (c, r) = p.run("p.toml", &["--cache", cache]);
        assert_eq!(c, 0, "{r}");
        let executed = count(&r, "executed");
        assert!(executed > 0, "rm removed count: {r}");
        assert_eq!(of_stage(&r, "executed", "count").len(), executed, "{r}");
    }
}

#[test]
fn an_old_cache_is_refused_until_adopted() {
    let p = old_cache();
    let before = tree(&p.cache());
    let out = p.pipe(&["run", "p.toml"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a pipe cache") && stderr(&out).contains("verify --adopt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&p.cache()), before, "the refused run changed nothing");
    let out = p.pipe(&["verify", "--adopt"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("as a pipe cache"), "{said}");
    let checked = format!("{} artifacts checked, 0 damaged", p.artifacts().len());
    assert!(said.contains(&checked), "{said}");
    let (c, r) = p.run("p.toml", &[]);
    assert_eq!(
        (c, count(&r, "executed"), count(&r, "cached")),
        (0, 0, 9),
        "{r}"
    );
}

#[test]
fn adoption_refuses_a_folder_with_an_entry_pipe_did_not_write() {
    let p = old_cache();
    for (entry, path) in [
        ("artifacts/photos", "cache/artifacts/photos/x.jpg"),
        ("notes.txt", "cache/notes.txt"),
    ] {
        p.write(path, "mine");
        let out = p.pipe(&["verify", "--adopt"]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("not adopted as a pipe cache: {entry}:")),
            "{}",
            stderr(&out)
        );
        assert!(!p.cache().join("CACHEDIR.TAG").exists());
        assert!(p.path(path).is_file());
        std::fs::remove_file(p.path(path)).unwrap();
        let _ = std::fs::remove_dir(p.path("cache/artifacts/photos"));
    }
    // The home folder of the issue: its first foreign entry is named.
    p.write("home/artifacts/photos/x.jpg", "a photo");
    p.write("home/tmp/backup.vm.999999.d/disk.img", "a backup");
    let out = p.pipe(&["verify", "--adopt", "--cache", "home"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("artifacts/photos: not an artifact"),
        "{}",
        stderr(&out)
    );
    assert!(!p.path("home/CACHEDIR.TAG").exists());
}

#[test]
fn the_checkout_cache_folder_is_shipped_as_a_pipe_cache() {
    // The checkout's `cache/` holds a README and its tag before any run: a cache as it is.
    let p = Project::new();
    p.write("p.toml", ONE);
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("cache");
    for f in ["README.md", "CACHEDIR.TAG"] {
        p.write(
            &format!("cache/{f}"),
            &std::fs::read_to_string(shipped.join(f)).unwrap(),
        );
    }
    let (c, r) = p.run("p.toml", &[]);
    assert_eq!((c, count(&r, "executed")), (0, 1), "{r}");
    let out = p.pipe(&["gc", "--keep-days", "0"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(p.cache().join("README.md").is_file());
}
