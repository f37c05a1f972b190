// evaluate: scores each trained model on the held-out test split, keeps the one with the best
// validation accuracy (the test split decides nothing; it only reports), and writes metrics.json
// with every candidate's scores and the chosen model's confusion matrix.
//
// usage: node evaluate.mjs TEST METRICS_FILE MODEL_DIR...

import { writeFile } from 'node:fs/promises'
import { readDataset } from './lib/dataset.mjs'
import { evaluate, loadModel } from './lib/mlp.mjs'

const [testFile, metricsFile, ...modelDirs] = process.argv.slice(2)
if (testFile === undefined || metricsFile === undefined || modelDirs.length === 0) {
  console.error('usage: node evaluate.mjs TEST METRICS_FILE MODEL_DIR...')
  process.exit(2)
}
const test = await readDataset(testFile)
const candidates = []
for (const dir of modelDirs) {
  const { info, model } = await loadModel(dir)
  if (model.features !== test.features || model.classes !== test.classes) throw new Error(`${info.name} was trained on ${model.features} features and ${model.classes} classes; the test split has ${test.features} and ${test.classes}`)
  const { predicted, accuracy } = evaluate(model, test, 0, test.rows)
  candidates.push({ name: info.name, hidden: info.hidden, lr: info.lr, epochs: info.epochs, validationAccuracy: info.validationAccuracy, testAccuracy: Number(accuracy.toFixed(6)), predicted })
  console.log(`evaluate: ${info.name} (hidden ${info.hidden}, lr ${info.lr}) validation ${(info.validationAccuracy * 100).toFixed(2)}%, test ${(accuracy * 100).toFixed(2)}%`)
}
// Ties go to the first listed, so the choice never depends on anything but the scores.
const best = candidates.reduce((a, b) => (b.validationAccuracy > a.validationAccuracy ? b : a))
const confusion = Array.from({ length: test.classes }, () => new Array(test.classes).fill(0))
for (let row = 0; row < test.rows; row++) confusion[test.y[row]][best.predicted[row]]++
const metrics = {
  chosen: best.name,
  testAccuracy: best.testAccuracy,
  testRows: test.rows,
  confusion,
  candidates: candidates.map(({ predicted, ...rest }) => rest)
}
await writeFile(metricsFile, JSON.stringify(metrics, null, 2) + '\n')
console.log(`evaluate: chose ${best.name}, test accuracy ${(best.testAccuracy * 100).toFixed(2)}%`)
