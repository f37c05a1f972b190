// Step `select`: picks the candidate model with the best cross-validated accuracy (a tie goes to
// the candidate listed first) and writes BEST_OUT/ with its model.json and metrics.json, copied
// byte for byte, plus which.json naming the winner and its kind, which later steps load by.
// Usage: node select.mjs MODEL_DIR... BEST_OUT_DIR   (a candidate's name is its directory's name)
import { copyFileSync, mkdirSync } from 'node:fs'
import { basename, join } from 'node:path'
import { fail, readJson, writeJson } from './lib/data.mjs'

const args = process.argv.slice(2)
if (args.length < 2) fail('usage: select.mjs MODEL_DIR... BEST_OUT_DIR')
const outDir = args.at(-1)
const candidates = args.slice(0, -1).map((dir) => {
  const metrics = readJson(join(dir, 'metrics.json'))
  if (typeof metrics.validationAccuracy !== 'number') fail(`${dir}/metrics.json: expected a numeric validationAccuracy`)
  if (typeof metrics.kind !== 'string') fail(`${dir}/metrics.json: expected a string kind`)
  const name = basename(dir)
  console.log(`select: ${name} (${metrics.kind}) validation accuracy ${metrics.validationAccuracy}`)
  return { name, dir, kind: metrics.kind, validationAccuracy: metrics.validationAccuracy }
})
const names = candidates.map((c) => c.name)
const duplicate = names.find((n, i) => names.indexOf(n) !== i)
if (duplicate !== undefined) fail(`two candidates are both named ${duplicate}; give each model directory its own name`)

let best = candidates[0]
for (const c of candidates) if (c.validationAccuracy > best.validationAccuracy) best = c

mkdirSync(outDir, { recursive: true })
copyFileSync(join(best.dir, 'model.json'), join(outDir, 'model.json'))
copyFileSync(join(best.dir, 'metrics.json'), join(outDir, 'metrics.json'))
writeJson(join(outDir, 'which.json'), {
  chosen: best.name,
  kind: best.kind,
  validationAccuracy: best.validationAccuracy,
  rule: 'highest validationAccuracy; ties go to the candidate listed first',
  candidates: candidates.map(({ name, kind, validationAccuracy }) => ({ name, kind, validationAccuracy }))
})
console.log(`select: chose ${best.name} (${best.kind}) with validation accuracy ${best.validationAccuracy}`)
