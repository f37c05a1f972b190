// Step `evaluate`: scores the selected model on the held-out test split and writes METRICS_OUT,
// a JSON file with accuracy, macro F1, per-class precision/recall/F1 and the confusion matrix.
// The model is loaded by the kind named in BEST_DIR/which.json. With --min-accuracy it is also a
// quality gate: below it the step fails (exit 3), so steps that come `after` it do not run.
// Usage: node evaluate.mjs [--min-accuracy A] BEST_DIR TEST_CSV METRICS_OUT
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { fail, readIris, readJson, round, writeJson } from './lib/data.mjs'
import { loadPredictor } from './lib/models.mjs'

const { values, positionals: args } = parseArgs({ options: { 'min-accuracy': { type: 'string', default: '0' } }, allowPositionals: true })
if (args.length !== 3) fail('usage: evaluate.mjs [--min-accuracy A] BEST_DIR TEST_CSV METRICS_OUT')
const [bestDir, testPath, outPath] = args
const minAccuracy = Number(values['min-accuracy'])
if (!(minAccuracy >= 0 && minAccuracy <= 1)) fail(`--min-accuracy must be between 0 and 1, got ${values['min-accuracy']}`)
const which = readJson(join(bestDir, 'which.json'))
const saved = readJson(join(bestDir, 'model.json'))
const predict = loadPredictor(saved, which.kind, bestDir)
const { X, labels } = readIris(testPath, { labeled: true })
console.log(`evaluate: ${which.chosen} (${which.kind}) on ${X.length} test rows`)

const predicted = predict(X)
const classes = [...new Set([...saved.classes, ...labels])].sort()
const at = new Map(classes.map((c, i) => [c, i]))
// matrix[actual][predicted]
const matrix = classes.map(() => classes.map(() => 0))
labels.forEach((actual, i) => { matrix[at.get(actual)][at.get(predicted[i])]++ })

const perClass = {}
for (const [i, name] of classes.entries()) {
  const tp = matrix[i][i]
  const support = matrix[i].reduce((a, b) => a + b, 0)
  const predictedAs = matrix.reduce((sum, row) => sum + row[i], 0)
  const precision = predictedAs === 0 ? 0 : tp / predictedAs
  const recall = support === 0 ? 0 : tp / support
  const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall)
  perClass[name] = { precision: round(precision), recall: round(recall), f1: round(f1), support }
}
const correct = classes.reduce((sum, _, i) => sum + matrix[i][i], 0)
const accuracy = X.length === 0 ? 0 : correct / X.length
const macroF1 = Object.values(perClass).reduce((sum, c) => sum + c.f1, 0) / classes.length

writeJson(outPath, {
  model: which.chosen,
  kind: which.kind,
  validationAccuracy: which.validationAccuracy,
  testRows: X.length,
  accuracy: round(accuracy),
  macroF1: round(macroF1),
  perClass,
  confusionMatrix: { labels: classes, rows: 'actual', columns: 'predicted', matrix }
})
console.log(`evaluate: test accuracy ${round(accuracy)} (${correct}/${X.length}), macro F1 ${round(macroF1)}`)
for (const [name, m] of Object.entries(perClass)) {
  console.log(`evaluate:   ${name.padEnd(12)} precision ${m.precision}  recall ${m.recall}  f1 ${m.f1}  (n=${m.support})`)
}
if (accuracy < minAccuracy) {
  console.error(`evaluate: test accuracy ${round(accuracy)} is below --min-accuracy ${minAccuracy}; failing so nothing is scored with this model`)
  process.exit(3)
}
