//! Keys: blake3 over a canonical JSON encoding of everything that defines an output (the
//! kind, its code version, the parameters in the key, what it reads of each input (the
//! input's content digest, or the keys of the input's parts it reads), declared files'
//! hashes).
//! Depends on nothing else in the engine, so the plan, the store's index and stage kinds
//! (which key their parts) can all use it.

use serde_json::Value as Json;

/// Version of the key derivation itself; bumping it changes every key.
pub const KEY_SCHEMA: u32 = 1;

/// Writes JSON with object keys sorted, so equal values always give equal text.
pub fn canonical_json(v: &Json, out: &mut String) {
    match v {
        Json::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&m[k], out);
            }
            out.push('}');
        }
        Json::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The key of an instance: blake3 over the canonical encoding of everything that defines it.
pub fn compute_key(
    kind: &str,
    version: u32,
    key_params: &serde_json::Map<String, Json>,
    inputs: &[(String, String)],
    files: &[(String, String)],
) -> String {
    let mut doc = serde_json::Map::new();
    doc.insert("schema".into(), Json::from(KEY_SCHEMA));
    doc.insert("kind".into(), Json::from(kind));
    doc.insert("version".into(), Json::from(version));
    doc.insert("params".into(), Json::Object(key_params.clone()));
    doc.insert(
        "inputs".into(),
        Json::Object(
            inputs
                .iter()
                .map(|(s, k)| (s.clone(), Json::from(k.as_str())))
                .collect(),
        ),
    );
    doc.insert(
        "files".into(),
        Json::Object(
            files
                .iter()
                .map(|(n, h)| (n.clone(), Json::from(h.as_str())))
                .collect(),
        ),
    );
    let mut text = String::with_capacity(256);
    canonical_json(&Json::Object(doc), &mut text);
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

/// The content digest of an artifact: blake3 over its files' paths, hashes and sizes
/// (`files` sorted by path, as a manifest lists them). Two artifacts with the same bytes
/// have the same digest whatever produced them; a dependent keyed on it is early-cut-off.
pub fn content_digest<'a>(files: impl Iterator<Item = (&'a str, &'a str, u64)>) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"pipe content digest 1\n");
    for (path, hash, size) in files {
        h.update(path.as_bytes());
        h.update(b"\0");
        h.update(hash.as_bytes());
        h.update(b"\0");
        h.update(size.to_string().as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// The identity of the parts an instance reads of an input (name -> key, in the order
/// given): what it is keyed on instead of the whole input's content.
pub fn parts_id(parts: &[(String, String)]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"pipe parts 1\n");
    for (name, key) in parts {
        h.update(name.as_bytes());
        h.update(b"\0");
        h.update(key.as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// A float as JSON, with `-0.0` normalized to `0.0`; `None` for NaN and infinities.
pub fn float(x: f64) -> Option<Json> {
    let x = if x == 0.0 { 0.0 } else { x };
    serde_json::Number::from_f64(x).map(Json::Number)
}

/// The first `n` characters of `s` (a key, a hash), for messages: never splits a
/// character, so text read from a damaged or hostile manifest cannot make it panic.
pub fn short(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Whether `s` is a key (or a content hash): 64 lowercase hex digits. Every key read from a
/// file (a manifest, a job file, a remote) is checked with this before it names a path.
pub fn is_key(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn digests_follow_content_only() {
        let a = content_digest([("a.txt", "00", 3u64), ("b/c", "11", 0)].into_iter());
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            content_digest([("a.txt", "00", 3u64), ("b/c", "11", 0)].into_iter())
        );
        assert_ne!(
            a,
            content_digest([("a.txt", "01", 3u64), ("b/c", "11", 0)].into_iter())
        );
        assert_ne!(
            a,
            content_digest([("a.txt", "00", 4u64), ("b/c", "11", 0)].into_iter())
        );
        assert_ne!(
            a,
            content_digest([("a.tx", "t00", 3u64), ("b/c", "11", 0)].into_iter())
        );
        let p = |n: &str, k: &str| vec![(n.to_string(), k.to_string())];
        assert_eq!(parts_id(&p("epoch 1", "aa")), parts_id(&p("epoch 1", "aa")));
        assert_ne!(parts_id(&p("epoch 1", "aa")), parts_id(&p("epoch 2", "aa")));
        assert_ne!(parts_id(&p("epoch 1", "aa")), parts_id(&p("epoch 1", "ab")));
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut a = String::new();
        canonical_json(&json!({"b": 1, "a": {"z": [1, 2.5], "y": "s"}}), &mut a);
        assert_eq!(a, r#"{"a":{"y":"s","z":[1,2.5]},"b":1}"#);
    }
}
