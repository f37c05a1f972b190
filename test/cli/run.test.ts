// End-to-end runs through the real CLI: an embedded coordinator and agent talking libp2p on
// 127.0.0.1, real subprocesses, real LevelDB stores.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { existsSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import type { RunSummary } from '../../src/run/types.js'
import type { Explanation } from '../../src/run/explain.js'

// A W3-shaped pipeline: prep writes data, four mids hash it in parallel, join concatenates.
const PIPELINE = `
name: diamond
params:
  size: 4096
steps:
  prep:
    command: node prep.mjs \${{params.size}} \${{outputs.data}}
    code: [prep.mjs]
    outputs: [data]
${[1, 2, 3, 4].map(i => `  mid_${i}:
    command: node mid_${i}.mjs \${{inputs.data}} \${{outputs.hash}}
    code: [mid_${i}.mjs]
    inputs: { data: "\${{steps.prep.outputs.data}}" }
    outputs: [hash]`).join('\n')}
  join:
    command: cat ${[1, 2, 3, 4].map(i => `\${{inputs.h${i}}}`).join(' ')} > \${{outputs.all}}
    inputs:
${[1, 2, 3, 4].map(i => `      h${i}: \${{steps.mid_${i}.outputs.hash}}`).join('\n')}
    outputs: [all]
`
const PREP = `import { writeFileSync } from 'node:fs'
const size = Number(process.argv[2]); const buf = Buffer.alloc(size)
for (let i = 0; i < size; i++) buf[i] = (i * 31 + 7) % 251
writeFileSync(process.argv[3], buf)
`
const mid = (salt: string): string => `import { readFileSync, writeFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
writeFileSync(process.argv[3], createHash('sha256').update(readFileSync(process.argv[2])).update('${salt}').digest('hex') + '\\n')
`

describe('pipemesh run (embedded coordinator and agent)', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  let data: string
  let dir: string
  const run = async (...extra: string[]): Promise<RunSummary> => {
    const { exitCode, json, stderr } = await runCliJson<RunSummary>(['--data', data, 'run', join(dir, 'pipeline.yaml'), ...extra])
    expect(exitCode, `run failed: ${stderr}\n${JSON.stringify(json, null, 2)}`).toBe(0)
    return json
  }
  const statuses = (summary: RunSummary): Record<string, string> => Object.fromEntries(summary.steps.map(s => [s.id, s.status]))

  beforeAll(async () => {
    work = await tempDir()
    data = join(work.path, 'state')
    dir = join(work.path, 'pipeline')
    await writeTree(dir, { 'pipeline.yaml': PIPELINE, 'prep.mjs': PREP, ...Object.fromEntries([1, 2, 3, 4].map(i => [`mid_${i}.mjs`, mid(String(i))])) })
  })
  afterAll(async () => { await work.cleanup() })

  it('runs every step the first time and records outputs by content', async () => {
    const summary = await run()
    expect(summary.status).toBe('succeeded')
    expect(statuses(summary)).toEqual({ prep: 'succeeded', mid_1: 'succeeded', mid_2: 'succeeded', mid_3: 'succeeded', mid_4: 'succeeded', join: 'succeeded' })
    for (const step of summary.steps) {
      expect(step.fingerprint).toMatch(/^sha256:[0-9a-f]{64}$/)
      expect(step.attempts).toBe(1)
      expect(step.exitCode).toBe(0)
    }
    expect(summary.steps.find(s => s.id === 'join')?.outputs.all).toMatch(/^sha256:/)
    // The embedded agent stopped with the CLI and left no working directories behind.
    expect(existsSync(join(data, 'agent', 'work'))).toBe(false)
  })

  it('reuses every step when nothing changed', async () => {
    const summary = await run()
    expect(new Set(Object.values(statuses(summary)))).toEqual(new Set(['reused']))
    expect(summary.steps.every(s => s.attempts === 0)).toBe(true)
  })

  it('reruns only an edited step and what depends on it, and explain names the changed file', async () => {
    await writeFile(join(dir, 'mid_2.mjs'), mid('2-changed'))
    const summary = await run()
    expect(statuses(summary)).toEqual({ prep: 'reused', mid_1: 'reused', mid_2: 'succeeded', mid_3: 'reused', mid_4: 'reused', join: 'succeeded' })
    const { json: why } = await runCliJson<Explanation>(['--data', data, 'explain', summary.runId, 'mid_2'])
    expect(why.changes.join('\n')).toMatch(/mid_2\.mjs/)
    const { json: joinWhy } = await runCliJson<Explanation>(['--data', data, 'explain', summary.runId, 'join'])
    expect(joinWhy.changes.join('\n')).toMatch(/h2.*mid_2 ran again/)
  })

  it('cuts off early: a rerun step with byte-identical output leaves its consumers reused', async () => {
    await writeFile(join(dir, 'mid_2.mjs'), '// only a comment changed\n' + mid('2-changed'))
    const summary = await run()
    expect(statuses(summary)).toMatchObject({ mid_2: 'succeeded', join: 'reused' })
    const { json: why } = await runCliJson<Explanation>(['--data', data, 'explain', summary.runId, 'join'])
    expect(why.summary).toMatch(/early cut-off/)
  })

  it('a changed param reruns the steps that use it and explain shows old and new values', async () => {
    const summary = await run('--param', 'size=8192')
    expect(statuses(summary).prep).toBe('succeeded')
    const { json: why } = await runCliJson<Explanation>(['--data', data, 'explain', summary.runId, 'prep'])
    expect(why.changes.join('\n')).toMatch(/size.*4096.*8192/)
  })

  it('lists runs and shows a run and its log', async () => {
    const { json: runs } = await runCliJson<Array<{ runId: string }>>(['--data', data, 'runs'])
    expect(runs.length).toBeGreaterThanOrEqual(5)
    const status = await runCli(['--data', data, 'status', runs[0]!.runId])
    expect(status.exitCode).toBe(0)
    expect(status.stdout).toMatch(/prep/)
  })

  it('an empty PIPEMESH_COORDINATOR counts as unset: the command reads the local state', async () => {
    const { exitCode, json: runs, stderr } = await runCliJson<Array<{ runId: string }>>(['runs'], { env: { PIPEMESH_COORDINATOR: '', PIPEMESH_HOME: data } })
    expect(exitCode, stderr).toBe(0)
    expect(runs.length).toBeGreaterThanOrEqual(5)
  })
})

describe('pipemesh run shows the storing of a large output', () => {
  it('prints the output stored, with its size, when stdout is not a terminal', async () => {
    const work = await tempDir()
    try {
      const dir = join(work.path, 'p')
      // 64 MiB: large enough to be reported however quickly it is stored.
      await writeTree(dir, { 'p.yaml': 'name: big-output\nsteps:\n  make:\n    command: head -c 67108864 /dev/zero > ${{outputs.blob}}\n    outputs: [blob]\n' })
      const { exitCode, stdout, stderr } = await runCli(['--data', join(work.path, 'state'), 'run', join(dir, 'p.yaml')], { timeoutMs: 120_000 })
      expect(exitCode, stderr).toBe(0)
      expect(stdout).toMatch(/make stored output blob: 64 MiB in \S+/)
    } finally {
      await work.cleanup()
    }
  }, 150_000)
})

describe('pipemesh run with bad input', () => {
  it('exits 2 and names every problem without running or storing anything', async () => {
    const work = await tempDir()
    try {
      await writeTree(work.path, {
        'bad.yaml': `name: bad
steps:
  a:
    comand: echo hi
  b:
    command: echo \${{inputs.nope}}
    inputs: { x: "\${{steps.ghost.outputs.y}}" }
    after: [c]
  c:
    command: echo c
    after: [b]
    code: [missing.py]
`
      })
      const data = join(work.path, 'state')
      const result = await runCli(['--data', data, 'run', join(work.path, 'bad.yaml')])
      expect(result.exitCode).toBe(2)
      expect(result.stderr).toMatch(/comand.*did you mean "command"/)
      expect(result.stderr).toMatch(/ghost/)
      expect(result.stderr).toMatch(/b -> c -> b|c -> b -> c/)
      expect(result.stderr).toMatch(/missing\.py/)
      expect(result.stderr).toMatch(/nope/)
      const { existsSync } = await import('node:fs')
      expect(existsSync(data)).toBe(false)
    } finally {
      await work.cleanup()
    }
  })

  it('a failing step fails the run (exit 1), keeps independent branches going and skips dependants', async () => {
    const work = await tempDir()
    try {
      await writeTree(work.path, {
        'p.yaml': `name: failing
steps:
  boom:
    command: echo about to fail >&2; exit 3
  after_boom:
    command: echo never
    after: [boom]
  independent:
    command: echo fine > \${{outputs.out}}
    outputs: [out]
`
      })
      const { exitCode, json } = await runCliJson<RunSummary>(['--data', join(work.path, 'state'), 'run', join(work.path, 'p.yaml')])
      expect(exitCode).toBe(1)
      expect(json.status).toBe('failed')
      const byId = Object.fromEntries(json.steps.map(s => [s.id, s]))
      expect(byId.boom?.status).toBe('failed')
      expect(byId.boom?.exitCode).toBe(3)
      expect(byId.boom?.reason).toMatch(/code 3/)
      expect(byId.boom?.reason).toMatch(/about to fail/)
      expect(byId.after_boom?.status).toBe('skipped')
      expect(byId.independent?.status).toBe('succeeded')
    } finally {
      await work.cleanup()
    }
  })

  it('an unknown PIPEMESH_LAUNCHER stops the run before anything starts (exit 2, naming the choices)', async () => {
    const work = await tempDir()
    try {
      await writeTree(work.path, { 'p.yaml': 'name: one\nsteps:\n  s:\n    command: echo hi\n' })
      const r = await runCli(['--data', join(work.path, 'state'), 'run', join(work.path, 'p.yaml')], { env: { PIPEMESH_LAUNCHER: 'bash' } })
      expect(r.exitCode).toBe(2)
      expect(r.stderr).toContain('PIPEMESH_LAUNCHER must be "node" or "python", not "bash"')
    } finally {
      await work.cleanup()
    }
  })

  it('a step after many others runs once, after the last of them; one failing among them skips it at once', async () => {
    const work = await tempDir()
    try {
      const fan = Array.from({ length: 40 }, (_, i) => `s${i + 1}`)
      const steps = fan.map(id => `  ${id}:\n    command: "true"\n    cache: false\n`).join('')
      await writeTree(work.path, {
        'fan.yaml': `name: fan-in\nsteps:\n${steps}  join:\n    command: "true"\n    cache: false\n    after: [${fan.join(', ')}]\n`,
        // One dependency fails at once while another is still running: the join must not wait
        // for the slow one to be declared skipped.
        'blocked.yaml': `name: blocked
steps:
  slow:
    command: sleep 3
  boom:
    command: exit 1
  fine:
    command: "true"
  join:
    command: echo never
    after: [fine, slow, boom]
`
      })
      const fanRun = await runCliJson<RunSummary>(['--data', join(work.path, 'state'), 'run', join(work.path, 'fan.yaml')])
      expect(fanRun.exitCode).toBe(0)
      const byId = Object.fromEntries(fanRun.json.steps.map(s => [s.id, s]))
      expect(byId.join?.status).toBe('succeeded')
      expect(byId.join?.attempts).toBe(1)
      const lastDep = Math.max(...fan.map(id => byId[id]?.finishedAt ?? Infinity))
      expect(byId.join?.startedAt).toBeGreaterThanOrEqual(lastDep)

      const blockedRun = await runCliJson<RunSummary>(['--data', join(work.path, 'state'), 'run', join(work.path, 'blocked.yaml')])
      expect(blockedRun.exitCode).toBe(1)
      const b = Object.fromEntries(blockedRun.json.steps.map(s => [s.id, s]))
      expect(b.boom?.status).toBe('failed')
      expect(b.slow?.status).toBe('succeeded')
      expect(b.join?.status).toBe('skipped')
      expect(b.join?.reason).toBe('dependency boom failed')
      expect(b.join?.finishedAt, 'join is skipped when boom fails, not after slow ends').toBeLessThan(b.slow?.finishedAt ?? 0)
    } finally {
      await work.cleanup()
    }
  })
})
