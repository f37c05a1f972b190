// An agent upgraded before its coordinator: it must not send messages the coordinator's
// revision does not know (a coordinator validates every message and drops a session that sends
// an unknown one). A real agent and a real coordinator, with a relay between them that records
// what the agent sends and, to play an older coordinator, says revision 2 in the welcome. The
// case here is `storing` (revision 3), the progress of an output being stored: a 70 MB output
// always reports its end to a coordinator that can take it.

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import type { Libp2p } from '@libp2p/interface'
import { multiaddr } from '@multiformats/multiaddr'
import { pino } from 'pino'
import { recordEnrollment } from '../../agent/admission.js'
import { Agent } from '../../agent/agent.js'
import { Coordinator } from '../../coordinator/coordinator.js'
import { createNode } from '../../src/net/node.js'
import { openChannel } from '../../src/protocol/channel.js'
import { CONTROL_PROTOCOL, MAX_CONTROL_MESSAGE_BYTES, STORING_REVISION, agentMessageSchema, coordinatorMessageSchema, type AgentMessage, type CoordinatorMessage } from '../../src/protocol/messages.js'
import { tempDir } from '../helpers/cli.js'
import { waitFor, waitForRun } from '../helpers/wait.js'

const OUTPUT_BYTES = 70_000_000
const PIPELINE = `name: big-output
steps:
  make:
    command: head -c ${OUTPUT_BYTES} /dev/urandom > \${{outputs.out}}
    outputs: [out]
    cache: false
`

interface Relay { node: Libp2p, fromAgent: AgentMessage[], address: string }

/**
 * A libp2p peer that the agent takes for its coordinator: it passes the control stream on to the
 * real one both ways, keeps what the agent sent, and rewrites the welcome's revision if asked.
 */
async function startRelay (coordinator: Coordinator, revision: number | undefined): Promise<Relay> {
  const node = await createNode({ privateKey: await generateKeyPair('Ed25519') })
  // The coordinator sees the relay as the agent.
  await coordinator.membership.admit(node.peerId.toString(), 'relayed')
  const fromAgent: AgentMessage[] = []
  await node.handle(CONTROL_PROTOCOL, async stream => {
    const down = openChannel<AgentMessage, CoordinatorMessage>(stream, { inSchema: agentMessageSchema, maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES })
    const upStream = await node.dialProtocol(multiaddr(coordinator.multiaddrs()[0]!), CONTROL_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
    const up = openChannel<CoordinatorMessage, AgentMessage>(upStream, { inSchema: coordinatorMessageSchema, maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES })
    const toAgent = (async () => {
      for await (const msg of up) await down.send(msg.type === 'welcome' && revision !== undefined ? { ...msg, revision } : msg)
    })()
    const toCoordinator = (async () => {
      for await (const msg of down) {
        fromAgent.push(msg)
        await up.send(msg)
      }
    })()
    await Promise.allSettled([toAgent, toCoordinator])
    up.abort(new Error('relay closed'))
    down.abort(new Error('relay closed'))
  })
  return { node, fromAgent, address: node.getMultiaddrs()[0]!.toString() }
}

describe('an agent and a coordinator of different revisions', () => {
  let work: Awaited<ReturnType<typeof tempDir>>
  let coordinator: Coordinator | undefined
  let relay: Relay | undefined
  let agent: Agent | undefined

  beforeEach(async () => { work = await tempDir() })
  afterEach(async () => {
    await agent?.stop({ graceMs: 0 })
    await relay?.node.stop()
    await coordinator?.stop()
    await work.cleanup()
  })

  /** Runs the pipeline on an agent that reaches the coordinator through a relay; returns what the agent sent. */
  async function runThroughRelay (revision: number | undefined): Promise<AgentMessage[]> {
    const logger = pino({ level: 'silent' })
    coordinator = await Coordinator.start({ dataDir: join(work.path, 'coordinator'), logger })
    relay = await startRelay(coordinator, revision)
    // Enrolled with the relay beforehand: the coordinator admitted the relay's identity above.
    await mkdir(join(work.path, 'agent'), { recursive: true })
    await recordEnrollment(join(work.path, 'agent'), relay.node.peerId.toString())
    agent = await Agent.start({ dataDir: join(work.path, 'agent'), coordinator: relay.address, logger, name: 'relayed' })
    await waitFor('the relayed agent to be listed as connected', async () => (await coordinator!.agents()).find(a => a.name === 'relayed' && a.connected))
    const run = await coordinator.submit({ pipeline: { text: PIPELINE }, params: {}, artifacts: { inputs: {}, code: {}, environments: {} } })
    const done = await waitForRun(coordinator, run.runId, r => r.status !== 'running', 'the run to end', 120_000)
    expect(done.status, JSON.stringify(done.steps)).toBe('succeeded')
    const sent = relay.fromAgent
    await waitFor('the agent\'s result to pass the relay', () => sent.some(m => m.type === 'finished') ? true : undefined, 10_000, () => `the agent sent: ${sent.map(m => m.type).join(', ')}`)
    return sent
  }

  it(`sends a coordinator of revision ${STORING_REVISION} the progress of storing an output`, async () => {
    const sent = await runThroughRelay(undefined)
    expect(sent.some(m => m.type === 'storing')).toBe(true)
  })

  it(`never sends it to a coordinator of revision ${STORING_REVISION - 1}, whose runs still succeed`, async () => {
    const sent = await runThroughRelay(STORING_REVISION - 1)
    expect(sent.filter(m => m.type === 'storing')).toEqual([])
    expect(sent.some(m => m.type === 'finished')).toBe(true)
  })
})
