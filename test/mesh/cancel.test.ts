// `pipemesh cancel` against a real mesh: every running step process, and the processes those
// steps started, are gone from every agent afterwards.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { isAlive, waitFor, waitForRun } from '../helpers/wait.js'
import type { RunSummary } from '../../src/run/types.js'

describe('cancelling a run on a mesh', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({ agents: { one: ['--resources', 'cpu=2'], two: ['--resources', 'cpu=2'] } })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('stops running step processes and their children on every agent', async () => {
    const pids = join(work.path, 'pids')
    // Each step starts a child in the background and records both pids where the test can see them.
    const step = (i: number): string => `  s${i}:
    command: mkdir -p ${pids}; sleep 600 & echo "$$ $!" > ${pids}/s${i}; wait
    resources: { cpu: 1 }
    cache: false`
    await writeTree(work.path, { 'p.yaml': `name: sleepy\nsteps:\n${[1, 2, 3, 4].map(step).join('\n')}\n` })
    const { exitCode, json, stderr } = await runCliJson<RunSummary>(['--data', join(work.path, 'client'), 'run', join(work.path, 'p.yaml'), '--coordinator', mesh.url, '--detach'])
    expect(exitCode, stderr).toBe(0)
    const running = await waitForRun(mesh.client, json.runId, r => r.steps.filter(s => s.status === 'running').length === 4, 'all four steps to run')
    expect(new Set(running.steps.map(s => s.agent))).toEqual(new Set(['one', 'two']))
    const recorded = await waitFor('every step to record its pids', async () => {
      const files = await readdir(pids).catch(() => [])
      if (files.length < 4) return undefined
      const all = await Promise.all(files.map(async f => (await readFile(join(pids, f), 'utf8')).trim().split(' ').map(Number)))
      return all.every(p => p.length === 2 && p.every(n => n > 0)) ? all.flat() : undefined
    })
    expect(recorded.every(isAlive)).toBe(true)

    const cancel = await runCli(['cancel', json.runId, '--coordinator', mesh.url])
    expect(cancel.exitCode, cancel.stderr).toBe(0)
    const done = await waitForRun(mesh.client, json.runId, r => r.status !== 'running', 'the run to end after cancel')
    expect(done.status).toBe('cancelled')
    expect(done.steps.every(s => s.status === 'cancelled')).toBe(true)
    await waitFor('every step process and child to exit', () => recorded.every(pid => !isAlive(pid)) ? true : undefined, 30_000,
      () => `still alive: ${recorded.filter(isAlive).join(', ')}`)
  })
})
