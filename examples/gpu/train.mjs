// train: fits one MLP on prep's training split, holding its last `validation` share out to score
// the model, and writes the model directory evaluate reads. It first says which GPU pipemesh gave
// it: a step with `resources: { gpu: 1 }` sees its device in CUDA_VISIBLE_DEVICES (and
// NVIDIA_VISIBLE_DEVICES), and no other step on that agent sees the same one while it runs.
//
// After each epoch it writes its state (weights, generator, visiting order, history) to the
// step's checkpoint directory, PIPEMESH_CHECKPOINT_DIR, under a temporary name renamed into
// place; when that directory already holds a state (a retry, an agent that died), it goes on from
// there, and the model it ends with is byte for byte the one an uninterrupted run makes.
//
// usage: node train.mjs --name NAME --hidden H --lr LR --epochs E --seed S DATA MODEL_DIR

import { execFileSync } from 'node:child_process'
import { renameSync, writeFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { random, readDataset } from './lib/dataset.mjs'
import { createModel, evaluate, saveModel, train } from './lib/mlp.mjs'

const { values: opts, positionals } = parseArgs({
  options: {
    name: { type: 'string', default: 'mlp' },
    hidden: { type: 'string', default: '32' },
    lr: { type: 'string', default: '0.05' },
    epochs: { type: 'string', default: '4' },
    batch: { type: 'string', default: '32' },
    seed: { type: 'string', default: '7' },
    validation: { type: 'string', default: '0.1' }
  },
  allowPositionals: true
})
const [dataFile, modelDir] = positionals
if (dataFile === undefined || modelDir === undefined) {
  console.error('usage: node train.mjs [--name N --hidden H --lr LR --epochs E --seed S] DATA MODEL_DIR')
  process.exit(2)
}

/** What this step was given: the device pipemesh assigned and, where nvidia-smi runs, what it is. */
function describeDevice () {
  const visible = process.env.CUDA_VISIBLE_DEVICES
  if (visible === undefined || visible === '') return 'no GPU assigned (CUDA_VISIBLE_DEVICES is not set)'
  try {
    const found = execFileSync('nvidia-smi', ['--query-gpu=index,name,memory.total', '--format=csv,noheader', '-i', visible], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] }).trim()
    return `CUDA_VISIBLE_DEVICES=${visible}: ${found.split('\n').join('; ')}`
  } catch {
    return `CUDA_VISIBLE_DEVICES=${visible} (nvidia-smi cannot see it: a GPU the agent declared with --resources)`
  }
}
console.log(`${opts.name}: device ${describeDevice()}; this script computes on the CPU`)

const data = await readDataset(dataFile)
const hidden = Number(opts.hidden)
const lr = Number(opts.lr)
const epochs = Number(opts.epochs)
const seed = Number(opts.seed)
const validationRows = Math.max(1, Math.round(data.rows * Number(opts.validation)))
const trainRows = data.rows - validationRows
const rand = random(seed)
const model = createModel(data.features, hidden, data.classes, rand)
const checkpointDir = process.env.PIPEMESH_CHECKPOINT_DIR
const resumed = checkpointDir === undefined ? undefined : await loadState(checkpointDir)
if (resumed !== undefined) {
  Object.assign(model, resumed.weights)
  rand.state.a = resumed.rng
  console.log(`${opts.name}: resuming after epoch ${resumed.epoch} from the checkpoint`)
}
const history = resumed?.history ?? []
train(model, data, trainRows, {
  epochs,
  lr,
  batch: Number(opts.batch),
  rand,
  from: resumed?.epoch ?? 0,
  order: resumed?.order,
  onEpoch: (epoch, loss, order) => {
    const { accuracy } = evaluate(model, data, trainRows, data.rows)
    history.push({ epoch, loss: Number(loss.toFixed(6)), validationAccuracy: Number(accuracy.toFixed(6)) })
    console.log(`${opts.name}: epoch ${epoch}/${epochs} loss ${loss.toFixed(4)} validation accuracy ${(accuracy * 100).toFixed(2)}%`)
    if (checkpointDir !== undefined) saveStateSync(checkpointDir, { epoch, rng: rand.state.a, history, order, model })
  }
})
const { accuracy } = evaluate(model, data, trainRows, data.rows)
// No device or timing in the model: the same inputs give byte-identical outputs wherever the step
// runs, so pipemesh can reuse what follows it when a rerun changes nothing.
await saveModel(modelDir, model, { name: opts.name, lr, epochs, seed, trainRows, validationRows, validationAccuracy: Number(accuracy.toFixed(6)), history })

/** The training's state as of `epoch`, as one JSON file written whole and renamed into place. */
function saveStateSync (dir, { epoch, rng, history, order, model }) {
  const b64 = a => Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64')
  const state = { epoch, rng, history, order: b64(order), w1: b64(model.w1), b1: b64(model.b1), w2: b64(model.w2), b2: b64(model.b2) }
  writeFileSync(join(dir, 'state.json.tmp'), JSON.stringify(state))
  renameSync(join(dir, 'state.json.tmp'), join(dir, 'state.json'))
}

/** The state a previous attempt saved, or undefined when there is none. */
async function loadState (dir) {
  const text = await readFile(join(dir, 'state.json'), 'utf8').catch(() => undefined)
  if (text === undefined) return undefined
  const s = JSON.parse(text)
  const floats = b64 => { const b = Buffer.from(b64, 'base64'); const a = new Float32Array(b.length / 4); Buffer.from(a.buffer).set(b); return a }
  const ob = Buffer.from(s.order, 'base64')
  const order = new Uint32Array(ob.length / 4)
  Buffer.from(order.buffer).set(ob)
  return { epoch: s.epoch, rng: s.rng, history: s.history, order, weights: { w1: floats(s.w1), b1: floats(s.b1), w2: floats(s.w2), b2: floats(s.b2) } }
}
