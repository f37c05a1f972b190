"""Step `train_centroid`: nearest centroid, the simplest classifier there is: each species is the
mean of its rows, and a flower gets the species whose mean is closest.
Usage: python3 train_centroid.py --seed S TRAIN_CSV MODEL_OUT_DIR  (seed: CV folds only)"""
import argparse
import sys

sys.dont_write_bytecode = True
from common import r4, run_training  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("train")
ap.add_argument("out")
a = ap.parse_args()


def fit(X, y, n_classes):
    sums = [[0.0] * len(X[0]) for _ in range(n_classes)]
    counts = [0] * n_classes
    for x, c in zip(X, y):
        counts[c] += 1
        for j, v in enumerate(x):
            sums[c][j] += v
    return {"centroids": [[r4(s / max(n, 1)) for s in row] for row, n in zip(sums, counts)]}


run_training("train_centroid", "nearest-centroid", {}, a.seed, fit, a.train, a.out)
