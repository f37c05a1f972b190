"""Step `evaluate`: scores the selected model on the held-out test split and writes METRICS_OUT,
a JSON file with accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix.
With --min-accuracy it is also a quality gate: below it the step fails (exit 3).
Usage: python3 evaluate.py [--min-accuracy A] BEST_DIR TEST_CSV METRICS_OUT"""
import argparse
import os
import sys

sys.dont_write_bytecode = True
from common import fail, predict, r4, read_iris, read_json, write_json  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--min-accuracy", type=float, default=0.0)
ap.add_argument("best")
ap.add_argument("test")
ap.add_argument("out")
a = ap.parse_args()
if not 0 <= a.min_accuracy <= 1:
    fail(f"--min-accuracy must be between 0 and 1, got {a.min_accuracy}")

which = read_json(os.path.join(a.best, "which.json"))
model = read_json(os.path.join(a.best, "model.json"))
if model.get("kind") != which.get("kind"):
    fail(f"{a.best}: model.json holds a {model.get('kind')} model but which.json says {which.get('kind')}")
_, _, X, labels = read_iris(a.test, labeled=True)
print(f"evaluate: {which['chosen']} ({which['kind']}) on {len(X)} test rows")

predicted = predict(model, X, a.best)
classes = sorted(set(model["classes"]) | set(labels))
at = {c: i for i, c in enumerate(classes)}
matrix = [[0] * len(classes) for _ in classes]  # matrix[actual][predicted]
for actual, p in zip(labels, predicted):
    matrix[at[actual]][at[p]] += 1

per_class = {}
for i, name in enumerate(classes):
    tp = matrix[i][i]
    support = sum(matrix[i])
    predicted_as = sum(row[i] for row in matrix)
    precision = tp / predicted_as if predicted_as else 0.0
    recall = tp / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    per_class[name] = {"precision": r4(precision), "recall": r4(recall), "f1": r4(f1), "support": support}
correct = sum(matrix[i][i] for i in range(len(classes)))
accuracy = correct / len(X) if X else 0.0
macro_f1 = sum(c["f1"] for c in per_class.values()) / len(classes)

write_json(a.out, {
    "model": which["chosen"],
    "kind": which["kind"],
    "validationAccuracy": which["validationAccuracy"],
    "testRows": len(X),
    "accuracy": r4(accuracy),
    "macroF1": r4(macro_f1),
    "perClass": per_class,
    "confusionMatrix": {"labels": classes, "rows": "actual", "columns": "predicted", "matrix": matrix},
})
print(f"evaluate: test accuracy {r4(accuracy)} ({correct}/{len(X)}), macro F1 {r4(macro_f1)}")
for name, m in per_class.items():
    print(f"evaluate:   {name:<12} precision {m['precision']}  recall {m['recall']}  f1 {m['f1']}  (n={m['support']})")
if accuracy < a.min_accuracy:
    print(f"evaluate: test accuracy {r4(accuracy)} is below --min-accuracy {a.min_accuracy}; failing so nothing is scored with this model", file=sys.stderr)
    sys.exit(3)
