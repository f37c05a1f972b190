// Step `train_forest`: a random forest (ml-random-forest) of --trees trees, each grown on a
// bootstrap sample and 2 of the 4 measurements; seeded, so the same data gives the same forest.
// Usage: node train_forest.mjs --trees N --seed S TRAIN_CSV MODEL_OUT_DIR
import { parseArgs } from 'node:util'
import { RandomForestClassifier } from 'ml-random-forest'
import { fail, intArg } from './lib/data.mjs'
import { runTraining } from './lib/train.mjs'

const { values, positionals } = parseArgs({
  options: { trees: { type: 'string', default: '50' }, seed: { type: 'string', default: '42' } },
  allowPositionals: true
})
if (positionals.length !== 2) fail('usage: train_forest.mjs --trees N --seed S TRAIN_CSV MODEL_OUT_DIR')
const trees = intArg('trees', values.trees, { min: 1, max: 10000 })
const seed = intArg('seed', values.seed, { min: 0, max: 2 ** 31 - 1 })

runTraining({
  step: 'train_forest',
  kind: 'random-forest',
  params: { trees, maxFeatures: 2, seed },
  seed,
  fit (X, y) {
    const model = new RandomForestClassifier({
      nEstimators: trees,
      maxFeatures: 2,
      replacement: false,
      useSampleBagging: true,
      noOOB: true,
      seed
    })
    model.train(X, y)
    return model
  },
  trainPath: positionals[0],
  outDir: positionals[1]
})
