"""Step `train_knn`: k-nearest neighbours on the raw measurements (all in cm, so no scaling).
The model is the training rows themselves; a flower gets the majority species of its k nearest.
Usage: python3 train_knn.py --k K --seed S TRAIN_CSV MODEL_OUT_DIR  (seed: CV folds only)"""
import argparse
import sys

sys.dont_write_bytecode = True
from common import fail, run_training  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--k", type=int, default=5)
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("train")
ap.add_argument("out")
a = ap.parse_args()
if a.k < 1:
    fail(f"--k must be at least 1, got {a.k}")


def fit(X, y, n_classes):
    if a.k > len(X):
        fail(f"--k {a.k} is more than the {len(X)} training rows")
    return {"k": a.k, "points": X, "targets": y}


run_training("train_knn", "knn", {"k": a.k}, a.seed, fit, a.train, a.out)
