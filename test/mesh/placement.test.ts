// A real mesh on loopback: one coordinator process and three agent processes (one declaring a
// GPU, two CPU-only of different sizes). Pipelines are submitted through the CLI with
// --coordinator, so uploads, placement and peer-to-peer transfers all take their real paths.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import { startMesh, waitForCounters, transferCounters, type Mesh } from '../helpers/mesh.js'
import { waitForRun } from '../helpers/wait.js'
import type { RunEvent, RunSummary } from '../../src/run/types.js'
import type { Explanation } from '../../src/run/explain.js'

describe('a mesh of a coordinator and three agents', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  const submit = async (file: string, ...extra: string[]): Promise<{ exitCode: number, json: RunSummary, stderr: string }> =>
    await runCliJson<RunSummary>(['--data', join(work.path, 'client'), 'run', file, '--coordinator', mesh.url, ...extra], { timeoutMs: 180_000 })

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({
      agents: {
        'gpu-box': ['--resources', 'gpu=1,cpu=2,memory=4GiB', '--label', 'zone=a'],
        'cpu-big': ['--resources', 'cpu=3,memory=8GiB', '--label', 'zone=b'],
        'cpu-small': ['--resources', 'cpu=1,memory=2GiB', '--label', 'zone=b']
      }
    })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('GPU steps run only on the GPU agent, one at a time on its device; CPU steps go to CPU agents', async () => {
    const dir = join(work.path, 'gpu')
    const gpuStep = (i: number): string => `  gpu_${i}:
    command: echo "$CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES $(date +%s%N)" > \${{outputs.o}}; sleep 0.3; date +%s%N >> \${{outputs.o}}
    outputs: [o]
    resources: { gpu: 1, cpu: 0.5 }
    cache: false`
    const cpuStep = (i: number): string => `  cpu_${i}:
    command: sleep 0.2; echo cpu > \${{outputs.o}}
    outputs: [o]
    resources: { cpu: 1 }
    cache: false`
    await writeTree(dir, { 'p.yaml': `name: gpu-placement\nsteps:\n${[1, 2, 3].map(gpuStep).join('\n')}\n${[1, 2, 3].map(cpuStep).join('\n')}\n` })
    const { exitCode, json, stderr } = await submit(join(dir, 'p.yaml'))
    expect(exitCode, stderr).toBe(0)
    const byId = Object.fromEntries(json.steps.map(s => [s.id, s]))
    for (const i of [1, 2, 3]) {
      expect(byId[`gpu_${i}`]?.agent).toBe('gpu-box')
      expect(['cpu-big', 'cpu-small']).toContain(byId[`cpu_${i}`]?.agent)
    }
    // Each GPU step saw device 0 and their [start, end] intervals never overlap.
    const intervals: Array<[number, number]> = []
    for (const i of [1, 2, 3]) {
      const text = await fetchOutput(json, `gpu_${i}`, 'o')
      const [first, second] = text.trim().split('\n')
      const [cuda, nvidia, start] = (first ?? '').split(' ')
      expect(cuda).toBe('0')
      expect(nvidia).toBe('0')
      intervals.push([Number(start), Number(second)])
    }
    intervals.sort((a, b) => a[0] - b[0])
    for (let i = 1; i < intervals.length; i++) expect(intervals[i]![0]).toBeGreaterThanOrEqual(intervals[i - 1]![1])
    const { json: why } = await runCliJson<Explanation>(['explain', json.runId, 'cpu_1', '--coordinator', mesh.url])
    expect(why.placement?.reason).toBeTruthy()
    expect(why.placement?.candidates.length).toBe(3)
  })

  it('an artifact made on one agent reaches another byte for byte, fetched peer to peer', async () => {
    const dir = join(work.path, 'transfer')
    await writeTree(dir, {
      'p.yaml': `name: transfer
steps:
  make:
    command: head -c 5000000 /dev/urandom > \${{outputs.blob}}; sha256sum \${{outputs.blob}} | cut -d' ' -f1 > \${{outputs.sum}}
    outputs: [blob, sum]
    resources: { labels: { zone: a } }
  use:
    command: sha256sum \${{inputs.blob}} | cut -d' ' -f1 > \${{outputs.sum}}
    inputs: { blob: "\${{steps.make.outputs.blob}}" }
    outputs: [sum]
    resources: { labels: { zone: b } }
`
    })
    const before = await transferCounters(mesh)
    const { exitCode, json, stderr } = await submit(join(dir, 'p.yaml'))
    expect(exitCode, stderr).toBe(0)
    const byId = Object.fromEntries(json.steps.map(s => [s.id, s]))
    expect(byId.make?.agent).toBe('gpu-box')
    expect(['cpu-big', 'cpu-small']).toContain(byId.use?.agent)
    expect(await fetchOutput(json, 'use', 'sum')).toBe(await fetchOutput(json, 'make', 'sum'))
    // Counters travel with heartbeats: each agent's may lag the other's.
    const consumer = byId.use!.agent!
    const after = await waitForCounters(mesh, c =>
      (c['gpu-box']?.bytesServed ?? 0) - (before['gpu-box']?.bytesServed ?? 0) >= 5_000_000 &&
      (c[consumer]?.bytesFetched ?? 0) - (before[consumer]?.bytesFetched ?? 0) >= 5_000_000)
    expect((after[consumer]?.bytesFetched ?? 0) - (before[consumer]?.bytesFetched ?? 0)).toBeGreaterThanOrEqual(5_000_000)
  })

  it('the run\'s progress names the input a step fetches from a peer, with its size and rate', async () => {
    const dir = join(work.path, 'fetch-progress')
    await writeTree(dir, {
      'p.yaml': `name: fetch-progress
steps:
  make:
    command: head -c 3000000 /dev/urandom > \${{outputs.blob}}
    outputs: [blob]
    resources: { labels: { zone: a } }
  use:
    command: wc -c < \${{inputs.blob}}
    inputs: { blob: "\${{steps.make.outputs.blob}}" }
    resources: { labels: { zone: b } }
`
    })
    // Not a terminal (a pipe): the view prints a line per change, one of them the fetch's end.
    const { exitCode, stdout, stderr } = await runCli(['--data', join(work.path, 'client'), 'run', join(dir, 'p.yaml'), '--coordinator', mesh.url], { timeoutMs: 180_000 })
    expect(exitCode, stderr).toBe(0)
    expect(stdout).toMatch(/use fetched input blob: 2\.86 MiB in \S+ at [\d.]+ [KMG]iB\/s/)
  }, 200_000)

  it('a REST client may submit the YAML text; a request giving both text and data is refused', async () => {
    const text = 'name: rest-text\nparams: { n: 3 }\nsteps:\n  a:\n    command: echo ${{params.n}} > ${{outputs.o}}\n    outputs: [o]\n    cache: false\n'
    const artifacts = { inputs: {}, code: {}, environments: {} }
    const post = async (body: unknown): Promise<Response> => await fetch(`${mesh.url}/v1/runs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
    const accepted = await post({ pipeline: { text }, params: { n: '4' }, artifacts })
    expect(accepted.status).toBe(201)
    const started = await accepted.json() as RunSummary
    const done = await waitForRun(mesh.client, started.runId, r => r.status !== 'running', 'the run submitted as YAML text to finish')
    expect(done.status).toBe('succeeded')
    expect((await fetchOutput(done, 'a', 'o')).trim()).toBe('4')

    const both = await post({ pipeline: { text, data: { name: 'x' } }, artifacts })
    expect(both.status).toBe(400)
    const message = async (r: Response): Promise<string> => JSON.stringify(await r.json()).replaceAll('\\"', '"')
    expect(await message(both)).toMatch(/either "text" \(YAML\) or "data" \(JSON\)/)
    const badData = await post({ pipeline: { data: { name: 'x', steps: { a: { comand: 'echo' } } } }, artifacts })
    expect(badData.status).toBe(400)
    expect(await message(badData)).toMatch(/steps\.a.*unknown key "comand" \(did you mean "command"\?\)/)
  }, 120_000)

  it('run events: every step change for a live view, or the run alone for a follower that shows no steps', async () => {
    const text = 'name: events\nsteps:\n  a:\n    command: sleep 2\n    cache: false\n  b:\n    command: "true"\n    cache: false\n    after: [a]\n'
    const accepted = await fetch(`${mesh.url}/v1/runs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ pipeline: { text }, artifacts: { inputs: {}, code: {}, environments: {} } }) })
    expect(accepted.status).toBe(201)
    const { runId } = await accepted.json() as RunSummary
    const collect = async (only?: 'run'): Promise<RunEvent[]> => {
      const seen: RunEvent[] = []
      for await (const event of mesh.client.events(runId, only === undefined ? {} : { only })) seen.push(event)
      return seen
    }
    // Both follow the same run while a runs (it sleeps 2 s) to its end.
    const [every, runOnly] = await Promise.all([collect(), collect('run')])
    expect(every.filter(e => e.type === 'step').map(e => e.type === 'step' && `${e.step.id} ${e.step.status}`)).toEqual(expect.arrayContaining(['a running', 'a succeeded', 'b running', 'b succeeded']))
    expect(every.at(-1)).toMatchObject({ type: 'run', status: 'succeeded' })
    expect(runOnly.map(e => e.type === 'run' && e.status)).toEqual(['running', 'succeeded'])

    const bad = await fetch(`${mesh.url}/v1/runs/${runId}/events?only=steps`)
    expect(bad.status).toBe(400)
    expect(JSON.stringify(await bad.json())).toMatch(/unknown value \\"steps\\" for \\"only\\"/)
  }, 120_000)

  it('a step needing two GPUs fails at once naming the requirement and the largest offer', async () => {
    const dir = join(work.path, 'twogpu')
    await writeTree(dir, { 'p.yaml': 'name: twogpu\nsteps:\n  big:\n    command: "true"\n    resources: { gpu: 2 }\n' })
    const { exitCode, json } = await submit(join(dir, 'p.yaml'))
    expect(exitCode).toBe(1)
    expect(json.steps[0]?.status).toBe('failed')
    expect(json.steps[0]?.reason).toMatch(/gpu: 2.*largest offer is 1 GPU.*gpu-box/)
  })

  it('a step needing more memory than is free waits as queued, then runs when capacity frees', async () => {
    const dir = join(work.path, 'memory')
    await writeTree(dir, {
      'p.yaml': `name: memory
steps:
  hog:
    command: sleep 2
    resources: { memory: 7GiB, labels: { zone: b } }
    cache: false
  waiter:
    command: "true"
    resources: { memory: 7GiB, labels: { zone: b } }
    cache: false
`
    })
    const { exitCode, json, stderr } = await submit(join(dir, 'p.yaml'), '--detach')
    expect(exitCode, stderr).toBe(0)
    const queued = await waitForRun(mesh.client, json.runId, r => r.steps.some(s => s.status === 'queued' && /memory/.test(s.reason ?? '')), 'a step to be queued for memory')
    expect(queued.steps.find(s => s.status === 'queued' && /memory/.test(s.reason ?? ''))?.reason).toMatch(/waiting for capacity: needs .*memory 7 GiB/)
    const done = await waitForRun(mesh.client, json.runId, r => r.status !== 'running', 'the run to finish')
    expect(done.status).toBe('succeeded')
  })

  it('a second run of the same pipeline is fully reused from the agents that hold the outputs', async () => {
    const dir = join(work.path, 'again')
    await writeTree(dir, {
      'p.yaml': `name: again
inputs: { seed: seed.txt }
steps:
  a:
    command: cat \${{inputs.s}} > \${{outputs.x}}; echo a >> \${{outputs.x}}
    inputs: { s: "\${{pipeline.inputs.seed}}" }
    outputs: [x]
  b:
    command: cat \${{inputs.x}} > \${{outputs.y}}; echo b >> \${{outputs.y}}
    inputs: { x: "\${{steps.a.outputs.x}}" }
    outputs: [y]
`,
      'seed.txt': 'seed\n'
    })
    const first = await submit(join(dir, 'p.yaml'))
    expect(first.exitCode, first.stderr).toBe(0)
    const second = await submit(join(dir, 'p.yaml'))
    expect(second.exitCode, second.stderr).toBe(0)
    expect(second.json.steps.map(s => s.status)).toEqual(['reused', 'reused'])
  })

  async function fetchOutput (run: RunSummary, step: string, output: string): Promise<string> {
    const dest = join(work.path, `out-${run.runId}-${step}-${output}`)
    const { exitCode, stderr } = await runCliJson(['--data', join(work.path, 'client'), 'artifacts', 'get', `${run.runId}/${step}/${output}`, dest, '--coordinator', mesh.url])
    expect(exitCode, stderr).toBe(0)
    return await readFile(dest, 'utf8')
  }
})
