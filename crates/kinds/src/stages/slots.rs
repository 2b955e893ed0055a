//! How kinds connect: every kind's name, and the input slots through which one kind's
//! output feeds another. Declared here, apart from the kinds, so that a kind can name the
//! kinds it takes without importing their files (no kind module imports another's to
//! wire an input). A kind's file says `pub const NAME: &str = names::X;`, lists its slots
//! in `Kind::inputs` and reads an input with `ctx.input(slots::X.name)`.

use pipe_engine::stage::Slot;

/// The name of each built-in kind, as pipelines write it in `kind = "..."`.
pub mod names {
    /// `exec`: a command of the user's.
    pub const EXEC: &str = "exec";
    /// `dataset`: a data set read into Parquet.
    pub const DATASET: &str = "dataset";
    /// `corrupt`: noisy training labels.
    pub const CORRUPT: &str = "corrupt";
    /// `train`: a trained network and its checkpoints.
    pub const TRAIN: &str = "train";
    /// `activations`: layer outputs of a probe set.
    pub const ACTIVATIONS: &str = "activations";
    /// `gradnorm`: gradient norms per layer and group.
    pub const GRADNORM: &str = "gradnorm";
    /// `rollback`: layers rolled back to earlier epochs.
    pub const ROLLBACK: &str = "rollback";
    /// `probe`: manifold geometry and linear probes.
    pub const PROBE: &str = "probe";
    /// `embed`: 2-D views of the activations.
    pub const EMBED: &str = "embed";
    /// `detect`: scores of how likely each label is wrong.
    pub const DETECT: &str = "detect";
    /// `clean`: labels with the flagged examples dropped or relabeled.
    pub const CLEAN: &str = "clean";
    /// `import`: a run trained by the user's own command, checked as a training run.
    pub const IMPORT: &str = "import";
}

/// A data set (`dataset`).
pub const DATASET: Slot = Slot {
    name: "dataset",
    kinds: &[names::DATASET],
    optional: false,
    refuses: &[],
};

/// Training labels: corrupted (`corrupt`) or cleaned (`clean`).
pub const LABELS: Slot = Slot {
    name: "labels",
    kinds: &[names::CORRUPT, names::CLEAN],
    optional: false,
    refuses: &[],
};

/// A trained network, the input of every analysis of one: pipe's own training (`train`)
/// or a run trained elsewhere (`import`). Named `train`.
pub const TRAINED: Slot = Slot {
    name: names::TRAIN,
    kinds: &[names::TRAIN, names::IMPORT],
    optional: false,
    refuses: &[],
};

/// Activations of a probe set (`activations`).
pub const ACTIVATIONS: Slot = Slot {
    name: "activations",
    kinds: &[names::ACTIVATIONS],
    optional: false,
    refuses: &[],
};

/// Detection scores (`detect`).
pub const SCORES: Slot = Slot {
    name: "scores",
    kinds: &[names::DETECT],
    optional: false,
    refuses: &[],
};

/// A TorchScript module (`model.pt` in an `exec` stage's output) that `train` trains when
/// `model = "script"`; a built-in model leaves it empty.
pub const MODULE: Slot = Slot {
    name: "module",
    kinds: &[names::EXEC],
    optional: true,
    refuses: &[],
};
