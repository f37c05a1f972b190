// What the coordinator sends an agent to run one attempt of a step, and what the agent reports
// back. These are plain data: the wire schemas in messages.ts validate them at the boundary.

import type { ArtifactRef, Digest } from '../store/types.js'
import type { WireError } from '../errors.js'

export interface TaskEnvironment {
  name: string
  /** Identity of the prepared environment: hash of its files tree and setup command. */
  digest: Digest
  /** Tree artifact of the environment's files, relative to their common parent directory. */
  files: Digest
  /** Shell command run once in the materialized files directory to build the environment. */
  setup: string
}

/** The step's checkpoint directory (see CheckpointSpec), and the save to start from. */
export interface TaskCheckpoint {
  /** Relative to the working directory. */
  path: string
  everyMs: number
  /** The last save of an earlier attempt (or run), restored at `path` before the step starts. */
  restore?: ArtifactRef
}

export interface Task {
  /** Unique per attempt; results carrying an attempt id the coordinator gave up on are discarded. */
  attemptId: string
  runId: string
  stepId: string
  /** 1 for the first attempt. */
  attempt: number
  /** Placeholders already substituted; a string runs under /bin/sh -c, an array is argv. */
  command: string | string[]
  /** Tree artifact holding the step's code files at their relative paths (copied into the workdir). */
  code?: Digest
  /** Input name -> artifact, materialized read-only at `inputs/<name>`. */
  inputs: Record<string, ArtifactRef>
  /** Declared outputs, collected from `outputs/<name>` after exit 0. */
  outputs: string[]
  env: Record<string, string>
  environment?: TaskEnvironment
  timeoutMs?: number
  /** GPU device indices assigned to this attempt (CUDA_VISIBLE_DEVICES). */
  gpus: number[]
  /** Names of the secrets the step lists; the coordinator fills `secrets` just before sending. */
  secretNames?: string[]
  /** Secret values by env var name; never logged or stored. */
  secrets?: Record<string, string>
  checkpoint?: TaskCheckpoint
}

export type AttemptStatus = 'succeeded' | 'failed' | 'cancelled'

export interface AttemptResult {
  attemptId: string
  status: AttemptStatus
  /** Null when the process never started or was killed by a signal. */
  exitCode: number | null
  signal?: string
  outputs: Record<string, ArtifactRef>
  /** Present when status is not succeeded. */
  error?: WireError
  startedAt: number
  finishedAt: number
  /** Tree/file artifact holding the captured log, when one was written. */
  log?: ArtifactRef
  /**
   * The checkpoint directory as the attempt left it, saved when it did not succeed (and it
   * differs from the last save reported).
   */
  checkpoint?: ArtifactRef
}

/** One captured line of a step's output. */
export interface LogLine {
  /** Milliseconds since the epoch. */
  t: number
  stream: 'stdout' | 'stderr'
  line: string
}
