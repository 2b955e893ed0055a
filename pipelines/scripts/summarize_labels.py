"""Summarize one corrupted label set: an example `exec` stage.

Reads $PIPE_INPUT_LABELS/labels.parquet, checks the chosen fraction, and writes
$PIPE_OUT/summary.json and $PIPE_OUT/summary.parquet (one row per class).
"""
import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

parser = argparse.ArgumentParser()
parser.add_argument("--expect-noise", type=float, required=True)
args = parser.parse_args()

table = pq.read_table(os.path.join(os.environ["PIPE_INPUT_LABELS"], "labels.parquet")).to_pydict()
n = len(table["index"])
chosen = sum(table["chosen"])
corrupted = sum(table["changed"])
expected = round(args.expect_noise * n)
if chosen != expected:
    raise SystemExit(f"expected {expected} chosen examples, found {chosen}")

classes = sorted(set(table["true_label"]))
rows = {
    "label": classes,
    "examples": [table["true_label"].count(c) for c in classes],
    "chosen": [sum(1 for t, k in zip(table["true_label"], table["chosen"]) if t == c and k) for c in classes],
    "corrupted": [sum(1 for t, k in zip(table["true_label"], table["changed"]) if t == c and k) for c in classes],
}
out = os.environ["PIPE_OUT"]
pq.write_table(pa.table(rows), os.path.join(out, "summary.parquet"))
with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump({"examples": n, "chosen": chosen, "corrupted": corrupted,
               "unchanged": chosen - corrupted, "fraction": chosen / n}, f, indent=1, sort_keys=True)
print(f"{chosen} of {n} chosen, {corrupted} corrupted (label changed), {chosen - corrupted} kept their label")
