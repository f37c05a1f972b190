// A peer that speaks the agent side of the control protocol by hand, for coordinator tests that
// need to see exactly what the coordinator sends an agent (and to send it what an agent would,
// including what an older agent would). Real libp2p, real coordinator; only the agent is a script.

import { generateKeyPair } from '@libp2p/crypto/keys'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p, PrivateKey } from '@libp2p/interface'
import type { Coordinator } from '../../coordinator/coordinator.js'
import { createNode } from '../../src/net/node.js'
import { openChannel, type MessageChannel } from '../../src/protocol/channel.js'
import { CONTROL_PROTOCOL, CONTROL_REVISION, coordinatorMessageSchema, type AgentMessage, type CoordinatorMessage } from '../../src/protocol/messages.js'
import type { ArtifactRef } from '../../src/store/types.js'
import { waitFor } from './wait.js'

export interface FakeAgent {
  name: string
  peerId: string
  /** Its identity, to connect again as the same agent (after a coordinator restart). */
  privateKey: PrivateKey
  /** Everything the coordinator sent, in order. */
  received: CoordinatorMessage[]
  send: (msg: AgentMessage) => Promise<void>
  stop: () => Promise<void>
}

export interface FakeAgentOptions {
  version?: string
  /** undefined: say hello as an agent from before revisions did (0.1.0). */
  revision?: number | undefined
  /** Declares that many 24 GiB GPUs. */
  gpus?: number
  /** Free disk in its data dir (default 100 GiB). */
  diskFree?: number
  /** Connect as this identity (default: a new one). */
  privateKey?: PrivateKey
  /** Attempts it says are still running (a reconnect). */
  running?: string[]
  /** Artifacts it says it holds. */
  holdings?: ArtifactRef[]
}

/** Enrolls a fake agent with `coordinator` and connects it. */
export async function connectFakeAgent (coordinator: Coordinator, name: string, options: FakeAgentOptions = {}): Promise<FakeAgent> {
  const privateKey = options.privateKey ?? await generateKeyPair('Ed25519')
  const node: Libp2p = await createNode({ privateKey })
  await coordinator.membership.admit(node.peerId.toString(), name)
  const stream = await node.dialProtocol(multiaddr(coordinator.multiaddrs()[0]!), CONTROL_PROTOCOL, { signal: AbortSignal.timeout(10_000) })
  const channel: MessageChannel<CoordinatorMessage, AgentMessage> = openChannel(stream, { inSchema: coordinatorMessageSchema })
  const gpus = Array.from({ length: options.gpus ?? 0 }, (_, index) => ({ index, vendor: 'test', model: 'declared', memory: 24 * 2 ** 30 }))
  const revision = 'revision' in options ? options.revision : CONTROL_REVISION
  await channel.send({
    type: 'hello', name, version: options.version ?? '0.2.0', addrs: node.getMultiaddrs().map(a => a.toString()), running: options.running ?? [],
    ...(revision === undefined ? {} : { revision }),
    capabilities: { hostname: name, os: 'linux', arch: 'x64', cpu: { model: 'x', cores: 4 }, memory: 8 * 2 ** 30, gpus, diskFree: options.diskFree ?? 100 * 2 ** 30, capacity: { cpu: 4, memory: 8 * 2 ** 30, gpus }, labels: {}, detectedAt: Date.now() }
  })
  await channel.send({ type: 'holdings', add: options.holdings ?? [], remove: [], done: true })
  const received: CoordinatorMessage[] = []
  void (async () => { for await (const msg of channel) received.push(msg) })().catch(() => {})
  await waitFor(`fake agent ${name} to be listed`, async () => (await coordinator.agents()).find(a => a.name === name && a.connected))
  return {
    name,
    peerId: node.peerId.toString(),
    privateKey,
    received,
    send: async msg => { await channel.send(msg) },
    stop: async () => {
      channel.abort(new Error('done'))
      await node.stop()
    }
  }
}
