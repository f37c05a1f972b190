// A second copy of each step's newest checkpoint save, on another agent. A save held only by the
// agent that made it is lost with that machine, which is exactly when it is needed. After a save
// reaches the coordinator, one other agent pulls it from the agent that made it (the same agent
// as for the step's previous save when it can, so that only chunks that changed cross the wire),
// then drops the copy of the previous save it held. One copy per step is in flight at a time: a
// save that arrives meanwhile is copied next, and any save between the two is skipped.

import type { Logger } from 'pino'
import type { AgentMessage } from '../src/protocol/messages.js'
import { DISK_SPARE_BYTES } from '../src/scheduler/index.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { AgentReplies } from './agent-replies.js'
import type { AgentRegistry } from './agents.js'
import { storagePreference } from './uploads.js'

type Fetched = Extract<AgentMessage, { type: 'fetched' }>

interface Copy { agentId: string, digest: Digest }

interface StepCopies {
  /** The copy made of the step's newest save that was copied. */
  current?: Copy
  copying: boolean
  next?: { ref: ArtifactRef, source: string }
}

export class CheckpointReplicas {
  private readonly replies = new AgentReplies<Fetched>('ck')
  /** By `runId/stepId`. */
  private readonly steps = new Map<string, StepCopies>()
  private readonly stopping = new AbortController()

  constructor (private readonly registry: AgentRegistry, private readonly log: Logger) {}

  /** A new save of the step `key`'s checkpoint, held by agent `source`. */
  saved (key: string, ref: ArtifactRef, source: string): void {
    let entry = this.steps.get(key)
    if (entry === undefined) {
      entry = { copying: false }
      this.steps.set(key, entry)
    }
    entry.next = { ref, source }
    if (!entry.copying) void this.pump(key, entry)
  }

  /**
   * The step will make no more saves. With `drop` (it succeeded) its copy is no longer needed and
   * goes now; without, the copy stays for a later run to resume from, until gc.
   */
  done (key: string, options: { drop: boolean }): void {
    const entry = this.steps.get(key)
    if (entry === undefined) return
    this.steps.delete(key)
    entry.next = undefined
    if (options.drop && entry.current !== undefined) this.drop(entry.current)
  }

  onFetched (agentId: string, msg: Fetched): void {
    this.replies.settle(agentId, msg.requestId, msg)
  }

  agentGone (agentId: string): void {
    this.replies.agentGone(agentId, () => new Error('the agent copying a checkpoint save disconnected'))
  }

  close (): void {
    this.stopping.abort()
  }

  private async pump (key: string, entry: StepCopies): Promise<void> {
    entry.copying = true
    try {
      while (entry.next !== undefined && !this.stopping.signal.aborted) {
        const { ref, source } = entry.next
        entry.next = undefined
        await this.copy(key, entry, ref, source)
      }
    } finally {
      entry.copying = false
    }
  }

  private async copy (key: string, entry: StepCopies, ref: ArtifactRef, source: string): Promise<void> {
    // Another connected agent may hold it already (the save the step was restored from, unchanged).
    let holder = this.registry.holdersOf(ref.digest).find(h => h !== source && this.registry.get(h)?.connected === true)
    if (holder === undefined) {
      const target = this.target(entry.current?.agentId, source, ref.size)
      if (target === undefined) {
        this.log.debug({ step: key, digest: ref.digest }, 'no other agent has room for a copy of the checkpoint save')
        return
      }
      const { requestId, reply } = this.replies.expect(target.id, this.stopping.signal, () => new Error('the coordinator is stopping'))
      target.send({ type: 'fetch', requestId, digests: [ref.digest], from: this.registry.addresses([source]) })
      try {
        const msg = await reply
        if (msg.error !== undefined) throw new Error(msg.error.message)
        this.registry.addHoldings(target.id, msg.refs)
      } catch (err) {
        this.log.warn({ step: key, digest: ref.digest, agent: target.name, err: (err as Error).message }, 'copying a checkpoint save to another agent failed; the next save will be copied')
        return
      }
      holder = target.id
      this.log.debug({ step: key, digest: ref.digest, bytes: ref.size, agent: target.name }, 'checkpoint save copied')
    }
    const previous = entry.current
    entry.current = { agentId: holder, digest: ref.digest }
    // Finished meanwhile: done() dropped what was current then, and this copy is not needed.
    if (this.steps.get(key) !== entry) this.drop(entry.current)
    if (previous !== undefined && previous.digest !== ref.digest) this.drop(previous)
  }

  /** The agent to keep a copy: the previous copy's holder when it still has room, else the preferred one. */
  private target (previous: string | undefined, source: string, bytes: number): ReturnType<AgentRegistry['get']> {
    const fits = this.registry.connected().filter(a => a.id !== source && !a.draining && a.capabilities.diskFree >= bytes + DISK_SPARE_BYTES)
    return fits.find(a => a.id === previous) ?? fits.sort(storagePreference)[0]
  }

  /** Has the agent holding `copy` remove it (as a one-artifact gc, so it also frees its chunks). */
  private drop (copy: Copy): void {
    const agent = this.registry.get(copy.agentId)
    if (agent?.connected !== true) return
    agent.send({ type: 'gc', requestId: `ckdrop-${copy.digest.slice(7, 19)}`, drop: [copy.digest], graceMs: 0, done: true })
  }
}
