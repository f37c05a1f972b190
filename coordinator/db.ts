// The coordinator's durable state in LevelDB: runs, steps, the reuse index, step history (for
// explain) and attempt logs. Writes made in the same tick are flushed as one atomic batch, so a
// crash leaves every record readable and a burst of step updates costs one disk write. Staged
// values are objects serialized when the batch is written, and a key staged again before then
// is written once: a step that went queued -> running -> succeeded within a batch costs one
// JSON encoding, not three.

import { Level } from 'level'
import type { AbstractBatchOperation } from 'abstract-level'
import type { CheckpointRecord, RunRecord, StepRecord, Submission, RunEvent } from '../src/run/types.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import type { FingerprintParts } from '../src/fingerprint.js'

export interface ReuseEntry {
  fingerprint: Digest
  outputs: Record<string, ArtifactRef>
  runId: string
  stepId: string
  at: number
}

export interface HistoryEntry {
  runId: string
  stepId: string
  fingerprint: Digest
  parts: FingerprintParts
  at: number
}

type LogLines = Extract<RunEvent, { type: 'log' }>['lines']
const SEP = '\u0000'

export class CoordinatorDb {
  private readonly db: Level<string, unknown>
  private pending = new Map<string, { type: 'put', key: string, value: unknown } | { type: 'del', key: string }>()
  private flushing: Promise<void> | undefined
  /** The writes of the batch being written (flushing), readable until it is on disk. */
  private inflight = new Map<string, { type: 'put', key: string, value: unknown } | { type: 'del', key: string }>()
  private scheduled = false

  private constructor (db: Level<string, unknown>) {
    this.db = db
  }

  static async open (dir: string): Promise<CoordinatorDb> {
    const db = new Level<string, unknown>(dir, { valueEncoding: 'json' })
    await db.open()
    return new CoordinatorDb(db)
  }

  async close (): Promise<void> {
    await this.flush()
    await this.db.close()
  }

  // --- writes (batched) ---

  putRun (run: RunRecord): void {
    const { submission, ...header } = run
    this.stage(`run${SEP}${run.id}`, header)
  }

  putSubmission (runId: string, submission: Submission): void {
    this.stage(`sub${SEP}${runId}`, submission)
  }

  putStep (step: StepRecord): void {
    this.stage(`step${SEP}${step.runId}${SEP}${step.id}`, step)
  }

  putReuse (entry: ReuseEntry): void {
    this.stage(`reuse${SEP}${entry.fingerprint}`, entry)
  }

  deleteReuse (fingerprint: Digest): void {
    this.unstage(`reuse${SEP}${fingerprint}`)
  }

  /**
   * The newest checkpoint save of a step with this fingerprint that has not succeeded yet: what
   * its next attempt, in this run or a later one, resumes from.
   */
  putCheckpoint (fingerprint: Digest, entry: CheckpointRecord): void {
    this.stage(`ckpt${SEP}${fingerprint}`, entry)
  }

  deleteCheckpoint (fingerprint: Digest): void {
    this.unstage(`ckpt${SEP}${fingerprint}`)
  }

  putHistory (pipeline: string, entry: HistoryEntry): void {
    // Inverted time sorts newest first.
    const inv = (Number.MAX_SAFE_INTEGER - entry.at).toString().padStart(16, '0')
    this.stage(`hist${SEP}${pipeline}${SEP}${entry.stepId}${SEP}${inv}${SEP}${entry.runId}`, entry)
  }

  /** Remembers that an agent is drained (or no longer), across coordinator restarts. */
  setDrained (agentId: string, drained: boolean): void {
    if (drained) this.stage(`drain${SEP}${agentId}`, { at: Date.now() })
    else {
      this.unstage(`drain${SEP}${agentId}`)
    }
  }

  appendLog (attemptId: string, seq: number, lines: LogLines): void {
    this.stage(`log${SEP}${attemptId}${SEP}${seq.toString().padStart(10, '0')}`, lines)
  }

  // --- reads ---

  async getRun (runId: string): Promise<RunRecord | undefined> {
    const header = await this.get<Omit<RunRecord, 'submission'>>(`run${SEP}${runId}`)
    if (header === undefined) return undefined
    const submission = await this.get<Submission>(`sub${SEP}${runId}`)
    if (submission === undefined) return undefined
    return { ...header, submission }
  }

  async * listRunHeaders (): AsyncIterable<Omit<RunRecord, 'submission'>> {
    for await (const value of this.db.values(range(`run${SEP}`))) yield value as Omit<RunRecord, 'submission'>
  }

  async listSteps (runId: string): Promise<StepRecord[]> {
    const out: StepRecord[] = []
    for await (const value of this.db.values(range(`step${SEP}${runId}${SEP}`))) out.push(value as StepRecord)
    return out
  }

  async getReuse (fingerprint: Digest): Promise<ReuseEntry | undefined> {
    return await this.get<ReuseEntry>(`reuse${SEP}${fingerprint}`)
  }

  async getCheckpoint (fingerprint: Digest): Promise<CheckpointRecord | undefined> {
    return await this.get<CheckpointRecord>(`ckpt${SEP}${fingerprint}`)
  }

  async * listCheckpoints (): AsyncIterable<CheckpointRecord> {
    await this.flush()
    for await (const value of this.db.values(range(`ckpt${SEP}`))) yield value as CheckpointRecord
  }

  async * listReuse (): AsyncIterable<ReuseEntry> {
    for await (const value of this.db.values(range(`reuse${SEP}`))) yield value as ReuseEntry
  }

  /** Earlier executions of a step of a pipeline, newest first. */
  async history (pipeline: string, stepId: string, limit = 50): Promise<HistoryEntry[]> {
    const out: HistoryEntry[] = []
    for await (const value of this.db.values({ ...range(`hist${SEP}${pipeline}${SEP}${stepId}${SEP}`), limit })) out.push(value as HistoryEntry)
    return out
  }

  /** Stored lines of an attempt's log and the sequence number of the last batch. */
  async readLog (attemptId: string): Promise<{ lines: LogLines, seq: number }> {
    const lines: LogLines = []
    let seq = 0
    for await (const [key, value] of this.db.iterator(range(`log${SEP}${attemptId}${SEP}`))) {
      lines.push(...(value as LogLines))
      seq = Number(key.slice(key.lastIndexOf(SEP) + 1))
    }
    return { lines, seq }
  }

  async drainedAgents (): Promise<string[]> {
    const out: string[] = []
    for await (const key of this.db.keys(range(`drain${SEP}`))) out.push(key.slice(`drain${SEP}`.length))
    return out
  }

  /** The sequence number of an attempt's last stored log batch (0 when none). */
  async lastLogSeq (attemptId: string): Promise<number> {
    for await (const key of this.db.keys({ ...range(`log${SEP}${attemptId}${SEP}`), reverse: true, limit: 1 })) {
      return Number(key.slice(key.lastIndexOf(SEP) + 1))
    }
    return 0
  }

  /** Runs that were still running when the coordinator stopped. */
  async * unfinishedRuns (): AsyncIterable<RunRecord> {
    for await (const header of this.listRunHeaders()) {
      if (header.status !== 'running') continue
      const run = await this.getRun(header.id)
      if (run !== undefined) yield run
    }
  }

  /**
   * Removes a run with its steps and logs, and the reuse entries and checkpoint saves it created
   * (except those whose fingerprint is in `keepReuse`), in one batch.
   */
  async deleteRun (runId: string, options: { keepReuse?: ReadonlySet<string> } = {}): Promise<void> {
    await this.flush()
    const steps = await this.listSteps(runId)
    const keys = [`run${SEP}${runId}`, `sub${SEP}${runId}`]
    for (const step of steps) {
      keys.push(`step${SEP}${runId}${SEP}${step.id}`)
      for (const attempt of step.attempts) {
        for await (const key of this.db.keys(range(`log${SEP}${attempt.id}${SEP}`))) keys.push(key)
      }
      if (step.fingerprint !== undefined && options.keepReuse?.has(step.fingerprint) !== true) {
        const reuse = await this.getReuse(step.fingerprint)
        if (reuse?.runId === runId) keys.push(`reuse${SEP}${step.fingerprint}`)
        const saved = await this.getCheckpoint(step.fingerprint)
        if (saved?.runId === runId) keys.push(`ckpt${SEP}${step.fingerprint}`)
      }
    }
    await this.db.batch(keys.map(key => ({ type: 'del' as const, key })))
  }

  /** Waits until every staged write is on disk. */
  async flush (): Promise<void> {
    while (this.pending.size > 0 || this.flushing !== undefined) {
      if (this.flushing !== undefined) await this.flushing
      else await this.writeBatch()
    }
  }

  private stage (key: string, value: unknown): void {
    this.pending.set(key, { type: 'put', key, value })
    this.schedule()
  }

  private unstage (key: string): void {
    this.pending.set(key, { type: 'del', key })
    this.schedule()
  }

  private schedule (): void {
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(() => {
      this.scheduled = false
      if (this.flushing === undefined) void this.writeBatch().catch(() => {})
    })
  }

  private async writeBatch (): Promise<void> {
    if (this.pending.size === 0) return
    const ops = [...this.pending.values()] as Array<AbstractBatchOperation<Level<string, unknown>, string, unknown>>
    this.inflight = this.pending
    this.pending = new Map()
    this.flushing = this.db.batch(ops).finally(() => {
      this.inflight = new Map()
      this.flushing = undefined
      if (this.pending.size > 0) this.schedule()
    })
    await this.flushing
  }

  private async get<T> (key: string): Promise<T | undefined> {
    // A write staged and not yet flushed is the current value.
    const staged = this.pending.get(key) ?? this.inflight.get(key)
    if (staged !== undefined) return staged.type === 'put' ? staged.value as T : undefined
    const value = await this.db.get(key)
    return value === undefined ? undefined : value as T
  }
}

function range (prefix: string): { gte: string, lt: string } {
  return { gte: prefix, lt: prefix + '\uffff' }
}
