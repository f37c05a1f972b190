// Step `score`: batch-scores an unlabeled CSV with the selected model (loaded by the kind in
// BEST_DIR/which.json) and writes PREDICTIONS_OUT: the input rows, unchanged, plus a
// predicted_species column, in input order.
// Usage: node score.mjs BEST_DIR UNLABELED_CSV PREDICTIONS_OUT
import { join } from 'node:path'
import { fail, readIris, readJson, writeCsv } from './lib/data.mjs'
import { loadPredictor } from './lib/models.mjs'

const args = process.argv.slice(2)
if (args.length !== 3) fail('usage: score.mjs BEST_DIR UNLABELED_CSV PREDICTIONS_OUT')
const [bestDir, inPath, outPath] = args
const which = readJson(join(bestDir, 'which.json'))
const predict = loadPredictor(readJson(join(bestDir, 'model.json')), which.kind, bestDir)
const { header, rows, X } = readIris(inPath, { labeled: false })
console.log(`score: ${which.chosen} (${which.kind}) on ${X.length} rows from ${inPath}`)

const predicted = X.length === 0 ? [] : predict(X)
writeCsv(outPath, [...header, 'predicted_species'], rows.map((row, i) => [...row, predicted[i]]))
const counts = {}
for (const p of predicted) counts[p] = (counts[p] ?? 0) + 1
console.log(`score: wrote ${predicted.length} predictions (${Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ')})`)
