// Client uploads without relaying bytes: a client with content the mesh lacks (data sources,
// code) serves it from a short-lived libp2p node, and the coordinator asks one agent to pull it
// from there. Only chunks that agent does not already hold cross the wire.

import type { Logger } from 'pino'
import type { UploadResult } from '../src/client/api.js'
import { PipemeshError, fromWireError } from '../src/errors.js'
import type { AgentMessage, PeerAddress } from '../src/protocol/messages.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { DISK_SPARE_BYTES } from '../src/scheduler/index.js'
import { formatBytes } from '../src/util/units.js'
import type { AgentRegistry, AgentSession } from './agents.js'
import { AgentReplies } from './agent-replies.js'

type Fetched = Extract<AgentMessage, { type: 'fetched' }>

/**
 * The order in which agents are asked to keep content no step placed there (uploads, copies of
 * checkpoint saves): CPU-only agents first, since stored data draws the steps that read it (data
 * prep, mostly) and GPU machines should stay free for GPU steps; then the least busy; then the
 * most free disk.
 */
export function storagePreference (a: AgentSession, b: AgentSession): number {
  const hasGpus = (x: AgentSession): number => x.view.capacity.gpus.length > 0 ? 1 : 0
  const cpuUse = (x: AgentSession): number => x.view.allocated.cpu / Math.max(x.view.capacity.cpu, 1)
  return hasGpus(a) - hasGpus(b) || cpuUse(a) - cpuUse(b) || b.capabilities.diskFree - a.capabilities.diskFree
}

export class UploadBroker {
  private readonly replies = new AgentReplies<Fetched>('up')

  constructor (private readonly registry: AgentRegistry, private readonly log: Logger) {}

  /** The digests no connected agent holds. */
  missing (digests: Digest[]): Digest[] {
    return digests.filter(d => !this.registry.isAvailable(d))
  }

  /**
   * Has a connected agent with room pull the missing artifacts from `from` (CPU-only and least
   * busy first); resolves when it holds them.
   */
  async upload (refs: ArtifactRef[], from: PeerAddress, options: { signal?: AbortSignal } = {}): Promise<UploadResult> {
    const missing = new Set(this.missing(refs.map(r => r.digest)))
    if (missing.size === 0) return { agentId: null, agent: null, fetched: [] }
    const bytes = refs.filter(r => missing.has(r.digest)).reduce((n, r) => n + r.size, 0)
    const open = this.registry.connected().filter(a => !a.draining)
    const roomy = open.filter(a => a.capabilities.diskFree >= bytes + DISK_SPARE_BYTES)
    if (open.length > 0 && roomy.length === 0) {
      const most = open.reduce((a, b) => (b.capabilities.diskFree > a.capabilities.diskFree ? b : a))
      throw new PipemeshError('LIMIT_EXCEEDED', `no connected agent has room for the upload: it needs ${formatBytes(bytes)} (and ${formatBytes(DISK_SPARE_BYTES)} to spare); the most free on any agent is ${formatBytes(most.capabilities.diskFree)} (agent ${most.name})`, {
        hint: 'free space on an agent (`pipemesh store gc --coordinator URL` removes what old runs left), or add one with a larger disk'
      })
    }
    const target = roomy.sort(storagePreference)[0]
    if (target === undefined) throw new PipemeshError('UNSCHEDULABLE', 'no agent is connected to receive the upload', { retryable: true, hint: 'start an agent with `pipemesh agent --coordinator …`' })
    const { requestId, reply: done } = this.replies.expect(target.id, options.signal, () => new PipemeshError('CANCELLED', 'the client went away during the upload'))
    this.log.info({ agentId: target.id, artifacts: missing.size, client: from.peerId }, 'agent pulling a client upload')
    target.send({ type: 'fetch', requestId, digests: [...missing], from: [from] })
    const reply = await done
    if (reply.error !== undefined) throw fromWireError(reply.error)
    this.registry.addHoldings(target.id, reply.refs)
    return { agentId: target.id, agent: target.name, fetched: reply.refs }
  }

  onFetched (agentId: string, msg: Fetched): void {
    this.replies.settle(agentId, msg.requestId, msg)
  }

  /** An agent went away: its pending uploads fail so the client can retry. */
  agentGone (agentId: string): void {
    this.replies.agentGone(agentId, () => new PipemeshError('UNREACHABLE', 'the agent receiving the upload disconnected', { retryable: true }))
  }
}
