//! The remote cache against a local S3-compatible server (s3s-fs, started by the test on
//! loopback): push after computing, pull on a local miss, damaged remote files refused.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value as Json;

/// The server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/s3-server");
    let child = Command::new(script)
        .arg(port.to_string())
        .arg(data.path())
        .arg("pipe-cache")
        .spawn()
        .expect("scripts/s3-server");
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "the S3 server did not start (scripts/s3-server --install builds it)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server { child, port, data }
}

fn pipe(p: &Project, s: &Server, args: &[&str]) -> Output {
    p.command(args)
        .env("AWS_ACCESS_KEY_ID", "test-access-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", s.port))
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap()
}

fn run(p: &Project, s: &Server, args: &[&str]) -> (i32, Json, String) {
    let out = pipe(p, s, args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
    (
        out.status.code().unwrap_or(-1),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every key the status lists, parts (checkpoints) included.
fn all_keys(p: &Project, file: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for s in p.status(file, &[]) {
        keys.push(s["key"].as_str().unwrap().to_string());
        for part in s["parts"].as_array().into_iter().flatten() {
            keys.push(part["key"].as_str().unwrap().to_string());
        }
    }
    keys.sort();
    keys
}

fn files_of(cache: &Path, key: &str) -> Json {
    let m: Json = serde_json::from_slice(
        &std::fs::read(cache.join("artifacts").join(key).join("manifest.json")).unwrap(),
    )
    .unwrap();
    m["files"].clone()
}

fn remote_dir(s: &Server) -> PathBuf {
    s.data.path().join("pipe-cache/team/artifacts")
}

/// Where the remote under `artifacts` holds the file `name` of artifact `key` of the local
/// cache `cache`: named by its content's blake3.
fn remote_file(artifacts: &Path, cache: &Path, key: &str, name: &str) -> PathBuf {
    let files = files_of(cache, key);
    let f = files
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == name)
        .unwrap_or_else(|| panic!("{key} has no {name}"));
    artifacts
        .join(key)
        .join("blobs")
        .join(f["blake3"].as_str().unwrap())
}

/// The one signature object of an artifact on the remote.
fn signature_of(artifacts: &Path, key: &str) -> PathBuf {
    let sigs: Vec<PathBuf> = std::fs::read_dir(artifacts.join(key).join("signatures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    sigs[0].clone()
}

#[test]
fn artifacts_are_pushed_then_pulled_and_damaged_ones_are_recomputed() {
    let s = start_server();
    let a = Project::new();
    a.write("p.toml", TINY_TRAIN);
    let (code, r, err) = run(
        &a,
        &s,
        &[
            "run",
            "p.toml",
            "--json",
            "--remote",
            "s3://pipe-cache/team",
        ],
    );
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), 7);
    let keys = all_keys(&a, "p.toml");
    assert_eq!(
        keys.len(),
        7 + 2 * 3,
        "7 instances and 3 checkpoints of each train"
    );
    // Every artifact and checkpoint is in the bucket, manifest included, byte for byte.
    for k in &keys {
        let local = a.cache().join("artifacts").join(k);
        for f in files_of(&a.cache(), k).as_array().unwrap() {
            let name = f["path"].as_str().unwrap();
            assert_eq!(
                std::fs::read(remote_file(&remote_dir(&s), &a.cache(), k, name)).unwrap(),
                std::fs::read(local.join(name)).unwrap(),
                "{k}/{name}"
            );
        }
        assert!(remote_dir(&s).join(k).join("manifest.json").exists());
    }

    // A fresh machine with the remote in its pipeline file computes nothing.
    let b = Project::new();
    b.write(
        "p.toml",
        &format!("{TINY_TRAIN}\n[cache]\nremote = \"s3://pipe-cache/team\"\n"),
    );
    let (code, r, err) = run(&b, &s, &["run", "p.toml", "--json"]);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), 0, "{r}");
    assert_eq!(count(&r, "cached"), 7);
    assert!(err.contains("pulled"), "{err}");
    for k in &keys {
        assert_eq!(files_of(&b.cache(), k), files_of(&a.cache(), k), "{k}");
    }
    assert!(pipe(&b, &s, &["verify"]).status.success());

    // A damaged remote file is refused: that instance is computed here, the rest pulled.
    let corrupt: Vec<Json> = a
        .status("p.toml", &[])
        .into_iter()
        .filter(|i| i["stage"] == "corrupt" && i["point"]["noise"] == 0.5)
        .collect();
    let ck = corrupt[0]["key"].as_str().unwrap();
    let target = remote_file(&remote_dir(&s), &a.cache(), ck, "labels.parquet");
    let mut bytes = std::fs::read(&target).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&target, &bytes).unwrap();
    let c = Project::new();
    c.write("p.toml", TINY_TRAIN);
    let (code, r, err) = run(
        &c,
        &s,
        &[
            "run",
            "p.toml",
            "--json",
            "--remote",
            "s3://pipe-cache/team",
        ],
    );
    assert_eq!(code, 0, "{r} {err}");
    assert!(
        err.contains("is damaged") && err.contains("labels.parquet"),
        "{err}"
    );
    let executed: Vec<&str> = r["executed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(executed, [ck], "only the damaged one is computed");
    assert_eq!(files_of(&c.cache(), ck), files_of(&a.cache(), ck));
    assert!(pipe(&c, &s, &["verify"]).status.success());

    // Through Slurm, each job pushes its artifact (and checkpoints) from the node.
    let d = Project::new();
    d.write("p.toml", TINY_TRAIN);
    let (code, r, err) = run(
        &d,
        &s,
        &[
            "run",
            "p.toml",
            "--json",
            "--executor",
            "slurm",
            "--poll",
            "0.3",
            "--remote",
            "s3://pipe-cache/slurm",
        ],
    );
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), 7);
    let pushed = s.data.path().join("pipe-cache/slurm/artifacts");
    for k in &keys {
        assert!(pushed.join(k).join("manifest.json").exists(), "{k}");
    }
}

#[test]
fn a_bad_remote_url_is_a_usage_error() {
    let p = Project::new();
    p.write(
        "p.toml",
        &format!("{BASIC}\n[cache]\nremote = \"gs://x\"\n"),
    );
    let out = p.pipe(&["run", "p.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p.toml:") && err.contains("cache.remote") && err.contains("s3://"),
        "{err}"
    );
    assert!(p.artifacts().is_empty());
}

#[test]
fn a_key_known_only_after_its_input_reran_is_pulled_not_computed() {
    let s = start_server();
    let a = Project::new();
    a.write("p.toml", TINY_TRAIN);
    let remote = ["--remote", "s3://pipe-cache/cutoff"];
    let (code, r, err) = run(
        &a,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote[..]].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");

    // Another machine, another corruption mode: corrupt reruns there (its key is new). At
    // noise 0.0 the labels come out the same bytes, so training there has the key machine
    // A pushed: known only once corrupt has run, then pulled instead of trained.
    let b = Project::new();
    b.write("p.toml", TINY_TRAIN);
    let args = [
        &[
            "run",
            "p.toml",
            "--json",
            "--set",
            "stage.corrupt.mode=\"uniform\"",
        ][..],
        &remote[..],
    ]
    .concat();
    let (code, r, err) = run(&b, &s, &args);
    assert_eq!(code, 0, "{r} {err}");
    let at = |list: &str, stage: &str| -> Vec<f64> {
        of_stage(&r, list, stage)
            .iter()
            .map(|i| i["point"]["noise"].as_f64().unwrap())
            .collect()
    };
    assert_eq!(at("executed", "corrupt").len(), 2, "{r}");
    assert_eq!(at("executed", "train"), [0.5], "{r}");
    assert_eq!(at("cached", "train"), [0.0], "{r}");
    assert_eq!(at("cached", "rollback"), [0.0], "{r}");
    assert!(err.contains("train[noise=0.0]: pulled"), "{err}");
    let keys_a: Vec<Json> = a
        .status("p.toml", &[])
        .into_iter()
        .filter(|i| i["stage"] == "train" && i["point"]["noise"] == 0.0)
        .map(|i| i["key"].clone())
        .collect();
    assert_eq!(of_stage(&r, "cached", "train")[0]["key"], keys_a[0]);
}

#[test]
fn hostile_remote_manifests_are_refused_and_signed_remotes_refuse_unsigned_ones() {
    let s = start_server();
    let a = Project::new();
    a.write("p.toml", BASIC);
    let remote = ["--remote", "s3://pipe-cache/hostile"];
    let (code, r, err) = run(
        &a,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");
    let pushed = s.data.path().join("pipe-cache/hostile/artifacts");
    let data_key = a
        .status("p.toml", &[])
        .into_iter()
        .find(|i| i["stage"] == "data")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // The reported crash: a file hash that is not hex, with non-ASCII characters.
    let manifest = pushed.join(&data_key).join("manifest.json");
    let mut m: Json = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["files"][0]["blake3"] = Json::from("aéééééé");
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let b = Project::new();
    b.write("p.toml", BASIC);
    let (code, r, err) = run(
        &b,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(
        code, 0,
        "no panic, the data set is computed here: {r} {err}"
    );
    assert!(err.contains("is not a hash"), "{err}");
    assert_eq!(of_stage(&r, "executed", "data").len(), 1, "{r}");
    // A part key that would name a path outside the cache.
    m["files"][0]["blake3"] = Json::from("ef".repeat(32));
    m["parts"] = serde_json::json!({"epoch 1": "../../victim"});
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let c = Project::new();
    c.write("p.toml", BASIC);
    let (code, _, err) = run(
        &c,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("is not a key"), "{err}");

    // Signed: pushes sign, pulls check; unsigned or wrongly signed manifests are refused.
    let signed = ["--remote", "s3://pipe-cache/signed"];
    let with_key = |p: &Project, key: &str| {
        let out = p
            .command(&[&["run", "p.toml", "--json"][..], &signed].concat())
            .env("AWS_ACCESS_KEY_ID", "test-access-key")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", s.port))
            .env("AWS_ALLOW_HTTP", "true")
            .env("PIPE_REMOTE_KEY", key)
            .output()
            .unwrap();
        let json: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
        (json, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let d = Project::new();
    d.write("p.toml", BASIC);
    let (r, err) = with_key(&d, "team secret");
    let n = count(&r, "executed");
    assert!(n >= 8, "{r} {err}");
    let team_sig = signature_of(
        &s.data.path().join("pipe-cache/signed/artifacts"),
        &data_key,
    );
    let e = Project::new();
    e.write("p.toml", BASIC);
    let (r, err) = with_key(&e, "team secret");
    assert_eq!(
        count(&r, "executed"),
        0,
        "the right key pulls everything: {err}"
    );
    let f = Project::new();
    f.write("p.toml", BASIC);
    let (r, err) = with_key(&f, "another secret");
    assert_eq!(
        count(&r, "executed"),
        n,
        "a wrong key trusts nothing: {err}"
    );
    assert!(
        err.contains("is not signed with this PIPE_REMOTE_KEY"),
        "{err}"
    );
    // A signature that does not match its manifest: refused.
    let mut bytes = std::fs::read(&team_sig).unwrap();
    bytes[0] = if bytes[0] == b'0' { b'1' } else { b'0' };
    std::fs::write(&team_sig, bytes).unwrap();
    let g = Project::new();
    g.write("p.toml", BASIC);
    let (r, err) = with_key(&g, "team secret");
    assert!(err.contains("signature does not match"), "{err}");
    assert_eq!(of_stage(&r, "executed", "data").len(), 1, "{r}");
    // The unsigned remote of the first half, read with a key: refused.
    let h = Project::new();
    h.write("p.toml", BASIC);
    let out = h
        .command(&[
            "run",
            "p.toml",
            "--json",
            "--remote",
            "s3://pipe-cache/hostile",
        ])
        .env("AWS_ACCESS_KEY_ID", "test-access-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", s.port))
        .env("AWS_ALLOW_HTTP", "true")
        .env("PIPE_REMOTE_KEY", "team secret")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not signed"), "{err}");

    // An object far larger than its manifest says is refused from its size, before its
    // bytes are read: the instance is computed here.
    let corrupt_key = a
        .status("p.toml", &[])
        .into_iter()
        .find(|i| i["stage"] == "corrupt")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        remote_file(&pushed, &a.cache(), &corrupt_key, "labels.parquet"),
        vec![0u8; 64 << 20],
    )
    .unwrap();
    let i = Project::new();
    i.write("p.toml", BASIC);
    let (code, r, err) = run(
        &i,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");
    assert!(err.contains("is damaged (67108864 bytes"), "{err}");
    assert!(
        r["executed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["key"] == corrupt_key.as_str())
    );
}

#[test]
fn oversized_remote_manifests_and_signatures_are_refused_unread() {
    let s = start_server();
    let tiny = "[pipeline]\nname = \"t\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"echo 1 > $PIPE_OUT/x\"]\n";
    let a = Project::new();
    a.write("p.toml", tiny);
    let key = a.status("p.toml", &[])[0]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let remote = ["--remote", "s3://pipe-cache/big"];
    let (code, r, err) = run(
        &a,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");
    // A manifest of 65 MiB (sparse): refused from its size, the instance computed here.
    let manifest = s
        .data
        .path()
        .join("pipe-cache/big/artifacts")
        .join(&key)
        .join("manifest.json");
    std::fs::File::create(&manifest)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    let b = Project::new();
    b.write("p.toml", tiny);
    let (code, r, err) = run(
        &b,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");
    assert!(
        err.contains("manifest.json is larger than the bound of 67108864 bytes"),
        "{err}"
    );
    assert_eq!(count(&r, "executed"), 1, "{r} {err}");
    // A signature of 2 KiB beside a good manifest: refused, computed here.
    let signed = ["--remote", "s3://pipe-cache/bigsig"];
    let with_key = |p: &Project| {
        let out = p
            .command(&[&["run", "p.toml", "--json"][..], &signed].concat())
            .env("AWS_ACCESS_KEY_ID", "test-access-key")
            .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", s.port))
            .env("AWS_ALLOW_HTTP", "true")
            .env("PIPE_REMOTE_KEY", "secret")
            .output()
            .unwrap();
        let json: Json = serde_json::from_slice(&out.stdout).unwrap_or(Json::Null);
        (json, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let c = Project::new();
    c.write("p.toml", tiny);
    let (r, err) = with_key(&c);
    assert_eq!(count(&r, "executed"), 1, "{r} {err}");
    let sig = signature_of(&s.data.path().join("pipe-cache/bigsig/artifacts"), &key);
    std::fs::write(&sig, vec![b'0'; 2048]).unwrap();
    let d = Project::new();
    d.write("p.toml", tiny);
    let (r, err) = with_key(&d);
    assert!(
        err.contains("is larger than the bound of 1024 bytes"),
        "{err}"
    );
    assert_eq!(count(&r, "executed"), 1, "{r} {err}");
}

/// `run`, with `PIPE_REMOTE_KEY` set to `key`.
fn run_signed(p: &Project, s: &Server, key: &str, args: &[&str]) -> (i32, Json, String) {
    let out = p
        .command(args)
        .env("AWS_ACCESS_KEY_ID", "test-access-key")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-key")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", s.port))
        .env("AWS_ALLOW_HTTP", "true")
        .env("PIPE_REMOTE_KEY", key)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or(Json::Null),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_push_that_crashed_before_its_manifest_never_gets_a_manifest_over_its_files() {
    let s = start_server();
    let remote = ["--remote", "s3://pipe-cache/crashed"];
    // What machine A computes (without the remote) is what the bucket must end up with.
    let a = Project::new();
    a.write("p.toml", BASIC);
    assert_eq!(a.run("p.toml", &[]).0, 0);
    let keys = all_keys(&a, "p.toml");
    // Another machine's push of the same keys with other bytes crashed after its files and
    // before its manifests: objects at the files' paths (where earlier versions put them)
    // and at their content names (the names this push uses), holding other bytes.
    let bucket = s.data.path().join("pipe-cache/crashed/artifacts");
    for k in &keys {
        for f in files_of(&a.cache(), k).as_array().unwrap() {
            let name = f["path"].as_str().unwrap();
            let foreign = format!("other bytes of {k}/{name}");
            for at in [
                bucket.join(k).join(name),
                remote_file(&bucket, &a.cache(), k, name),
            ] {
                std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                std::fs::write(at, &foreign).unwrap();
            }
        }
    }
    // Machine B computes and pushes the same keys over those leftovers.
    let b = Project::new();
    b.write("p.toml", BASIC);
    let (code, r, err) = run(
        &b,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");
    assert!(!err.contains("warning"), "{err}");
    for k in &keys {
        assert!(bucket.join(k).join("manifest.json").is_file(), "{k}");
    }
    // A fresh machine pulls every artifact, byte for byte, and computes nothing.
    let c = Project::new();
    c.write("p.toml", BASIC);
    let (code, r, err) = run(
        &c,
        &s,
        &[&["run", "p.toml", "--json"][..], &remote].concat(),
    );
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), 0, "{r} {err}");
    assert!(!err.contains("damaged"), "{err}");
    for k in &keys {
        assert_eq!(files_of(&c.cache(), k), files_of(&a.cache(), k), "{k}");
        for f in files_of(&a.cache(), k).as_array().unwrap() {
            let name = f["path"].as_str().unwrap();
            assert_eq!(
                std::fs::read(c.cache().join("artifacts").join(k).join(name)).unwrap(),
                std::fs::read(a.cache().join("artifacts").join(k).join(name)).unwrap(),
                "{k}/{name}"
            );
        }
    }
    let v = pipe(&c, &s, &["verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
}

#[test]
fn a_signed_push_signs_what_an_unsigned_push_left_when_it_is_the_same_artifact() {
    let s = start_server();
    let remote = ["--remote", "s3://pipe-cache/mixed"];
    let args = [&["run", "p.toml", "--json"][..], &remote].concat();
    let bucket = s.data.path().join("pipe-cache/mixed/artifacts");
    // First an unsigned push.
    let a = Project::new();
    a.write("p.toml", BASIC);
    let (code, r, err) = run(&a, &s, &args);
    assert_eq!(code, 0, "{r} {err}");
    let n = count(&r, "executed");
    let keys = all_keys(&a, "p.toml");
    // A machine with the key trusts none of it, computes, and its pushes sign the
    // manifests, which list exactly what it computed.
    let b = Project::new();
    b.write("p.toml", BASIC);
    let (code, r, err) = run_signed(&b, &s, "team secret", &args);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), n, "{r} {err}");
    assert!(err.contains("is not signed"), "{err}");
    // Now signed pulls get everything.
    let c = Project::new();
    c.write("p.toml", BASIC);
    let (code, r, err) = run_signed(&c, &s, "team secret", &args);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), 0, "{r} {err}");
    for k in &keys {
        assert!(signature_of(&bucket, k).is_file(), "{k}");
    }
    for k in &keys {
        assert_eq!(files_of(&c.cache(), k), files_of(&a.cache(), k), "{k}");
    }
    assert!(pipe(&c, &s, &["verify"]).status.success());
    // Another key signs beside it, and each key's pulls still get everything.
    let d = Project::new();
    d.write("p.toml", BASIC);
    let (code, r, err) = run_signed(&d, &s, "other secret", &args);
    assert_eq!(code, 0, "{r} {err}");
    assert_eq!(count(&r, "executed"), n, "{r} {err}");
    for k in &keys {
        let sigs = std::fs::read_dir(bucket.join(k).join("signatures")).unwrap();
        assert_eq!(sigs.count(), 2, "{k}");
    }
    for (key, name) in [("other secret", "e"), ("team secret", "f")] {
        let p = Project::new();
        p.write("p.toml", BASIC);
        let (code, r, err) = run_signed(&p, &s, key, &args);
        assert_eq!(code, 0, "{name}: {r} {err}");
        assert_eq!(count(&r, "executed"), 0, "{name}: {r} {err}");
    }
    // An unsigned manifest of other bytes (a command whose output differs each time) is
    // not signed: the push says why, and signed pulls keep computing it.
    let random = "[pipeline]\nname = \"r\"\n[stage.e]\nkind = \"exec\"\ncmd = [\"sh\", \"-c\", \"head -c 32 /dev/urandom > $PIPE_OUT/x\"]\n";
    let g = Project::new();
    g.write("p.toml", random);
    let (code, r, err) = run(&g, &s, &args);
    assert_eq!(code, 0, "{r} {err}");
    let h = Project::new();
    h.write("p.toml", random);
    let (code, r, err) = run_signed(&h, &s, "team secret", &args);
    assert_eq!(code, 0, "{r} {err}");
    assert!(
        err.contains("lists other files than the artifact here"),
        "{err}"
    );
    let i = Project::new();
    i.write("p.toml", random);
    let (_, r, err) = run_signed(&i, &s, "team secret", &args);
    assert_eq!(count(&r, "executed"), 1, "{r} {err}");
}
