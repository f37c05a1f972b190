"""Step `train_logreg`: multinomial logistic (softmax) regression on standardized measurements,
fitted by full-batch gradient descent with L2 regularization. No randomness: weights start at 0.
Usage: python3 train_logreg.py --epochs E --learning-rate LR [--l2 L] --seed S TRAIN_CSV MODEL_OUT_DIR"""
import argparse
import math
import sys

sys.dont_write_bytecode = True
from common import fail, run_training  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--epochs", type=int, default=100)
ap.add_argument("--learning-rate", type=float, default=1.0)
ap.add_argument("--l2", type=float, default=0.001)
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("train")
ap.add_argument("out")
a = ap.parse_args()
if a.epochs < 1 or not a.learning_rate > 0 or a.l2 < 0:
    fail(f"need --epochs >= 1, --learning-rate > 0, --l2 >= 0; got {a.epochs}, {a.learning_rate}, {a.l2}")


def fit(X, y, n_classes):
    n, d = len(X), len(X[0])
    mean = [sum(x[j] for x in X) / n for j in range(d)]
    std = [math.sqrt(sum((x[j] - mean[j]) ** 2 for x in X) / n) or 1.0 for j in range(d)]
    Z = [[(v - m) / s for v, m, s in zip(x, mean, std)] for x in X]
    onehot = [[1.0 if c == t else 0.0 for c in range(n_classes)] for t in y]
    W = [[0.0] * d for _ in range(n_classes)]
    b = [0.0] * n_classes
    step, decay = a.learning_rate / n, 1.0 - a.learning_rate * a.l2
    for _ in range(a.epochs):
        gw = [[0.0] * d for _ in range(n_classes)]
        gb = [0.0] * n_classes
        for z, t in zip(Z, onehot):
            logits = [bc + sum(w * v for w, v in zip(wc, z)) for wc, bc in zip(W, b)]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            total = sum(exps)
            for c in range(n_classes):
                err = exps[c] / total - t[c]
                gb[c] += err
                gw[c] = [g + err * v for g, v in zip(gw[c], z)]
        b = [bc - step * g for bc, g in zip(b, gb)]
        W = [[w * decay - step * g for w, g in zip(wc, gc)] for wc, gc in zip(W, gw)]
    return {"mean": mean, "std": std, "weights": W, "bias": b}


params = {"epochs": a.epochs, "learningRate": a.learning_rate, "l2": a.l2}
run_training("train_logreg", "softmax-regression", params, a.seed, fit, a.train, a.out)
