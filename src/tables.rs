//! Every table an artifact of `pipe`'s stage kinds holds, as one typed declaration each:
//! the writer (in `pipe` or the `pipe-torch` worker), the reader downstream, export and
//! report all go through these types, so a column cannot be renamed on one side only.
//! Column order here is the order in the Parquet file.

use crate::table;
use crate::table::FixedRows;

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
    pub struct Labels {
        /// The example's index in the training set.
        index: Vec<i64>,
        /// Its label in the data set.
        true_label: Vec<i64>,
        /// The label it is trained on.
        train_label: Vec<i64>,
        /// Whether it was chosen for corruption.
        corrupted: Vec<bool>,
    }
}

table! {
    /// `metrics.parquet` of a `train` artifact (and of each checkpoint): one row per
    /// epoch, 0 = initialization.
    pub struct Metrics {
        /// Epoch (0 = before training).
        epoch: Vec<i64>,
        /// Learning rate used during the epoch (0 for epoch 0).
        lr: Vec<f64>,
        /// Mean loss on the training set against the training labels.
        train_loss: Vec<f64>,
        /// Accuracy on the training set against the training labels.
        train_acc: Vec<f64>,
        /// Accuracy on the clean training examples.
        clean_acc: Vec<f64>,
        /// Accuracy on the corrupted examples against their training labels.
        corrupted_train_acc: Vec<Option<f64>>,
        /// Accuracy on the corrupted examples against their true labels.
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
    pub struct ProbeSet {
        /// Row in the features files.
        example: Vec<i64>,
        /// Index in the training set.
        index: Vec<i64>,
        /// Its label in the data set.
        true_label: Vec<i64>,
        /// The label it was trained on.
        train_label: Vec<i64>,
        /// Whether it was corrupted.
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
    pub struct Probe {
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
    pub struct ProbeManifolds {
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
    pub struct GradNormExamples {
        /// Index in the training set.
        index: Vec<i64>,
        /// Whether it was corrupted.
        corrupted: Vec<bool>,
    }
}

table! {
    /// `gradnorm.parquet` of a `gradnorm` artifact: one row per epoch and layer.
    pub struct GradNorm {
        /// The epoch.
        epoch: Vec<i64>,
        /// The layer.
        layer: Vec<String>,
        /// Norm of the clean examples' mean gradient.
        clean_grad_norm: Vec<f64>,
        /// Norm of the corrupted examples' mean gradient.
        corrupted_grad_norm: Vec<Option<f64>>,
        /// Norm of all chosen examples' mean gradient.
        total_grad_norm: Vec<f64>,
        /// The corrupted examples' share of the gradient.
        corrupted_share: Vec<Option<f64>>,
        /// Cosine between the clean and corrupted mean gradients.
        cosine: Vec<Option<f64>>,
        /// Mean norm of one clean example's gradient.
        clean_example_grad_norm: Vec<f64>,
        /// Mean norm of one corrupted example's gradient.
        corrupted_example_grad_norm: Vec<Option<f64>>,
        /// Clean examples used.
        n_clean: Vec<i64>,
        /// Corrupted examples used.
        n_corrupted: Vec<i64>,
    }
}

table! {
    /// `rollback.parquet` of a `rollback` artifact: one row per (epoch, cutoff), plus the
    /// final weights as they are (`cutoff = "none"`).
    pub struct Rollback {
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
