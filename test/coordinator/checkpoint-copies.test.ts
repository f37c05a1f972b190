// Copies of checkpoint saves: when the agent running a step reports a save, the coordinator has
// another agent (a CPU-only one first) pull it from that agent; a step whose checkpoint says
// `copy: false` keeps its saves on the agent that made them. Real coordinator, agents scripted.

import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { pino } from 'pino'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { Coordinator } from '../../coordinator/coordinator.js'
import type { CoordinatorMessage } from '../../src/protocol/messages.js'
import type { ArtifactRef, Digest } from '../../src/store/types.js'
import { tempDir } from '../helpers/cli.js'
import { connectFakeAgent, type FakeAgent } from '../helpers/fake-agent.js'
import { waitFor, waitForRun } from '../helpers/wait.js'

const EMPTY = { inputs: {}, code: {}, environments: {} }
const save = (n: number, size = 1000 + n): ArtifactRef => ({ digest: `sha256:${String(n).padStart(64, 'c')}` as Digest, kind: 'tree', size })
const GiB = 2 ** 30
type Sent<T extends CoordinatorMessage['type']> = Extract<CoordinatorMessage, { type: T }>

describe('copies of checkpoint saves', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  let coordinator: Coordinator
  let gpu: FakeAgent
  let cpu: FakeAgent

  beforeAll(async () => {
    work = await tempDir()
    coordinator = await Coordinator.start({ dataDir: join(work.path, 'coordinator'), logger: pino({ level: 'silent' }) })
    gpu = await connectFakeAgent(coordinator, 'gpu', { gpus: 1 })
    cpu = await connectFakeAgent(coordinator, 'cpu')
  })

  afterAll(async () => {
    await gpu?.stop()
    await cpu?.stop()
    await coordinator?.stop()
    await work?.cleanup()
  })

  /** Runs a GPU step with this checkpoint setting; the GPU agent reports one save of it. */
  async function reportSave (checkpoint: string, ref: ArtifactRef): Promise<{ runId: string, attemptId: string }> {
    const run = await coordinator.submit({ pipeline: { text: `name: copies\nsteps:\n  train: { command: "true", cache: false, resources: { gpu: 1 }, checkpoint: ${checkpoint} }\n` }, params: {}, artifacts: EMPTY })
    const task = await waitFor('the GPU agent to be given the step', () => gpu.received.find((m): m is Extract<CoordinatorMessage, { type: 'task' }> => m.type === 'task' && m.task.runId === run.runId))
    await gpu.send({ type: 'checkpoint', attemptId: task.task.attemptId, ref, at: Date.now() })
    await waitForRun(coordinator, run.runId, r => r.steps[0]?.checkpoint?.digest === ref.digest, 'the save to be recorded')
    return { runId: run.runId, attemptId: task.task.attemptId }
  }

  /** The GPU agent reports the step done, which frees its GPU for the next test. */
  async function succeed (ids: { runId: string, attemptId: string }): Promise<void> {
    await gpu.send({ type: 'finished', result: { attemptId: ids.attemptId, status: 'succeeded', exitCode: 0, outputs: {}, startedAt: Date.now(), finishedAt: Date.now() } })
    await waitForRun(coordinator, ids.runId, r => r.status === 'succeeded', 'the run to succeed')
  }

  it('has the CPU agent pull each save from the agent that made it', async () => {
    const ids = await reportSave('ckpt', save(1))
    const fetch = await waitFor('the CPU agent to be asked to pull the save', () => cpu.received.find((m): m is Extract<CoordinatorMessage, { type: 'fetch' }> => m.type === 'fetch' && m.digests.includes(save(1).digest)))
    expect(fetch.from.map(p => p.peerId)).toEqual([gpu.peerId])
    expect(gpu.received.some(m => m.type === 'fetch')).toBe(false)
    await cpu.send({ type: 'fetched', requestId: fetch.requestId, refs: [save(1)] })
    await waitFor('the copy to count as held by the CPU agent', async () => (await coordinator.agents()).find(a => a.name === 'cpu')?.holdings === 1 ? true : undefined)
    await succeed(ids)
  })

  it('copies nothing for a step whose checkpoint says copy: false', async () => {
    const ids = await reportSave('{ path: ckpt, copy: false }', save(2))
    // A fence: the coordinator tells every agent about a new member after it handled the save.
    const fence = peerIdFromPrivateKey(await generateKeyPair('Ed25519')).toString()
    await coordinator.membership.admit(fence, 'fence')
    await waitFor('the CPU agent to hear of the new member', () => cpu.received.some(m => m.type === 'members' && m.peers.includes(fence)) ? true : undefined)
    expect(cpu.received.some(m => m.type === 'fetch' && m.digests.includes(save(2).digest))).toBe(false)
    await succeed(ids)
  })
})

describe('copies of checkpoint saves across a coordinator restart', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  const agents: FakeAgent[] = []
  let coordinator: Coordinator | undefined

  afterAll(async () => {
    for (const a of agents) await a.stop()
    await coordinator?.stop()
    await work?.cleanup()
  })

  it('the agent holding the copy of the last save takes the next one and drops the old copy', async () => {
    work = await tempDir()
    const dataDir = join(work.path, 'coordinator')
    const logger = pino({ level: 'silent' })
    // Saves large enough that dropping a copy is asked for at once (see CHECKPOINT_SWEEP_BYTES).
    const first = save(11, GiB)
    const second = save(12, GiB)
    coordinator = await Coordinator.start({ dataDir, logger })
    const gpu = await connectFakeAgent(coordinator, 'gpu', { gpus: 1 })
    const cpu = await connectFakeAgent(coordinator, 'cpu')
    agents.push(gpu, cpu)
    const run = await coordinator.submit({ pipeline: { text: 'name: restart\nsteps:\n  train: { command: "true", cache: false, resources: { gpu: 1 }, checkpoint: ckpt }\n' }, params: {}, artifacts: EMPTY })
    const task = await waitFor('the GPU agent to be given the step', () => gpu.received.find((m): m is Sent<'task'> => m.type === 'task' && m.task.runId === run.runId))
    const attemptId = task.task.attemptId
    await gpu.send({ type: 'checkpoint', attemptId, ref: first, at: Date.now() })
    const pull = await waitFor('the CPU agent to be asked to copy the first save', () => cpu.received.find((m): m is Sent<'fetch'> => m.type === 'fetch' && m.digests.includes(first.digest)))
    await cpu.send({ type: 'fetched', requestId: pull.requestId, refs: [first] })
    await waitFor('the copy to count as held by the CPU agent', async () => (await coordinator!.agents()).find(a => a.name === 'cpu')?.holdings === 1 ? true : undefined)

    await coordinator.stop()
    for (const a of agents.splice(0)) await a.stop()
    coordinator = await Coordinator.start({ dataDir, logger })
    // The same agents come back: the GPU agent still runs the attempt and holds the save it made,
    // the CPU agent holds its copy. A third agent, with more free disk, would be preferred for a
    // copy made from scratch.
    const gpu2 = await connectFakeAgent(coordinator, 'gpu', { gpus: 1, privateKey: gpu.privateKey, running: [attemptId], holdings: [first] })
    const cpu2 = await connectFakeAgent(coordinator, 'cpu', { privateKey: cpu.privateKey, holdings: [first] })
    const roomy = await connectFakeAgent(coordinator, 'roomy', { diskFree: 500 * GiB })
    agents.push(gpu2, cpu2, roomy)
    await waitForRun(coordinator, run.runId, r => r.steps[0]?.status === 'running' && r.steps[0].attempts === 1, 'the attempt to be adopted')
    await gpu2.send({ type: 'checkpoint', attemptId, ref: second, at: Date.now() })

    const again = await waitFor('the CPU agent to be asked to copy the second save', () => cpu2.received.find((m): m is Sent<'fetch'> => m.type === 'fetch' && m.digests.includes(second.digest)))
    expect(roomy.received.some(m => m.type === 'fetch')).toBe(false)
    await cpu2.send({ type: 'fetched', requestId: again.requestId, refs: [second] })
    const drop = await waitFor('the CPU agent to be told to drop its copy of the first save', () => cpu2.received.find((m): m is Sent<'gc'> => m.type === 'gc' && m.drop.includes(first.digest)))
    expect(drop.drop).not.toContain(second.digest)
  })
})
