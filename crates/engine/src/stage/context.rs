//! What a running instance sees: [`RunContext`], its inputs, and [`BadData`], the error
//! that blames the user's data.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::{InputIdentities, Params};

/// An input artifact of a running instance.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InputArtifact {
    /// The slot it fills.
    pub slot: String,
    /// Its key.
    pub key: String,
    /// What the instance's key took from it: the input's content digest, or the identity
    /// of the parts it reads ([`StageKind::reads`](super::StageKind::reads)). Parts are keyed on these.
    pub id: String,
    /// The upstream parts the instance sees through this slot (name -> key).
    #[serde(default)]
    pub parts: Vec<(String, String)>,
    /// Its (complete, read-only) directory.
    pub dir: PathBuf,
}

/// Everything an instance's [`StageKind::run`](super::StageKind::run) may use.
pub struct RunContext<'a> {
    /// The instance's resolved parameters.
    pub params: &'a Params,
    /// Each input slot with the key and directory of the artifact that fills it.
    pub inputs: &'a [InputArtifact],
    /// Reads and writes the instance's parts (see [`StageKind::parts`](super::StageKind::parts)).
    pub parts: &'a crate::store::Parts,
    /// The (temporary) directory to write the output into.
    pub out: &'a Path,
    /// The instance's log; stages write progress and diagnostics here.
    pub log: &'a mut File,
    /// Where the log is (for stages that hand their work to another process).
    pub log_path: &'a Path,
    /// How many threads the instance may use.
    pub threads: usize,
    /// The directory relative paths in the pipeline file are resolved against.
    pub base_dir: &'a Path,
    /// The instance's key.
    pub key: &'a str,
    /// The instance as people name it (`train[noise=0.4,seed=1]`), for messages.
    pub label: &'a str,
    /// The sweep variables the instance's own key parameters reference, as a JSON object:
    /// the same for every instance that shares its key (a variable that reaches it only
    /// through an input is not in it).
    pub point: &'a Json,
    /// When the stage must have ended (its `timeout`), if ever: kinds that run a command
    /// start it as a [`Supervised`](super::Supervised) and wait for it with
    /// [`SupervisedChild::wait_until`](super::SupervisedChild::wait_until), which stops it
    /// then.
    pub deadline: Option<std::time::Instant>,
    /// When the executor places instances on GPUs (`--gpus`), the `CUDA_VISIBLE_DEVICES`
    /// that processes the kind starts must get: the instance's GPU, or `""` (none) for a CPU
    /// instance. `None`: leave the environment as it is.
    pub visible_gpus: Option<&'a str>,
}

impl RunContext<'_> {
    /// Each input's identity in the key and the upstream parts it shows: what a kind keys
    /// its parts on while it runs (`ctx.input_identities().keys(ctx.params)`).
    pub fn input_identities(&self) -> InputIdentities {
        let (ids, parts) = self
            .inputs
            .iter()
            .map(|i| {
                (
                    (i.slot.clone(), i.id.clone()),
                    (i.slot.clone(), i.parts.clone()),
                )
            })
            .unzip();
        InputIdentities { ids, parts }
    }

    /// The artifact directory filling an input slot.
    pub fn input(&self, slot: &str) -> anyhow::Result<&Path> {
        self.inputs
            .iter()
            .find(|i| i.slot == slot)
            .map(|i| i.dir.as_path())
            .ok_or_else(|| anyhow::anyhow!("input slot `{slot}` is not connected"))
    }
}

/// Marks a stage failure as caused by the user's data (a malformed or missing data file),
/// not by the code: the run then exits with code 2 instead of 1.
#[derive(Debug)]
pub struct BadData(pub String);

impl std::fmt::Display for BadData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadData {}
