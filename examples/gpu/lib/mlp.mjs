// A multilayer perceptron with one hidden layer (ReLU) and a softmax output, trained by
// mini-batch stochastic gradient descent on the cross-entropy loss. Plain JavaScript on the CPU:
// the example is about where steps run, and a script here needs nothing but Node. In a real
// pipeline this is the step that calls PyTorch or JAX on the GPU that pipemesh assigned it.

import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { normal } from './dataset.mjs'

/** @typedef {{ features: number, hidden: number, classes: number, w1: Float32Array, b1: Float32Array, w2: Float32Array, b2: Float32Array }} Model */

/** He-initialized weights from `rand`. */
export function createModel (features, hidden, classes, rand) {
  const gauss = normal(rand)
  const w1 = Float32Array.from({ length: features * hidden }, () => gauss() * Math.sqrt(2 / features))
  const w2 = Float32Array.from({ length: hidden * classes }, () => gauss() * Math.sqrt(2 / hidden))
  return { features, hidden, classes, w1, b1: new Float32Array(hidden), w2, b2: new Float32Array(classes) }
}

/** Fills `h` (hidden activations) and `p` (class probabilities) for one row; returns p. */
function forward (m, x, offset, h, p) {
  const { features, hidden, classes, w1, b1, w2, b2 } = m
  for (let j = 0; j < hidden; j++) {
    let s = b1[j]
    for (let i = 0; i < features; i++) s += x[offset + i] * w1[i * hidden + j]
    h[j] = s > 0 ? s : 0
  }
  let max = -Infinity
  for (let k = 0; k < classes; k++) {
    let s = b2[k]
    for (let j = 0; j < hidden; j++) s += h[j] * w2[j * classes + k]
    p[k] = s
    if (s > max) max = s
  }
  let sum = 0
  for (let k = 0; k < classes; k++) { p[k] = Math.exp(p[k] - max); sum += p[k] }
  for (let k = 0; k < classes; k++) p[k] /= sum
  return p
}

/**
 * Trains `m` in place on rows [0, rows) of `data`, visiting them in an order drawn from `rand`
 * each epoch (each shuffle starts from the last one's order). Calls `onEpoch(epoch, meanLoss,
 * order)` after each epoch. A resumed training passes the epoch it got to as `from`, with the
 * order and the generator state it had then.
 */
export function train (m, data, rows, { epochs, lr, batch, rand, onEpoch, from = 0, order: resumedOrder }) {
  const { features, hidden, classes } = m
  const h = new Float64Array(hidden)
  const p = new Float64Array(classes)
  const dh = new Float64Array(hidden)
  const g = { w1: new Float64Array(m.w1.length), b1: new Float64Array(hidden), w2: new Float64Array(m.w2.length), b2: new Float64Array(classes) }
  const order = resumedOrder ?? Uint32Array.from({ length: rows }, (_, i) => i)
  for (let epoch = from + 1; epoch <= epochs; epoch++) {
    for (let i = rows - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1))
      const t = order[i]; order[i] = order[j]; order[j] = t
    }
    let loss = 0
    for (let start = 0; start < rows; start += batch) {
      const end = Math.min(rows, start + batch)
      for (const a of Object.values(g)) a.fill(0)
      for (let n = start; n < end; n++) {
        const row = order[n]
        const offset = row * features
        forward(m, data.x, offset, h, p)
        const label = data.y[row]
        loss -= Math.log(Math.max(p[label], 1e-12))
        dh.fill(0)
        for (let k = 0; k < classes; k++) {
          const d = p[k] - (k === label ? 1 : 0)
          g.b2[k] += d
          for (let j = 0; j < hidden; j++) {
            g.w2[j * classes + k] += h[j] * d
            dh[j] += m.w2[j * classes + k] * d
          }
        }
        for (let j = 0; j < hidden; j++) {
          if (h[j] <= 0) continue
          g.b1[j] += dh[j]
          for (let i = 0; i < features; i++) g.w1[i * hidden + j] += data.x[offset + i] * dh[j]
        }
      }
      const scale = lr / (end - start)
      for (const name of ['w1', 'b1', 'w2', 'b2']) {
        const w = m[name]
        const grad = g[name]
        for (let i = 0; i < w.length; i++) w[i] -= scale * grad[i]
      }
    }
    onEpoch?.(epoch, loss / rows, order)
  }
}

/** Predicted class of each row in [from, to), and the share of them that match their label. */
export function evaluate (m, data, from, to) {
  const h = new Float64Array(m.hidden)
  const p = new Float64Array(m.classes)
  const predicted = new Uint8Array(to - from)
  let correct = 0
  for (let row = from; row < to; row++) {
    forward(m, data.x, row * m.features, h, p)
    let best = 0
    for (let k = 1; k < m.classes; k++) if (p[k] > p[best]) best = k
    predicted[row - from] = best
    if (best === data.y[row]) correct++
  }
  return { predicted, accuracy: correct / (to - from) }
}

/** model.json (shape, training parameters, scores) and weights.bin (w1, b1, w2, b2 as float32). */
export async function saveModel (dir, m, info) {
  await mkdir(dir, { recursive: true })
  const parts = [m.w1, m.b1, m.w2, m.b2].map(a => Buffer.from(a.buffer, a.byteOffset, a.byteLength))
  await writeFile(join(dir, 'weights.bin'), Buffer.concat(parts))
  await writeFile(join(dir, 'model.json'), JSON.stringify({ features: m.features, hidden: m.hidden, classes: m.classes, ...info }, null, 2) + '\n')
}

export async function loadModel (dir) {
  const info = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8'))
  const { features, hidden, classes } = info
  const raw = await readFile(join(dir, 'weights.bin'))
  const sizes = [features * hidden, hidden, hidden * classes, classes]
  if (raw.length !== sizes.reduce((a, b) => a + b, 0) * 4) throw new Error(`${dir}/weights.bin does not match the shape in model.json`)
  const floats = new Float32Array(raw.length / 4)
  Buffer.from(floats.buffer).set(raw)
  let at = 0
  const [w1, b1, w2, b2] = sizes.map(n => floats.subarray(at, (at += n)))
  return { info, model: { features, hidden, classes, w1, b1, w2, b2 } }
}
