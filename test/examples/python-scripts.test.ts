// The Python example's scripts (standard library only), run for real through the whole chain as
// the agent runs them: fresh working dirs, inputs/ and outputs/, placeholders from pipeline.yaml.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { loadPipeline as loadValidated } from '../../src/spec/index.js'
import { listFiles, loadPipeline, runPipeline, runStep, outputPath, readJson, type StepRun } from './run-like-agent.js'

const repo = resolve(import.meta.dirname, '../..')
const exampleDir = join(repo, 'examples/python')
const pipelineFile = join(exampleDir, 'pipeline.yaml')
const irisCsv = join(repo, 'examples/iris/data/iris.csv')
const batch = join(repo, 'examples/iris/data/unlabeled.csv')
const SPECIES = ['setosa', 'versicolor', 'virginica']

let tmp: string
let run: Record<string, StepRun>

const lines = (text: string): string[] => text.trimEnd().split('\n')
const out = (step: string, name: string): string => outputPath(run, step, name)
const json = readJson
/** A `best` directory holding one training step's model, as select would write it for that winner. */
const bestOf = async (step: string, label: string): Promise<string> => {
  const best = join(tmp, `best-${label}`)
  await cp(out(step, 'model'), best, { recursive: true })
  const { kind, validationAccuracy } = await json(join(best, 'metrics.json'))
  await writeFile(join(best, 'which.json'), JSON.stringify({ chosen: step, kind, validationAccuracy }))
  return best
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pipemesh-pyiris-'))
  run = await runPipeline(pipelineFile, join(tmp, 'a'))
})

afterAll(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
})

describe('python example pipeline', () => {
  it('pipeline.yaml passes the pipemesh spec validation', async () => {
    const pipeline = await loadValidated(pipelineFile)
    expect(Object.keys(pipeline.steps)).toEqual(['prep', 'train_centroid', 'train_logreg', 'train_knn', 'select', 'evaluate', 'score'])
  })

  it('reads the iris example data in place and needs no environment', () => {
    const pipeline = loadPipeline(pipelineFile)
    expect(resolve(exampleDir, pipeline.inputs?.raw ?? '')).toBe(irisCsv)
    expect(resolve(exampleDir, pipeline.inputs?.unlabeled ?? '')).toBe(batch)
    expect(Object.values(pipeline.steps).filter((s) => s.environment !== undefined)).toEqual([])
  })

  it('prep writes a stratified 120/30 split of all 150 rows', async () => {
    const train = lines(await readFile(out('prep', 'train'), 'utf8'))
    const test = lines(await readFile(out('prep', 'test'), 'utf8'))
    const all = lines(readFileSync(irisCsv, 'utf8'))
    expect(train).toHaveLength(121)
    expect(test).toHaveLength(31)
    expect([...train.slice(1), ...test.slice(1)].sort()).toEqual(all.slice(1).sort())
    for (const s of SPECIES) expect(test.filter((r) => r.endsWith(`,${s}`)), s).toHaveLength(10)
  })

  it('each training step writes a model and a cross-validated accuracy above 0.8', async () => {
    const kinds = { train_centroid: 'nearest-centroid', train_logreg: 'softmax-regression', train_knn: 'knn' }
    for (const [step, kind] of Object.entries(kinds)) {
      const metrics = await json(join(out(step, 'model'), 'metrics.json'))
      expect(metrics.kind, step).toBe(kind)
      expect((await json(join(out(step, 'model'), 'model.json'))).classes).toEqual(SPECIES)
      expect(metrics.validationAccuracy, step).toBeGreaterThan(0.8)
      expect(run[step]?.stdout, step).toMatch(/fold 5\/5/)
    }
    expect((await json(join(out('train_logreg', 'model'), 'metrics.json'))).params.epochs).toBe(100)
  })

  it('select (an argv command) keeps the best candidate; evaluate scores it above 0.8 on the test split', async () => {
    const which = await json(join(out('select', 'best'), 'which.json'))
    const best = Math.max(...which.candidates.map((c: { validationAccuracy: number }) => c.validationAccuracy))
    expect(which.candidates.map((c: { name: string }) => c.name)).toEqual(['centroid', 'logreg', 'knn'])
    expect(which.validationAccuracy).toBe(best)
    const metrics = await json(out('evaluate', 'metrics'))
    expect(metrics.model).toBe(which.chosen)
    expect(metrics.testRows).toBe(30)
    expect(metrics.accuracy).toBeGreaterThan(0.8)
    expect(Object.keys(metrics.perClass)).toEqual(SPECIES)
    expect((metrics.confusionMatrix.matrix as number[][]).flat().reduce((a, b) => a + b, 0)).toBe(30)
  })

  it('score writes one prediction per unlabeled row', async () => {
    const predictions = lines(await readFile(out('score', 'predictions'), 'utf8'))
    expect(predictions[0]).toBe('sepal_length,sepal_width,petal_length,petal_width,predicted_species')
    expect(predictions).toHaveLength(31)
    expect(predictions.slice(1).map((r) => r.slice(0, r.lastIndexOf(',')))).toEqual(lines(readFileSync(batch, 'utf8')).slice(1))
    for (const r of predictions.slice(1)) expect(SPECIES).toContain(r.split(',').at(-1))
  })

  it('a second run in other directories writes byte-identical outputs and leaves no __pycache__', async () => {
    const again = await runPipeline(pipelineFile, join(tmp, 'b'))
    for (const [step, result] of Object.entries(run)) {
      for (const [name, path] of Object.entries(result.outputs)) {
        const other = again[step]?.outputs[name] as string
        const files = await listFiles(path)
        expect(await listFiles(other), `${step}.${name}`).toEqual(files)
        for (const f of files) {
          expect(await readFile(join(other, f)), `${step}.${name}/${f}`).toEqual(await readFile(join(path, f)))
        }
      }
      expect((await listFiles(result.workDir)).filter((f) => f.includes('__pycache__')), step).toEqual([])
    }
  })

  it('score loads whichever model kind which.json names, and refuses a mismatch', async () => {
    for (const [step, kind] of [['train_centroid', 'nearest-centroid'], ['train_logreg', 'softmax-regression'], ['train_knn', 'knn']] as const) {
      const best = await bestOf(step, step)
      const scored = await runStep(pipelineFile, 'score', { model: best, batch }, join(tmp, `score-${step}`))
      expect(scored.exitCode, scored.stderr).toBe(0)
      expect(scored.stdout).toContain(`(${kind})`)
      expect(lines(await readFile(scored.outputs.predictions as string, 'utf8'))).toHaveLength(31)
      if (kind === 'knn') {
        const which = await json(join(best, 'which.json'))
        await writeFile(join(best, 'which.json'), JSON.stringify({ ...which, kind: 'nearest-centroid' }))
        const refused = await runStep(pipelineFile, 'score', { model: best, batch }, join(tmp, 'score-mismatch'))
        expect(refused.exitCode).toBe(1)
        expect(refused.stderr).toMatch(/holds a knn model but which.json says nearest-centroid/)
      }
    }
  })

  it('evaluate fails with exit 3 when test accuracy is under min_accuracy', async () => {
    const best = await bestOf('train_centroid', 'gate')
    const test = out('prep', 'test')
    const open = await runStep(pipelineFile, 'evaluate', { model: best, test }, join(tmp, 'gate-open'), { params: { min_accuracy: 0.5 } })
    expect(open.exitCode, open.stderr).toBe(0)
    expect((await json(open.outputs.metrics as string)).accuracy).toBeLessThan(1) // nearest centroid misses a few
    const shut = await runStep(pipelineFile, 'evaluate', { model: best, test }, join(tmp, 'gate-shut'), { params: { min_accuracy: 1 } })
    expect(shut.exitCode).toBe(3)
    expect(shut.stderr).toMatch(/below --min-accuracy 1/)
    const bad = await runStep(pipelineFile, 'evaluate', { model: best, test }, join(tmp, 'gate-bad'), { params: { min_accuracy: 2 } })
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toMatch(/--min-accuracy must be between 0 and 1, got 2/)
  })
})
