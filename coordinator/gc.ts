// Garbage collection across the mesh. Only the coordinator knows what is still referenced (the
// kept runs' inputs, code, outputs and logs, and their reuse entries); only each agent can delete
// from its store. So the coordinator works out, per connected agent, which of the artifacts it
// holds nothing references any more, and the agent removes them (keeping what it made in the
// last GC_GRACE_MS, which the coordinator may not have heard of yet) and reports its holdings.

import type { Logger } from 'pino'
import type { GcOptions, MeshGcReport } from '../src/client/api.js'
import { PipemeshError, fromWireError } from '../src/errors.js'
import { GC_GRACE_MS, HOLDINGS_BATCH, type AgentMessage } from '../src/protocol/messages.js'
import type { StepRecord, SubmissionArtifacts } from '../src/run/types.js'
import type { Digest } from '../src/store/types.js'
import type { AgentRegistry, AgentSession } from './agents.js'
import { AgentReplies } from './agent-replies.js'

type Collected = Extract<AgentMessage, { type: 'collected' }>
type AgentReport = MeshGcReport['agents'][number]

/** Adds what one run references to `into`: its inputs, code, environments, outputs, logs and checkpoint saves. */
export function addRunReferences (into: Set<Digest>, artifacts: SubmissionArtifacts, steps: Iterable<StepRecord>): void {
  for (const ref of Object.values(artifacts.inputs)) into.add(ref.digest)
  for (const code of Object.values(artifacts.code)) into.add(code.ref.digest)
  for (const env of Object.values(artifacts.environments)) into.add(env.files.digest)
  for (const step of steps) {
    for (const ref of Object.values(step.outputs)) into.add(ref.digest)
    for (const attempt of step.attempts) if (attempt.log !== undefined) into.add(attempt.log.digest)
    // A step that succeeded has no use for its saves; one that did not may yet resume from them.
    if (step.checkpoint !== undefined && step.status !== 'succeeded' && step.status !== 'reused') {
      into.add(step.checkpoint.ref.digest)
      if (step.checkpoint.older !== undefined) into.add(step.checkpoint.older.ref.digest)
    }
  }
}

export class GcBroker {
  private readonly replies = new AgentReplies<Collected>('gc')

  constructor (private readonly registry: AgentRegistry, private readonly log: Logger) {}

  /**
   * Has every connected agent drop what it holds outside `keep`. The drop lists are worked out
   * here, synchronously, from the holdings as they stand: the caller must have put in `keep`
   * everything referenced up to this moment.
   */
  async collect (keep: Set<Digest>, options: GcOptions = {}): Promise<Pick<MeshGcReport, 'agents' | 'skipped'>> {
    const connected = this.registry.connected()
    const skipped = this.registry.all().filter(a => !a.connected).map(a => a.name)
    const plans = connected.map(agent => ({ agent, drop: this.registry.heldBy(agent.id).filter(d => !keep.has(d)) }))
    const graceMs = options.graceMs ?? GC_GRACE_MS
    const agents = await Promise.all(plans.map(async ({ agent, drop }) => await this.collectOn(agent, drop, graceMs, options.signal)))
    return { agents, skipped }
  }

  onCollected (agentId: string, msg: Collected): void {
    this.replies.settle(agentId, msg.requestId, msg)
  }

  /** An agent went away: its collection is reported as not done. */
  agentGone (agentId: string): void {
    this.replies.agentGone(agentId, () => new PipemeshError('UNREACHABLE', 'the agent disconnected during the collection', { retryable: true }))
  }

  private async collectOn (agent: AgentSession, drop: Digest[], graceMs: number, signal: AbortSignal | undefined): Promise<AgentReport> {
    const base = { agentId: agent.id, agent: agent.name }
    const { requestId, reply: done } = this.replies.expect(agent.id, signal, () => new PipemeshError('CANCELLED', 'the client went away during the collection'))
    this.log.info({ agentId: agent.id, artifacts: drop.length }, 'asking an agent to drop unreferenced artifacts')
    // At least one message, so that an agent with nothing to drop still sweeps its orphans.
    for (let i = 0; i === 0 || i < drop.length; i += HOLDINGS_BATCH) {
      agent.send({ type: 'gc', requestId, drop: drop.slice(i, i + HOLDINGS_BATCH), graceMs, done: i + HOLDINGS_BATCH >= drop.length })
    }
    try {
      const reply = await done
      if (reply.error !== undefined) throw fromWireError(reply.error)
      return { ...base, removedArtifacts: reply.removedArtifacts, removedChunks: reply.removedChunks, removedEnvironments: reply.removedEnvironments, freedBytes: reply.freedBytes }
    } catch (err) {
      if (signal?.aborted === true) throw err
      return { ...base, removedArtifacts: 0, removedChunks: 0, removedEnvironments: 0, freedBytes: 0, error: (err as Error).message }
    }
  }
}
