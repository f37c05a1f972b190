// The model kinds the iris steps know, by the `kind` stored in every model.json: how to load a
// saved model and predict class indices with it. Needs the node-ml environment (ml-* packages).
import { RandomForestClassifier } from 'ml-random-forest'
import { DecisionTreeClassifier } from 'ml-cart'
import KNN from 'ml-knn'
import { fail } from './data.mjs'

const loaders = {
  'random-forest': (json) => RandomForestClassifier.load(json),
  'decision-tree': (json) => DecisionTreeClassifier.load(json),
  knn: (json) => KNN.load(json)
}

export const KINDS = Object.keys(loaders)

/**
 * Rebuilds the library model saved in a model.json ({ kind, classes, model }) and returns a
 * predictor from feature rows to class names. `kind` is what the caller expects (from which.json);
 * a mismatch means the files were mixed up, so it is refused rather than guessed.
 */
export function loadPredictor (saved, kind, where) {
  const load = loaders[kind]
  if (load === undefined) fail(`${where}: unknown model kind ${JSON.stringify(kind)}; expected one of ${KINDS.join(', ')}`)
  if (saved.kind !== kind) fail(`${where}: model.json holds a ${saved.kind} model but which.json says ${kind}`)
  if (!Array.isArray(saved.classes) || saved.classes.length === 0) fail(`${where}: model.json has no classes list`)
  const model = load(saved.model)
  return (X) => model.predict(X).map((c) => {
    const name = saved.classes[c]
    if (name === undefined) fail(`${where}: model predicted class index ${c}, outside its ${saved.classes.length} classes`)
    return name
  })
}
