// Step `train_tree`: one CART decision tree (ml-cart, Gini impurity) limited to --depth levels,
// a fast, readable baseline for the forest. Deterministic: CART has no randomness.
// Usage: node train_tree.mjs --depth D --seed S TRAIN_CSV MODEL_OUT_DIR  (seed: CV folds only)
import { parseArgs } from 'node:util'
import { DecisionTreeClassifier } from 'ml-cart'
import { fail, intArg } from './lib/data.mjs'
import { runTraining } from './lib/train.mjs'

const { values, positionals } = parseArgs({
  options: { depth: { type: 'string', default: '4' }, seed: { type: 'string', default: '42' } },
  allowPositionals: true
})
if (positionals.length !== 2) fail('usage: train_tree.mjs --depth D --seed S TRAIN_CSV MODEL_OUT_DIR')
const depth = intArg('depth', values.depth, { min: 1, max: 64 })
const seed = intArg('seed', values.seed, { min: 0, max: 2 ** 31 - 1 })

runTraining({
  step: 'train_tree',
  kind: 'decision-tree',
  params: { depth, minNumSamples: 3 },
  seed,
  fit (X, y) {
    const model = new DecisionTreeClassifier({ gainFunction: 'gini', maxDepth: depth, minNumSamples: 3 })
    model.train(X, y)
    return model
  },
  trainPath: positionals[0],
  outDir: positionals[1]
})
