//! Every table an artifact of `pipe`'s stage kinds holds, as one typed declaration each:
//! the writer (in `pipe` or the `pipe-torch` worker), the reader downstream, export and
//! report all go through these types, so a column cannot be renamed on one side only.
//! Column order here is the order in the Parquet file.

use pipe_engine::table;
use pipe_engine::table::FixedRows;

/// The files of a `dataset` artifact's two [`Images`] tables.
impl Images {
    /// The training set's file.
    pub const TRAIN_FILE: &str = "train.parquet";
    /// The test set's file.
    pub const TEST_FILE: &str = "test.parquet";
}

table! {
    /// `train.parquet` / `test.parquet` of a `dataset` artifact: one row per image.
    pub struct Images {
        /// Row number in this file.
        index: Vec<i64>,
        /// Position in the source files.
        source_index: Vec<i64>,
        /// The class.
        label: Vec<i64>,
        /// Pixels, channel-major (`channels * height * width` bytes).
        image: FixedRows<u8>,
    }
}

table! {
    /// `labels.parquet` of a `corrupt` artifact: one row per training example.
    pub struct Labels in "labels" {
        /// The example's index in the training set.
        index: Vec<i64>,
        /// Its label in the data set.
        true_label: Vec<i64>,
        /// The label it is trained on.
        train_label: Vec<i64>,
        /// Whether it was chosen for corruption (`fraction` of the examples are).
        chosen: Vec<bool>,
        /// Whether its label changed (`train_label != true_label`): the corrupted examples.
        /// Under `permute`, about 1/C of the chosen examples keep their own label.
        changed: Vec<bool>,
    }
}

table! {
    /// `metrics.parquet` of a `train` artifact (and of each checkpoint): one row per
    /// epoch, 0 = initialization.
    pub struct Metrics in "metrics" {
        /// Epoch (0 = before training).
        epoch: Vec<i64>,
        /// Learning rate used during the epoch (0 for epoch 0).
        lr: Vec<f64>,
        /// Mean loss on the training set against the training labels.
        train_loss: Vec<f64>,
        /// Accuracy on the training set against the training labels.
        train_acc: Vec<f64>,
        /// Accuracy on the clean training examples (those not chosen for corruption).
        clean_acc: Vec<f64>,
        /// Accuracy on the corrupted examples (label changed) against their training labels.
        corrupted_train_acc: Vec<Option<f64>>,
        /// Accuracy on the corrupted examples (label changed) against their true labels.
        corrupted_true_acc: Vec<Option<f64>>,
        /// Mean loss on the test set.
        test_loss: Vec<f64>,
        /// Accuracy on the test set.
        test_acc: Vec<f64>,
    }
}

table! {
    /// `probe_set.parquet` of an `activations` artifact: the examples whose features are
    /// stored, in feature-row order.
    pub struct ProbeSet in "probe_set" {
        /// Row in the features files.
        example: Vec<i64>,
        /// Index in the training set.
        index: Vec<i64>,
        /// Its label in the data set.
        true_label: Vec<i64>,
        /// The label it was trained on.
        train_label: Vec<i64>,
        /// Whether it is corrupted (its label changed); otherwise it is clean (not chosen).
        corrupted: Vec<bool>,
    }
}

table! {
    /// `epoch=E/LAYER.parquet` of an `activations` artifact: one layer's features of the
    /// probe set at one epoch.
    pub struct Features {
        /// Row in the probe set.
        example: Vec<i64>,
        /// The features (projected when the layer is wider than `max_features`).
        features: FixedRows<f32>,
    }
}

table! {
    /// `probe.parquet` of a `probe` artifact: one row per epoch, layer and labeling.
    pub struct Probe in "probe" {
        /// The epoch.
        epoch: Vec<i64>,
        /// The layer.
        layer: Vec<String>,
        /// `unpermuted`, `permuted` or `restored`.
        labeling: Vec<String>,
        /// Manifold capacity.
        capacity: Vec<f64>,
        /// Mean manifold radius.
        radius: Vec<f64>,
        /// Mean manifold dimension.
        dimension: Vec<f64>,
        /// Mean correlation between manifold centers.
        center_correlation: Vec<f64>,
        /// Dimension of the removed center subspace.
        k as "K": Vec<i64>,
        /// Number of manifolds.
        p as "P": Vec<i64>,
        /// Points per manifold (mean, rounded).
        m as "M": Vec<i64>,
        /// Gaussian vectors per manifold.
        n_t: Vec<i64>,
        /// Test accuracy of the linear probe, when fitted.
        linear_probe_acc: Vec<Option<f64>>,
    }
}

table! {
    /// `probe_manifolds.parquet` of a `probe` artifact: one row per manifold.
    pub struct ProbeManifolds in "probe_manifolds" {
        /// The epoch.
        epoch: Vec<i64>,
        /// The layer.
        layer: Vec<String>,
        /// The labeling.
        labeling: Vec<String>,
        /// The manifold's label.
        label: Vec<i64>,
        /// Its capacity.
        capacity: Vec<f64>,
        /// Its radius.
        radius: Vec<f64>,
        /// Its dimension.
        dimension: Vec<f64>,
    }
}

table! {
    /// `gradnorm_examples.parquet` of a `gradnorm` artifact: the examples used.
    pub struct GradNormExamples in "gradnorm_examples" {
        /// Index in the training set.
        index: Vec<i64>,
        /// `clean`, `corrupted` or `unchanged`.
        group: Vec<String>,
    }
}

table! {
    /// `gradnorm.parquet` of a `gradnorm` artifact: one row per epoch, layer and group, the
    /// norms of the group's mean gradient and of its two centered parts (science.md, Eq. 25).
    pub struct GradNorm in "gradnorm" {
        /// The epoch.
        epoch: Vec<i64>,
        /// The layer.
        layer: Vec<String>,
        /// `clean`, `corrupted` or `unchanged`.
        group: Vec<String>,
        /// Examples in the group.
        n: Vec<i64>,
        /// |G_dep| = |(1/n) sum_i J_i^T (y_i - 1/C)|.
        label_dependent: Vec<f64>,
        /// |G_ind| = |(1/n) sum_i J_i^T (p_i - 1/C)|.
        label_independent: Vec<f64>,
        /// |G_ind - G_dep|: the norm of the group's mean cross-entropy gradient.
        total: Vec<f64>,
    }
}

table! {
    /// `gradnorm_per_example.parquet` of a `gradnorm` artifact (with `per_example = true`):
    /// one row per epoch, layer and example, the same three norms for one example.
    pub struct GradNormPerExample in "gradnorm_per_example" {
        /// The epoch.
        epoch: Vec<i64>,
        /// The layer.
        layer: Vec<String>,
        /// Index in the training set.
        index: Vec<i64>,
        /// `clean`, `corrupted` or `unchanged`.
        group: Vec<String>,
        /// |J_i^T (y_i - 1/C)|.
        label_dependent: Vec<f64>,
        /// |J_i^T (p_i - 1/C)|.
        label_independent: Vec<f64>,
        /// |J_i^T (p_i - y_i)|.
        total: Vec<f64>,
    }
}

table! {
    /// `rollback.parquet` of a `rollback` artifact: one row per (epoch, cutoff), plus the
    /// final weights as they are (`cutoff = "none"`).
    pub struct Rollback in "rollback" {
        /// The epoch rolled back to.
        from_epoch: Vec<i64>,
        /// The first layer rolled back, or `none`.
        cutoff: Vec<String>,
        /// Its position among the layers with weights (-1 for none).
        cutoff_index: Vec<i64>,
        /// How many layers were rolled back.
        layers_rolled_back: Vec<i64>,
        /// Test accuracy.
        test_acc: Vec<f64>,
        /// Accuracy on the clean training examples.
        clean_acc: Vec<f64>,
        /// Accuracy on the corrupted examples against their training labels.
        corrupted_train_acc: Vec<Option<f64>>,
        /// Accuracy on the corrupted examples against their true labels.
        corrupted_true_acc: Vec<Option<f64>>,
    }
}

table! {
    /// `embedding.parquet` of an `embed` artifact: one row per epoch, layer, method and
    /// probe-set example: its 2-D coordinates and how many of its neighbours share its labels.
    pub struct Embedding in "embedding" {
        /// The epoch.
        epoch: Vec<i64>,
        /// The layer.
        layer: Vec<String>,
        /// `pca` or `tsne`.
        method: Vec<String>,
        /// Index in the training set.
        index: Vec<i64>,
        /// First coordinate.
        x: Vec<f64>,
        /// Second coordinate.
        y: Vec<f64>,
        /// Its label in the data set.
        true_label: Vec<i64>,
        /// The label it was trained on.
        train_label: Vec<i64>,
        /// `clean` or `corrupted`.
        group: Vec<String>,
        /// Share of its nearest neighbours in 2-D, among its group, with its training label.
        train_label_agreement: Vec<f64>,
        /// Share of its nearest neighbours in 2-D, among its group, with its true label.
        true_label_agreement: Vec<f64>,
    }
}

table! {
    /// `examples.parquet` of a `train` artifact recorded with `record_examples = true`
    /// (and of each of its checkpoints): one row per training example and epoch (0 =
    /// initialization), from the evaluation pass after the epoch.
    pub struct Examples in "examples" {
        /// Epoch (0 = before training).
        epoch: Vec<i64>,
        /// The example's index in the training set.
        index: Vec<i64>,
        /// The label it is trained on.
        label: Vec<i64>,
        /// Whether its label was corrupted (`train_label != true_label`); never used to score.
        changed: Vec<bool>,
        /// Its loss against its training label (the training loss).
        loss: Vec<f64>,
        /// The logit of its training label minus the largest other logit.
        margin: Vec<f64>,
        /// The class the model predicts.
        predicted: Vec<i64>,
        /// Whether the model predicts its training label.
        correct: Vec<bool>,
        /// Norm of its loss's gradient with respect to the last layer's weights.
        grad_norm: Vec<f64>,
        /// Cosine between that gradient and the mean gradient of the examples with the same
        /// training label (its class's direction, which the clean majority sets).
        grad_agreement: Vec<f64>,
        /// The same for the gradient's label-dependent part `(e_y - 1/C) h^T` (the study's
        /// decomposition): the cosine between the example's last-layer input `h` and the
        /// mean `h` of the examples with its training label.
        dep_agreement: Vec<f64>,
    }
}

table! {
    /// `scores.parquet` of a `detect` artifact: one row per method and training example.
    pub struct Scores in "scores" {
        /// The scoring method (`aum`, `loss`, ...).
        method: Vec<String>,
        /// The example's index in the training set.
        index: Vec<i64>,
        /// Higher = more likely mislabeled.
        score: Vec<f64>,
        /// Whether the method flags it (among the count the method estimates).
        flagged: Vec<bool>,
        /// The label it was trained on.
        label: Vec<i64>,
        /// The class the model predicts at the end of the detection window, before it
        /// memorizes the noise (the label `clean`'s `relabel` gives).
        predicted: Vec<i64>,
        /// Whether its label was truly corrupted (for judging only).
        changed: Vec<bool>,
    }
}

table! {
    /// `detection.parquet` of a `detect` artifact: how well each method finds the corrupted
    /// examples, one row per method, the default method first.
    pub struct Detection in "detection" {
        /// The scoring method.
        method: Vec<String>,
        /// Area under the ROC curve (missing without both clean and corrupted examples).
        auroc: Vec<Option<f64>>,
        /// Average precision (missing without corrupted examples).
        average_precision: Vec<Option<f64>>,
        /// Of the flagged, the fraction truly corrupted (missing when none is flagged).
        precision: Vec<Option<f64>>,
        /// Of the corrupted, the fraction flagged (missing without corrupted examples).
        recall: Vec<Option<f64>>,
        /// Harmonic mean of precision and recall.
        f1: Vec<Option<f64>>,
        /// How many the method flags.
        flagged: Vec<i64>,
        /// The method's estimate of the noise level: flagged / n (the truth is not used).
        estimated_noise: Vec<f64>,
        /// Training examples.
        n: Vec<i64>,
        /// Of those, the truly corrupted.
        n_changed: Vec<i64>,
    }
}

table! {
    /// `roc.parquet` of a `detect` artifact: each method's ROC curve, at most 201 points
    /// a method, from (0, 0) to (1, 1).
    pub struct Roc in "roc" {
        /// The scoring method.
        method: Vec<String>,
        /// False-positive rate: the fraction of clean examples scored at least the threshold.
        fpr: Vec<f64>,
        /// True-positive rate: the fraction of corrupted examples scored at least the threshold.
        tpr: Vec<f64>,
    }
}
