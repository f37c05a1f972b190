// A mesh upgraded one machine at a time: an agent from before checkpoints (its hello carries no
// revision) stays connected and runs ordinary steps, and a step that keeps a checkpoint directory
// waits for an agent that can save it, saying which agent is too old, instead of running without
// its checkpoints. The agent here is a real libp2p peer speaking the control protocol as a
// 0.1.0 agent did; the coordinator is real.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { pino } from 'pino'
import { Coordinator } from '../../coordinator/coordinator.js'
import type { CoordinatorMessage } from '../../src/protocol/messages.js'
import { tempDir } from '../helpers/cli.js'
import { connectFakeAgent, type FakeAgent } from '../helpers/fake-agent.js'
import { waitFor, waitForRun } from '../helpers/wait.js'

const EMPTY = { inputs: {}, code: {}, environments: {} }

describe('agents of an older pipemesh', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  let coordinator: Coordinator
  let old: FakeAgent
  const received = (): CoordinatorMessage[] => old.received

  beforeAll(async () => {
    work = await tempDir()
    coordinator = await Coordinator.start({ dataDir: join(work.path, 'coordinator'), logger: pino({ level: 'silent' }) })
    // A 0.1.0 agent's hello: no revision field.
    old = await connectFakeAgent(coordinator, 'old-box', { version: '0.1.0', revision: undefined })
  })

  afterAll(async () => {
    await old?.stop()
    await coordinator?.stop()
    await work?.cleanup()
  })

  it('is listed with its version and revision 1, and is given ordinary steps', async () => {
    const [agent] = await coordinator.agents()
    expect(agent).toMatchObject({ name: 'old-box', version: '0.1.0', revision: 1 })
    const run = await coordinator.submit({ pipeline: { text: 'name: plain\nsteps:\n  a: { command: "true", cache: false }\n' }, params: {}, artifacts: EMPTY })
    const task = await waitFor('the old agent to be sent the step', () => received().find(m => m.type === 'task' && m.task.runId === run.runId))
    expect(task.type === 'task' && task.task.checkpoint).toBe(undefined)
    await coordinator.cancel(run.runId)
  })

  it('is not given a step that keeps a checkpoint directory: the step waits, naming the agent to upgrade', async () => {
    const run = await coordinator.submit({ pipeline: { text: 'name: ckpt\nsteps:\n  train: { command: "true", checkpoint: ckpt }\n' }, params: {}, artifacts: EMPTY })
    const waiting = await waitForRun(coordinator, run.runId, r => r.steps[0]?.reason?.includes('checkpoint') === true, 'the step to wait for a newer agent')
    expect(waiting.steps[0]).toMatchObject({ status: 'queued', attempts: 0 })
    expect(waiting.steps[0]?.reason).toBe('waiting for an agent that can keep its checkpoint directory: old-box (0.1.0) runs an older pipemesh; upgrade it')
    expect(received().some(m => m.type === 'task' && m.task.runId === run.runId)).toBe(false)
    await coordinator.cancel(run.runId)
  })
})
