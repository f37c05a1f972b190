// The run manager: drives every active run's DAG. It decides, step by step, whether to reuse an
// earlier execution (fingerprint match with outputs still held), to skip (a dependency failed),
// or to queue the step for placement; it places queued steps on agents, records attempts, and
// reacts to results, lost agents and cancellation. All state changes go through one serialized
// queue, so handlers never interleave; durable writes go to CoordinatorDb in batches.

import { randomBytes } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Logger } from 'pino'
import { PipemeshError, headline, type WireError } from '../src/errors.js'
import { resolveCommand } from '../src/spec/placeholders.js'
import { topologicalOrder, stepDependencies } from '../src/dag.js'
import { computeFingerprint, FINGERPRINT_SCHEME, type FingerprintParts } from '../src/fingerprint.js'
import { placeStep, allocate, release } from '../src/scheduler/index.js'
import type { AgentView, CandidateReport } from '../src/scheduler/types.js'
import type { Pipeline, StepSpec } from '../src/spec/types.js'
import { CHECKPOINT_REVISION, CHECKPOINT_SOURCE, CODE_SOURCE, ENVIRONMENT_SOURCE, type AgentMessage } from '../src/protocol/messages.js'
import type { AttemptResult, Task } from '../src/protocol/task.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import {
  DONE_STEP_STATUSES, PLACING_REASON, TERMINAL_STEP_STATUSES,
  type AttemptRecord, type AttemptSummary, type RunEvent, type RunRecord, type RunSummary, type StepRecord, type StepSummary, type Submission
} from '../src/run/types.js'
import type { RunListEntry } from '../src/client/api.js'
import { formatDuration } from '../src/util/units.js'
import type { CoordinatorDb } from './db.js'
import type { AgentRegistry } from './agents.js'
import { checkContent, type ContentVerdict } from './content-check.js'
import { addRunReferences } from './gc.js'
import type { CheckpointReplicas } from './checkpoint-replicas.js'
import { resumableSave, resumingFrom, withSave, type Save } from './checkpoint-saves.js'

interface ActiveRun {
  record: RunRecord
  pipeline: Pipeline
  steps: Map<string, StepRecord>
  pending: Set<string>
  /** Steps whose status is 'queued', in the order they became so: what dispatch looks at. */
  queued: Set<string>
  /** How many queued steps have each placement key (see placementKey): lets dispatch stop early. */
  queuedByKey: Map<string, number>
  /**
   * Per pending step: its dependencies, and how many of them (in that order) are known done.
   * advance() resumes from there, so a join waiting on 500 steps is not rescanned each time one
   * of them finishes (that made a fan-out quadratic). Cleared whenever a done step stops being
   * done (its lost output is made again).
   */
  readiness: Map<string, { deps: StepRecord[], done: number }>
  /** Set once a step of the run failed, was skipped or cancelled: only then can a dependency block. */
  blocked: boolean
  /** Steps not in a terminal status: the run is over when none is left. */
  unfinished: number
  timer?: NodeJS.Timeout
}

interface AttemptIndex {
  runId: string
  stepId: string
  agentId: string
  /** False for attempts recovered after a coordinator restart until their agent reconnects. */
  allocated: boolean
}

/**
 * Lost attempts (agent died, inputs could not be had) retried beyond the step's own retries before
 * giving up: enough to ride out agents restarting, few enough that a step that kills its agent
 * every time ends.
 */
const MAX_LOST_ATTEMPTS = 5
/** Times a step is rerun because outputs it made were lost with their holders, before the reader fails. */
const MAX_REBUILDS = 5
/** Error codes of an attempt that never ran its command because its content could not be had. */
const LOST_INPUT_CODES = new Set(['MISSING_CONTENT', 'CORRUPT_CONTENT'])

export interface RunManagerInit {
  db: CoordinatorDb
  agents: AgentRegistry
  logger: Logger
  /** The agents' lease: after a restart, how long agents may take to reconnect and report what they hold. */
  leaseMs?: number
  /** Keeps a second copy of each step's newest checkpoint save on another agent. */
  replicas?: CheckpointReplicas
}

/** The channel of `events` that carries run events alone ('event' carries every event). */
export const RUN_EVENT = 'run'

export class RunManager {
  readonly events = new EventEmitter()
  private readonly db: CoordinatorDb
  private readonly agents: AgentRegistry
  private readonly log: Logger
  private readonly active = new Map<string, ActiveRun>()
  private readonly attempts = new Map<string, AttemptIndex>()
  private queue: Promise<void> = Promise.resolve()
  private retryTimer: NodeJS.Timeout | undefined
  private logSeq = new Map<string, number>()
  private closed = false
  private readonly leaseMs: number
  private readonly replicas: CheckpointReplicas | undefined
  /** Set by recover(): until then, content nobody has announced yet is not presumed lost. */
  private graceUntil = 0

  constructor (init: RunManagerInit) {
    this.db = init.db
    this.agents = init.agents
    this.log = init.logger
    this.leaseMs = init.leaseMs ?? 15_000
    this.replicas = init.replicas
    this.events.setMaxListeners(0)
  }

  // --- entry points (each serialized) ---

  async submit (submission: Submission, options: { resume?: boolean } = {}): Promise<RunSummary> {
    return await this.serialize(async () => {
      const pipeline = submission.pipeline
      const order = topologicalOrder(pipeline)
      const now = Date.now()
      const record: RunRecord = {
        id: newRunId(now),
        pipeline: pipeline.name,
        status: 'running',
        createdAt: now,
        params: pipeline.params,
        order,
        submission,
        ...(options.resume === false ? { fresh: true } : {})
      }
      const run: ActiveRun = { record, pipeline, steps: new Map(), pending: new Set(order), queued: new Set(), queuedByKey: new Map(), readiness: new Map(), blocked: false, unfinished: order.length }
      for (const id of order) {
        run.steps.set(id, { runId: record.id, id, status: 'pending', attempts: [], outputs: {} })
      }
      this.active.set(record.id, run)
      this.db.putSubmission(record.id, submission)
      this.db.putRun(record)
      for (const step of run.steps.values()) this.db.putStep(step)
      this.armRunTimeout(run)
      this.log.info({ runId: record.id, pipeline: pipeline.name, steps: order.length }, 'run submitted')
      this.emit({ type: 'run', runId: record.id, status: 'running', at: now })
      await this.advance(run)
      // A run whose every step was reused is over already: say so in the reply.
      this.finishIfDone(run)
      const summary = this.summarize(run.record, [...run.steps.values()])
      this.dispatch()
      // A run id handed to a client survives a crash right after.
      await this.db.flush()
      return summary
    })
  }

  async cancel (runId: string, reason = 'cancelled by user'): Promise<RunSummary> {
    return await this.serialize(async () => {
      const run = this.active.get(runId)
      if (run === undefined) {
        const summary = await this.getRun(runId)
        if (summary === undefined) throw new PipemeshError('NOT_FOUND', `no run with id ${runId}`)
        return summary
      }
      run.record.cancelRequested = true
      run.record.error = reason
      for (const step of run.steps.values()) {
        if (step.status === 'pending' || step.status === 'queued') {
          this.setStep(run, step, 'cancelled', reason)
          run.pending.delete(step.id)
        } else if (step.status === 'running') {
          const attempt = step.attempts.at(-1)
          if (attempt !== undefined) this.agents.get(attempt.agentId)?.send({ type: 'cancel', attemptId: attempt.id, reason })
        }
      }
      this.db.putRun(run.record)
      this.finishIfDone(run)
      await this.db.flush()
      return this.summarize(run.record, [...run.steps.values()])
    })
  }

  attemptStarted (agentId: string, attemptId: string, pid: number): void {
    void this.serialize(async () => {
      const found = this.lookupAttempt(agentId, attemptId)
      if (found === undefined) return
      found.attempt.pid = pid
      this.db.putStep(found.step)
    })
  }

  /** Adds everything the runs in progress reference right now to `into` (see gc.ts). */
  addLiveReferences (into: Set<Digest>): void {
    for (const run of this.active.values()) addRunReferences(into, run.record.submission.artifacts, run.steps.values())
  }

  attemptFinished (agentId: string, result: AttemptResult): void {
    void this.serialize(async () => {
      // What the attempt stored is held by its agent whatever became of the attempt.
      const produced = Object.values(result.outputs)
      if (result.log !== undefined) produced.push(result.log)
      if (result.checkpoint !== undefined) produced.push(result.checkpoint)
      if (produced.length > 0) this.agents.addHoldings(agentId, produced)
      const found = this.lookupAttempt(agentId, result.attemptId)
      if (found === undefined) {
        // Fencing: a result for an attempt we gave up on (lost lease, cancelled run) is dropped.
        this.log.warn({ agentId, attemptId: result.attemptId }, 'discarding result of an attempt that is no longer current')
        this.agents.get(agentId)?.send({ type: 'forget', attemptIds: [result.attemptId] })
        return
      }
      const { run, step, attempt } = found
      const allocated = this.attempts.get(attempt.id)?.allocated === true
      this.attempts.delete(attempt.id)
      this.logSeq.delete(attempt.id)
      if (allocated) this.releaseAgent(agentId, step, attempt)
      attempt.state = result.status
      attempt.exitCode = result.exitCode
      attempt.finishedAt = result.finishedAt
      if (result.error !== undefined) attempt.error = result.error
      if (result.log !== undefined) attempt.log = result.log
      if (result.checkpoint !== undefined) this.recordCheckpoint(run, step, attempt, result.checkpoint, result.finishedAt)
      if (result.status === 'succeeded') {
        this.succeed(run, step, result.outputs)
      } else if (result.status === 'cancelled' && run.record.cancelRequested === true) {
        this.setStep(run, step, 'cancelled', run.record.error ?? 'cancelled')
      } else if (result.status === 'cancelled') {
        // The agent handed the step back (shutting down): run it elsewhere.
        this.requeue(run, step, `attempt ${attempt.number} was handed back by agent ${attempt.agentName}`, 0)
      } else if (result.exitCode === null && LOST_INPUT_CODES.has(result.error?.code ?? '')) {
        // Not the step's fault: what it reads could not be had. Dispatch checks who still holds
        // it, and reruns its producer if nobody does.
        this.lostInput(run, step, attempt, result.error?.message ?? 'its inputs could not be fetched')
      } else {
        this.failOrRetry(run, step, attempt, result.error)
      }
      await this.advance(run)
      this.finishIfDone(run)
      this.dispatch()
    })
  }

  /** A save of a running attempt's checkpoint directory: the newest one is what a next attempt resumes from. */
  attemptCheckpoint (agentId: string, attemptId: string, ref: ArtifactRef, at: number): void {
    void this.serialize(async () => {
      this.agents.addHoldings(agentId, [ref])
      const found = this.lookupAttempt(agentId, attemptId)
      if (found === undefined) return
      this.recordCheckpoint(found.run, found.step, found.attempt, ref, at)
    })
  }

  /** Records the step's newest save (it is what a next attempt resumes from) and has it copied to a second agent. */
  private recordCheckpoint (run: ActiveRun, step: StepRecord, attempt: AttemptRecord, ref: ArtifactRef, at: number): void {
    if (run.pipeline.steps[step.id]?.checkpoint?.copy !== false) {
      const earlier = [step.checkpoint, step.checkpoint?.older].flatMap(c => c === undefined ? [] : [c.ref])
      this.replicas?.saved(`${run.record.id}/${step.id}`, ref, attempt.agentId, earlier)
    }
    const saved = withSave(step.checkpoint, { ref, runId: run.record.id, stepId: step.id, attempt: attempt.number, agentName: attempt.agentName, at })
    step.checkpoint = saved
    this.db.putStep(step)
    if (step.fingerprint !== undefined) this.db.putCheckpoint(step.fingerprint, saved)
    this.log.debug({ runId: run.record.id, step: step.id, attempt: attempt.number, digest: ref.digest, bytes: ref.size }, 'checkpoint saved')
  }

  attemptLog (agentId: string, attemptId: string, lines: Array<{ t: number, stream: 'stdout' | 'stderr', line: string }>): void {
    const index = this.attempts.get(attemptId)
    if (index === undefined || index.agentId !== agentId) return
    const seq = (this.logSeq.get(attemptId) ?? 0) + 1
    this.logSeq.set(attemptId, seq)
    this.db.appendLog(attemptId, seq, lines)
    const step = this.active.get(index.runId)?.steps.get(index.stepId)
    this.emit({ type: 'log', runId: index.runId, stepId: index.stepId, attempt: step?.attempts.at(-1)?.number ?? 0, seq, lines })
  }

  /** Progress of an input an attempt's agent is fetching: passed on to whoever follows the run. */
  attemptFetching (agentId: string, progress: Extract<AgentMessage, { type: 'fetching' }>): void {
    const { type: _, attemptId, input, ...moving } = progress
    const where = this.followed(agentId, attemptId)
    if (where !== undefined) this.emit({ type: 'fetch', ...where, input, ...moving, at: Date.now() })
  }

  /** Progress of an output an attempt's agent is storing: passed on like attemptFetching's. */
  attemptStoring (agentId: string, progress: Extract<AgentMessage, { type: 'storing' }>): void {
    const { type: _, attemptId, output, ...moving } = progress
    const where = this.followed(agentId, attemptId)
    if (where !== undefined) this.emit({ type: 'store', ...where, output, ...moving, at: Date.now() })
  }

  /** The run, step and attempt number of `agentId`'s attempt, while anyone follows runs. */
  private followed (agentId: string, attemptId: string): { runId: string, stepId: string, attempt: number } | undefined {
    const index = this.attempts.get(attemptId)
    if (index === undefined || index.agentId !== agentId || this.events.listenerCount('event') === 0) return undefined
    const step = this.active.get(index.runId)?.steps.get(index.stepId)
    return { runId: index.runId, stepId: index.stepId, attempt: step?.attempts.at(-1)?.number ?? 0 }
  }

  /** Capacity changed (an agent connected or freed up): try to place queued steps. */
  capacityChanged (): void {
    void this.serialize(async () => { this.dispatch() })
  }

  /**
   * An agent is gone for good (its lease expired): its running attempts are lost and rescheduled,
   * and its holdings no longer count.
   */
  agentLost (agentId: string, why: string): void {
    void this.serialize(async () => {
      for (const [attemptId, index] of [...this.attempts]) {
        if (index.agentId === agentId) this.loseAttempt(attemptId, `agent was lost: ${why}`)
      }
      // An agent that came back meanwhile keeps its new session; its hello reconciles attempts.
      if (this.agents.get(agentId)?.connected !== true) this.agents.remove(agentId)
      for (const run of this.active.values()) {
        await this.advance(run)
        this.finishIfDone(run)
      }
      this.dispatch()
    })
  }

  /** Gives up on an attempt whose agent is gone; its step runs again elsewhere. */
  private loseAttempt (attemptId: string, why: string): void {
    const index = this.attempts.get(attemptId)
    this.attempts.delete(attemptId)
    this.logSeq.delete(attemptId)
    if (index === undefined) return
    const run = this.active.get(index.runId)
    const step = run?.steps.get(index.stepId)
    const attempt = step?.attempts.find(a => a.id === attemptId)
    if (run === undefined || step === undefined || attempt === undefined) return
    if (index.allocated) this.releaseAgent(index.agentId, step, attempt)
    attempt.state = 'lost'
    attempt.finishedAt = Date.now()
    attempt.error = { code: 'UNREACHABLE', message: `attempt ${attempt.number} on ${attempt.agentName}: ${why}`, retryable: true }
    if (run.record.cancelRequested === true) {
      this.setStep(run, step, 'cancelled', run.record.error ?? 'cancelled')
      return
    }
    const lost = step.attempts.filter(a => a.state === 'lost').length
    if (lost > MAX_LOST_ATTEMPTS) {
      this.setStep(run, step, 'failed', `lost ${lost} attempts to vanished agents or unavailable inputs; giving up`)
    } else {
      this.requeue(run, step, `attempt ${attempt.number} on ${attempt.agentName} was lost (${why}); running it again`, 0)
    }
  }

  /** An attempt could not get its inputs: it does not count as a failure of the step. */
  private lostInput (run: ActiveRun, step: StepRecord, attempt: AttemptRecord, message: string): void {
    attempt.state = 'lost'
    if (run.record.cancelRequested === true) {
      this.setStep(run, step, 'cancelled', run.record.error ?? 'cancelled')
      return
    }
    const lost = step.attempts.filter(a => a.state === 'lost').length
    if (lost > MAX_LOST_ATTEMPTS) {
      step.finishedAt = Date.now()
      if (attempt.error !== undefined) step.error = attempt.error
      this.setStep(run, step, 'failed', `lost ${lost} attempts to vanished agents or unavailable inputs; giving up. Last: ${message}`)
      return
    }
    // A short pause lets the holders that failed report what they lost before the next try.
    const delay = Math.min(250 * 2 ** (lost - 1), 5_000)
    this.requeue(run, step, `attempt ${attempt.number} on ${attempt.agentName} could not get its inputs (${headline(message)}); trying again`, delay)
  }

  /**
   * Reloads runs that were running when the coordinator stopped. Their running attempts are kept
   * until the agent reconnects and says whether it still has them (adopted) or not (rerun).
   */
  async recover (): Promise<string[]> {
    const recovered: string[] = []
    for await (const record of this.db.unfinishedRuns()) {
      const steps = await this.db.listSteps(record.id)
      const run: ActiveRun = { record, pipeline: record.submission.pipeline, steps: new Map(steps.map(s => [s.id, s])), pending: new Set(), queued: new Set(), queuedByKey: new Map(), readiness: new Map(), blocked: true, unfinished: steps.filter(s => !TERMINAL_STEP_STATUSES.has(s.status)).length }
      for (const step of run.steps.values()) {
        if (step.status === 'pending') run.pending.add(step.id)
        if (step.status !== 'running') continue
        const attempt = step.attempts.at(-1)
        if (attempt?.state === 'running') {
          this.attempts.set(attempt.id, { runId: record.id, stepId: step.id, agentId: attempt.agentId, allocated: false })
          // An adopted attempt's further log lines go after those already stored.
          const seq = await this.db.lastLogSeq(attempt.id)
          if (seq > 0) this.logSeq.set(attempt.id, seq)
        } else {
          step.status = 'queued'
        }
      }
      for (const step of run.steps.values()) if (step.status === 'queued') setQueued(run, step.id, true)
      this.active.set(record.id, run)
      this.armRunTimeout(run)
      recovered.push(record.id)
      this.log.info({ runId: record.id }, 'recovered unfinished run')
    }
    // The mesh's holdings are not persisted: agents announce them again as they reconnect.
    if (recovered.length > 0) this.graceUntil = Date.now() + this.leaseMs
    for (const run of this.active.values()) await this.advance(run)
    return recovered
  }

  /** Agents that the coordinator expects to run some attempt. */
  agentsWithAttempts (): string[] {
    return [...new Set([...this.attempts.values()].map(i => i.agentId))]
  }

  /**
   * An agent (re)connected and listed the attempts it still runs or has results for. Those the
   * coordinator also expects are adopted; those it expects but the agent lacks are lost.
   */
  agentReconnected (agentId: string, running: string[]): void {
    void this.serialize(async () => {
      const reported = new Set(running)
      const agent = this.agents.get(agentId)
      const lostOnes: string[] = []
      for (const [attemptId, index] of this.attempts) {
        if (index.agentId !== agentId) continue
        if (!reported.has(attemptId)) { lostOnes.push(attemptId); continue }
        if (!index.allocated && agent !== undefined) {
          const step = this.active.get(index.runId)?.steps.get(index.stepId)
          const spec = this.active.get(index.runId)?.pipeline.steps[index.stepId]
          const attempt = step?.attempts.find(a => a.id === attemptId)
          if (spec !== undefined && attempt !== undefined) {
            agent.view = allocate(agent.view, spec.resources, attempt.gpus)
            agent.attempts.add(attemptId)
            index.allocated = true
          }
        }
        // Cancelled while the coordinator was down (or before its cancel reached the agent).
        const run = this.active.get(index.runId)
        if (run?.record.cancelRequested === true) agent?.send({ type: 'cancel', attemptId, reason: run.record.error ?? 'the run was cancelled' })
      }
      const unknown = running.filter(id => !this.attempts.has(id))
      if (unknown.length > 0) {
        // Fencing: attempts given up on while the agent was away; their results will be dropped.
        this.log.warn({ agentId, attemptIds: unknown }, 'agent reports attempts that are no longer current; telling it to drop them')
        this.agents.get(agentId)?.send({ type: 'forget', attemptIds: unknown })
      }
      for (const attemptId of lostOnes) this.loseAttempt(attemptId, 'the agent reconnected without it')
      for (const run of this.active.values()) { await this.advance(run); this.finishIfDone(run) }
      this.dispatch()
    })
  }

  // --- queries ---

  async getRun (runId: string): Promise<RunSummary | undefined> {
    const run = this.active.get(runId)
    if (run !== undefined) {
      const summary = this.summarize(run.record, [...run.steps.values()])
      // What a client is told has happened is on disk: a restarted coordinator will not contradict it.
      await this.db.flush()
      return summary
    }
    await this.db.flush()
    const record = await this.db.getRun(runId)
    if (record === undefined) return undefined
    return this.summarize(record, await this.db.listSteps(runId))
  }

  async getStep (runId: string, stepId: string): Promise<{ run: RunRecord, step: StepRecord, steps: StepRecord[] } | undefined> {
    const run = this.active.get(runId)
    if (run !== undefined) {
      const step = run.steps.get(stepId)
      return step === undefined ? undefined : { run: run.record, step, steps: [...run.steps.values()] }
    }
    await this.db.flush()
    const record = await this.db.getRun(runId)
    if (record === undefined) return undefined
    const steps = await this.db.listSteps(runId)
    const step = steps.find(s => s.id === stepId)
    return step === undefined ? undefined : { run: record, step, steps }
  }

  async listRuns (limit = 50): Promise<RunListEntry[]> {
    const out: RunListEntry[] = []
    for await (const header of this.db.listRunHeaders()) {
      const record = this.active.get(header.id)?.record ?? header
      const entry: RunListEntry = { runId: record.id, pipeline: record.pipeline, status: record.status, createdAt: record.createdAt, steps: record.order.length }
      if (record.finishedAt !== undefined) entry.finishedAt = record.finishedAt
      out.push(entry)
    }
    out.sort((a, b) => b.createdAt - a.createdAt)
    return out.slice(0, limit)
  }

  isActive (runId: string): boolean {
    return this.active.has(runId)
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    for (const run of this.active.values()) if (run.timer !== undefined) clearTimeout(run.timer)
    await this.queue
    await this.db.flush()
  }

  // --- the state machine ---

  /** Moves ready steps forward: reuse, skip or queue. One pass in topological order suffices. */
  private async advance (run: ActiveRun): Promise<void> {
    if (run.record.cancelRequested === true) return
    // In pipeline order, so that a step made ready (or reused) here is seen by its consumers in
    // the same pass.
    for (const id of inPipelineOrder(run)) {
      if (!run.pending.has(id)) continue
      const step = run.steps.get(id)!
      const spec = run.pipeline.steps[id]!
      let ready = run.readiness.get(id)
      if (ready === undefined) {
        ready = { deps: stepDependencies(spec).map(d => run.steps.get(d)!), done: 0 }
        run.readiness.set(id, ready)
      }
      const deps = ready.deps
      while (ready.done < deps.length && DONE_STEP_STATUSES.has(deps[ready.done]!.status)) ready.done++
      const blocked = run.blocked ? deps.find(d => TERMINAL_STEP_STATUSES.has(d.status) && !DONE_STEP_STATUSES.has(d.status)) : undefined
      if (blocked !== undefined) {
        run.pending.delete(id)
        run.readiness.delete(id)
        this.setStep(run, step, 'skipped', `dependency ${blocked.id} ${blocked.status}`)
        continue
      }
      if (ready.done < deps.length) continue
      run.pending.delete(id)
      run.readiness.delete(id)
      const parts = this.fingerprintParts(run, spec)
      step.fingerprintParts = parts
      step.fingerprint = computeFingerprint(parts)
      step.readyAt = Date.now()
      if (spec.cache) {
        const hit = await this.db.getReuse(step.fingerprint)
        if (hit !== undefined && Object.values(hit.outputs).every(o => this.agents.isAvailable(o.digest)) &&
            spec.outputs.every(o => hit.outputs[o] !== undefined)) {
          step.outputs = hit.outputs
          step.reusedFrom = { runId: hit.runId, stepId: hit.stepId, at: hit.at }
          step.finishedAt = Date.now()
          this.setStep(run, step, 'reused', `fingerprint matched step ${hit.stepId} of run ${hit.runId}`)
          continue
        }
        if (hit !== undefined) step.reason = 'an earlier execution matched, but its outputs are no longer held by any connected agent'
      }
      if (spec.checkpoint !== undefined && step.checkpoint === undefined && run.record.fresh !== true) {
        // An earlier run of this very step (same fingerprint) that did not finish left a save.
        // Not one that is still running it: two runs would go on from the same state.
        const saved = await this.db.getCheckpoint(step.fingerprint)
        if (saved !== undefined && (saved.runId === run.record.id || !this.active.has(saved.runId))) step.checkpoint = saved
      }
      this.setStep(run, step, 'queued', step.reason ?? PLACING_REASON)
    }
  }

  private fingerprintParts (run: ActiveRun, spec: StepSpec): FingerprintParts {
    const { command, env, params } = resolveCommand(spec, run.pipeline.params)
    const artifacts = run.record.submission.artifacts
    const inputs: Record<string, Digest> = {}
    for (const [name, source] of Object.entries(spec.inputs)) {
      const ref = this.inputRef(run, source)
      inputs[name] = ref.digest
    }
    const code = artifacts.code[spec.id]
    return {
      command,
      env,
      code: { digest: code?.ref.digest ?? null, files: code?.files ?? {} },
      environment: spec.environment === undefined ? null : artifacts.environments[spec.environment]?.digest ?? null,
      inputs,
      outputs: [...spec.outputs],
      params,
      template: spec.command,
      scheme: FINGERPRINT_SCHEME
    }
  }

  private inputRef (run: ActiveRun, source: StepSpec['inputs'][string]): ArtifactRef {
    if (source.kind === 'pipeline') {
      const ref = run.record.submission.artifacts.inputs[source.input]
      if (ref === undefined) throw new PipemeshError('INTERNAL', `pipeline input ${source.input} was not uploaded`)
      return ref
    }
    const ref = run.steps.get(source.step)?.outputs[source.output]
    if (ref === undefined) throw new PipemeshError('INTERNAL', `output ${source.step}.${source.output} is not available`)
    return ref
  }

  /** Places queued steps of every active run, oldest run first, while agents have room. */
  private dispatch (): void {
    if (this.closed) return
    let agents = this.agents.views()
    const now = Date.now()
    let nextRetry = Infinity
    let again = false
    // Steps with identical requirements and no inputs get the same answer within one pass.
    const full = new Set<string>()
    const runs = [...this.active.values()].sort((a, b) => a.record.createdAt - b.record.createdAt)
    for (const run of runs) {
      if (run.record.cancelRequested === true) continue
      // Queued steps of this run whose placement key is full in this pass: once that is all of
      // them, the rest of the run is skipped (a 500-step fan-out was walked in full each time
      // one of its steps finished).
      let waitingOnFull = 0
      for (const key of full) waitingOnFull += run.queuedByKey.get(key) ?? 0
      for (const id of run.queued) {
        if (waitingOnFull >= run.queued.size) break
        const step = run.steps.get(id)!
        if (step.notBefore !== undefined && step.notBefore > now) { nextRetry = Math.min(nextRetry, step.notBefore); continue }
        const spec = run.pipeline.steps[id]!
        const key = placementKey(spec)
        if (key !== undefined && full.has(key)) continue
        const content = checkContent({ spec, steps: run.steps, artifacts: run.record.submission.artifacts, holders: this.holderView, now, graceUntil: this.graceUntil })
        if (content.kind !== 'ok') {
          if (content.kind === 'wait' && content.until !== undefined) nextRetry = Math.min(nextRetry, content.until)
          if (this.applyContentVerdict(run, step, content)) again = true
          continue
        }
        const inputs = content.inputs.map(i => ({ name: i.name, size: i.ref.size, holders: i.holders }))
        // The save a step resumes from is read like an input: an agent holding it has less to fetch.
        const resume = this.resumableCheckpoint(spec, step)
        if (resume !== undefined) inputs.push({ name: CHECKPOINT_SOURCE, size: resume.ref.size, holders: this.agents.holdersOf(resume.ref.digest) })
        const able = this.ableAgents(spec, agents)
        const placement = placeStep({ stepId: id, resources: spec.resources, inputs }, able)
        if (placement.kind !== 'placed' && able.length < agents.length) {
          // Agents too old for the step (it keeps a checkpoint directory) might fit: wait for them to be upgraded.
          const older = this.olderAgentsThatFit(spec, inputs, agents, able)
          if (older !== undefined) {
            if (step.reason !== older) this.setStep(run, step, 'queued', older)
            continue
          }
        }
        if (placement.kind === 'placed') {
          this.startAttempt(run, step, spec, placement.agentId, placement.gpus, placement.reason, placement.candidates)
          agents = this.agents.views()
        } else if (placement.kind === 'queued') {
          if (key !== undefined && !full.has(key)) {
            full.add(key)
            waitingOnFull += run.queuedByKey.get(key) ?? 0
          }
          if (step.reason !== placement.reason) this.setStep(run, step, 'queued', placement.reason)
        } else {
          const waitFor = this.awayAgentsThatFit(spec, inputs, agents)
          if (waitFor.length > 0) {
            const reason = `no connected agent can run it; waiting for ${waitFor.join(', ')} (disconnected, lease not yet expired) to come back`
            if (step.reason !== reason) this.setStep(run, step, 'queued', reason)
            continue
          }
          this.failStep(run, step, placement.reason, { code: 'UNSCHEDULABLE', message: `step ${id} cannot run on any connected agent: ${placement.reason}` })
        }
      }
    }
    if (nextRetry !== Infinity) this.armRetryTimer(nextRetry - now)
    // A producer queued again sits earlier in the order than the step that found its output lost.
    if (again) void this.serialize(async () => { this.dispatch() })
  }

  /** The agents whose pipemesh can run the step: for one that keeps a checkpoint directory, those that save it. */
  private ableAgents (spec: StepSpec, agents: AgentView[]): AgentView[] {
    if (spec.checkpoint === undefined) return agents
    return agents.filter(a => (this.agents.get(a.id)?.revision ?? 1) >= CHECKPOINT_REVISION)
  }

  /** Why the step waits, when only agents running an older pipemesh could run it; else undefined. */
  private olderAgentsThatFit (spec: StepSpec, inputs: Array<{ name: string, size: number, holders: string[] }>, agents: AgentView[], able: AgentView[]): string | undefined {
    const older = agents.filter(a => !able.includes(a))
    const placement = placeStep({ stepId: spec.id, resources: spec.resources, inputs }, older)
    if (placement.kind === 'unschedulable') return undefined
    const names = older.map(a => `${a.name} (${this.agents.get(a.id)?.version ?? 'unknown version'})`)
    return `waiting for an agent that can keep its checkpoint directory: ${names.join(', ')} ${names.length === 1 ? 'runs' : 'run'} an older pipemesh; upgrade ${names.length === 1 ? 'it' : 'them'}`
  }

  /** The save the step's next attempt starts from (see resumableSave), for a step that keeps a checkpoint directory. */
  private resumableCheckpoint (spec: StepSpec, step: StepRecord): Save | undefined {
    if (spec.checkpoint === undefined) return undefined
    return resumableSave(step, this.isAvailable)
  }

  private readonly isAvailable = (digest: Digest): boolean => this.agents.isAvailable(digest)

  private readonly holderView = {
    holdersOf: (digest: Digest) => this.agents.holdersOf(digest),
    awayHolders: (digest: Digest) => this.agents.awayHolders(digest),
    nameOf: (agentId: string) => this.agents.get(agentId)?.name ?? agentId
  }

  /** Names of disconnected agents (within their lease) that could run the step once back. */
  private awayAgentsThatFit (spec: StepSpec, inputs: Array<{ name: string, size: number, holders: string[] }>, connected: ReturnType<AgentRegistry['views']>): string[] {
    const away = this.agents.awayViews()
    if (away.length === 0) return []
    const ids = new Set(away.map(a => a.id))
    const later = placeStep({ stepId: spec.id, resources: spec.resources, inputs }, [...connected, ...away])
    return later.kind === 'queued' ? later.candidates.filter(c => c.verdict === 'busy' && ids.has(c.agentId)).map(c => c.name) : []
  }

  /** Acts on a step whose content is not all held by connected agents. True when a producer was queued again. */
  private applyContentVerdict (run: ActiveRun, step: StepRecord, verdict: Exclude<ContentVerdict, { kind: 'ok' }>): boolean {
    switch (verdict.kind) {
      case 'wait':
        if (step.reason !== verdict.reason) this.setStep(run, step, 'queued', verdict.reason)
        return false
      case 'pending':
        this.backToPending(run, step, verdict.reason)
        // Its producer may have failed already: advance skips it then.
        void this.serialize(async () => { await this.advance(run); this.finishIfDone(run) })
        return false
      case 'fail':
        this.failStep(run, step, verdict.reason, { code: 'MISSING_CONTENT', message: `step ${step.id}: ${verdict.reason}` })
        return false
      case 'rebuild': {
        const producer = run.steps.get(verdict.producer)!
        const made = producer.attempts.filter(a => a.state === 'succeeded').length
        if (made > MAX_REBUILDS) {
          this.failStep(run, step, `${verdict.reason}, and ${producer.id} has already made it ${made} times; giving up`, { code: 'MISSING_CONTENT', message: `step ${step.id}: ${verdict.reason}` })
          return false
        }
        this.log.warn({ runId: run.record.id, step: step.id, producer: producer.id, output: verdict.output }, 'input lost with its holders; rerunning its producer')
        delete producer.reusedFrom
        delete producer.finishedAt
        delete producer.notBefore
        producer.readyAt = Date.now()
        this.setStep(run, producer, 'queued', `running again: its output ${verdict.output}, needed by ${step.id}, was lost with the agents that held it`)
        this.backToPending(run, step, `waiting for ${producer.id} to make its lost output ${verdict.output} again`)
        return true
      }
    }
  }

  private backToPending (run: ActiveRun, step: StepRecord, reason: string): void {
    run.pending.add(step.id)
    delete step.notBefore
    this.setStep(run, step, 'pending', reason)
  }

  private failStep (run: ActiveRun, step: StepRecord, reason: string, error: WireError): void {
    step.error = error
    step.finishedAt = Date.now()
    this.setStep(run, step, 'failed', reason)
    void this.serialize(async () => { await this.advance(run); this.finishIfDone(run) })
  }

  private startAttempt (run: ActiveRun, step: StepRecord, spec: StepSpec, agentId: string, gpus: number[], reason: string, candidates: CandidateReport[]): void {
    const agent = this.agents.get(agentId)!
    agent.view = allocate(agent.view, spec.resources, gpus)
    const number = step.attempts.length + 1
    const attemptId = `${run.record.id}.${step.id}.${number}.${nextAttemptTag()}`
    const attempt: AttemptRecord = {
      id: attemptId, number, agentId, agentName: agent.name, state: 'running', exitCode: null, startedAt: Date.now(), gpus
    }
    step.attempts.push(attempt)
    step.placement = { agentId, agentName: agent.name, reason, candidates, at: attempt.startedAt }
    // From ready to placed (the first attempt's wait, or a retry's since its backoff ended).
    const since = step.notBefore ?? (number === 1 ? step.readyAt : undefined)
    if (since !== undefined) {
      step.placement.waited = { ms: Math.max(0, attempt.startedAt - since) }
      // The reason it waited for, if it did wait for something (not only to be placed).
      if (step.status === 'queued' && step.reason !== undefined && step.reason !== PLACING_REASON) step.placement.waited.reason = step.reason
    }
    step.startedAt ??= attempt.startedAt
    delete step.notBefore
    this.attempts.set(attemptId, { runId: run.record.id, stepId: step.id, agentId, allocated: true })
    agent.attempts.add(attemptId)
    const resume = this.resumableCheckpoint(spec, step)
    if (resume !== undefined) attempt.resumedFrom = resume
    const resuming = resume === undefined ? '' : resumingFrom(resume, run.record.id)
    this.setStep(run, step, 'running', `attempt ${number} on ${agent.name}${resuming}`)

    const artifacts = run.record.submission.artifacts
    const inputs: Record<string, ArtifactRef> = {}
    const sources: Record<string, ReturnType<AgentRegistry['addresses']>> = {}
    for (const [name, source] of Object.entries(spec.inputs)) {
      const ref = this.inputRef(run, source)
      inputs[name] = ref
      sources[name] = this.agents.addresses(this.agents.holdersOf(ref.digest).filter(h => h !== agentId))
    }
    const code = artifacts.code[spec.id]
    if (code !== undefined) sources[CODE_SOURCE] = this.agents.addresses(this.agents.holdersOf(code.ref.digest).filter(h => h !== agentId))
    const task: Task = {
      attemptId,
      runId: run.record.id,
      stepId: step.id,
      attempt: number,
      command: step.fingerprintParts!.command,
      inputs,
      outputs: [...spec.outputs],
      env: step.fingerprintParts!.env,
      gpus
    }
    if (code !== undefined) task.code = code.ref.digest
    if (spec.environment !== undefined) {
      const env = artifacts.environments[spec.environment]!
      const envSpec = run.pipeline.environments[spec.environment]!
      task.environment = { name: spec.environment, digest: env.digest, files: env.files.digest, setup: envSpec.setup }
      sources[ENVIRONMENT_SOURCE] = this.agents.addresses(this.agents.holdersOf(env.files.digest).filter(h => h !== agentId))
    }
    if (spec.timeoutMs !== undefined) task.timeoutMs = spec.timeoutMs
    if (spec.secrets.length > 0) task.secretNames = [...spec.secrets]
    if (spec.checkpoint !== undefined) {
      task.checkpoint = { path: spec.checkpoint.path, everyMs: spec.checkpoint.everyMs }
      if (resume !== undefined) {
        task.checkpoint.restore = resume.ref
        sources[CHECKPOINT_SOURCE] = this.agents.addresses(this.agents.holdersOf(resume.ref.digest).filter(h => h !== agentId))
      } else if (step.checkpoint !== undefined) {
        this.log.warn({ runId: run.record.id, step: step.id, digest: step.checkpoint.ref.digest }, 'no connected agent holds the step\'s last checkpoint save; it starts from an empty checkpoint directory')
      }
    }
    this.log.debug({ runId: run.record.id, step: step.id, agentId, attemptId }, 'dispatching attempt')
    agent.send({ type: 'task', task, sources })
  }

  private succeed (run: ActiveRun, step: StepRecord, outputs: Record<string, ArtifactRef>): void {
    step.outputs = outputs
    step.finishedAt = Date.now()
    delete step.error
    this.setStep(run, step, 'succeeded', undefined)
    const spec = run.pipeline.steps[step.id]!
    // Done: a later run of the same step is reused, or reruns from the start, never resumes.
    if (spec.checkpoint !== undefined && step.fingerprint !== undefined) this.db.deleteCheckpoint(step.fingerprint)
    if (spec.checkpoint !== undefined) this.replicas?.done(`${run.record.id}/${step.id}`, { drop: true })
    if (step.fingerprint !== undefined && step.fingerprintParts !== undefined) {
      if (spec.cache) this.db.putReuse({ fingerprint: step.fingerprint, outputs, runId: run.record.id, stepId: step.id, at: step.finishedAt })
      this.db.putHistory(run.pipeline.name, { runId: run.record.id, stepId: step.id, fingerprint: step.fingerprint, parts: step.fingerprintParts, at: step.finishedAt })
    }
  }

  private failOrRetry (run: ActiveRun, step: StepRecord, attempt: AttemptRecord, error: WireError | undefined): void {
    const spec = run.pipeline.steps[step.id]!
    const counted = step.attempts.filter(a => a.state === 'failed').length
    const nonRetryable = attempt.exitCode !== null && spec.retry.nonRetryableExitCodes.includes(attempt.exitCode)
    const message = error?.message ?? `attempt ${attempt.number} failed`
    if (!nonRetryable && counted <= spec.retry.max && run.record.cancelRequested !== true) {
      const base = spec.retry.backoffMs * 2 ** (counted - 1)
      const delay = Math.round(base * (0.5 + Math.random()))
      this.requeue(run, step, `attempt ${attempt.number} failed (${headline(message)}); retry ${counted} of ${spec.retry.max} in ${delay} ms`, delay)
      return
    }
    step.finishedAt = Date.now()
    if (error !== undefined) step.error = error
    const why = nonRetryable ? `exit code ${attempt.exitCode ?? ''} is marked non-retryable; ` : ''
    this.setStep(run, step, 'failed', `${why}${message}`)
  }

  private requeue (run: ActiveRun, step: StepRecord, reason: string, delayMs: number): void {
    if (delayMs > 0) step.notBefore = Date.now() + delayMs
    this.setStep(run, step, 'queued', reason)
  }

  private releaseAgent (agentId: string, step: StepRecord, attempt: AttemptRecord): void {
    const agent = this.agents.get(agentId)
    if (agent === undefined) return
    agent.attempts.delete(attempt.id)
    const spec = this.active.get(step.runId)?.pipeline.steps[step.id]
    if (spec !== undefined) agent.view = release(agent.view, spec.resources, attempt.gpus)
  }

  private finishIfDone (run: ActiveRun): void {
    // The count says when to look; the look is what decides (once per run, not per step).
    if (run.record.status !== 'running' || run.unfinished > 0) return
    const steps = [...run.steps.values()]
    if (!steps.every(s => TERMINAL_STEP_STATUSES.has(s.status))) return
    let status: RunRecord['status'] = 'succeeded'
    if (run.record.cancelRequested === true) status = 'cancelled'
    else if (steps.some(s => !DONE_STEP_STATUSES.has(s.status))) status = 'failed'
    run.record.status = status
    run.record.finishedAt = Date.now()
    if (status === 'failed' && run.record.error === undefined) {
      run.record.error = steps.filter(s => s.status === 'failed').map(s => `${s.id}: ${s.reason ?? 'failed'}`).join('; ')
    }
    if (run.timer !== undefined) clearTimeout(run.timer)
    // Saves of steps that did not succeed stay (a later run may resume from them) until gc.
    this.replicas?.runOver(run.record.id)
    this.db.putRun(run.record)
    this.active.delete(run.record.id)
    this.log.info({ runId: run.record.id, status }, 'run finished')
    this.emit({ type: 'run', runId: run.record.id, status, at: run.record.finishedAt })
  }

  private setStep (run: ActiveRun, step: StepRecord, status: StepRecord['status'], reason: string | undefined): void {
    if (DONE_STEP_STATUSES.has(step.status) && !DONE_STEP_STATUSES.has(status)) run.readiness.clear()
    run.unfinished += (TERMINAL_STEP_STATUSES.has(step.status) ? 1 : 0) - (TERMINAL_STEP_STATUSES.has(status) ? 1 : 0)
    if (status === 'skipped' || status === 'cancelled' || status === 'failed') run.blocked = true
    step.status = status
    setQueued(run, step.id, status === 'queued')
    if (reason === undefined) delete step.reason
    else step.reason = reason
    if (status === 'skipped' || status === 'cancelled' || status === 'failed') step.finishedAt ??= Date.now()
    this.db.putStep(step)
    // Nobody follows most runs (a CLI run or the live API does): skip building the summary then.
    if (this.events.listenerCount('event') > 0) this.emit({ type: 'step', runId: run.record.id, step: this.summarizeStep(step), at: Date.now() })
  }

  private lookupAttempt (agentId: string, attemptId: string): { run: ActiveRun, step: StepRecord, attempt: AttemptRecord } | undefined {
    const index = this.attempts.get(attemptId)
    if (index === undefined || index.agentId !== agentId) return undefined
    const run = this.active.get(index.runId)
    const step = run?.steps.get(index.stepId)
    const attempt = step?.attempts.find(a => a.id === attemptId)
    if (run === undefined || step === undefined || attempt === undefined) return undefined
    return { run, step, attempt }
  }

  /** The run-level timeout, counted from submission (so a restart does not extend it). */
  private armRunTimeout (run: ActiveRun): void {
    const limit = run.pipeline.timeoutMs
    if (limit === undefined) return
    const left = Math.max(0, run.record.createdAt + limit - Date.now())
    run.timer = setTimeout(() => { void this.cancel(run.record.id, `the run exceeded its timeout of ${formatDuration(limit)}; its running steps were stopped`) }, left)
    run.timer.unref()
  }

  private armRetryTimer (delayMs: number): void {
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer)
    this.retryTimer = setTimeout(() => { this.retryTimer = undefined; this.capacityChanged() }, Math.max(0, delayMs) + 5)
    this.retryTimer.unref()
  }

  private emit (event: RunEvent): void {
    this.events.emit('event', event)
    if (event.type === 'run') this.events.emit(RUN_EVENT, event)
  }

  private async serialize<T> (fn: () => Promise<T>): Promise<T> {
    const result = this.queue.then(fn)
    this.queue = result.then(() => {}, (err: unknown) => { this.log.error({ err }, 'run manager handler failed') })
    return await result
  }

  summarize (record: Omit<RunRecord, 'submission'>, steps: StepRecord[]): RunSummary {
    const byId = new Map(steps.map(s => [s.id, s]))
    const ordered = record.order.map(id => byId.get(id)).filter((s): s is StepRecord => s !== undefined)
    const summary: RunSummary = {
      runId: record.id,
      pipeline: record.pipeline,
      status: record.status,
      createdAt: record.createdAt,
      steps: ordered.map(s => this.summarizeStep(s))
    }
    if (record.finishedAt !== undefined) summary.finishedAt = record.finishedAt
    if (record.error !== undefined) summary.error = record.error
    return summary
  }

  private summarizeStep (s: StepRecord): StepSummary {
    const last = s.attempts.at(-1)
    const out: StepSummary = {
      id: s.id,
      status: s.status,
      fingerprint: s.fingerprint ?? null,
      attempts: s.attempts.length,
      agent: last?.agentName ?? null,
      exitCode: last?.exitCode ?? null,
      outputs: Object.fromEntries(Object.entries(s.outputs).map(([k, v]) => [k, v.digest]))
    }
    if (s.reason !== undefined) out.reason = s.reason
    if (s.startedAt !== undefined) out.startedAt = s.startedAt
    if (s.finishedAt !== undefined) out.finishedAt = s.finishedAt
    if (s.error !== undefined) out.error = s.error
    if (last?.resumedFrom !== undefined) out.resumedFrom = { attempt: last.resumedFrom.attempt, runId: last.resumedFrom.runId, at: last.resumedFrom.at }
    if (s.checkpoint !== undefined) {
      const c = s.checkpoint
      out.checkpoint = { digest: c.ref.digest, size: c.ref.size, runId: c.runId, attempt: c.attempt, agent: c.agentName, at: c.at }
    }
    if (s.attempts.length > 1) {
      out.history = s.attempts.map(a => {
        const h: AttemptSummary = { number: a.number, agent: a.agentName, state: a.state, exitCode: a.exitCode, durationMs: a.finishedAt === undefined ? null : a.finishedAt - a.startedAt }
        if (a.error !== undefined) h.error = headline(a.error.message)
        if (a.resumedFrom !== undefined) h.resumedFrom = { attempt: a.resumedFrom.attempt, runId: a.resumedFrom.runId, at: a.resumedFrom.at }
        return h
      })
    }
    return out
  }
}

const placementKeys = new WeakMap<StepSpec, string | null>()

/**
 * Steps with the same requirements and no inputs get the same placement answer within one
 * dispatch pass: once one of them is queued for lack of room, the rest are too. The key is cached
 * because a pass may look at hundreds of queued steps each time a step finishes.
 */
function placementKey (spec: StepSpec): string | undefined {
  let key = placementKeys.get(spec)
  if (key === undefined) {
    key = Object.keys(spec.inputs).length === 0 ? JSON.stringify(spec.resources) : null
    placementKeys.set(spec, key)
  }
  return key ?? undefined
}

/** Adds or removes a step from the run's queued set, keeping the count per placement key. */
function setQueued (run: ActiveRun, id: string, queued: boolean): void {
  if (queued === run.queued.has(id)) return
  if (queued) run.queued.add(id)
  else run.queued.delete(id)
  const key = placementKey(run.pipeline.steps[id]!)
  if (key === undefined) return
  const n = (run.queuedByKey.get(key) ?? 0) + (queued ? 1 : -1)
  if (n > 0) run.queuedByKey.set(key, n)
  else run.queuedByKey.delete(key)
}

/** The run's pending steps in pipeline (topological) order. */
function inPipelineOrder (run: ActiveRun): string[] {
  const ids = [...run.pending]
  if (ids.length > 1) {
    const position = positions(run.record)
    ids.sort((a, b) => position.get(a)! - position.get(b)!)
  }
  return ids
}

const positionsByRun = new WeakMap<RunRecord, Map<string, number>>()
function positions (record: RunRecord): Map<string, number> {
  let map = positionsByRun.get(record)
  if (map === undefined) {
    map = new Map(record.order.map((id, i) => [id, i]))
    positionsByRun.set(record, map)
  }
  return map
}

/**
 * Tells apart attempts that share run, step and number (one given up on, then made again after a
 * coordinator restart): random per coordinator process, then counted, since a randomBytes call
 * per dispatched step showed in fan-out profiles.
 */
const ATTEMPT_TAG_PREFIX = randomBytes(3).toString('hex')
let attemptTagCounter = 0
function nextAttemptTag (): string {
  return `${ATTEMPT_TAG_PREFIX}${(attemptTagCounter++).toString(36)}`
}

function newRunId (now: number): string {
  const d = new Date(now)
  const pad = (n: number, w = 2): string => n.toString().padStart(w, '0')
  const stamp = `${d.getUTCFullYear()}${pad(d.getUTCMonth() + 1)}${pad(d.getUTCDate())}-${pad(d.getUTCHours())}${pad(d.getUTCMinutes())}${pad(d.getUTCSeconds())}`
  return `run-${stamp}-${randomBytes(3).toString('hex')}`
}
