// Plain helpers shared by the iris steps: CSV in and out, a seeded PRNG, stratified splits and
// stable JSON. No dependencies, so steps without the node-ml environment (prep) can use it.
// Everything here is deterministic: the same input gives byte-identical output, which is what
// lets pipemesh reuse (and cut off below) a step whose outputs did not change.
import { readFileSync, writeFileSync } from 'node:fs'

export const FEATURES = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']
export const LABEL = 'species'

/** Prints a message naming the step's script and exits 1; for input a user must fix. */
export function fail (message) {
  console.error(`${process.argv[1] ?? 'step'}: ${message}`)
  process.exit(1)
}

/** Reads a header + rows CSV (no quoting: the iris files have none). */
export function readCsv (path) {
  let text
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    fail(`cannot read ${path}: ${err.message}`)
  }
  const lines = text.split(/\r?\n/).filter((line) => line.trim() !== '')
  if (lines.length === 0) fail(`${path} is empty: expected a header line`)
  const header = lines[0].split(',').map((h) => h.trim())
  const rows = lines.slice(1).map((line, i) => {
    const cells = line.split(',').map((c) => c.trim())
    if (cells.length !== header.length) {
      fail(`${path} line ${i + 2}: expected ${header.length} values (${header.join(',')}), got ${cells.length}`)
    }
    return cells
  })
  return { header, rows }
}

export function writeCsv (path, header, rows) {
  writeFileSync(path, [header, ...rows].map((r) => r.join(',')).join('\n') + '\n')
}

/**
 * Reads the measurement columns (by name, in FEATURES order) and, when `labeled`, the species.
 * Returns the raw rows too so a step can write them back unchanged.
 */
export function readIris (path, { labeled }) {
  const { header, rows } = readCsv(path)
  const columns = FEATURES.map((name) => {
    const at = header.indexOf(name)
    if (at < 0) fail(`${path}: missing column ${name} (header: ${header.join(',')})`)
    return at
  })
  const labelAt = header.indexOf(LABEL)
  if (labeled && labelAt < 0) fail(`${path}: missing column ${LABEL} (header: ${header.join(',')})`)
  const X = rows.map((row, i) => columns.map((at) => {
    const v = Number(row[at])
    if (!Number.isFinite(v)) fail(`${path} line ${i + 2}: ${header[at]} is not a number: ${JSON.stringify(row[at])}`)
    return v
  }))
  const labels = labeled ? rows.map((row) => row[labelAt]) : []
  return { header, rows, X, labels }
}

/** mulberry32: a small, fast PRNG whose stream depends only on the seed. */
export function rng (seed) {
  let a = Number(seed) >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

export function shuffle (items, rand) {
  const out = items.slice()
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

/** Row indices grouped by label, labels in sorted order so the result never depends on row order. */
function byClass (labels) {
  const groups = new Map()
  labels.forEach((label, i) => {
    if (!groups.has(label)) groups.set(label, [])
    groups.get(label).push(i)
  })
  return [...groups.keys()].sort().map((label) => groups.get(label))
}

/** Stratified split: `fraction` of each class goes to `held`, the rest to `kept`; both sorted. */
export function stratifiedSplit (labels, fraction, seed) {
  const rand = rng(seed)
  const kept = []
  const held = []
  for (const group of byClass(labels)) {
    const order = shuffle(group, rand)
    const n = Math.round(order.length * fraction)
    held.push(...order.slice(0, n))
    kept.push(...order.slice(n))
  }
  const asc = (a, b) => a - b
  return { kept: kept.sort(asc), held: held.sort(asc) }
}

/** Stratified k folds: each class is dealt round-robin, continuing where the last class stopped. */
export function stratifiedFolds (labels, k, seed) {
  const rand = rng(seed)
  const folds = Array.from({ length: k }, () => [])
  let next = 0
  for (const group of byClass(labels)) {
    for (const i of shuffle(group, rand)) {
      folds[next].push(i)
      next = (next + 1) % k
    }
  }
  return folds.map((fold) => fold.sort((a, b) => a - b))
}

/** Class names in sorted order and each label's index into them. */
export function encodeLabels (labels) {
  const classes = [...new Set(labels)].sort()
  const index = new Map(classes.map((c, i) => [c, i]))
  return { classes, y: labels.map((label) => index.get(label)) }
}

/** Rounds for readable, stable JSON (4 decimals is finer than any iris-sized ratio needs). */
export function round (x) {
  return Math.round(x * 10000) / 10000
}

export function readJson (path) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch (err) {
    fail(`cannot read JSON from ${path}: ${err.message}`)
  }
}

/**
 * Key order is insertion order, so the same object always gives the same bytes. `compact` for
 * model files (a forest is hundreds of KiB; indentation would double it).
 */
export function writeJson (path, value, { compact = false } = {}) {
  writeFileSync(path, JSON.stringify(value, null, compact ? undefined : 2) + '\n')
}

/** Parses an integer flag, failing with the flag's name when it is not one in range. */
export function intArg (name, value, { min = -Infinity, max = Infinity } = {}) {
  const n = Number(value)
  if (!Number.isInteger(n) || n < min || n > max) {
    fail(`--${name} must be an integer in [${min}, ${max}], got ${JSON.stringify(value)}`)
  }
  return n
}
