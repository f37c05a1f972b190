// Agents that die (kill -9) or hang (SIGSTOP: the connection stays up, heartbeats stop) in the
// middle of a step: the coordinator declares them lost within the lease and runs the step on the
// other agent; a hung agent that comes back late has its result discarded (fencing), so outputs
// are never committed twice. Draining lets running steps finish and places nothing new.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir } from '../helpers/cli.js'
import { startMesh, type Mesh } from '../helpers/mesh.js'
import { isAlive, waitFor, waitForRun } from '../helpers/wait.js'
import type { AgentListEntry } from '../../src/client/api.js'
import type { Explanation } from '../../src/run/explain.js'
import type { RunSummary } from '../../src/run/types.js'
import { Gate, LEASE_MS, cleanRun, expectNothingLost, finished, gateWait, outputMatching, pipeline, step, stepWhere, submit } from './support.js'

const AGENT_ARGS = ['--resources', 'cpu=2']

describe('lost agents', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>
  let file: string
  let clean: RunSummary
  const client = (): string => join(work.path, 'client')

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({ leaseMs: LEASE_MS, agents: { a1: AGENT_ARGS, a2: AGENT_ARGS } })
    file = await pipeline(join(work.path, 'p'), `name: lost-agents
params: { gate: none }
steps:
  work:
    command: ${gateWait()}; printf 'made by work\\n' > \${{outputs.out}}
    outputs: [out]
    cache: false
  use:
    command: cat \${{inputs.x}} > \${{outputs.out}}; echo used >> \${{outputs.out}}
    inputs:
      x: \${{steps.work.outputs.out}}
    outputs: [out]
    cache: false
`)
    clean = await cleanRun(mesh, client(), file, join(work.path, 'clean'))
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('kill -9 of an agent mid-step: the step completes on the other agent and its attempts show both', async () => {
    const gate = await Gate.create(join(work.path, 'kill'))
    const runId = await submit(mesh, client(), file, { gate: gate.dir })
    const first = await stepWhere(mesh, runId, 'work', s => s.status === 'running', 'to run')
    await waitFor('the step process to start', async () => await gate.pid('work', 1))
    const victim = first.agent!
    const other = victim === 'a1' ? 'a2' : 'a1'
    const killedAt = Date.now()
    await mesh.signalAgent(victim, 'SIGKILL')

    const moved = await stepWhere(mesh, runId, 'work', s => s.status === 'running' && s.attempts === 2, 'to run again elsewhere', 20_000)
    const detectedMs = Date.now() - killedAt
    expect(moved.agent).toBe(other)
    // Declared lost within the lease (plus polling and start-up slack on a loaded machine).
    expect(detectedMs).toBeLessThan(LEASE_MS + 2500)
    await gate.open()
    const run = await finished(mesh, runId)
    expectNothingLost(run, clean)
    const work1 = step(run, 'work')
    expect(work1.agent).toBe(other)
    expect(work1.history?.map(a => [a.number, a.agent, a.state])).toEqual([[1, victim, 'lost'], [2, other, 'succeeded']])

    const why = await runCliJson<Explanation>(['explain', runId, 'work', '--coordinator', mesh.url])
    expect(why.json.attempts.map(a => a.state)).toEqual(['lost', 'succeeded'])
    const status = await runCli(['status', runId, '--coordinator', mesh.url])
    expect(status.stdout).toMatch(new RegExp(`attempts of work:\\n\\s+1\\. ${victim}: lost`))
    // The killed agent's orphaned step ends once the gate is open; a restarted agent would reap it.
    const orphan = (await gate.pid('work', 1))!
    await waitFor('the orphaned step of the killed agent to end', () => isAlive(orphan) ? undefined : true)
    await mesh.startAgent(victim, AGENT_ARGS)
    await mesh.waitForAgents(2)
  })

  it('a hung agent (SIGSTOP) is declared lost within the lease; its late result is discarded, not committed twice', async () => {
    const gate = await Gate.create(join(work.path, 'hang'))
    const runId = await submit(mesh, client(), file, { gate: gate.dir })
    const first = await stepWhere(mesh, runId, 'work', s => s.status === 'running', 'to run')
    await waitFor('the step process to start', async () => await gate.pid('work', 1))
    const victim = first.agent!
    const other = victim === 'a1' ? 'a2' : 'a1'
    const stoppedAt = Date.now()
    await mesh.signalAgent(victim, 'SIGSTOP')
    try {
      const moved = await stepWhere(mesh, runId, 'work', s => s.status === 'running' && s.attempts === 2, 'to run again elsewhere', 20_000)
      expect(moved.agent).toBe(other)
      expect(Date.now() - stoppedAt).toBeLessThan(LEASE_MS + 1800)
      // Both attempts' processes now finish: the hung agent's step is not stopped, only the agent.
      await gate.open()
      const run = await finished(mesh, runId)
      expectNothingLost(run, clean)
    } finally {
      await mesh.signalAgent(victim, 'SIGCONT')
    }
    // The resumed agent reports attempt 1 late; the coordinator drops it.
    await outputMatching(mesh.coordinator, /no longer current/, 'the coordinator to discard the late attempt')
    await waitFor('the resumed agent to reconnect', async () => (await mesh.client.agents()).find(a => a.name === victim && a.connected))
    const after = await mesh.client.getRun(runId)
    expectNothingLost(after, clean)
    expect(step(after, 'work').history?.map(a => [a.agent, a.state])).toEqual([[victim, 'lost'], [other, 'succeeded']])
    expect(step(after, 'use').attempts).toBe(1)
  })

  it('a drained agent finishes its running step and is given no new ones until undrained', async () => {
    const gate = await Gate.create(join(work.path, 'drain'))
    const holdFile = await pipeline(join(work.path, 'hold'), `name: hold
steps:
  hold:
    command: ${gateWait(gate.dir)}; echo held > \${{outputs.out}}
    outputs: [out]
    cache: false
`)
    const holdRun = await submit(mesh, client(), holdFile)
    const held = await stepWhere(mesh, holdRun, 'hold', s => s.status === 'running', 'to run')
    const drained = held.agent!
    const other = drained === 'a1' ? 'a2' : 'a1'
    const drain = await runCliJson<AgentListEntry>(['agent', 'drain', drained, '--coordinator', mesh.url])
    expect(drain.exitCode, drain.stderr).toBe(0)
    expect(drain.json.draining).toBe(true)

    const many = await pipeline(join(work.path, 'many'), `name: many\nsteps:\n${[1, 2, 3, 4].map(i => `  s${i}:\n    command: echo ${i} > \${{outputs.out}}\n    outputs: [out]\n    resources: { cpu: 1 }\n    cache: false`).join('\n')}\n`)
    const manyRun = await finished(mesh, await submit(mesh, client(), many))
    expect(manyRun.status).toBe('succeeded')
    expect(manyRun.steps.map(s => s.agent)).toEqual([other, other, other, other])

    await gate.open()
    const holdDone = await finished(mesh, holdRun)
    expect(step(holdDone, 'hold')).toMatchObject({ status: 'succeeded', agent: drained, attempts: 1 })

    const undrain = await runCli(['agent', 'undrain', drained, '--coordinator', mesh.url])
    expect(undrain.exitCode, undrain.stderr).toBe(0)
    const list = await mesh.client.agents()
    expect(list.find(a => a.name === drained)?.draining).toBe(false)
    await waitForRun(mesh.client, holdRun, r => r.status === 'succeeded', 'hold run to stay succeeded')
  })
})

// Its own mesh with a long lease: the agent must restart within the lease, and starting a node
// process can take a few seconds on a loaded machine.
describe('a disconnected agent within its lease', () => {
  let mesh: Mesh
  let work: Awaited<ReturnType<typeof tempDir>>

  beforeAll(async () => {
    work = await tempDir()
    mesh = await startMesh({ leaseMs: 30_000, agents: { a1: AGENT_ARGS } })
  }, 120_000)

  afterAll(async () => {
    await mesh?.stop()
    await work?.cleanup()
  })

  it('a step that only a disconnected agent can run waits for it (within its lease) instead of failing', async () => {
    await mesh.startAgent('a3', [...AGENT_ARGS, '--label', 'box=a3'])
    await mesh.waitForAgents(2)
    await mesh.signalAgent('a3', 'SIGKILL')
    const only = await pipeline(join(work.path, 'only'), `name: only-a3
steps:
  pinned:
    command: echo pinned > \${{outputs.out}}
    outputs: [out]
    resources: { labels: { box: a3 } }
    cache: false
`)
    const runId = await submit(mesh, join(work.path, 'client'), only)
    const waiting = await stepWhere(mesh, runId, 'pinned', s => s.status === 'queued' && /waiting for a3/.test(s.reason ?? ''), 'to wait for a3')
    expect(waiting.reason).toMatch(/disconnected, lease not yet expired/)
    await mesh.startAgent('a3', [...AGENT_ARGS, '--label', 'box=a3'])
    const run = await finished(mesh, runId)
    expect(step(run, 'pinned')).toMatchObject({ status: 'succeeded', agent: 'a3' })
    await mesh.signalAgent('a3', 'SIGKILL')
  })

})
