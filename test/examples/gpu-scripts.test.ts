// The GPU example's Node scripts, run for real through the whole chain as the agent runs them
// (fresh working dirs, inputs/ and outputs/, placeholders from pipeline.yaml), with a smaller
// dataset than the default so the test stays quick.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, mkdtemp, readFile, rm, stat, truncate, cp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { execa } from 'execa'
import { loadPipeline as loadValidated } from '../../src/spec/index.js'
import { listFiles, runPipeline, outputPath, readJson, type StepRun } from './run-like-agent.js'

const repo = resolve(import.meta.dirname, '../..')
const exampleDir = join(repo, 'examples/gpu')
const pipelineFile = join(exampleDir, 'pipeline.yaml')
const params = { samples: 4000, epochs: 3 }
/** Header, rows x 32 float32 features, one label byte per row. */
const datasetBytes = (rows: number): number => 16 + rows * 32 * 4 + rows

let tmp: string
let run: Record<string, StepRun>

const out = (step: string, name: string): string => outputPath(run, step, name)
const json = readJson

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pipemesh-gpu-example-'))
  run = await runPipeline(pipelineFile, join(tmp, 'a'), { params })
}, 120_000)

afterAll(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
})

describe('the GPU example, run as the agent runs it', () => {
  it('both pipeline files pass the pipemesh spec validation, the trainings asking for one GPU each', async () => {
    const pipeline = await loadValidated(pipelineFile)
    expect(Object.keys(pipeline.steps)).toEqual(['prep', 'train_narrow', 'train_wide', 'evaluate'])
    expect(pipeline.steps.train_narrow?.resources).toMatchObject({ gpu: 1, gpuMemory: 2 * 2 ** 30 })
    expect(pipeline.steps.prep?.resources.gpu).toBe(0)
    const two = await loadValidated(join(exampleDir, 'needs-two-gpus.yaml'))
    expect(two.steps.train_ddp?.resources.gpu).toBe(2)
  })

  it('prep writes an 80/20 split as binary datasets of the promised size', async () => {
    expect((await stat(out('prep', 'train'))).size).toBe(datasetBytes(3200))
    expect((await stat(out('prep', 'test'))).size).toBe(datasetBytes(800))
    expect(run.prep?.stdout).toMatch(/3200 training rows and 800 test rows, 32 features, 4 classes/)
  })

  it('each training writes its model and learns well beyond chance (25 %)', async () => {
    for (const [step, hidden] of [['train_narrow', 16], ['train_wide', 64]] as const) {
      const model = await json(join(out(step, 'model'), 'model.json'))
      expect(model).toMatchObject({ hidden, features: 32, classes: 4, epochs: 3, trainRows: 2880, validationRows: 320 })
      expect(model.history, step).toHaveLength(3)
      expect(model.validationAccuracy, step).toBeGreaterThan(0.6)
      const weights = await stat(join(out(step, 'model'), 'weights.bin'))
      expect(weights.size, step).toBe(4 * (32 * hidden + hidden + hidden * 4 + 4))
      expect(run[step]?.stdout, step).toMatch(/: device /)
    }
  })

  it('evaluate keeps the model with the better validation accuracy and reports its test scores', async () => {
    const metrics = await json(out('evaluate', 'metrics'))
    const narrow = await json(join(out('train_narrow', 'model'), 'model.json'))
    const wide = await json(join(out('train_wide', 'model'), 'model.json'))
    expect(metrics.chosen).toBe(wide.validationAccuracy > narrow.validationAccuracy ? 'wide' : 'narrow')
    expect(metrics.candidates.map((c: { name: string }) => c.name)).toEqual(['narrow', 'wide'])
    const matrix: number[][] = metrics.confusion
    expect(matrix.flat().reduce((a, b) => a + b, 0)).toBe(800)
    expect(matrix.reduce((sum, row, i) => sum + (row[i] ?? 0), 0) / 800).toBeCloseTo(metrics.testAccuracy, 5)
    expect(metrics.testAccuracy).toBeGreaterThan(0.6)
  })

  it('a second run makes byte-identical outputs, so pipemesh can reuse and cut off early', async () => {
    const again = await runPipeline(pipelineFile, join(tmp, 'b'), { params })
    for (const [step, result] of Object.entries(run)) {
      for (const [name, path] of Object.entries(result.outputs)) {
        const other = again[step]?.outputs[name]
        expect(other, `${step}.${name}`).toBeDefined()
        for (const file of await listFiles(path)) {
          const at = (root: string): string => file === '' ? root : join(root, file)
          expect(await readFile(at(other!)), `${step}.${name}/${file}`).toEqual(await readFile(at(path)))
        }
      }
    }
  }, 120_000)

  it('a training names the device pipemesh assigned it', async () => {
    const work = join(tmp, 'device')
    const result = await execa(process.execPath, [join(exampleDir, 'train.mjs'), '--epochs', '1', out('prep', 'train'), join(work, 'model')], { env: { CUDA_VISIBLE_DEVICES: '0' }, reject: false })
    expect(result.exitCode, result.stderr).toBe(0)
    expect(result.stdout.split('\n')[0]).toMatch(/device CUDA_VISIBLE_DEVICES=0\b/)
  })

  it('a training stopped after an epoch goes on from its checkpoint and ends with the model of an uninterrupted one', async () => {
    const ckpt = join(tmp, 'resume', 'ckpt')
    await mkdir(ckpt, { recursive: true })
    // train_narrow's command with the test's params; only --epochs and the model path vary.
    const train = async (epochs: number, model: string): Promise<string> => {
      const args = [join(exampleDir, 'train.mjs'), '--name', 'narrow', '--hidden', '16', '--lr', '0.05', '--epochs', String(epochs), '--seed', '7', out('prep', 'train'), model]
      const result = await execa(process.execPath, args, { env: { PIPEMESH_CHECKPOINT_DIR: ckpt }, reject: false })
      expect(result.exitCode, result.stderr).toBe(0)
      return result.stdout
    }
    // The first attempt gets through epoch 1 of 3 and dies: its checkpoint holds epoch 1.
    await train(1, join(tmp, 'resume', 'model-1'))
    const resumed = await train(3, join(tmp, 'resume', 'model'))
    expect(resumed).toContain('narrow: resuming after epoch 1 from the checkpoint')
    expect(resumed).not.toMatch(/epoch 1\/3/)
    for (const file of ['model.json', 'weights.bin']) {
      expect(await readFile(join(tmp, 'resume', 'model', file)), file).toEqual(await readFile(join(out('train_narrow', 'model'), file)))
    }
  })

  it('a truncated dataset is refused with a message naming the file, not trained on', async () => {
    const broken = join(tmp, 'broken-train.bin')
    await cp(out('prep', 'train'), broken)
    await truncate(broken, 1000)
    const result = await execa(process.execPath, [join(exampleDir, 'train.mjs'), broken, join(tmp, 'never')], { reject: false })
    expect(result.exitCode).not.toBe(0)
    expect(result.stderr).toContain(`${broken} has 1000 bytes; its header promises ${datasetBytes(3200)}`)
  })
})
