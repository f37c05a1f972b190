"""Shared by the Python iris steps: CSV in and out, seeded stratified splits, the three model
kinds (nearest centroid, softmax regression, k-NN) as plain data plus a predict function, and
stable JSON. Standard library only. Same input => byte-identical output, so pipemesh can reuse
(and cut off below) a step whose outputs did not change."""
import csv
import json
import math
import random
import sys

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
LABEL = "species"


def fail(message):
    """Report input the user must fix, naming the script, and exit 1."""
    print(f"{sys.argv[0]}: {message}", file=sys.stderr)
    sys.exit(1)


def read_csv(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except OSError as e:
        fail(f"cannot read {path}: {e.strerror}")
    if not rows:
        fail(f"{path} is empty: expected a header line")
    header = [h.strip() for h in rows[0]]
    body = []
    for n, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            fail(f"{path} line {n}: expected {len(header)} values ({','.join(header)}), got {len(row)}")
        body.append([c.strip() for c in row])
    return header, body


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def read_iris(path, labeled):
    """Returns (header, raw rows, feature rows as floats, labels or [])."""
    header, rows = read_csv(path)
    cols = []
    for name in FEATURES:
        if name not in header:
            fail(f"{path}: missing column {name} (header: {','.join(header)})")
        cols.append(header.index(name))
    if labeled and LABEL not in header:
        fail(f"{path}: missing column {LABEL} (header: {','.join(header)})")
    X = []
    for n, row in enumerate(rows, start=2):
        try:
            X.append([float(row[c]) for c in cols])
        except ValueError:
            fail(f"{path} line {n}: a measurement is not a number: {row}")
    labels = [row[header.index(LABEL)] for row in rows] if labeled else []
    return header, rows, X, labels


def shuffled(items, rng):
    # Fisher-Yates on rng.random(): Python guarantees random()'s sequence for a seed across
    # versions, not shuffle()'s, and the split must not change when the interpreter does.
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        out[i], out[j] = out[j], out[i]
    return out


def _by_class(labels):
    groups = {}
    for i, label in enumerate(labels):
        groups.setdefault(label, []).append(i)
    return [groups[c] for c in sorted(groups)]


def stratified_split(labels, fraction, seed):
    """`fraction` of each class is held out; returns (kept, held), both sorted row indices."""
    rng = random.Random(seed)
    kept, held = [], []
    for group in _by_class(labels):
        order = shuffled(group, rng)
        n = int(len(order) * fraction + 0.5)
        held += order[:n]
        kept += order[n:]
    return sorted(kept), sorted(held)


def stratified_folds(labels, k, seed):
    rng = random.Random(seed)
    folds = [[] for _ in range(k)]
    nxt = 0
    for group in _by_class(labels):
        for i in shuffled(group, rng):
            folds[nxt].append(i)
            nxt = (nxt + 1) % k
    return [sorted(f) for f in folds]


def r4(x):
    return round(x, 4)


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        fail(f"cannot read JSON from {path}: {e}")


def write_json(path, value):
    # Insertion-ordered keys, fixed separators: the same value always gives the same bytes.
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


# --- models: a model is JSON data {"kind", "classes", ...}; predict() dispatches on kind ---

def _sqdist(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


def _predict_centroid(model, x):
    dists = [_sqdist(x, c) for c in model["centroids"]]
    return dists.index(min(dists))


def _predict_knn(model, x):
    # Ties in distance go to the earlier training row, ties in votes to the nearest neighbour's class.
    ranked = sorted(range(len(model["points"])), key=lambda i: (_sqdist(x, model["points"][i]), i))[: model["k"]]
    votes = [0] * len(model["classes"])
    for i in ranked:
        votes[model["targets"][i]] += 1
    best = max(votes)
    for i in ranked:
        if votes[model["targets"][i]] == best:
            return model["targets"][i]


def softmax_scores(model, x):
    z = [(v - m) / s for v, m, s in zip(x, model["mean"], model["std"])]
    logits = [b + sum(w * v for w, v in zip(ws, z)) for ws, b in zip(model["weights"], model["bias"])]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    return [e / total for e in exps]


def _predict_logreg(model, x):
    p = softmax_scores(model, x)
    return p.index(max(p))


PREDICTORS = {"nearest-centroid": _predict_centroid, "softmax-regression": _predict_logreg, "knn": _predict_knn}


def predict(model, X, where):
    """Class names for feature rows, by the model's kind."""
    fn = PREDICTORS.get(model.get("kind"))
    if fn is None:
        fail(f"{where}: unknown model kind {model.get('kind')!r}; expected one of {', '.join(PREDICTORS)}")
    return [model["classes"][fn(model, x)] for x in X]


# --- the part every training step shares ---

FOLDS = 5


def run_training(step, kind, params, seed, fit, train_path, out_dir):
    """Estimates accuracy by stratified k-fold cross-validation on the train split, refits on all
    of it, and writes OUT_DIR/model.json and OUT_DIR/metrics.json (what `select` compares).
    `fit(X, y, n_classes)` returns the model's data (without kind and classes)."""
    import os

    _, _, X, labels = read_iris(train_path, labeled=True)
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    y = [index[label] for label in labels]
    if len(X) < FOLDS * len(classes):
        fail(f"{train_path}: {len(X)} rows is too few for {FOLDS}-fold cross-validation")
    print(f"{step}: {kind} {json.dumps(params)} on {len(X)} rows, {len(classes)} classes", flush=True)

    def with_meta(data):
        return {"kind": kind, "classes": classes, "features": FEATURES, "params": params, **data}

    fold_acc = []
    for f, held in enumerate(stratified_folds(labels, FOLDS, seed)):
        held_set = set(held)
        rows = [i for i in range(len(X)) if i not in held_set]
        model = with_meta(fit([X[i] for i in rows], [y[i] for i in rows], len(classes)))
        predicted = predict(model, [X[i] for i in held], step)
        correct = sum(1 for p, i in zip(predicted, held) if p == labels[i])
        fold_acc.append(correct / len(held))
        print(f"{step}: fold {f + 1}/{FOLDS}: {correct}/{len(held)} correct", flush=True)
    validation_accuracy = r4(sum(fold_acc) / FOLDS)

    model = with_meta(fit(X, y, len(classes)))
    train_accuracy = r4(sum(1 for p, t in zip(predict(model, X, step), labels) if p == t) / len(X))

    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "model.json"), model)
    write_json(os.path.join(out_dir, "metrics.json"), {
        "kind": kind,
        "params": params,
        "validationAccuracy": validation_accuracy,
        "validation": {
            "method": f"stratified {FOLDS}-fold cross-validation on the training split",
            "seed": seed,
            "foldAccuracies": [r4(a) for a in fold_acc],
        },
        "trainAccuracy": train_accuracy,
        "trainRows": len(X),
    })
    print(f"{step}: validation accuracy {validation_accuracy} ({FOLDS}-fold CV), train accuracy {train_accuracy}")
