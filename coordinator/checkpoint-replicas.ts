// A second copy of each step's newest checkpoint save, on another agent. A save held only by the
// agent that made it is lost with that machine, which is exactly when it is needed. After a save
// reaches the coordinator, one other agent pulls it from the agent that made it (the same agent
// as for the step's previous save when it can, so that only chunks that changed cross the wire),
// then drops the copy of the previous save it held. One copy per step is in flight at a time: a
// save that arrives meanwhile is copied next, and any save between the two is skipped.

import type { Logger } from 'pino'
import { randomBytes } from 'node:crypto'
import { CHECKPOINT_SWEEP_BYTES, CHECKPOINT_SWEEP_MS, HOLDINGS_BATCH, type AgentMessage } from '../src/protocol/messages.js'
import { DISK_SPARE_BYTES } from '../src/scheduler/index.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { AgentReplies } from './agent-replies.js'
import type { AgentRegistry } from './agents.js'
import { storagePreference } from './uploads.js'

type Fetched = Extract<AgentMessage, { type: 'fetched' }>

interface Copy { agentId: string, digest: Digest, bytes: number }

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
  /** Copies to be dropped, by agent, until there are enough for a sweep (see drop). */
  private readonly drops = new Map<string, { digests: Digest[], bytes: number, timer?: NodeJS.Timeout }>()

  constructor (private readonly registry: AgentRegistry, private readonly log: Logger) {}

  /**
   * A new save of the step `key`'s checkpoint, held by agent `source`. `earlier`: the step's
   * saves before it, newest first, as its run record has them.
   */
  saved (key: string, ref: ArtifactRef, source: string, earlier: ArtifactRef[] = []): void {
    let entry = this.steps.get(key)
    if (entry === undefined) {
      // After a coordinator restart this bookkeeping is gone, but the agents said what they hold:
      // the copy of an earlier save is found there, so that the same agent takes the new one
      // (only the chunks that changed cross the wire) and then drops the old copy.
      entry = { copying: false, ...this.existingCopy(earlier, source) }
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

  /** The run is over: its steps make no more saves; the copies of those that did not succeed stay, until gc. */
  runOver (runId: string): void {
    for (const key of this.steps.keys()) if (key.startsWith(`${runId}/`)) this.done(key, { drop: false })
  }

  onFetched (agentId: string, msg: Fetched): void {
    this.replies.settle(agentId, msg.requestId, msg)
  }

  agentGone (agentId: string): void {
    this.replies.agentGone(agentId, () => new Error('the agent copying a checkpoint save disconnected'))
  }

  close (): void {
    this.stopping.abort()
    for (const pending of this.drops.values()) if (pending.timer !== undefined) clearTimeout(pending.timer)
    this.drops.clear()
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
    entry.current = { agentId: holder, digest: ref.digest, bytes: ref.size }
    // Finished meanwhile: done() dropped what was current then, and this copy is not needed.
    if (this.steps.get(key) !== entry) this.drop(entry.current)
    if (previous !== undefined && previous.digest !== ref.digest) this.drop(previous)
  }

  private existingCopy (earlier: ArtifactRef[], source: string): { current?: Copy } {
    for (const ref of earlier) {
      const holder = this.registry.holdersOf(ref.digest).find(h => h !== source && this.registry.get(h)?.connected === true)
      if (holder !== undefined) return { current: { agentId: holder, digest: ref.digest, bytes: ref.size } }
    }
    return {}
  }

  /** The agent to keep a copy: the previous copy's holder when it still has room, else the preferred one. */
  private target (previous: string | undefined, source: string, bytes: number): ReturnType<AgentRegistry['get']> {
    const fits = this.registry.connected().filter(a => a.id !== source && !a.draining && a.capabilities.diskFree >= bytes + DISK_SPARE_BYTES)
    return fits.find(a => a.id === previous) ?? fits.sort(storagePreference)[0]
  }

  /**
   * Has the agent holding `copy` remove it, as a gc of the copies it was told to drop so far: the
   * gc sweeps its whole store, so it is asked for once CHECKPOINT_SWEEP_BYTES of copies are to go,
   * or CHECKPOINT_SWEEP_MS after the first of them.
   */
  private drop (copy: Copy): void {
    let pending = this.drops.get(copy.agentId)
    if (pending === undefined) {
      pending = { digests: [], bytes: 0 }
      this.drops.set(copy.agentId, pending)
    }
    pending.digests.push(copy.digest)
    pending.bytes += copy.bytes
    if (pending.bytes >= CHECKPOINT_SWEEP_BYTES) this.flushDrops(copy.agentId)
    else if (pending.timer === undefined) {
      pending.timer = setTimeout(() => { this.flushDrops(copy.agentId) }, CHECKPOINT_SWEEP_MS)
      pending.timer.unref()
    }
  }

  private flushDrops (agentId: string): void {
    const pending = this.drops.get(agentId)
    if (pending === undefined) return
    this.drops.delete(agentId)
    if (pending.timer !== undefined) clearTimeout(pending.timer)
    const agent = this.registry.get(agentId)
    // An agent away now keeps them until a gc: a copy nothing refers to is garbage like any other.
    if (agent?.connected !== true) return
    for (let i = 0; i < pending.digests.length; i += HOLDINGS_BATCH) {
      const drop = pending.digests.slice(i, i + HOLDINGS_BATCH)
      agent.send({ type: 'gc', requestId: `ckdrop-${randomBytes(6).toString('hex')}`, drop, graceMs: 0, done: true })
    }
  }
}
