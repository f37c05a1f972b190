// The progress of an output being stored, from an agent's 'storing' message to a follower of the
// run over HTTP: only followers that ask for `store` events get them (a client from before they
// existed could not read them). The coordinator and its HTTP API are real; the agent is a real
// libp2p peer speaking the control protocol.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { pino } from 'pino'
import { Coordinator } from '../../coordinator/coordinator.js'
import { startApiServer } from '../../coordinator/api.js'
import { HttpCoordinatorClient } from '../../src/client/http.js'
import type { RunEvent } from '../../src/run/types.js'
import { tempDir } from '../helpers/cli.js'
import { connectFakeAgent, type FakeAgent } from '../helpers/fake-agent.js'
import { waitFor } from '../helpers/wait.js'

describe('storing progress reaches the followers that ask for it', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  let coordinator: Coordinator
  let api: Awaited<ReturnType<typeof startApiServer>>
  let agent: FakeAgent

  beforeAll(async () => {
    work = await tempDir()
    coordinator = await Coordinator.start({ dataDir: join(work.path, 'coordinator'), logger: pino({ level: 'silent' }) })
    api = await startApiServer({ api: coordinator, host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }) })
    agent = await connectFakeAgent(coordinator, 'box')
  })

  afterAll(async () => {
    await agent?.stop()
    await api?.server.close()
    await coordinator?.stop()
    await work?.cleanup()
  })

  it('a follower with store=1 sees the output stored; one without does not', async () => {
    const run = await coordinator.submit({ pipeline: { text: 'name: big\nsteps:\n  train: { command: "true", outputs: [model], cache: false }\n' }, params: {}, artifacts: { inputs: {}, code: {}, environments: {} } })
    const task = await waitFor('the agent to be sent the step', () => agent.received.find(m => m.type === 'task' && m.task.runId === run.runId))
    if (task.type !== 'task') throw new Error('unreachable')
    const client = new HttpCoordinatorClient(api.url)
    const follow = (store: boolean): { events: RunEvent[], stop: AbortController } => {
      const events: RunEvent[] = []
      const stop = new AbortController()
      void (async () => { for await (const e of client.events(run.runId, { signal: stop.signal, store })) events.push(e) })().catch(() => {})
      return { events, stop }
    }
    const withStore = follow(true)
    const without = follow(false)
    // Both are live once they have the snapshot (it ends with the run's own event).
    for (const f of [withStore, without]) await waitFor('a follower to get the snapshot', () => f.events.find(e => e.type === 'run'))
    const attemptId = task.task.attemptId
    await agent.send({ type: 'storing', attemptId, output: 'model', bytes: 1024, totalBytes: 4096, elapsedMs: 600, done: false })
    // A log line after it: when the follower without store events has it, it would have had the other.
    await agent.send({ type: 'log', attemptId, lines: [{ t: Date.now(), stream: 'stdout', line: 'after storing' }] })
    const store = await waitFor('the store event to reach the follower that asked', () => withStore.events.find(e => e.type === 'store'))
    expect(store).toMatchObject({ type: 'store', runId: run.runId, stepId: 'train', attempt: 1, output: 'model', bytes: 1024, totalBytes: 4096, elapsedMs: 600, done: false })
    await waitFor('the log line to reach the other follower', () => without.events.find(e => e.type === 'log'))
    expect(without.events.some(e => e.type === 'store')).toBe(false)
    withStore.stop.abort()
    without.stop.abort()
    await coordinator.cancel(run.runId)
  })

  it('refuses a store value other than 1, saying what it expects', async () => {
    const response = await fetch(`${api.url}/v1/runs/nope/events?store=yes`)
    expect(response.status).toBe(400)
    expect(((await response.json()) as { error: { message: string } }).error.message).toContain('unknown value "yes" for "store"; expected "1"')
  })
})
