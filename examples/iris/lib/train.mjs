// The part every training step shares: read the train split, estimate accuracy by stratified
// k-fold cross-validation on it, refit on all of it, and write outputs/<model>/ with model.json
// (the library's toJSON plus kind and class names) and metrics.json (what `select` compares).
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { encodeLabels, fail, readIris, round, stratifiedFolds, writeJson, FEATURES } from './data.mjs'

export const FOLDS = 5

/**
 * `fit(X, y)` trains a fresh library model on feature rows and class indices and returns it
 * (it must have predict(X) -> class indices and toJSON()). `params` are recorded as given.
 */
export function runTraining ({ step, kind, params, seed, fit, trainPath, outDir }) {
  const { X, labels } = readIris(trainPath, { labeled: true })
  const { classes, y } = encodeLabels(labels)
  if (X.length < FOLDS * classes.length) fail(`${trainPath}: ${X.length} rows is too few for ${FOLDS}-fold cross-validation`)
  console.log(`${step}: ${kind} ${JSON.stringify(params)} on ${X.length} rows, ${classes.length} classes`)

  const folds = stratifiedFolds(labels, FOLDS, seed)
  const foldAccuracies = folds.map((held, f) => {
    const isHeld = new Set(held)
    const fitRows = X.map((_, i) => i).filter((i) => !isHeld.has(i))
    const model = fit(fitRows.map((i) => X[i]), fitRows.map((i) => y[i]))
    const predicted = model.predict(held.map((i) => X[i]))
    const correct = predicted.filter((p, j) => p === y[held[j]]).length
    const accuracy = correct / held.length
    console.log(`${step}: fold ${f + 1}/${FOLDS}: ${correct}/${held.length} correct`)
    return accuracy
  })
  const validationAccuracy = round(foldAccuracies.reduce((a, b) => a + b, 0) / FOLDS)

  const model = fit(X, y)
  const trainPredicted = model.predict(X)
  const trainAccuracy = round(trainPredicted.filter((p, i) => p === y[i]).length / X.length)

  mkdirSync(outDir, { recursive: true })
  writeJson(join(outDir, 'model.json'), { kind, classes, features: FEATURES, params, model: model.toJSON() }, { compact: true })
  writeJson(join(outDir, 'metrics.json'), {
    kind,
    params,
    validationAccuracy,
    validation: {
      method: `stratified ${FOLDS}-fold cross-validation on the training split`,
      seed,
      foldAccuracies: foldAccuracies.map(round)
    },
    trainAccuracy,
    trainRows: X.length
  })
  console.log(`${step}: validation accuracy ${validationAccuracy} (${FOLDS}-fold CV), train accuracy ${trainAccuracy}`)
}
