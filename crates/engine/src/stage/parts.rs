//! Keying an instance's parts: [`Part`], and [`KeyInputs`], what a kind keys its parts on.

use serde_json::Value as Json;

use super::{ParamSpec, Params};

/// A further artifact an instance produces besides its own (a training checkpoint), with
/// its own key so that other instances can reuse it.
#[derive(Clone, Debug)]
pub struct Part {
    /// What it is, for people: `epoch 5`.
    pub name: String,
    /// Its key, computed from the instance's parameters and input keys alone.
    pub key: String,
}

/// What a kind keys its parts on: the instance's resolved parameter values and what its
/// key took from each input (slot -> the input's content digest or parts identity).
pub struct KeyInputs<'a> {
    /// The resolved parameter values.
    pub values: &'a Params,
    /// Each input slot's identity in the key.
    pub input_keys: &'a [(String, String)],
    /// Each input slot's upstream parts the instance sees (see [`StageKind::parts`](super::StageKind::parts)).
    pub input_parts: &'a [InputParts],
}

/// One input slot's upstream parts, name -> key.
pub type InputParts = (String, Vec<(String, String)>);

impl KeyInputs<'_> {
    /// The key of the upstream part `name` seen through `slot`.
    pub fn input_part(&self, slot: &str, name: &str) -> Option<&str> {
        self.input_parts
            .iter()
            .find(|(s, _)| s == slot)?
            .1
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
    }

    /// The upstream parts seen through `slot` (name -> key), in order.
    pub fn parts_of(&self, slot: &str) -> &[(String, String)] {
        self.input_parts
            .iter()
            .find(|(s, _)| s == slot)
            .map_or(&[], |(_, p)| p.as_slice())
    }

    /// The key of a part made from one upstream part (an analysis of one checkpoint): the
    /// kind's parameters in the key but `leave_out` (the list of epochs, say), `part_kind`,
    /// its `version`, and the upstream part's key. It depends on nothing else, so the same
    /// work on the same upstream part has the same key in any instance.
    pub fn derived_part_key(
        &self,
        part_kind: &str,
        version: u32,
        specs: &[ParamSpec],
        leave_out: &[&str],
        upstream_part: &str,
    ) -> String {
        let mut p = self.key_params(specs, leave_out);
        p.insert("input_part".into(), upstream_part.into());
        crate::key::compute_key(part_kind, version, &p, &[], &[])
    }

    /// One part per upstream part seen through `slot`, named like it and keyed by
    /// [`KeyInputs::derived_part_key`]: per-epoch work stored per epoch.
    pub fn parts_per_input_part(
        &self,
        slot: &str,
        part_kind: &str,
        version: u32,
        specs: &[ParamSpec],
        leave_out: &[&str],
    ) -> Vec<Part> {
        self.parts_of(slot)
            .iter()
            .map(|(name, upstream)| Part {
                name: name.clone(),
                key: self.derived_part_key(part_kind, version, specs, leave_out, upstream),
            })
            .collect()
    }
}

/// What a running instance's key took from its inputs, owned (see
/// [`RunContext::input_identities`](super::RunContext::input_identities)); [`InputIdentities::keys`] views it as [`KeyInputs`].
pub struct InputIdentities {
    /// Each slot's identity in the key.
    pub ids: Vec<(String, String)>,
    /// Each slot's upstream parts.
    pub parts: Vec<InputParts>,
}

impl InputIdentities {
    /// The [`KeyInputs`] of these identities and the instance's parameters.
    pub fn keys<'a>(&'a self, values: &'a Params) -> KeyInputs<'a> {
        KeyInputs {
            values,
            input_keys: &self.ids,
            input_parts: &self.parts,
        }
    }
}

impl KeyInputs<'_> {
    /// The values of the parameters in `specs` that are in the key, minus `leave_out`.
    pub fn key_params(
        &self,
        specs: &[ParamSpec],
        leave_out: &[&str],
    ) -> serde_json::Map<String, Json> {
        specs
            .iter()
            .filter(|s| s.in_key && !leave_out.contains(&s.name))
            .filter_map(|s| {
                let v = self.values.get(s.name)?;
                (!(s.key_omits_default && s.is_default(v))).then(|| (s.name.to_string(), v.clone()))
            })
            .collect()
    }
}
