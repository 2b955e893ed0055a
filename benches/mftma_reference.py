#!/usr/bin/env python3
"""Straightforward numpy/scipy manifold capacity analysis (MFTMA), for `benches/probe.rs`.

Usage: python3 benches/mftma_reference.py DIR

DIR holds `shapes.json` ({"p", "m", "n", "n_t", "d", "kappa"}), `points.f64` (P manifolds,
each M points of N little-endian f64: manifold-major, point-major) and `t.f64` (P
manifolds, each n_t vectors of D + 1 little-endian f64). Runs the analysis without
center-correlation removal, with exactly those Gaussian vectors, and prints one JSON line:
{"capacity", "radius", "dimension", "seconds"} (seconds: the analysis alone, not the
reading of the files).

The algorithm (Chung, Lee and Sompolinsky, PRX 2018; Cohen et al., Nat. Commun. 2020):
subtract the global mean; per manifold subtract its center, divide by the center's norm,
take the R of a QR (diagonal made non-negative) when N > M, append a row of ones; per
Gaussian vector t, the anchor is the largest-projection point when max_j t.s_j + kappa < 0,
else S alpha / sum(alpha) with alpha = nnls(S, t + kappa e_last).
"""

import json
import sys
import time

import numpy as np
from scipy.optimize import nnls


def manifold_geometry(s, t_vecs, kappa):
    d1, m = s.shape
    d = d1 - 1
    n_t = t_vecs.shape[1]
    proj = s.T @ t_vecs
    best = np.argmax(proj, axis=0)
    anchors = np.empty((d1, n_t))
    shift = np.zeros(d1)
    shift[-1] = kappa
    for k in range(n_t):
        t = t_vecs[:, k]
        anchor = s[:, best[k]]
        if proj[best[k], k] + kappa >= 0:
            alpha, _ = nnls(s, t + shift)
            field = s @ alpha
            if np.linalg.norm(field) >= 1e-8:
                anchor = field / alpha.sum()
        anchors[:, k] = anchor

    gap = np.maximum(np.sum(t_vecs * anchors, axis=0) + kappa, 0.0)
    norm_sq = np.sum(anchors**2, axis=0)
    lam = np.where(norm_sq > 0, gap**2 / np.where(norm_sq > 0, norm_sq, 1.0), 0.0)
    capacity = 1.0 / np.mean(lam)

    dev = (anchors - anchors.mean(axis=1, keepdims=True))[:d] / anchors[d]
    radius = np.sqrt(np.mean(np.sum(dev**2, axis=0)))

    t_norm = np.linalg.norm(t_vecs[:d], axis=0)
    a_norm = np.linalg.norm(anchors[:d], axis=0)
    ok = (t_norm > 0) & (a_norm > 0)
    cos = np.zeros(n_t)
    cos[ok] = np.sum(t_vecs[:d, ok] * anchors[:d, ok], axis=0) / (t_norm[ok] * a_norm[ok])
    dimension = d * np.mean(cos) ** 2
    return capacity, radius, dimension


def analysis(manifolds, t_vecs, kappa):
    mean = np.concatenate(manifolds, axis=1).mean(axis=1, keepdims=True)
    caps, radii, dims = [], [], []
    for x, t in zip(manifolds, t_vecs):
        y = x - mean
        center = y.mean(axis=1, keepdims=True)
        y = (y - center) / np.linalg.norm(center)
        n, m = y.shape
        if n > m:
            r = np.linalg.qr(y, mode="r")
            y = r * np.where(np.diag(r) < 0, -1.0, 1.0)[:, None]
        s = np.vstack([y, np.ones((1, m))])
        c, r_, d_ = manifold_geometry(s, t, kappa)
        caps.append(c)
        radii.append(r_)
        dims.append(d_)
    caps = np.asarray(caps)
    return 1.0 / np.mean(1.0 / caps), float(np.mean(radii)), float(np.mean(dims))


def main():
    folder = sys.argv[1]
    with open(f"{folder}/shapes.json") as f:
        shapes = json.load(f)
    p, m, n, n_t, d = (shapes[k] for k in ("p", "m", "n", "n_t", "d"))
    points = np.fromfile(f"{folder}/points.f64", dtype="<f8").reshape(p, m, n)
    ts = np.fromfile(f"{folder}/t.f64", dtype="<f8").reshape(p, n_t, d + 1)
    manifolds = [np.ascontiguousarray(points[i].T) for i in range(p)]
    t_vecs = [np.ascontiguousarray(ts[i].T) for i in range(p)]
    start = time.perf_counter()
    capacity, radius, dimension = analysis(manifolds, t_vecs, shapes["kappa"])
    seconds = time.perf_counter() - start
    print(json.dumps({"capacity": capacity, "radius": radius, "dimension": dimension, "seconds": seconds}))


if __name__ == "__main__":
    main()
