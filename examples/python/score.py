"""Step `score`: batch-scores an unlabeled CSV with the selected model (by the kind in
BEST_DIR/which.json) and writes PREDICTIONS_OUT: the input rows, unchanged, plus a
predicted_species column, in input order.
Usage: python3 score.py BEST_DIR UNLABELED_CSV PREDICTIONS_OUT"""
import os
import sys

sys.dont_write_bytecode = True
from common import fail, predict, read_iris, read_json, write_csv  # noqa: E402

if len(sys.argv) != 4:
    fail("usage: score.py BEST_DIR UNLABELED_CSV PREDICTIONS_OUT")
best, in_path, out_path = sys.argv[1:]
which = read_json(os.path.join(best, "which.json"))
model = read_json(os.path.join(best, "model.json"))
if model.get("kind") != which.get("kind"):
    fail(f"{best}: model.json holds a {model.get('kind')} model but which.json says {which.get('kind')}")
header, rows, X, _ = read_iris(in_path, labeled=False)
print(f"score: {which['chosen']} ({which['kind']}) on {len(X)} rows from {in_path}")
predicted = predict(model, X, best)
write_csv(out_path, header + ["predicted_species"], [row + [p] for row, p in zip(rows, predicted)])
counts = {}
for p in predicted:
    counts[p] = counts.get(p, 0) + 1
print(f"score: wrote {len(predicted)} predictions ({', '.join(f'{k} {v}' for k, v in counts.items())})")
