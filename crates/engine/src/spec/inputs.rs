//! Connecting stages: every written input resolved to an upstream stage and to an input
//! slot of the stage's kind that takes the upstream kind, each slot filled exactly once.

use super::stage_table::RawStage;
use super::{InputRef, StageSpec};
use crate::error::{Error, Loc, suggest};
use crate::stage::{Inputs, Slot};

/// Resolves every stage's written inputs to stages and slots; the stages keep their
/// declaration order (and input indexes refer to it). The first problem, in declaration
/// order, is the error.
pub(super) fn connect(raws: Vec<RawStage>) -> Result<Vec<StageSpec>, Error> {
    let names: Vec<String> = raws.iter().map(|r| r.spec.name.clone()).collect();
    let kinds: Vec<&'static str> = raws.iter().map(|r| r.spec.kind.name()).collect();
    raws.into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let inputs = connect_stage(&raw, kinds[i], &names, &kinds)?;
            let mut spec = raw.spec;
            spec.inputs = inputs;
            Ok(spec)
        })
        .collect()
}

/// The inputs of one stage (of kind `kind`), resolved against every stage's name and kind.
fn connect_stage(
    raw: &RawStage,
    kind: &'static str,
    names: &[String],
    kinds: &[&'static str],
) -> Result<Vec<InputRef>, Error> {
    let path = format!("stage.{}.inputs", raw.spec.name);
    let mut resolved: Vec<InputRef> = Vec::new();
    for (slot, up, loc) in &raw.inputs {
        let Some(j) = names.iter().position(|n| n == up) else {
            return Err(Error::at(
                loc,
                &path,
                format!(
                    "unknown stage \"{up}\"{}",
                    suggest(up, names.iter().map(String::as_str))
                ),
            ));
        };
        let link = Link {
            up,
            up_kind: kinds[j],
            kind,
            loc,
            path: &path,
        };
        let slot = link.slot(raw.spec.kind.inputs(), slot.as_deref(), &resolved)?;
        if resolved.iter().any(|r| r.slot == slot) {
            return Err(link.error(format!("input slot `{slot}` is filled twice")));
        }
        resolved.push(InputRef {
            slot,
            stage: up.clone(),
            index: j,
            loc: loc.clone(),
        });
    }
    check_all_filled(raw, kind, &resolved, &path)?;
    Ok(resolved)
}

/// Fails on the first declared slot of the stage's kind that no input fills, pointing at
/// the `inputs` value (or the stage's table when it has none).
fn check_all_filled(
    raw: &RawStage,
    kind: &str,
    resolved: &[InputRef],
    path: &str,
) -> Result<(), Error> {
    let Inputs::Slots(slots) = raw.spec.kind.inputs() else {
        return Ok(());
    };
    for d in slots.iter().filter(|d| !d.optional) {
        if !resolved.iter().any(|r| r.slot == d.name) {
            let at = raw
                .inputs_loc
                .clone()
                .unwrap_or_else(|| raw.spec.loc.clone());
            return Err(Error::at(
                &at,
                path,
                format!(
                    "a `{kind}` stage needs input `{}` (a {} stage)",
                    d.name,
                    d.kinds.join(" or ")
                ),
            ));
        }
    }
    Ok(())
}

/// One written input being connected: the names its slot choice and errors need.
struct Link<'a> {
    /// The upstream stage's name.
    up: &'a str,
    /// The upstream stage's kind.
    up_kind: &'static str,
    /// The kind of the stage taking the input.
    kind: &'static str,
    /// Where the upstream stage's name was written.
    loc: &'a Loc,
    /// The key path of the stage's inputs, `stage.NAME.inputs`.
    path: &'a str,
}

impl Link<'_> {
    /// The slot the input fills: the one it names (which must exist and take the upstream
    /// kind), or else the first slot not yet filled that takes the upstream kind. A kind
    /// that takes any inputs takes any slot name, by default the upstream stage's name.
    fn slot(
        &self,
        inputs: Inputs,
        named: Option<&str>,
        resolved: &[InputRef],
    ) -> Result<String, Error> {
        match (inputs, named) {
            (Inputs::Any, Some(s)) => Ok(s.to_string()),
            (Inputs::Any, None) => Ok(self.up.to_string()),
            (Inputs::Slots(slots), Some(s)) => self.named_slot(slots, s),
            (Inputs::Slots(slots), None) => self.free_slot(slots, resolved),
        }
    }

    /// The slot `s` the input names, if the kind has it and it takes the upstream kind.
    fn named_slot(&self, slots: &[Slot], s: &str) -> Result<String, Error> {
        let Some(decl) = slots.iter().find(|d| d.name == s) else {
            let ns: Vec<&str> = slots.iter().map(|d| d.name).collect();
            return Err(self.error(format!(
                "{} `{}` stage has no input slot `{s}`; its slots: {}",
                crate::error::article(self.kind),
                self.kind,
                ns.join(", ")
            )));
        };
        if let Some(why) = decl.refusal(self.up_kind) {
            return Err(self.refused(why));
        }
        if !decl.kinds.contains(&self.up_kind) {
            return Err(self.error(format!(
                "slot `{s}` takes {} {} stage, but \"{}\" is {} `{}` stage",
                crate::error::article(decl.kinds.first().copied().unwrap_or("")),
                decl.kinds.join(" or "),
                self.up,
                crate::error::article(self.up_kind),
                self.up_kind
            )));
        }
        Ok(s.to_string())
    }

    /// The first slot that takes the upstream kind and no earlier input fills.
    fn free_slot(&self, slots: &[Slot], resolved: &[InputRef]) -> Result<String, Error> {
        let free = slots.iter().find(|d| {
            d.kinds.contains(&self.up_kind) && !resolved.iter().any(|r| r.slot == d.name)
        });
        match free {
            Some(d) => Ok(d.name.to_string()),
            None if slots.iter().any(|d| d.refusal(self.up_kind).is_some()) => {
                let why = slots.iter().find_map(|d| d.refusal(self.up_kind));
                Err(self.refused(why.unwrap_or_default()))
            }
            None => {
                let ns: Vec<String> = slots
                    .iter()
                    .map(|d| format!("{} ({})", d.name, d.kinds.join("/")))
                    .collect();
                Err(self.error(format!(
                    "\"{}\" is {} `{}` stage, which no free input slot of {} `{}` stage takes; its slots: {}",
                    self.up,
                    crate::error::article(self.up_kind),
                    self.up_kind,
                    crate::error::article(self.kind),
                    self.kind,
                    ns.join(", ")
                )))
            }
        }
    }

    /// The error for an upstream kind a slot refuses, saying why.
    fn refused(&self, why: &str) -> Error {
        self.error(format!(
            "\"{}\" is {} `{}` stage, which {} `{}` stage does not take: {why}",
            self.up,
            crate::error::article(self.up_kind),
            self.up_kind,
            crate::error::article(self.kind),
            self.kind,
        ))
    }

    /// An error at the input, about the stage's inputs.
    fn error(&self, message: String) -> Error {
        Error::at(self.loc, self.path, message)
    }
}
