"""Explores settings for pipelines/double-descent.toml in plain PyTorch, before the pipeline.

Model-wise double descent (Nakkiran et al. 2019; the study's fifth result) shows when the
number of trained parameters crosses the number of training examples. This script trains
random-ReLU-feature networks (a one-hidden-layer MLP whose first layer stays at its
initialization, as `train` does with `freeze = ["fc1"]`) on a class-balanced Fashion-MNIST
subset with permuted labels, and prints the final train and test error per width, so that
the pipeline's settings can be chosen from numbers, in seconds.

usage: python3 benches/double_descent.py [--n 500] [--steps 4000] [--noise 0.0 0.2]
                                         [--loss mse|ce] [--freeze 1|0] [--seeds 1 2]

What was tried (Fashion-MNIST, 2 CPU cores), recorded in README.md, "Double descent":
see the table printed by this script; the pipeline uses the row that shows the curve.
"""
import argparse
import gzip
import os
import time

import numpy as np
import torch

FASHION = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(os.path.join(FASHION, name)) as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def balanced(labels, per_class, rng):
    out = []
    for c in range(10):
        pool = np.flatnonzero(labels == c)
        out.extend(rng.choice(pool, per_class, replace=False))
    return np.sort(np.array(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--loss", choices=["mse", "ce"], default="mse")
    ap.add_argument("--freeze", type=int, default=1)
    ap.add_argument("--widths", type=int, nargs="+",
                    default=[10, 50, 100, 200, 300, 400, 450, 500, 550, 700, 1000, 2000, 4000])
    a = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    xtr, ytr = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz")
    xte, yte = idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
    tr, te = balanced(ytr, a.n // 10, rng), balanced(yte, a.test // 10, rng)
    x = torch.tensor(xtr[tr].reshape(len(tr), -1), dtype=torch.float32) / 255
    mean, std = x.mean(), x.std(unbiased=False)
    x = (x - mean) / std
    xt = (torch.tensor(xte[te].reshape(len(te), -1), dtype=torch.float32) / 255 - mean) / std
    y_true, yt = torch.tensor(ytr[tr].astype(np.int64)), torch.tensor(yte[te].astype(np.int64))
    print(f"n={a.n} test={a.test} steps={a.steps} lr={a.lr} loss={a.loss} freeze={a.freeze}")
    print("noise seed width  train_err test_err  seconds")
    for noise in a.noise:
        for seed in a.seeds:
            g = np.random.default_rng(seed)
            y = y_true.clone()
            k = round(noise * a.n)
            chosen = g.permutation(a.n)[:k]
            y[chosen] = y[chosen][torch.tensor(g.permutation(k))] if k else y[chosen]
            for w in a.widths:
                t0 = time.time()
                torch.manual_seed(seed)
                fc1, out = torch.nn.Linear(784, w), torch.nn.Linear(w, 10)
                params = list(out.parameters()) + ([] if a.freeze else list(fc1.parameters()))
                opt = torch.optim.Adam(params, lr=a.lr)
                with torch.no_grad():
                    h, ht = torch.relu(fc1(x)), torch.relu(fc1(xt))
                target = torch.nn.functional.one_hot(y, 10).float()
                for _ in range(a.steps):
                    hh = h if a.freeze else torch.relu(fc1(x))
                    z = out(hh)
                    loss = (torch.nn.functional.mse_loss(z, target) if a.loss == "mse"
                            else torch.nn.functional.cross_entropy(z, y))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    hh, hht = (h, ht) if a.freeze else (torch.relu(fc1(x)), torch.relu(fc1(xt)))
                    tr_err = (out(hh).argmax(1) != y).float().mean().item()
                    te_err = (out(hht).argmax(1) != yt).float().mean().item()
                print(f"{noise:5.2f} {seed:4d} {w:5d}  {tr_err:9.3f} {te_err:8.3f}  {time.time() - t0:7.1f}", flush=True)


if __name__ == "__main__":
    main()
