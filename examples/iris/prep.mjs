// Step `prep`: checks the raw iris CSV and splits it into train and test sets, stratified by
// species so each set keeps the 1:1:1 class balance. The split depends only on the data and --seed.
// Usage: node prep.mjs [--seed N] [--test-fraction F] RAW_CSV TRAIN_OUT TEST_OUT
import { parseArgs } from 'node:util'
import { fail, intArg, readIris, stratifiedSplit, writeCsv } from './lib/data.mjs'

const { values, positionals } = parseArgs({
  options: { seed: { type: 'string', default: '42' }, 'test-fraction': { type: 'string', default: '0.2' } },
  allowPositionals: true
})
if (positionals.length !== 3) fail('usage: prep.mjs [--seed N] [--test-fraction F] RAW_CSV TRAIN_OUT TEST_OUT')
const [rawPath, trainPath, testPath] = positionals
const seed = intArg('seed', values.seed, { min: 0, max: 2 ** 32 - 1 })
const fraction = Number(values['test-fraction'])
if (!(fraction > 0 && fraction < 1)) fail(`--test-fraction must be between 0 and 1, got ${values['test-fraction']}`)

const { header, rows, labels } = readIris(rawPath, { labeled: true })
const classes = [...new Set(labels)].sort()
console.log(`prep: read ${rows.length} rows, ${classes.length} classes (${classes.join(', ')}) from ${rawPath}`)
if (classes.length < 2) fail(`${rawPath}: need at least two species to train a classifier, found ${classes.length}`)

const { kept, held } = stratifiedSplit(labels, fraction, seed)
writeCsv(trainPath, header, kept.map((i) => rows[i]))
writeCsv(testPath, header, held.map((i) => rows[i]))
console.log(`prep: stratified split with seed ${seed}: ${kept.length} train rows, ${held.length} test rows`)
