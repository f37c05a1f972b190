// Step `train_knn`: k-nearest neighbours (ml-knn, Euclidean distance on the raw measurements,
// which share one unit, cm). "Training" builds a k-d tree over the rows; the model is that tree.
// Usage: node train_knn.mjs --k K --seed S TRAIN_CSV MODEL_OUT_DIR  (seed: CV folds only)
import { parseArgs } from 'node:util'
import KNN from 'ml-knn'
import { fail, intArg } from './lib/data.mjs'
import { runTraining } from './lib/train.mjs'

const { values, positionals } = parseArgs({
  options: { k: { type: 'string', default: '5' }, seed: { type: 'string', default: '42' } },
  allowPositionals: true
})
if (positionals.length !== 2) fail('usage: train_knn.mjs --k K --seed S TRAIN_CSV MODEL_OUT_DIR')
const k = intArg('k', values.k, { min: 1, max: 1000 })
const seed = intArg('seed', values.seed, { min: 0, max: 2 ** 31 - 1 })

runTraining({
  step: 'train_knn',
  kind: 'knn',
  params: { k },
  seed,
  fit: (X, y) => new KNN(X, y, { k }),
  trainPath: positionals[0],
  outDir: positionals[1]
})
