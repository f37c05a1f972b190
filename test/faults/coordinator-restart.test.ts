// kill -9 of the coordinator in the middle of a run, then a restart on the same data dir: the run
// goes on from its records. Succeeded steps are not run again; a step still running on an agent is
// adopted when that agent reconnects and reports it, or run again elsewhere when its agent is gone
// too. The test follows the run over HTTP, which the restarted coordinator serves on the same port.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { waitFor } from '../helpers/wait.js'
import type { RunSummary } from '../../src/run/types.js'
import { Gate, LEASE_MS, cleanRun, expectNothingLost, finished, gateWait, pipeline, step, stepWhere, submit } from './support.js'

const AGENT_ARGS = ['--resources', 'cpu=2']

describe('coordinator restarts', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  let file: string
  let clean: RunSummary
  const client = (): string => join(work.path, 'client')

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({ leaseMs: LEASE_MS, agents: { a1: AGENT_ARGS, a2: AGENT_ARGS } })
    // `held` only orders after `first`, so that losing the agent that ran `held` loses nothing `first` made.
    file = await pipeline(join(work.path, 'p'), `name: restart
params: { gate: none }
steps:
  first:
    command: printf 'first\\n' > \${{outputs.out}}
    outputs: [out]
    cache: false
  held:
    command: echo before the restart; ${gateWait()}; echo after the restart; printf 'held\\n' > \${{outputs.out}}
    outputs: [out]
    after: [first]
    cache: false
  last:
    command: cat \${{inputs.x}} > \${{outputs.out}}; echo last >> \${{outputs.out}}
    inputs:
      x: \${{steps.held.outputs.out}}
    outputs: [out]
    cache: false
`)
    clean = await cleanRun(mesh, client(), file, join(work.path, 'clean'))
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('the run completes after kill -9 and restart; the running step is adopted and no succeeded step reruns', async () => {
    const gate = await Gate.create(join(work.path, 'adopt'))
    // Submitted by a CLI that follows the run live, and must ride out the restart.
    const following = runCliJson<RunSummary>(['--data', client(), 'run', file, '--coordinator', mesh.url, '--param', `gate=${gate.dir}`], { timeoutMs: 120_000 })
    const runId = await waitFor('the run to be submitted', async () => (await mesh.client.listRuns()).find(r => r.pipeline === 'restart' && r.status === 'running')?.runId)
    await stepWhere(mesh, runId, 'held', s => s.status === 'running', 'to run')
    await waitFor('the held step process to start', async () => await gate.pid('held', 1))
    await waitFor('its first log line to be stored', async () => (await runCli(['logs', runId, 'held', '--coordinator', mesh.url])).stdout.includes('before the restart') ? true : undefined)
    const before = await mesh.client.getRun(runId)
    expect(step(before, 'first').status).toBe('succeeded')

    // A drain is remembered across the restart.
    await mesh.client.drainAgent('a1', true)
    await mesh.restartCoordinator()
    const resumed = await mesh.client.getRun(runId)
    expect(resumed.status).toBe('running')
    expect(step(resumed, 'first')).toMatchObject({ status: 'succeeded', attempts: 1 })
    await waitFor('both agents to reconnect', async () => (await mesh.client.agents()).filter(a => a.connected).length === 2 ? true : undefined, 20_000)
    expect((await mesh.client.agents()).find(a => a.name === 'a1')?.draining).toBe(true)
    await mesh.client.drainAgent('a1', false)
    await gate.open()
    const run = await finished(mesh, runId)
    expectNothingLost(run, clean)
    // Nothing ran twice: the held step's first attempt was adopted, not rerun.
    expect(run.steps.map(s => [s.id, s.attempts])).toEqual([['first', 1], ['held', 1], ['last', 1]])
    // The adopted attempt's log keeps what it printed before the restart and adds what came after.
    const logs = await runCli(['logs', runId, 'held', '--coordinator', mesh.url])
    expect(logs.stdout).toMatch(/before the restart[\s\S]*after the restart/)
    const cli = await following
    expect(cli.exitCode, cli.stderr).toBe(0)
    expect(cli.json).toMatchObject({ runId, status: 'succeeded' })
    expect(cli.stderr).toMatch(/lost contact with the coordinator/)
  })

  it('a step whose agent died with the coordinator runs again elsewhere; the rest is kept', async () => {
    const gate = await Gate.create(join(work.path, 'rerun'))
    const runId = await submit(mesh, client(), file, { gate: gate.dir })
    const held = await stepWhere(mesh, runId, 'held', s => s.status === 'running', 'to run')
    await waitFor('the held step process to start', async () => await gate.pid('held', 1))
    const victim = held.agent!
    const other = victim === 'a1' ? 'a2' : 'a1'
    const firstAgent = step(await mesh.client.getRun(runId), 'first').agent

    await mesh.restartCoordinator(async () => { await mesh.signalAgent(victim, 'SIGKILL') })
    // The dead agent gets one lease to come back, then its attempt is lost and rerun.
    const moved = await stepWhere(mesh, runId, 'held', s => s.status === 'running' && s.attempts === 2, 'to run again on the surviving agent', 30_000)
    expect(moved.agent).toBe(other)
    await gate.open()
    const run = await finished(mesh, runId)
    expectNothingLost(run, clean)
    expect(step(run, 'first')).toMatchObject({ attempts: 1, agent: firstAgent })
    expect(step(run, 'held').history?.map(a => [a.agent, a.state])).toEqual([[victim, 'lost'], [other, 'succeeded']])
    await mesh.startAgent(victim, AGENT_ARGS)
  })

  it('no run stays running: after a restart with every agent gone, the run finishes once an agent returns', async () => {
    const gate = await Gate.create(join(work.path, 'none'))
    await mesh.waitForAgents(2)
    const runId = await submit(mesh, client(), file, { gate: gate.dir })
    await stepWhere(mesh, runId, 'held', s => s.status === 'running', 'to run')
    await mesh.restartCoordinator(async () => {
      await Promise.all([mesh.signalAgent('a1', 'SIGKILL'), mesh.signalAgent('a2', 'SIGKILL')])
    })
    // a1 comes back with its store (and reaps the step process the killed agent left running).
    await mesh.startAgent('a1', AGENT_ARGS)
    await gate.open()
    const run = await finished(mesh, runId)
    expectNothingLost(run, clean)
    expect(step(run, 'held').agent).toBe('a1')
    await mesh.startAgent('a2', AGENT_ARGS)
  })
})
