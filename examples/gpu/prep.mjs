// prep: makes the synthetic classification dataset the trainings learn. Each class is a mixture
// of two Gaussian blobs in `features` dimensions, so no single straight cut separates the classes
// and a hidden layer earns its keep. Rows are shuffled, and the last `test-fraction` of them
// become the test split. Seeded: the same parameters always give byte-identical files.
//
// usage: node prep.mjs --samples N --features D --classes C --seed S [--test-fraction F] TRAIN TEST

import { parseArgs } from 'node:util'
import { normal, random, writeDataset } from './lib/dataset.mjs'

const { values: opts, positionals } = parseArgs({
  options: {
    samples: { type: 'string', default: '40000' },
    features: { type: 'string', default: '32' },
    classes: { type: 'string', default: '4' },
    seed: { type: 'string', default: '7' },
    'test-fraction': { type: 'string', default: '0.2' },
    spread: { type: 'string', default: '0.45' }
  },
  allowPositionals: true
})
const [trainFile, testFile] = positionals
if (trainFile === undefined || testFile === undefined) {
  console.error('usage: node prep.mjs [--samples N --features D --classes C --seed S] TRAIN TEST')
  process.exit(2)
}
const samples = Number(opts.samples)
const features = Number(opts.features)
const classes = Number(opts.classes)
const testFraction = Number(opts['test-fraction'])
const spread = Number(opts.spread)
for (const [name, value, ok] of [['samples', samples, samples >= 10], ['features', features, features >= 2], ['classes', classes, classes >= 2 && classes <= 255], ['test-fraction', testFraction, testFraction > 0 && testFraction < 1]]) {
  if (!Number.isFinite(value) || !ok) { console.error(`prep: --${name} ${value} is out of range`); process.exit(2) }
}

const rand = random(Number(opts.seed))
const gauss = normal(rand)
// Blob centres: `spread` standard deviations apart per dimension on average, which leaves the
// classes overlapping enough that accuracy depends on the model.
const centres = Array.from({ length: classes * 2 }, () => Float64Array.from({ length: features }, () => gauss() * spread))

const x = new Float32Array(samples * features)
const y = new Uint8Array(samples)
for (let row = 0; row < samples; row++) {
  const label = Math.floor(rand() * classes)
  const centre = centres[label * 2 + (rand() < 0.5 ? 0 : 1)]
  for (let f = 0; f < features; f++) x[row * features + f] = centre[f] + gauss()
  y[row] = label
}

const testRows = Math.max(1, Math.round(samples * testFraction))
const trainRows = samples - testRows
const split = (from, rows) => ({ rows, features, classes, x: x.subarray(from * features, (from + rows) * features), y: y.subarray(from, from + rows) })
await writeDataset(trainFile, split(0, trainRows))
await writeDataset(testFile, split(trainRows, testRows))
console.log(`prep: ${trainRows} training rows and ${testRows} test rows, ${features} features, ${classes} classes (${(x.byteLength / 2 ** 20).toFixed(1)} MiB of features)`)
