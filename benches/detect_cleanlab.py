"""pipe's `detect` side by side with cleanlab on the same data, labels and network.

The peer benchmark of the detection pipeline (pipelines/detect.toml): Fashion-MNIST, 4,000
training and 5,000 test images, label noise 0.2 and 0.4 in both modes, an MLP 512-512
trained 10 epochs. The script runs that pipeline into its own cache and exports its tables,
then for every (noise, mode) point of the chosen seeds trains, in PyTorch, the same network
by the same recipe as pipe's `train` stage (the same initial weights for a seed: biases
U(+-1/sqrt(fan_in)) then weights U(+-sqrt(6/fan_in)), drawn in tch's order from the same
seeded generator; inputs standardized per channel with the training split's statistics;
SGD with momentum, constant learning rate, the last partial batch kept; only the data
order is drawn differently, so single runs differ by that order's noise: fed pipe's own
order once, the replica followed pipe's training losses to four decimals for five epochs)
on the exact corrupted labels pipe used, and applies cleanlab's recipe:

- 5-fold stratified cross-validation (scikit-learn's StratifiedKFold, shuffled, seeded as
  cleanlab's estimate_cv_predicted_probabilities does) gives out-of-fold predicted
  probabilities;
- cleanlab.filter.find_label_issues(labels, pred_probs), with its defaults, flags examples;
- cleanlab.rank.get_label_quality_scores(labels, pred_probs, method="self_confidence")
  ranks them (score = 1 - quality);
- the same recipe is retrained on the examples not flagged.

It prints, per point, one table with pipe's default detection method (the first row of
detection.parquet) beside cleanlab: AUROC against the truly changed labels (Mann-Whitney,
ties averaged), precision, recall and F1 of the flagged set, the final test accuracy after
retraining on the kept examples, the test accuracies of training on all noisy labels (pipe's
`train` beside the PyTorch replica, a check that both sides train alike) and on the truly
clean examples only (pipe's `oracle_train`), and the training compute: example
passes (epochs x examples trained on) of detection alone and with the retrain, and wall
seconds of detection's training (pipe's `dynamics` instance, 5 epochs of the same recipe
that record every example's dynamics after each epoch, against cleanlab's 5 fits of 10). A summary follows: mean
figures, total compute, and the wall time of pipe's whole pipeline run (every instance is
recomputed: the run forces all stages) against all of cleanlab's training. Example passes
are the fair compute measure; wall seconds depend on threads (pipe runs two instances at a
time with one thread each, the PyTorch fits run one at a time with two threads, which slow
down many times over when other work shares the cores).

It exits 1 with a message if a printed figure is NaN or infinite or a time is not positive.
About a minute and a half on 2 otherwise idle CPU cores for seed 0, most of it pipe's run of
all 145 instances; --seeds 0 1 adds some 15 seconds.

Run, from the repository root, after `cargo build --release`:

    scripts/bench-peers
    source scripts/env.sh
    "${XDG_CACHE_HOME:-$HOME/.cache}/pipe/cleanlab-venv/bin/python3" benches/detect_cleanlab.py

Options: --seeds 0 1 (the pipeline's seeds to compare, default 0), --out DIR (the folder
for the pipeline's cache and export, default target/bench-detect).
"""

import argparse
import itertools
import json
import math
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from scipy.stats import rankdata
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "detect.toml"
PIPE = ROOT / "scripts" / "pipe"
FOLDS = 5
THREADS = 2


@dataclass(frozen=True)
class Recipe:
    """The training recipe of the pipeline's `train` stage."""

    hidden: list[int]
    epochs: int
    batch_size: int
    lr: float
    momentum: float


@dataclass(frozen=True)
class Data:
    """Standardized, flattened images and their true labels."""

    train_x: torch.Tensor
    train_true: np.ndarray
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int


@dataclass(frozen=True)
class Point:
    """One (noise, mode, seed) point of the sweep."""

    noise: float
    mode: str
    seed: int

    def rows(self) -> pl.Expr:
        return (
            (pl.col("noise") == self.noise)
            & (pl.col("mode") == self.mode)
            & (pl.col("seed") == self.seed)
        )

    def __str__(self) -> str:
        return f"noise {self.noise} {self.mode}, seed {self.seed}"


@dataclass(frozen=True)
class Side:
    """One side's figures at a point."""

    auroc: float
    precision: float
    recall: float
    f1: float
    flagged: int
    retrain_acc: float
    # Trained on all noisy labels: pipe's `train`; on cleanlab's side the PyTorch replica.
    noisy_acc: float
    # pipe's `oracle_train`; None on cleanlab's side.
    oracle_acc: float | None
    detect_passes: int
    retrain_passes: int
    detect_seconds: float
    # The retrain's wall seconds; None on pipe's side (its run is timed as a whole).
    retrain_seconds: float | None


def pipe(*args: str) -> str:
    """Runs scripts/pipe quietly and returns its standard output; exits if it fails."""
    done = subprocess.run([str(PIPE), *args, "-q"], stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"pipe {' '.join(args)} failed with status {done.returncode}")
    return done.stdout


@dataclass(frozen=True)
class PipelineRun:
    """pipe's run of the whole pipeline."""

    seconds: float
    computed: int
    cached: int

    def __str__(self) -> str:
        return f"{self.computed} instances computed, {self.cached} cached, in {self.seconds:.1f} s"


def run_pipeline(cache: Path, stages: list[str]) -> PipelineRun:
    """Runs the pipeline with every stage forced, so that its instances are computed again
    (an instance whose key depends on outputs not yet computed, as after a change of pipe's
    code, cannot be forced and may be found cached: the run says how many)."""
    forced = [f"--force={stage}" for stage in stages]
    clock = time.perf_counter()
    out = json.loads(pipe("run", str(PIPELINE), f"--cache={cache}", "--json", *forced))
    return PipelineRun(time.perf_counter() - clock, len(out["executed"]), len(out["cached"]))


def dataset_folder(cache: Path) -> Path:
    """The folder of the pipeline's dataset artifact."""
    shown = pipe("show", "data", str(PIPELINE), f"--cache={cache}")
    folder = next(line for line in shown.splitlines() if line.startswith("folder"))
    return Path(folder.split(maxsplit=1)[1])


def instance_seconds(cache: Path, key: str) -> float:
    """How long an instance ran, from its manifest."""
    return json.loads(pipe("show", key, f"--cache={cache}", "--json"))["seconds"]


def load_data(folder: Path) -> Data:
    """The dataset artifact's images, standardized per channel with the training split's
    mean and (population) standard deviation, as pipe's trainer does."""
    info = json.loads((folder / "dataset.json").read_text())
    train = pl.read_parquet(folder / "train.parquet").sort("index")
    test = pl.read_parquet(folder / "test.parquet").sort("index")

    def floats(split: pl.DataFrame) -> torch.Tensor:
        images = torch.from_numpy(split["image"].to_numpy().astype(np.float32))
        return images.div(255).view(len(split), info["channels"], -1)

    train_x, test_x = floats(train), floats(test)
    mean = train_x.mean(dim=(0, 2), keepdim=True)
    std = train_x.std(dim=(0, 2), keepdim=True, correction=0).clamp_min(1e-6)
    return Data(
        train_x=((train_x - mean) / std).flatten(1),
        train_true=train["label"].to_numpy(),
        test_x=((test_x - mean) / std).flatten(1),
        test_y=torch.tensor(test["label"].to_numpy()),
        classes=info["classes"],
    )


def mlp(widths: list[int], seed: int) -> torch.nn.Sequential:
    """The MLP with pipe's initial weights for `seed`: per layer the bias, then the weight,
    drawn in this order from the seeded global generator (tch's nn::linear defaults)."""
    linears = [torch.nn.Linear(a, b) for a, b in zip(widths, widths[1:])]
    torch.manual_seed(seed)
    with torch.no_grad():
        for linear in linears:
            fan_in = linear.in_features
            linear.bias.uniform_(-(1 / fan_in) ** 0.5, (1 / fan_in) ** 0.5)
            linear.weight.uniform_(-(6 / fan_in) ** 0.5, (6 / fan_in) ** 0.5)
    layers = [m for linear in linears for m in (linear, torch.nn.ReLU())]
    return torch.nn.Sequential(*layers[:-1])


def train(
    x: torch.Tensor, y: torch.Tensor, data: Data, recipe: Recipe, seed: int
) -> torch.nn.Module:
    """The recipe of pipe's `train` stage: cross-entropy, SGD with momentum, a fresh
    seeded order every epoch."""
    net = mlp([x.shape[1], *recipe.hidden, data.classes], seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    order = torch.Generator().manual_seed(seed)
    for _ in range(recipe.epochs):
        for batch in torch.randperm(len(y), generator=order).split(recipe.batch_size):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
            optimizer.step()
    return net


def probabilities(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).softmax(dim=1)


def test_accuracy(net: torch.nn.Module, data: Data) -> float:
    predicted = probabilities(net, data.test_x).argmax(dim=1)
    return (predicted == data.test_y).float().mean().item()


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve, Mann-Whitney's U over both counts, ties averaged."""
    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def flag_quality(flagged: np.ndarray, changed: np.ndarray) -> tuple[float, float, float]:
    """Precision, recall and F1 of the flagged set against the changed labels."""
    hits = int((flagged & changed).sum())
    precision = hits / flagged.sum() if flagged.any() else math.nan
    recall = hits / changed.sum()
    f1 = 2 * precision * recall / (precision + recall) if hits else math.nan
    return precision, recall, f1


def cross_validated_probabilities(
    data: Data, labels: np.ndarray, recipe: Recipe, seed: int
) -> tuple[np.ndarray, int]:
    """Out-of-fold predicted probabilities and the example passes of the 5 fits."""
    x, y = data.train_x, torch.tensor(labels)
    probs = torch.zeros(len(labels), data.classes)
    folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    passes = 0
    for fit, held_out in folds.split(np.zeros(len(labels)), labels):
        net = train(x[fit], y[fit], data, recipe, seed)
        probs[held_out] = probabilities(net, x[held_out])
        passes += recipe.epochs * len(fit)
    return probs.numpy(), passes


def cleanlab_side(
    data: Data, labels: np.ndarray, changed: np.ndarray, recipe: Recipe, seed: int
) -> Side:
    """cleanlab's recipe at one point, with the replica trained on all noisy labels."""
    clock = time.perf_counter()
    pred_probs, detect_passes = cross_validated_probabilities(data, labels, recipe, seed)
    detect_seconds = time.perf_counter() - clock
    flagged = find_label_issues(labels, pred_probs)
    scores = 1 - get_label_quality_scores(labels, pred_probs, method="self_confidence")
    kept = np.flatnonzero(~flagged)
    y = torch.tensor(labels)
    clock = time.perf_counter()
    retrained = train(data.train_x[kept], y[kept], data, recipe, seed)
    retrain_seconds = time.perf_counter() - clock
    noisy = train(data.train_x, y, data, recipe, seed)
    return Side(
        auroc(scores, changed),
        *flag_quality(flagged, changed),
        flagged=int(flagged.sum()),
        retrain_acc=test_accuracy(retrained, data),
        noisy_acc=test_accuracy(noisy, data),
        oracle_acc=None,
        detect_passes=detect_passes,
        retrain_passes=recipe.epochs * len(kept),
        detect_seconds=detect_seconds,
        retrain_seconds=retrain_seconds,
    )


def final_test_accuracy(metrics: pl.DataFrame, stage: str) -> tuple[float, str]:
    """The last epoch's test accuracy of one train instance, and its key."""
    last = metrics.filter(pl.col("stage") == stage).sort("epoch").row(-1, named=True)
    return last["test_acc"], last["key"]


def pipe_side(
    tables: dict[str, pl.DataFrame],
    point: Point,
    cache: Path,
    recipe: Recipe,
    dynamics_epochs: int,
) -> tuple[str, Side]:
    """The default detection method and pipe's figures for it at one point."""
    detection = tables["detection"].filter(point.rows()).row(0, named=True)
    method = detection["method"]
    of_method = point.rows() & (pl.col("method") == method)
    scores = tables["scores"].filter(of_method)
    recomputed = auroc(scores["score"].to_numpy(), scores["changed"].to_numpy())
    if abs(recomputed - detection["auroc"]) > 1e-9:
        sys.exit(f"{point}: pipe's AUROC is not the Mann-Whitney AUROC of its own scores")
    metrics = tables["metrics"].filter(point.rows())
    noisy_acc, _ = final_test_accuracy(metrics, "train")
    _, dynamics_key = final_test_accuracy(metrics, "dynamics")
    retrain_acc, _ = final_test_accuracy(metrics.filter(pl.col("method") == method), "retrain")
    oracle_acc, _ = final_test_accuracy(metrics, "oracle_train")
    kept = tables["labels"].filter(of_method & (pl.col("stage") == "clean"))
    return method, Side(
        detection["auroc"],
        detection["precision"],
        detection["recall"],
        detection["f1"],
        flagged=detection["flagged"],
        retrain_acc=retrain_acc,
        noisy_acc=noisy_acc,
        oracle_acc=oracle_acc,
        detect_passes=dynamics_epochs * detection["n"],
        retrain_passes=recipe.epochs * len(kept),
        detect_seconds=instance_seconds(cache, dynamics_key),
        retrain_seconds=None,
    )


def corrupted_labels(
    tables: dict[str, pl.DataFrame], point: Point, data: Data
) -> tuple[np.ndarray, np.ndarray]:
    """The training labels pipe's `corrupt` instance made at the point, and which changed."""
    of_corrupt = point.rows() & (pl.col("stage") == "corrupt")
    labels = tables["labels"].filter(of_corrupt).sort("index")
    if not np.array_equal(labels["true_label"].to_numpy(), data.train_true):
        sys.exit(f"{point}: labels.parquet's true labels are not the dataset's")
    return labels["train_label"].to_numpy(), labels["changed"].to_numpy()


def figure(value: float | int | None, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


# A table row: label, pipe's figure, cleanlab's figure, decimals.
Row = tuple[str, float | int | None, float | int | None, int]


def print_table(title: str, header: tuple[str, str], rows: list[Row]) -> None:
    """An aligned table: a label column, then one column per side."""
    cells = [(label, figure(a, d), figure(b, d)) for label, a, b, d in rows]
    first = max(len(c[0]) for c in cells)
    width = max(len(x) for c in cells for x in (*c[1:], *header)) + 2
    print(f"\n{title}")
    print(f"  {'':<{first}}{header[0]:>{width}}{header[1]:>{width}}")
    for label, a, b in cells:
        print(f"  {label:<{first}}{a:>{width}}{b:>{width}}")


def point_rows(ours: Side, theirs: Side) -> list[Row]:
    return [
        ("AUROC", ours.auroc, theirs.auroc, 4),
        ("precision", ours.precision, theirs.precision, 4),
        ("recall", ours.recall, theirs.recall, 4),
        ("F1", ours.f1, theirs.f1, 4),
        ("flagged", ours.flagged, theirs.flagged, 0),
        ("test acc, retrained on kept", ours.retrain_acc, theirs.retrain_acc, 4),
        ("test acc, all noisy labels", ours.noisy_acc, theirs.noisy_acc, 4),
        ("test acc, truly clean only", ours.oracle_acc, theirs.oracle_acc, 4),
        ("example passes, detection", ours.detect_passes, theirs.detect_passes, 0),
        ("example passes, + retrain", total_passes(ours), total_passes(theirs), 0),
        ("wall s, detection training", ours.detect_seconds, theirs.detect_seconds, 2),
    ]


def total_passes(side: Side) -> int:
    return side.detect_passes + side.retrain_passes


def print_point(
    point: Point, method: str, changed: np.ndarray, ours: Side, theirs: Side
) -> list[float | int | None]:
    """Prints one point's table; returns the figures printed."""
    rows = point_rows(ours, theirs)
    n, n_changed = len(changed), int(changed.sum())
    title = f"{point}: {n_changed:,} of {n:,} labels changed"
    print_table(title, (f"pipe {method}", f"cleanlab {FOLDS}-fold"), rows)
    detect_ratio = ours.detect_passes / theirs.detect_passes
    total_ratio = total_passes(ours) / total_passes(theirs)
    print(
        f"  compute pipe/cleanlab: {detect_ratio:.3f} for detection, "
        f"{total_ratio:.3f} with the retrain"
    )
    return [v for _, a, b, _ in rows for v in (a, b)] + [detect_ratio, total_ratio]


def print_summary(sides: list[tuple[Side, Side]], run: PipelineRun) -> list[float | int | None]:
    """Prints the means and totals over the points; returns the figures printed."""
    ours, theirs = zip(*sides)

    def mean(sides: tuple[Side, ...], field: str) -> float:
        return float(np.mean([getattr(s, field) for s in sides]))

    def total(sides: tuple[Side, ...], field: str) -> int:
        return sum(getattr(s, field) for s in sides)

    rows = [
        (f"mean {label}", mean(ours, field), mean(theirs, field), 4)
        for label, field in [
            ("AUROC", "auroc"),
            ("F1", "f1"),
            ("test acc, retrained", "retrain_acc"),
            ("test acc, noisy labels", "noisy_acc"),
        ]
    ]
    ours_passes, theirs_passes = sum(map(total_passes, ours)), sum(map(total_passes, theirs))
    rows += [
        ("example passes, detection", *(total(s, "detect_passes") for s in (ours, theirs)), 0),
        ("example passes, + retrain", ours_passes, theirs_passes, 0),
    ]
    print_table(f"Summary over {len(sides)} points", ("pipe", "cleanlab"), rows)
    ratio = ours_passes / theirs_passes
    cleanlab_seconds = total(theirs, "detect_seconds") + total(theirs, "retrain_seconds")
    print(f"  compute pipe/cleanlab, detection and retrain: {ratio:.3f}")
    print(f"  pipe's whole pipeline run, every method: {run}")
    print(f"  cleanlab's {FOLDS}-fold fits and retrains: {cleanlab_seconds:.1f} s")
    return [v for _, a, b, _ in rows for v in (a, b)] + [ratio, run.seconds, cleanlab_seconds]


def check(figures: list[float | int | None], times: list[float]) -> None:
    """Exits 1 if a printed figure is NaN or infinite or a time is not positive."""
    bad = [f for f in figures if f is not None and not math.isfinite(f)]
    if bad:
        sys.exit(f"error: {len(bad)} printed figures are NaN or infinite")
    if not all(t > 0 for t in times):
        sys.exit(f"error: a time is not positive: {times}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="the pipeline's seeds (default 0)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "target" / "bench-detect",
        help="folder for the pipeline's cache and export (default target/bench-detect)",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(THREADS)
    pipeline = tomllib.loads(PIPELINE.read_text())
    stage = pipeline["stage"]["train"]
    recipe = Recipe(
        stage["hidden"], stage["epochs"], stage["batch_size"], stage["lr"], stage["momentum"]
    )
    dynamics_epochs = pipeline["stage"]["dynamics"]["epochs"]
    sweep = pipeline["sweep"]
    if not set(args.seeds) <= set(sweep["seed"]):
        sys.exit(f"--seeds must be among the pipeline's seeds {sweep['seed']}")
    cache, export = args.out / "cache", args.out / "export"
    run = run_pipeline(cache, list(pipeline["stage"]))
    pipe("export", str(PIPELINE), f"--cache={cache}", f"--out={export}")
    tables = {
        name: pl.read_parquet(export / f"{name}.parquet")
        for name in ["detection", "scores", "labels", "metrics"]
    }
    data = load_data(dataset_folder(cache))
    print(f"pipe run of {PIPELINE.name}: {run}")
    figures, times, sides = [], [run.seconds], []
    for seed, noise, mode in itertools.product(args.seeds, sweep["noise"], sweep["mode"]):
        point = Point(noise, mode, seed)
        labels, changed = corrupted_labels(tables, point, data)
        method, ours = pipe_side(tables, point, cache, recipe, dynamics_epochs)
        theirs = cleanlab_side(data, labels, changed, recipe, seed)
        figures += print_point(point, method, changed, ours, theirs)
        times += [ours.detect_seconds, theirs.detect_seconds, theirs.retrain_seconds]
        sides.append((ours, theirs))
    figures += print_summary(sides, run)
    check(figures, times)


if __name__ == "__main__":
    main()
