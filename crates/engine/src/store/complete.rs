//! Whether an artifact is complete, read from its manifest without building a
//! [`Manifest`]: a no-op run and `status` ask this of every cached instance, and need only
//! the key and each file's path and size.
//!
//! [`ManifestCheck`] accepts exactly the manifests that parse as a [`Manifest`] (the same
//! fields, required or defaulted alike, each checked for the same JSON type), so an
//! artifact is complete here exactly when [`Store::complete_manifest`] says so; it only
//! skips allocating what it does not keep (strings, maps, parameter trees).
//!
//! [`Manifest`]: super::Manifest
//! [`Store::complete_manifest`]: super::Store::complete_manifest

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A manifest as the completeness check reads it (the fields of [`super::Manifest`], in
/// its order, with the same types where kept and the same JSON type where skipped).
#[derive(Deserialize)]
pub(super) struct ManifestCheck<'a> {
    #[serde(borrow)]
    pub key: Cow<'a, str>,
    #[allow(dead_code)]
    kind: AnyStr,
    #[allow(dead_code)]
    version: u32,
    #[allow(dead_code)]
    stage: AnyStr,
    #[allow(dead_code)]
    pipeline: AnyStr,
    // `serde_json::Value` in the manifest: any JSON value, but required.
    #[allow(dead_code)]
    point: IgnoredAny,
    #[allow(dead_code)]
    params: IgnoredAny,
    #[allow(dead_code)]
    inputs: StrMap,
    #[allow(dead_code)]
    #[serde(default)]
    declared_files: StrMap,
    #[serde(borrow)]
    pub files: Vec<FileCheck<'a>>,
    #[allow(dead_code)]
    #[serde(default)]
    parts: StrMap,
    #[allow(dead_code)]
    started: f64,
    #[allow(dead_code)]
    seconds: f64,
    #[allow(dead_code)]
    pipe_version: AnyStr,
    #[allow(dead_code)]
    host: AnyStr,
}

/// A [`super::FileEntry`] as the check reads it.
#[derive(Deserialize)]
pub(super) struct FileCheck<'a> {
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    #[allow(dead_code)]
    blake3: AnyStr,
    pub size: u64,
}

/// A JSON string, checked and dropped (a `String` field of the manifest).
pub(super) struct AnyStr;

impl<'de> Deserialize<'de> for AnyStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON object of strings, checked and dropped (a `BTreeMap<String, String>` field).
#[derive(Default)]
pub(super) struct StrMap;

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrMap, A::Error> {
                while m.next_entry::<AnyStr, AnyStr>()?.is_some() {}
                Ok(StrMap)
            }
        }
        d.deserialize_map(V)
    }
}

/// Any JSON value that parses as a `serde_json::Value`, checked and dropped: unlike
/// [`IgnoredAny`], it refuses what `Value` refuses (a number out of range).
pub(super) struct AnyJson;

impl<'de> Deserialize<'de> for AnyJson {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyJsonVisitor)
    }
}

struct AnyJsonVisitor;

impl<'de> Visitor<'de> for AnyJsonVisitor {
    type Value = AnyJson;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_unit<E: de::Error>(self) -> Result<AnyJson, E> {
        Ok(AnyJson)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<AnyJson, A::Error> {
        while s.next_element::<AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AnyJson, A::Error> {
        while m.next_entry::<AnyStr, AnyJson>()?.is_some() {}
        Ok(AnyJson)
    }
}

/// A JSON object of any values, checked and dropped (a `serde_json::Map` field).
pub(super) struct AnyMap;

impl<'de> Deserialize<'de> for AnyMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AnyMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<AnyMap, A::Error> {
                while m.next_entry::<AnyStr, AnyJson>()?.is_some() {}
                Ok(AnyMap)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Manifest;
    use super::*;

    /// A manifest as the store writes it.
    const GOOD: &str = r#"{
  "key": "k\u0031",
  "kind": "exec",
  "version": 1,
  "stage": "copy",
  "pipeline": "p",
  "point": {"i": 3},
  "params": {"cmd": ["sh", "-c", "x"], "env": {}},
  "inputs": {"data": "aa"},
  "declared_files": {"in/3.txt": "bb"},
  "files": [{"path": "out.txt", "blake3": "cc", "size": 4}],
  "parts": {"epoch=1": "dd"},
  "started": 1.5,
  "seconds": 2,
  "pipe_version": "0.1.0",
  "host": "vm"
}"#;

    /// Whether the full manifest and the check agree on `text`, and what the check read.
    fn both(text: &str) -> Option<(String, Vec<(String, u64)>)> {
        let full = serde_json::from_str::<Manifest>(text);
        let check = serde_json::from_str::<ManifestCheck<'_>>(text);
        assert_eq!(
            full.is_ok(),
            check.is_ok(),
            "full: {:?}, check: {:?} for {text}",
            full.as_ref().err(),
            check.as_ref().err()
        );
        check.ok().map(|c| {
            (
                c.key.into_owned(),
                c.files
                    .into_iter()
                    .map(|f| (f.path.into_owned(), f.size))
                    .collect(),
            )
        })
    }

    #[test]
    fn reads_key_and_files_of_a_good_manifest() {
        assert_eq!(
            both(GOOD),
            Some(("k1".to_string(), vec![("out.txt".to_string(), 4)]))
        );
        // The defaulted fields may be left out, as in a manifest that has no parts.
        let bare = GOOD
            .replace(r#""declared_files": {"in/3.txt": "bb"},"#, "")
            .replace(r#""parts": {"epoch=1": "dd"},"#, "");
        assert!(both(&bare).is_some());
    }

    #[test]
    fn refuses_what_the_full_manifest_refuses() {
        let bad = [
            // Required fields left out.
            GOOD.replace(r#""point": {"i": 3},"#, ""),
            GOOD.replace(r#""host": "vm""#, r#""hostname": "vm""#),
            GOOD.replace(r#""inputs": {"data": "aa"},"#, ""),
            // Wrong types.
            GOOD.replace(r#""version": 1"#, r#""version": "1""#),
            GOOD.replace(r#""version": 1"#, r#""version": -1"#),
            GOOD.replace(r#""kind": "exec""#, r#""kind": 7"#),
            GOOD.replace(r#""inputs": {"data": "aa"}"#, r#""inputs": {"data": 1}"#),
            GOOD.replace(r#""inputs": {"data": "aa"}"#, r#""inputs": ["aa"]"#),
            GOOD.replace(r#""parts": {"epoch=1": "dd"}"#, r#""parts": null"#),
            GOOD.replace(r#""size": 4"#, r#""size": 4.5"#),
            GOOD.replace(r#""size": 4"#, r#""size": "4""#),
            GOOD.replace(r#""blake3": "cc", "#, ""),
            GOOD.replace(r#""started": 1.5"#, r#""started": "now""#),
            // A field twice, and broken JSON.
            GOOD.replace(r#""stage": "copy","#, r#""stage": "copy", "stage": "c","#),
            GOOD[..GOOD.len() - 2].to_string(),
            format!("{GOOD} x"),
        ];
        for text in &bad {
            assert_eq!(both(text), None, "accepted: {text}");
        }
    }
}
