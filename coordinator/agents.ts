// The coordinator's view of the mesh: connected agents, what each has allocated, and which agent
// holds which artifact. It knows who holds what, never the bytes themselves.

import { EventEmitter } from 'node:events'
import type { AgentView } from '../src/scheduler/types.js'
import type { CoordinatorMessage, PeerAddress, WireCapabilities } from '../src/protocol/messages.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'

export interface AgentSession {
  id: string
  name: string
  /** The pipemesh version the agent runs, and its control protocol revision (CONTROL_REVISION). */
  version: string
  revision: number
  addrs: string[]
  capabilities: WireCapabilities
  connected: boolean
  connectedAt: number
  lastSeen: number
  load: number
  draining: boolean
  transfers: { bytesServed: number, bytesFetched: number }
  view: AgentView
  /** Attempt ids the coordinator believes run there. */
  attempts: Set<string>
  send: (msg: CoordinatorMessage) => void
}

export interface AgentInfo {
  id: string
  name: string
  version: string
  revision: number
  connected: boolean
  draining: boolean
  lastSeen: number
  addrs: string[]
  capabilities: WireCapabilities
  allocated: AgentView['allocated']
  running: number
  load: number
  holdings: number
  transfers: { bytesServed: number, bytesFetched: number }
}

export class AgentRegistry {
  /** Emits 'synced' (agentId) once an agent has reported all it holds after connecting. */
  readonly events = new EventEmitter()
  private readonly synced = new Set<string>()
  private readonly agents = new Map<string, AgentSession>()
  private readonly holders = new Map<Digest, Set<string>>()
  private readonly held = new Map<string, Map<Digest, ArtifactRef>>()
  /** Agents drained by an administrator, connected or not (kept across their reconnects). */
  private readonly drained = new Set<string>()

  /** Registers a (re)connected agent; allocations of a returning agent are kept. */
  connect (init: { id: string, name: string, version: string, revision: number, addrs: string[], capabilities: WireCapabilities, send: AgentSession['send'] }): AgentSession {
    const now = Date.now()
    const existing = this.agents.get(init.id)
    const view: AgentView = {
      id: init.id,
      name: init.name,
      capacity: { cpu: init.capabilities.capacity.cpu, memory: init.capabilities.capacity.memory, gpus: init.capabilities.capacity.gpus },
      labels: init.capabilities.labels,
      allocated: existing?.view.allocated ?? { cpu: 0, memory: 0, gpus: [] },
      running: existing?.view.running ?? 0,
      load: 0,
      draining: this.drained.has(init.id),
      diskFree: init.capabilities.diskFree
    }
    const session: AgentSession = {
      id: init.id,
      name: init.name,
      version: init.version,
      revision: init.revision,
      addrs: init.addrs,
      capabilities: init.capabilities,
      connected: true,
      connectedAt: now,
      lastSeen: now,
      load: 0,
      draining: this.drained.has(init.id),
      transfers: existing?.transfers ?? { bytesServed: 0, bytesFetched: 0 },
      view,
      attempts: existing?.attempts ?? new Set(),
      send: init.send
    }
    this.agents.set(init.id, session)
    return session
  }

  disconnect (id: string): void {
    const session = this.agents.get(id)
    if (session !== undefined) session.connected = false
    this.synced.delete(id)
  }

  markSynced (id: string): void {
    this.synced.add(id)
    this.events.emit('synced', id)
  }

  isSynced (id: string): boolean {
    return this.synced.has(id) && this.agents.get(id)?.connected === true
  }

  /** Forgets an agent for good (lost lease): its holdings no longer count. */
  remove (id: string): void {
    this.agents.delete(id)
    this.synced.delete(id)
    const held = this.held.get(id)
    if (held !== undefined) {
      for (const digest of held.keys()) this.holders.get(digest)?.delete(id)
      this.held.delete(id)
    }
  }

  get (id: string): AgentSession | undefined {
    return this.agents.get(id)
  }

  /** An agent by peer id, the end of one (6+ characters, as `pipemesh agents` shows), or name. */
  find (idOrName: string): AgentSession | undefined {
    const all = this.all()
    return this.agents.get(idOrName) ??
      all.find(a => idOrName.length >= 6 && a.id.endsWith(idOrName)) ??
      all.find(a => a.name === idOrName && a.connected) ??
      all.find(a => a.name === idOrName)
  }

  /**
   * Drains an agent (it finishes what it runs and is given nothing new) or undrains it. Applies
   * to the agent's later connections too, until undrained.
   */
  setDraining (id: string, draining: boolean): void {
    if (draining) this.drained.add(id)
    else this.drained.delete(id)
    const session = this.agents.get(id)
    if (session === undefined) return
    session.draining = draining
    session.view = { ...session.view, draining }
  }

  connected (): AgentSession[] {
    return [...this.agents.values()].filter(a => a.connected)
  }

  all (): AgentSession[] {
    return [...this.agents.values()]
  }

  /** Agents the scheduler may place on: connected ones. */
  views (): AgentView[] {
    return this.connected().map(a => a.view)
  }

  /**
   * Disconnected agents not yet given up on, as views that take nothing new: a step only they
   * could run waits for them instead of failing as unschedulable.
   */
  awayViews (): AgentView[] {
    return this.all().filter(a => !a.connected).map(a => ({ ...a.view, draining: true }))
  }

  addHoldings (agentId: string, refs: ArtifactRef[]): void {
    let held = this.held.get(agentId)
    if (held === undefined) { held = new Map(); this.held.set(agentId, held) }
    for (const ref of refs) {
      held.set(ref.digest, ref)
      let set = this.holders.get(ref.digest)
      if (set === undefined) { set = new Set(); this.holders.set(ref.digest, set) }
      set.add(agentId)
    }
  }

  removeHoldings (agentId: string, digests: Digest[]): void {
    const held = this.held.get(agentId)
    for (const digest of digests) {
      held?.delete(digest)
      this.holders.get(digest)?.delete(agentId)
    }
  }

  /** The artifacts an agent has reported holding. */
  heldBy (agentId: string): Digest[] {
    return [...(this.held.get(agentId)?.keys() ?? [])]
  }

  /** Connected agents holding the artifact. */
  holdersOf (digest: Digest): string[] {
    const set = this.holders.get(digest)
    if (set === undefined) return []
    return [...set].filter(id => this.agents.get(id)?.connected === true)
  }

  /** Agents that held the artifact and are disconnected, but not yet given up on (within their lease). */
  awayHolders (digest: Digest): string[] {
    const set = this.holders.get(digest)
    if (set === undefined) return []
    return [...set].filter(id => this.agents.get(id)?.connected === false)
  }

  /** True when some connected agent holds the artifact. */
  isAvailable (digest: Digest): boolean {
    return this.holdersOf(digest).length > 0
  }

  addresses (ids: string[]): PeerAddress[] {
    const out: PeerAddress[] = []
    for (const id of ids) {
      const a = this.agents.get(id)
      if (a !== undefined) out.push({ peerId: a.id, addrs: a.addrs })
    }
    return out
  }

  info (): AgentInfo[] {
    return this.all().map(a => ({
      id: a.id,
      name: a.name,
      version: a.version,
      revision: a.revision,
      connected: a.connected,
      draining: a.draining,
      lastSeen: a.lastSeen,
      addrs: a.addrs,
      capabilities: a.capabilities,
      allocated: a.view.allocated,
      running: a.view.running,
      load: a.load,
      holdings: this.held.get(a.id)?.size ?? 0,
      transfers: a.transfers
    }))
  }
}
