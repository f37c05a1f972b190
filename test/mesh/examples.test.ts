// The README's mesh on one machine: a coordinator and three agents (one declaring a GPU, two
// CPU-only of different sizes, started with the README's flags) run the bundled examples, the
// iris demo and the GPU sweep, with the placements, peer-to-peer transfers and messages the
// README shows for them.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ROOT, runCli, runCliJson, tempDir } from '../helpers/cli.js'
import { startMesh, transferCounters, waitForCounters, type Mesh } from '../helpers/mesh.js'
import type { LogEntry } from '../../src/client/api.js'
import { ContentStore } from '../../src/store/content-store.js'
import type { RunSummary, StepSummary } from '../../src/run/types.js'
import type { Explanation } from '../../src/run/explain.js'

const CPU_AGENTS = ['cpu-big', 'cpu-small']
/** prep's training split with the example's defaults: header, 32000 x 32 float32, 32000 labels. */
const TRAIN_SPLIT_BYTES = 16 + 32000 * 32 * 4 + 32000

describe('the bundled examples on a coordinator and three agents', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  const client = (): string => join(work.path, 'client')
  const submit = async (file: string): Promise<{ exitCode: number, json: RunSummary, stderr: string }> =>
    await runCliJson<RunSummary>(['--data', client(), 'run', file, '--coordinator', mesh.url], { timeoutMs: 300_000 })
  const stepsOf = (run: RunSummary): Record<string, StepSummary> => Object.fromEntries(run.steps.map(s => [s.id, s]))
  const output = async (run: RunSummary, step: string, name: string): Promise<string> => {
    const dest = join(work.path, `${run.runId}-${step}-${name}`)
    const { exitCode, stderr } = await runCliJson(['--data', client(), 'artifacts', 'get', `${run.runId}/${step}/${name}`, dest, '--coordinator', mesh.url])
    expect(exitCode, stderr).toBe(0)
    return await readFile(dest, 'utf8')
  }

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({
      agents: {
        'gpu-box': ['--resources', 'gpu=1,gpuMemory=24GiB'],
        'cpu-big': ['--resources', 'cpu=2,memory=8GiB'],
        'cpu-small': ['--resources', 'cpu=1,memory=2GiB']
      }
    })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('the GPU sweep trains on the GPU agent one model at a time, its data and models fetched peer to peer', async () => {
    const before = await transferCounters(mesh)
    const { exitCode, json: run, stderr } = await submit(join(ROOT, 'examples', 'gpu', 'pipeline.yaml'))
    expect(exitCode, stderr).toBe(0)
    const steps = stepsOf(run)
    expect(steps.train_narrow?.agent).toBe('gpu-box')
    expect(steps.train_wide?.agent).toBe('gpu-box')
    expect(CPU_AGENTS).toContain(steps.prep?.agent)
    expect(CPU_AGENTS).toContain(steps.evaluate?.agent)

    // One device: the second training started only after the first had finished.
    const [first, second] = [steps.train_narrow!, steps.train_wide!].sort((a, b) => (a.startedAt ?? 0) - (b.startedAt ?? 0))
    expect(second!.startedAt).toBeGreaterThanOrEqual(first!.finishedAt!)
    // explain says what the second one waited for.
    const { json: why } = await runCliJson<Explanation>(['explain', run.runId, second!.id, '--coordinator', mesh.url])
    expect(why.placement?.waited?.reason).toMatch(/waiting for capacity: .*gpu 1.*agent gpu-box: 1\/1 GPUs .* in use/)
    const shown = await runCli(['explain', run.runId, second!.id, '--coordinator', mesh.url])
    expect(shown.stdout).toMatch(/after \S+ in the queue, last waiting for capacity/)
    // A step placed the moment it was ready says nothing of a queue.
    const { json: firstWhy } = await runCliJson<Explanation>(['explain', run.runId, first!.id, '--coordinator', mesh.url])
    expect(firstWhy.placement?.waited?.reason).toBeUndefined()
    for (const id of ['train_narrow', 'train_wide']) {
      const { exitCode: logExit, stdout, stderr: logErr } = await runCli(['logs', run.runId, id, '--json', '--coordinator', mesh.url])
      expect(logExit, logErr).toBe(0)
      const lines = stdout.trim().split('\n').map(l => (JSON.parse(l) as LogEntry).line)
      expect(lines[0], `${id}'s first log line`).toMatch(/device CUDA_VISIBLE_DEVICES=0\b/)
    }

    // The GPU agent fetched prep's training split from the CPU agent that made it.
    const maker = steps.prep!.agent!
    await waitForCounters(mesh, c =>
      (c['gpu-box']?.bytesFetched ?? 0) - (before['gpu-box']?.bytesFetched ?? 0) >= TRAIN_SPLIT_BYTES &&
      (c[maker]?.bytesServed ?? 0) - (before[maker]?.bytesServed ?? 0) >= TRAIN_SPLIT_BYTES)

    const metrics = JSON.parse(await output(run, 'evaluate', 'metrics')) as { chosen: string, testAccuracy: number, candidates: Array<{ name: string }> }
    expect(metrics.candidates.map(c => c.name)).toEqual(['narrow', 'wide'])
    expect(['narrow', 'wide']).toContain(metrics.chosen)
    expect(metrics.testAccuracy).toBeGreaterThan(0.7)
    // The client kept no copy of the code it uploaded or of the metrics it fetched.
    const clientStore = await ContentStore.open(join(client(), 'client', 'store'))
    try {
      expect(await clientStore.stats()).toMatchObject({ artifacts: 0, chunks: 0 })
    } finally {
      await clientStore.close()
    }

    const again = await submit(join(ROOT, 'examples', 'gpu', 'pipeline.yaml'))
    expect(again.exitCode, again.stderr).toBe(0)
    expect(again.json.steps.map(s => s.status)).toEqual(['reused', 'reused', 'reused', 'reused'])
  }, 400_000)

  it('the pipeline that needs two GPUs fails at once, naming the requirement and the largest offer', async () => {
    const { exitCode, json: run } = await submit(join(ROOT, 'examples', 'gpu', 'needs-two-gpus.yaml'))
    expect(exitCode).toBe(1)
    expect(run.steps[0]?.status).toBe('failed')
    expect(run.steps[0]?.attempts).toBe(0)
    expect(run.steps[0]?.reason).toMatch(/gpu: 2.*largest offer is 1 GPU.*gpu-box/)
  })

  it('the iris demo runs on the CPU agents only, and a second run reuses every step', async () => {
    const { exitCode, json: run, stderr } = await submit(join(ROOT, 'examples', 'iris', 'pipeline.yaml'))
    expect(exitCode, stderr).toBe(0)
    for (const step of run.steps) expect(CPU_AGENTS, `agent of ${step.id}`).toContain(step.agent)
    const metrics = JSON.parse(await output(run, 'evaluate', 'metrics')) as { accuracy: number }
    expect(metrics.accuracy).toBeGreaterThan(0.8)

    const again = await submit(join(ROOT, 'examples', 'iris', 'pipeline.yaml'))
    expect(again.exitCode, again.stderr).toBe(0)
    expect(again.json.steps.every(s => s.status === 'reused')).toBe(true)
  }, 400_000)
})
