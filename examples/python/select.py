"""Step `select`: picks the candidate with the best cross-validated accuracy (a tie goes to the
candidate listed first) and writes BEST_OUT/ with its model.json and metrics.json, copied byte for
byte, plus which.json naming the winner and its kind.
Usage: python3 select.py MODEL_DIR... BEST_OUT_DIR   (a candidate's name is its directory's name)"""
import os
import shutil
import sys

sys.dont_write_bytecode = True
from common import fail, read_json, write_json  # noqa: E402

args = sys.argv[1:]
if len(args) < 2:
    fail("usage: select.py MODEL_DIR... BEST_OUT_DIR")
out_dir = args[-1]
candidates = []
for d in args[:-1]:
    metrics = read_json(os.path.join(d, "metrics.json"))
    acc = metrics.get("validationAccuracy")
    if not isinstance(acc, (int, float)) or isinstance(acc, bool):
        fail(f"{d}/metrics.json: expected a numeric validationAccuracy")
    name = os.path.basename(os.path.normpath(d))
    if any(c["name"] == name for c in candidates):
        fail(f"two candidates are both named {name}; give each model directory its own name")
    print(f"select: {name} ({metrics.get('kind')}) validation accuracy {acc}")
    candidates.append({"name": name, "dir": d, "kind": metrics.get("kind"), "validationAccuracy": acc})

best = candidates[0]
for c in candidates:
    if c["validationAccuracy"] > best["validationAccuracy"]:
        best = c

os.makedirs(out_dir, exist_ok=True)
for f in ("model.json", "metrics.json"):
    shutil.copyfile(os.path.join(best["dir"], f), os.path.join(out_dir, f))
write_json(os.path.join(out_dir, "which.json"), {
    "chosen": best["name"],
    "kind": best["kind"],
    "validationAccuracy": best["validationAccuracy"],
    "rule": "highest validationAccuracy; ties go to the candidate listed first",
    "candidates": [{k: c[k] for k in ("name", "kind", "validationAccuracy")} for c in candidates],
})
print(f"select: chose {best['name']} ({best['kind']}) with validation accuracy {best['validationAccuracy']}")
