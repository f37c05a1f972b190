// Run and step records: what the coordinator stores, the HTTP API returns and the CLI shows.
// Status values are string unions; `src/run/states.ts` says which transitions are allowed.

import type { ArtifactRef, Digest } from '../store/types.js'
import type { Pipeline } from '../spec/types.js'
import type { FingerprintParts } from '../fingerprint.js'
import type { WireError } from '../errors.js'
import type { CandidateReport } from '../scheduler/types.js'

export type RunStatus = 'running' | 'succeeded' | 'failed' | 'cancelled'
export type StepStatus = 'pending' | 'queued' | 'running' | 'succeeded' | 'reused' | 'failed' | 'skipped' | 'cancelled'
export type AttemptState = 'running' | 'succeeded' | 'failed' | 'cancelled' | 'lost'

/**
 * The reason of a step that is ready and about to be placed: placement, next, starts it or says
 * what it waits for. (A reason all the same: deleting a step record's `reason` and adding it
 * back costs every later access of the record, ~12% of a chain's per-step time.)
 */
export const PLACING_REASON = 'ready; being placed on an agent'

export const TERMINAL_STEP_STATUSES: ReadonlySet<StepStatus> = new Set(['succeeded', 'reused', 'failed', 'skipped', 'cancelled'])
export const DONE_STEP_STATUSES: ReadonlySet<StepStatus> = new Set(['succeeded', 'reused'])

/** The content a run needs, ingested by the client before it submits. */
export interface SubmissionArtifacts {
  inputs: Record<string, ArtifactRef>
  /** Per step with code: the snapshot tree and each code file's digest (for explain). */
  code: Record<string, { ref: ArtifactRef, files: Record<string, Digest> }>
  /** Per environment: its files tree and its identity digest (files + setup). */
  environments: Record<string, { files: ArtifactRef, digest: Digest }>
}

export interface Submission {
  pipeline: Pipeline
  artifacts: SubmissionArtifacts
}

/** A save of a step's checkpoint directory (see CheckpointSpec): which attempt took it, where, when. */
export interface CheckpointRecord {
  ref: ArtifactRef
  runId: string
  stepId: string
  /** The attempt's number within its run. */
  attempt: number
  agentName: string
  at: number
  /**
   * The save before this one, kept to fall back on: the newest may be held only by an agent
   * that is going away (a final save taken as it stopped) before a copy of it was made.
   */
  older?: Omit<CheckpointRecord, 'older'>
}

export interface AttemptRecord {
  id: string
  number: number
  agentId: string
  agentName: string
  state: AttemptState
  exitCode: number | null
  startedAt: number
  finishedAt?: number
  pid?: number
  error?: WireError
  log?: ArtifactRef
  gpus: number[]
  /** The checkpoint save this attempt started from, restored in its checkpoint directory. */
  resumedFrom?: CheckpointRecord
}

export interface PlacementRecord {
  agentId: string
  agentName: string
  reason: string
  candidates: CandidateReport[]
  at: number
  /** How long the step waited between becoming ready and this placement, and the last reason it gave. */
  waited?: { ms: number, reason?: string }
}

/** Why a step was reused, or the closest earlier execution it was compared against. */
export interface ReuseSource {
  runId: string
  stepId: string
  at: number
}

export interface StepRecord {
  runId: string
  id: string
  status: StepStatus
  fingerprint?: Digest
  fingerprintParts?: FingerprintParts
  attempts: AttemptRecord[]
  outputs: Record<string, ArtifactRef>
  /** Human-readable: why queued, skipped, failed, reused. */
  reason?: string
  placement?: PlacementRecord
  reusedFrom?: ReuseSource
  error?: WireError
  /** When the step became ready to run (all dependencies done). */
  readyAt?: number
  startedAt?: number
  finishedAt?: number
  /** Earliest time a retry may be dispatched (backoff). */
  notBefore?: number
  /**
   * The newest save of the step's checkpoint directory: taken by one of its attempts, or, until
   * one is, the save of an earlier run of the same fingerprint that the step resumes from.
   */
  checkpoint?: CheckpointRecord
}

export interface RunRecord {
  id: string
  pipeline: string
  status: RunStatus
  createdAt: number
  finishedAt?: number
  params: Pipeline['params']
  /** Step ids in topological order. */
  order: string[]
  submission: Submission
  error?: string
  cancelRequested?: boolean
  /** Submitted with resume: false: its steps do not resume checkpoint saves of earlier runs. */
  fresh?: boolean
}

/** One attempt as `status` shows it (steps with more than one attempt). */
export interface AttemptSummary {
  number: number
  agent: string
  state: AttemptState
  exitCode: number | null
  /** Null while running. */
  durationMs: number | null
  /** First line of the error, when it did not succeed. */
  error?: string
  /** The checkpoint save it started from: its attempt, and its run when another one took it. */
  resumedFrom?: { attempt: number, runId: string, at: number }
}

/** The JSON shape of a run that the CLI prints with --json and the API returns. */
export interface StepSummary {
  id: string
  status: StepStatus
  fingerprint: Digest | null
  attempts: number
  agent: string | null
  exitCode: number | null
  outputs: Record<string, Digest>
  reason?: string
  startedAt?: number
  finishedAt?: number
  error?: WireError
  /** Every attempt, when there was more than one (retries, lost agents, rebuilds). */
  history?: AttemptSummary[]
  /** The checkpoint save its latest attempt started from, if it resumed from one. */
  resumedFrom?: { attempt: number, runId: string, at: number }
  /** The newest checkpoint save, for a step that declares a checkpoint directory and has one. */
  checkpoint?: { digest: Digest, size: number, runId: string, attempt: number, agent: string, at: number }
}

export interface RunSummary {
  runId: string
  pipeline: string
  status: RunStatus
  createdAt: number
  finishedAt?: number
  error?: string
  steps: StepSummary[]
}

export type RunEvent =
  | { type: 'run', runId: string, status: RunStatus, at: number }
  | { type: 'step', runId: string, step: StepSummary, at: number }
  | { type: 'log', runId: string, stepId: string, attempt: number, seq?: number, lines: Array<{ t: number, stream: 'stdout' | 'stderr', line: string }> }
  /** An input the step's agent is fetching from peers (its chunk bytes present so far), not stored. */
  | { type: 'fetch', runId: string, stepId: string, attempt: number, input: string, bytes: number, totalBytes: number, elapsedMs: number, done: boolean, at: number }
  /** An output of a step that exited 0, being stored by its agent (bytes so far of those found). */
  | { type: 'store', runId: string, stepId: string, attempt: number, output: string, bytes: number, totalBytes: number, elapsedMs: number, done: boolean, at: number }
