//! The remote cache: artifacts mirrored to S3 (or any S3-compatible store) through the
//! object_store crate, so that machines without a shared filesystem share results.
//!
//! Layout under `s3://BUCKET/PREFIX/artifacts/KEY/`: `blobs/HASH` for every file of the
//! artifact, named by the blake3 of its content, then `manifest.json`, which is written
//! last: an artifact exists remotely once its manifest does. With a signing key, each key's
//! signature of the manifest is `signatures/KEY_ID` beside it.
//!
//! Objects are never overwritten once a manifest refers to them. Every put is create-only,
//! and an object's name says what its bytes must be, so that a push that crashed before its
//! manifest, or another machine's push of the same key with other bytes, leaves nothing
//! that a later manifest could be published over: an object that is already there is
//! compared with the local file (size, then blake3, streamed) before the manifest names it,
//! and one whose bytes do not match its name is replaced with the bytes that do (no
//! manifest can rely on wrong bytes). Remotes written before this layout (files at
//! `artifacts/KEY/PATH`, one `manifest.json.sig`) are still read.
//!
//! Credentials, region and endpoint come from the usual `AWS_*` environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP` for a plain-HTTP endpoint).

use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use super::{MANIFEST, Manifest, Store};

/// A connection to a remote cache.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    runtime: tokio::runtime::Runtime,
    /// The key manifests are signed with and checked against ([`SIGNING_KEY_VAR`]).
    signing: Option<Signing>,
}

/// A signing key and the name of its signature objects.
struct Signing {
    /// The key, derived from the secret.
    key: [u8; 32],
    /// Names its signatures (`signatures/ID`); says nothing about the key.
    id: String,
}

impl Signing {
    fn new(secret: &str) -> Signing {
        let key = blake3::derive_key("pipe remote cache manifest signature v1", secret.as_bytes());
        let id = blake3::keyed_hash(&key, b"pipe remote cache key id").to_hex()[..32].to_string();
        Signing { key, id }
    }
}

/// The environment variable holding the secret that signs pushed manifests; when it is
/// set, a pull refuses a manifest without a valid signature.
pub const SIGNING_KEY_VAR: &str = "PIPE_REMOTE_KEY";

/// The signature object beside each manifest, as remotes written before signatures were
/// named by key held it (still read).
const LEGACY_SIGNATURE: &str = "manifest.json.sig";

/// The folder of each signing key's signature of the manifest, `signatures/KEY_ID`.
const SIGNATURES: &str = "signatures";

/// The folder of an artifact's file objects, each named by its content's blake3.
const BLOBS: &str = "blobs";

/// Largest remote manifest read: a larger one is refused from its size, unread.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Largest remote manifest signature read (a signature is 64 hex digits).
pub const MAX_SIGNATURE_BYTES: u64 = 1 << 10;

/// The signature of a manifest's bytes: blake3 keyed with `key`, in hex.
fn sign(key: &[u8; 32], manifest: &[u8]) -> String {
    blake3::keyed_hash(key, manifest).to_hex().to_string()
}

/// Parses a manifest fetched for `key` and checks every name in it before any becomes a
/// path: never panics, whatever the bytes.
pub fn parse_manifest(bytes: &[u8], key: &str) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("remote artifact {key}: unreadable manifest: {e}"))?;
    if manifest.key != key {
        return Err(format!(
            "remote artifact {key}: its manifest is that of {:?}",
            crate::key::short(&manifest.key, 70)
        ));
    }
    manifest
        .check_names()
        .map_err(|e| format!("remote artifact {key}: its manifest is refused: {e}"))?;
    Ok(manifest)
}

/// What a pull found.
#[derive(Debug, PartialEq, Eq)]
pub enum Pulled {
    /// The artifact was fetched, checked and stored locally.
    Fetched,
    /// The remote cache does not have it.
    Absent,
}

impl Remote {
    /// Connects to `s3://BUCKET[/PREFIX]`.
    pub fn open(url: &str) -> Result<Remote, String> {
        let rest = url
            .strip_prefix("s3://")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| format!("remote cache `{url}`: write s3://BUCKET/PREFIX"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(RetryConfig {
                max_retries: 3,
                ..Default::default()
            });
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder
            .build()
            .map_err(|e| format!("remote cache `{url}`: {e}"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("remote cache `{url}`: cannot start its runtime: {e}"))?;
        let signing = std::env::var(SIGNING_KEY_VAR)
            .ok()
            .filter(|k| !k.is_empty())
            .map(|k| Signing::new(&k));
        Ok(Remote {
            url: url.to_string(),
            store: Arc::new(store),
            prefix: prefix.trim_matches('/').to_string(),
            runtime,
            signing,
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn object(&self, key: &str, file: &str) -> ObjectPath {
        let p = if self.prefix.is_empty() {
            format!("artifacts/{key}/{file}")
        } else {
            format!("{}/artifacts/{key}/{file}", self.prefix)
        };
        ObjectPath::from(p)
    }

    /// Whether the remote cache has the artifact (its manifest).
    pub fn has(&self, key: &str) -> Result<bool, String> {
        let path = self.object(key, MANIFEST);
        match self.runtime.block_on(self.store.head(&path)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(format!("{}: {e}", self.url)),
        }
    }

    /// The object holding the file of artifact `key` whose content has blake3 `hash`.
    fn blob(&self, key: &str, hash: &str) -> ObjectPath {
        self.object(key, &format!("{BLOBS}/{hash}"))
    }

    /// Uploads a complete local artifact: its files first, the manifest last, each with a
    /// create-only put, then (with a signing key) its signature. Returns false if the
    /// remote already had it, signed with this key if there is one.
    ///
    /// A manifest is written only once every object it names holds the bytes it lists.
    /// With a signing key, a remote manifest without this key's signature (unsigned,
    /// or signed with another key) is signed when it lists exactly this artifact's content
    /// and its objects check out; when it lists other content, the push fails saying so.
    pub fn push(&self, store: &Store, key: &str) -> Result<bool, String> {
        let dir = store.artifact_dir(key);
        let text = super::read_regular(&dir.join(MANIFEST))
            .map_err(|e| format!("{}: {e}", dir.join(MANIFEST).display()))?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| format!("artifact {key} has no readable manifest: {e}"))?;
        if self.has(key)? {
            return self.sign_existing(store, key, &manifest);
        }
        self.put_files(store, key, &manifest)?;
        let object = self.object(key, MANIFEST);
        let put = self.store.put_opts(
            &object,
            PutPayload::from(text.clone()),
            PutOptions::from(PutMode::Create),
        );
        match self.runtime.block_on(put) {
            Ok(_) => {}
            // Another machine's push finished first: its manifest stands.
            Err(object_store::Error::AlreadyExists { .. }) => {
                return self.sign_existing(store, key, &manifest);
            }
            Err(e) => return Err(format!("pushing {key}/{MANIFEST} to {}: {e}", self.url)),
        }
        if let Some(signing) = &self.signing {
            self.put_signature(key, signing, &text)?;
        }
        Ok(true)
    }

    /// Makes sure that every file of `manifest` is on the remote under its content's name,
    /// holding exactly its bytes: each local file is checked against the manifest, then put
    /// create-only; one already there is compared with it (size, then blake3, streamed) and
    /// replaced if its bytes differ (they cannot be what any manifest names).
    fn put_files(&self, store: &Store, key: &str, manifest: &Manifest) -> Result<(), String> {
        let dir = store.artifact_dir(key);
        let mut done = std::collections::BTreeSet::new();
        for f in &manifest.files {
            if !is_inside(&f.path) || !crate::key::is_key(&f.blake3) {
                return Err(format!("artifact {key}: its manifest names {:?}", f.path));
            }
            if !done.insert(f.blake3.as_str()) {
                continue;
            }
            let path = dir.join(&f.path);
            let bytes =
                super::read_regular(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes.len() as u64 != f.size || blake3::hash(&bytes).to_hex().as_str() != f.blake3 {
                return Err(format!(
                    "artifact {key}: {} does not match its manifest (`pipe verify`); not pushed",
                    f.path
                ));
            }
            let object = self.blob(key, &f.blake3);
            let payload = PutPayload::from(bytes);
            let put =
                self.store
                    .put_opts(&object, payload.clone(), PutOptions::from(PutMode::Create));
            let failed =
                |e: object_store::Error| format!("pushing {key}/{} to {}: {e}", f.path, self.url);
            match self.runtime.block_on(put) {
                Ok(_) => {}
                Err(object_store::Error::AlreadyExists { .. }) => {
                    if !self
                        .runtime
                        .block_on(holds(self.store.as_ref(), &object, f))
                        .map_err(failed)?
                    {
                        let put = self.store.put_opts(
                            &object,
                            payload,
                            PutOptions::from(PutMode::Overwrite),
                        );
                        self.runtime.block_on(put).map_err(failed)?;
                    }
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(())
    }

    /// Writes this key's signature of the manifest bytes `text`. It is a function of those
    /// bytes, which never change once written: overwriting can only replace a wrong one.
    fn put_signature(&self, key: &str, signing: &Signing, text: &[u8]) -> Result<(), String> {
        let object = self.object(key, &format!("{SIGNATURES}/{}", signing.id));
        let put = self.store.put_opts(
            &object,
            PutPayload::from(sign(&signing.key, text).into_bytes()),
            PutOptions::from(PutMode::Overwrite),
        );
        self.runtime
            .block_on(put)
            .map(|_| ())
            .map_err(|e| format!("signing {key}/{MANIFEST} on {}: {e}", self.url))
    }

    /// A push of an artifact whose manifest the remote already has. Without a signing key
    /// there is nothing to do. With one, the manifest is signed unless it is already: when
    /// it lists exactly the content of the local `manifest` and its objects hold it.
    fn sign_existing(&self, store: &Store, key: &str, manifest: &Manifest) -> Result<bool, String> {
        let Some(signing) = &self.signing else {
            return Ok(false);
        };
        let Some(text) = self.get(key, MANIFEST, MAX_MANIFEST_BYTES)? else {
            return Ok(false);
        };
        if self.check_signature(key, signing, &text).is_ok() {
            return Ok(false);
        }
        let theirs = parse_manifest(&text, key)?;
        if !theirs.same_content(manifest) {
            return Err(format!(
                "remote artifact {key}: its manifest is not signed with this {SIGNING_KEY_VAR} \
                 and lists other files than the artifact here, so it is left unsigned and \
                 pulls with the key compute it; remove {} from the remote to let a signed \
                 push replace it",
                self.object(key, "").as_ref()
            ));
        }
        self.put_files(store, key, manifest)?;
        self.put_signature(key, signing, &text)?;
        Ok(true)
    }

    /// Fetches one object of artifact `key`, refusing it from its size if over `cap` bytes;
    /// `None` if it is not there.
    fn get(&self, key: &str, file: &str, cap: u64) -> Result<Option<Vec<u8>>, String> {
        let path = self.object(key, file);
        let fut = async {
            use futures::StreamExt;
            let got = match self.store.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(format!("fetching {key}/{file} from {}: {e}", self.url)),
            };
            let too_large =
                || format!("remote artifact {key}: {file} is larger than the bound of {cap} bytes");
            if got.meta.size > cap {
                return Err(too_large());
            }
            let mut bytes = Vec::new();
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk =
                    chunk.map_err(|e| format!("fetching {key}/{file} from {}: {e}", self.url))?;
                if (bytes.len() + chunk.len()) as u64 > cap {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(Some(bytes))
        };
        self.runtime.block_on(fut)
    }

    /// Checks the signature of manifest bytes `text` with this key: its own signature
    /// object, else the one a remote written before signatures were named by key holds.
    fn check_signature(&self, key: &str, signing: &Signing, text: &[u8]) -> Result<(), String> {
        let own = format!("{SIGNATURES}/{}", signing.id);
        let sig = match self.get(key, &own, MAX_SIGNATURE_BYTES)? {
            Some(sig) => sig,
            None => self.get(key, LEGACY_SIGNATURE, MAX_SIGNATURE_BYTES)?.ok_or_else(|| {
                format!(
                    "remote artifact {key}: its manifest is not signed with this {SIGNING_KEY_VAR}"
                )
            })?,
        };
        let expected = blake3::keyed_hash(&signing.key, text);
        let given = std::str::from_utf8(&sig)
            .ok()
            .and_then(|h| blake3::Hash::from_hex(h.trim()).ok());
        // blake3::Hash compares in constant time.
        if given != Some(expected) {
            return Err(format!(
                "remote artifact {key}: its manifest's signature does not match ({SIGNING_KEY_VAR})"
            ));
        }
        Ok(())
    }

    /// Pushes each of `keys` that is complete locally (an artifact and its parts); returns
    /// how many the remote did not have yet. Stops at the first failure.
    pub fn push_all<'k>(
        &self,
        store: &Store,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<usize, String> {
        let mut pushed = 0;
        for key in keys {
            if store.is_complete(key) && self.push(store, key)? {
                pushed += 1;
            }
        }
        Ok(pushed)
    }

    /// Downloads an artifact into the local cache, checking every file against the remote
    /// manifest's hash and size before it is stored; a damaged remote artifact is an error
    /// and leaves nothing behind.
    pub fn pull(&self, store: &Store, key: &str) -> Result<Pulled, String> {
        let Some(text) = self.get(key, MANIFEST, MAX_MANIFEST_BYTES)? else {
            return Ok(Pulled::Absent);
        };
        if let Some(signing) = &self.signing {
            self.check_signature(key, signing, &text)?;
        }
        let manifest = parse_manifest(&text, key)?;
        let _lock = store
            .lock(key, &mut |_| {})
            .map_err(|e| format!("cannot lock {key}: {e}"))?;
        if store.is_complete(key) {
            return Ok(Pulled::Fetched);
        }
        if store.artifact_dir(key).exists() {
            store
                .remove(key)
                .map_err(|e| format!("cannot remove the damaged local artifact {key}: {e}"))?;
        }
        let tmp = store
            .begin(key)
            .map_err(|e| format!("cannot create a temp folder in the cache: {e}"))?;
        let fetched = (|| {
            for f in &manifest.files {
                if !is_inside(&f.path) {
                    return Err(format!(
                        "remote artifact {key}: its manifest names a file outside it: {}",
                        f.path
                    ));
                }
            }
            self.fetch_files(key, &manifest.files, &tmp)?;
            let mut draft = manifest.clone();
            draft.files.clear();
            store
                .commit(&tmp, draft)
                .map_err(|e| format!("storing remote artifact {key}: {e}"))
        })();
        match fetched {
            Ok(_) => Ok(Pulled::Fetched),
            Err(e) => {
                store.discard(&tmp);
                Err(e)
            }
        }
    }
}

/// How many files of one artifact are fetched at once.
const FETCH_CONCURRENCY: usize = 16;

impl Remote {
    /// Fetches `files` of artifact `key` into `dir`, [`FETCH_CONCURRENCY`] at a time, each
    /// streamed to its file and hashed on the way, stopping as soon as it exceeds its
    /// declared size; the first failure cancels the rest.
    fn fetch_files(&self, key: &str, files: &[super::FileEntry], dir: &Path) -> Result<(), String> {
        self.runtime.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            let mut todo = files.iter();
            loop {
                while set.len() < FETCH_CONCURRENCY {
                    let Some(f) = todo.next() else { break };
                    let store = self.store.clone();
                    let objects = [self.blob(key, &f.blake3), self.object(key, &f.path)];
                    let (f, dest) = (f.clone(), dir.join(&f.path));
                    let (key, url) = (key.to_string(), self.url.clone());
                    set.spawn(async move { fetch_one(store, objects, f, dest, &key, &url).await });
                }
                match set.join_next().await {
                    None => return Ok(()),
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => {
                        set.abort_all();
                        return Err(e);
                    }
                    Some(Err(e)) => {
                        set.abort_all();
                        return Err(format!("remote artifact {key}: a fetch failed: {e}"));
                    }
                }
            }
        })
    }
}

/// Whether `object` holds exactly the bytes of file `f`: its size, then its blake3,
/// streamed (a missing object holds nothing).
async fn holds(
    store: &dyn ObjectStore,
    object: &ObjectPath,
    f: &super::FileEntry,
) -> Result<bool, object_store::Error> {
    use futures::StreamExt;
    let got = match store.get(object).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => return Ok(false),
        Err(e) => return Err(e),
    };
    if got.meta.size != f.size {
        return Ok(false);
    }
    let mut hasher = blake3::Hasher::new();
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        hasher.update(&chunk?);
    }
    Ok(hasher.finalize().to_hex().as_str() == f.blake3)
}

/// Streams one remote file to `dest`, hashing it; refuses it as soon as it is longer
/// than the manifest says, and when its size or hash differ at the end. It is read from
/// its content's name, else (a remote written before that layout) from its path.
async fn fetch_one(
    store: Arc<dyn ObjectStore>,
    objects: [ObjectPath; 2],
    f: super::FileEntry,
    dest: std::path::PathBuf,
    key: &str,
    url: &str,
) -> Result<(), String> {
    use futures::StreamExt;
    use std::io::Write;
    let damaged = |what: String| {
        format!(
            "remote artifact {key}: file {} is damaged ({what}; the manifest says {} bytes, {})",
            f.path,
            f.size,
            crate::key::short(&f.blake3, 12)
        )
    };
    let mut got = None;
    for object in &objects {
        match store.get(object).await {
            Ok(r) => {
                got = Some(r);
                break;
            }
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(format!("fetching {key}/{} from {url}: {e}", f.path)),
        }
    }
    let Some(got) = got else {
        return Err(format!("remote artifact {key}: file {} is missing", f.path));
    };
    if got.meta.size != f.size {
        return Err(damaged(format!("{} bytes", got.meta.size)));
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let mut file = std::fs::File::create(&dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut hasher = blake3::Hasher::new();
    let mut n: u64 = 0;
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("fetching {key}/{} from {url}: {e}", f.path))?;
        n += chunk.len() as u64;
        if n > f.size {
            return Err(damaged(format!("more than {} bytes", f.size)));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
    }
    let hash = hasher.finalize().to_hex().to_string();
    if n != f.size || hash != f.blake3 {
        return Err(damaged(format!(
            "{n} bytes, blake3 {}",
            crate::key::short(&hash, 12)
        )));
    }
    Ok(())
}

/// Whether a local path names a file inside the artifact (no `..`, not absolute).
pub fn is_inside(file: &str) -> bool {
    let p = Path::new(file);
    !file.is_empty()
        && !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_the_artifact() {
        assert!(is_inside("metrics.parquet") && is_inside("ckpt/weights.safetensors"));
        for bad in ["../x", "/etc/passwd", "a/../../b", "./a", ""] {
            assert!(!is_inside(bad), "{bad}");
        }
    }

    /// 10,000 mutations of a valid manifest (bytes flipped, cut, non-ASCII and huge text
    /// spliced in, fields swapped): each is parsed without a panic, and every one accepted
    /// names only paths inside the artifact and hex keys.
    #[test]
    fn mutated_manifests_never_panic_and_accepted_ones_name_safe_paths() {
        let key = "ab".repeat(32);
        let good = format!(
            r#"{{"key":"{key}","kind":"exec","version":1,"stage":"s","pipeline":"p","point":{{"noise":0.4}},"params":{{}},"inputs":{{"a":"{k2}"}},"files":[{{"path":"x/y.txt","blake3":"{h}","size":3}}],"parts":{{"epoch 1":"{k2}"}},"started":1.0,"seconds":0.5,"pipe_version":"0.1.0","host":"h"}}"#,
            k2 = "cd".repeat(32),
            h = "ef".repeat(32)
        );
        assert!(parse_manifest(good.as_bytes(), &key).is_ok());
        let splices: [&str; 10] = [
            "\"aéééééé\"",
            "\"../../etc/passwd\"",
            "\"/abs\"",
            "null",
            "-1e400",
            "\"manifest.json\"",
            "{}",
            "[]",
            "\"\\u0000\"",
            "\"ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé\"",
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..10_000 {
            let mut bytes = good.clone().into_bytes();
            match next() % 4 {
                0 => {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= 1 << (next() % 8);
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                2 => {
                    // Replace one string value with a hostile one.
                    let quotes: Vec<usize> = bytes
                        .iter()
                        .enumerate()
                        .filter(|(_, b)| **b == b':')
                        .map(|(i, _)| i)
                        .collect();
                    let at = quotes[(next() as usize) % quotes.len()] + 1;
                    let end = bytes[at..]
                        .iter()
                        .position(|b| *b == b',' || *b == b'}')
                        .map_or(bytes.len(), |p| at + p);
                    let splice = splices[(next() as usize) % splices.len()];
                    bytes.splice(at..end, splice.bytes());
                }
                _ => {
                    let i = (next() as usize) % bytes.len();
                    bytes.splice(i..i, "é".repeat((next() % 5) as usize).bytes());
                }
            }
            if let Ok(m) = parse_manifest(&bytes, &key) {
                accepted += 1;
                assert!(
                    m.files
                        .iter()
                        .all(|f| is_inside(&f.path) && crate::key::is_key(&f.blake3))
                );
                assert!(
                    m.parts
                        .values()
                        .chain(m.inputs.values())
                        .all(|k| crate::key::is_key(k))
                );
            }
        }
        assert!(accepted < 10_000, "some mutations must be refused");
        eprintln!("remote manifests: 10000 mutations, {accepted} accepted, 0 panics");
    }

    #[test]
    fn signatures_bind_the_manifest_bytes() {
        let (k, other) = (Signing::new("secret").key, Signing::new("other").key);
        assert_ne!(Signing::new("secret").id, Signing::new("other").id);
        assert_eq!(sign(&k, b"{}"), sign(&k, b"{}"));
        assert_ne!(sign(&k, b"{}"), sign(&k, b"{ }"));
        assert_ne!(sign(&k, b"{}"), sign(&other, b"{}"));
    }

    #[test]
    fn urls_must_be_s3() {
        assert!(Remote::open("gs://bucket").is_err());
        assert!(Remote::open("s3://").is_err());
    }
}
