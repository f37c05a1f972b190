"""Step `prep`: checks the raw iris CSV and splits it into train and test sets, stratified by
species. The split depends only on the data and --seed.
Usage: python3 prep.py [--seed N] [--test-fraction F] RAW_CSV TRAIN_OUT TEST_OUT"""
import argparse
import sys

sys.dont_write_bytecode = True  # keep the working directory free of __pycache__
from common import fail, read_iris, stratified_split, write_csv  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--seed", type=int, default=42)
ap.add_argument("--test-fraction", type=float, default=0.2)
ap.add_argument("raw")
ap.add_argument("train_out")
ap.add_argument("test_out")
a = ap.parse_args()
if not 0 < a.test_fraction < 1:
    fail(f"--test-fraction must be between 0 and 1, got {a.test_fraction}")

header, rows, _, labels = read_iris(a.raw, labeled=True)
classes = sorted(set(labels))
print(f"prep: read {len(rows)} rows, {len(classes)} classes ({', '.join(classes)}) from {a.raw}")
if len(classes) < 2:
    fail(f"{a.raw}: need at least two species to train a classifier, found {len(classes)}")
kept, held = stratified_split(labels, a.test_fraction, a.seed)
write_csv(a.train_out, header, [rows[i] for i in kept])
write_csv(a.test_out, header, [rows[i] for i in held])
print(f"prep: stratified split with seed {a.seed}: {len(kept)} train rows, {len(held)} test rows")
