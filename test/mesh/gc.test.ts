// Garbage collection across a mesh: the coordinator drops old runs and works out what nothing
// references any more; each agent removes that from its own store. An agent's store is never
// collected from its data dir alone, which knows nothing of the runs.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import type { MeshGcReport } from '../../src/client/api.js'
import type { RunSummary } from '../../src/run/types.js'

const BYTES = 2_000_000

describe('pipemesh store gc --coordinator', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  let pipeline: string
  const client = (): string => join(work.path, 'client')
  const submit = async (n: number): Promise<RunSummary> => {
    const { exitCode, json, stderr } = await runCliJson<RunSummary>(['--data', client(), 'run', pipeline, '--param', `n=${n}`, '--coordinator', mesh.url], { timeoutMs: 120_000 })
    expect(exitCode, stderr).toBe(0)
    return json
  }
  const gc = async (...args: string[]): Promise<MeshGcReport> => {
    const { exitCode, json, stderr } = await runCliJson<MeshGcReport>(['store', 'gc', '--coordinator', mesh.url, ...args])
    expect(exitCode, stderr).toBe(0)
    return json
  }
  const byName = (report: MeshGcReport): Record<string, MeshGcReport['agents'][number]> => Object.fromEntries(report.agents.map(a => [a.agent, a]))

  beforeAll(async () => {
    work = await tempDir()
    pipeline = join(work.path, 'p', 'pipeline.yaml')
    // `make` writes 2 MB that depend on n, on agent a; `use` reads them on agent b: both hold a copy.
    await writeTree(join(work.path, 'p'), {
      'pipeline.yaml': `name: gc
params: { n: 1 }
steps:
  make:
    command: yes run-\${{params.n}} | head -c ${BYTES} > \${{outputs.blob}}
    outputs: [blob]
    resources: { labels: { zone: a } }
  use:
    command: wc -c < \${{inputs.blob}} > \${{outputs.count}}
    inputs: { blob: "\${{steps.make.outputs.blob}}" }
    outputs: [count]
    resources: { labels: { zone: b } }
`
    })
    mesh = await startMesh({ agents: { a: ['--label', 'zone=a'], b: ['--label', 'zone=b'] } })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it("refuses to collect an agent's store from its data dir, which does not know what runs still need", async () => {
    await submit(1)
    const agentDir = join(mesh.dataRoot, 'a')
    const refused = await runCli(['--data', agentDir, 'store', 'gc'])
    expect(refused.exitCode).toBe(2)
    expect(refused.stderr).toContain("holds an agent daemon's store")
    expect(refused.stderr).toContain('pipemesh store gc --coordinator URL')
    // Nor do queries make an empty coordinator state there and answer "no runs yet".
    const runs = await runCli(['--data', agentDir, 'runs'])
    expect(runs.exitCode).toBe(2)
    expect(runs.stderr).toContain("is an agent daemon's data dir: the runs live on its coordinator")
    // Even beside a coordinator state that an older version's query left there.
    await mkdir(join(agentDir, 'coordinator'))
    expect((await runCli(['--data', agentDir, 'store', 'gc'])).exitCode).toBe(2)
  })

  it('drops runs beyond the newest and what only they referenced on every agent; the kept run stays whole and reusable', async () => {
    await submit(2)
    await submit(3)
    // The run kept is one that reused everything from the run before it, which goes.
    const kept = await submit(3)
    expect(kept.steps.map(s => s.status)).toEqual(['reused', 'reused'])
    const report = await gc('--keep-runs', '1', '--grace', '0s')
    expect(report.removedRuns).toBe(3)
    expect(report.skipped).toEqual([])
    // Runs 1 and 2 each left a 2 MB blob on a (made there) and on b (fetched there).
    const agents = byName(report)
    for (const name of ['a', 'b']) {
      expect(agents[name]?.error, name).toBeUndefined()
      expect(agents[name]?.freedBytes, name).toBeGreaterThanOrEqual(2 * BYTES)
    }

    const dest = join(work.path, 'kept-blob')
    const got = await runCliJson(['--data', client(), 'artifacts', 'get', `${kept.runId}/make/blob`, dest, '--coordinator', mesh.url])
    expect(got.exitCode, got.stderr).toBe(0)
    expect((await readFile(dest, 'utf8')).startsWith('run-3\n')).toBe(true)
    // The reuse entries the kept run relied on outlived the run that made them.
    expect((await submit(3)).steps.map(s => s.status)).toEqual(['reused', 'reused'])
    // Run 1's outputs and its reuse entries went with it: it runs again.
    expect((await submit(1)).steps.map(s => s.status)).toEqual(['succeeded', 'succeeded'])
  }, 240_000)

  it('leaves what agents made within the grace period, even when no run references it any more', async () => {
    const report = await gc('--keep-runs', '0')
    expect(report.removedRuns).toBeGreaterThanOrEqual(1)
    for (const agent of report.agents) expect(agent.removedArtifacts, agent.agent).toBe(0)
  })
})

describe('pipemesh coordinator --gc-every', () => {
  it('collects garbage on its own: runs beyond --keep-runs go, and it logs what it did', async () => {
    const work = await tempDir()
    const mesh = await startMesh({ coordinatorArgs: ['--gc-every', '1s', '--keep-runs', '1'], agents: { a: [] } })
    try {
      const submit = async (n: number): Promise<RunSummary> => {
        const text = `name: periodic\nsteps:\n  a:\n    command: echo ${n} > \${{outputs.o}}\n    outputs: [o]\n`
        const { exitCode, json, stderr } = await runCliJson<RunSummary>(['--data', work.path, 'run', await writePipeline(work.path, n, text), '--coordinator', mesh.url])
        expect(exitCode, stderr).toBe(0)
        return json
      }
      const first = await submit(1)
      await submit(2)
      const deadline = Date.now() + 60_000
      while ((await runCli(['status', first.runId, '--coordinator', mesh.url])).exitCode === 0) {
        if (Date.now() > deadline) throw new Error(`run ${first.runId} was never collected\n${mesh.coordinator.output()}`)
        await new Promise(resolve => setTimeout(resolve, 200))
      }
      expect(mesh.coordinator.output()).toMatch(/"keepRuns":1,"removedRuns":1[,}].*"msg":"garbage collected"/)
    } finally {
      await mesh.stop()
      await work.cleanup()
    }
  }, 120_000)

  it('refuses a period under a second', async () => {
    const { exitCode, stderr } = await runCli(['--data', join(tmpdir(), `pipemesh-never-${process.pid}`), 'coordinator', '--api', '127.0.0.1:0', '--gc-every', '100ms'])
    expect(exitCode).toBe(2)
    expect(stderr).toContain('--gc-every 100ms is too often')
  })

  it('names the flag whose duration it cannot read', async () => {
    const never = join(tmpdir(), `pipemesh-never-${process.pid}`)
    const daemon = await runCli(['--data', never, 'coordinator', '--api', '127.0.0.1:0', '--gc-every', 'soon'])
    expect(daemon.exitCode).toBe(2)
    expect(daemon.stderr).toContain('--gc-every: invalid duration "soon": expected')
    // Checked before anything is asked of a coordinator (nothing listens on port 9).
    const gc = await runCli(['store', 'gc', '--coordinator', 'http://127.0.0.1:9', '--grace', '5x'])
    expect(gc.exitCode).toBe(2)
    expect(gc.stderr).toContain('--grace: invalid duration "5x"')
  })
})

async function writePipeline (dir: string, n: number, text: string): Promise<string> {
  const file = join(dir, `p${n}.yaml`)
  await writeFile(file, text)
  return file
}
