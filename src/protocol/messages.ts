// Wire schemas of the coordinator <-> agent control protocol. An agent dials the coordinator and
// opens one long-lived channel; both sides then push messages. Every message is validated here at
// the boundary (size limits live in the channel) and trusted afterwards.

import { z } from 'zod'
import type { AttemptResult, LogLine, Task } from './task.js'
import type { ArtifactRef, Digest } from '../store/types.js'
import type { ErrorCode } from '../errors.js'

export const CONTROL_PROTOCOL = '/pipemesh/control/1.0.0'
/**
 * The revision of the messages below, sent in hello and welcome, so that a mesh can be upgraded
 * one machine at a time. Agents from before revisions existed send none: revision 1. Each side
 * only sends a newer message where the other's revision reads it; a newer field is ignored by an
 * older reader.
 *   2: checkpoint directories (task.checkpoint, the 'checkpoint' message, result.checkpoint).
 *   3: the progress of storing a step's outputs (the 'storing' message).
 */
export const CONTROL_REVISION = 3
/** The first revision whose agents save and restore a step's checkpoint directory. */
export const CHECKPOINT_REVISION = 2
/** The first revision whose coordinators read 'storing'. */
export const STORING_REVISION = 3
/** Largest control message; holdings are sent in batches to stay under it. */
export const MAX_CONTROL_MESSAGE_BYTES = 4 * 1024 * 1024
export const HOLDINGS_BATCH = 2000
/** By default a gc leaves artifacts made this recently: results and uploads in flight. */
export const GC_GRACE_MS = 10 * 60_000
/**
 * Superseded checkpoint saves are removed as roots at once, but the sweep that frees their chunks
 * walks the whole store under its lock (~1 s for 20,000 artifacts here): it runs once this much
 * was removed, or when this long has passed since the last one, whichever comes first.
 */
export const CHECKPOINT_SWEEP_BYTES = 256 * 1024 * 1024
export const CHECKPOINT_SWEEP_MS = 10 * 60_000
/** A gc removes an agent's prepared environment that no step has used for this long. */
export const ENVIRONMENT_UNUSED_MS = 7 * 24 * 60 * 60_000
/**
 * The names under which a task's `sources` (and an agent's `fetching` reports) give the step's
 * code snapshot and its environment's files, beside its inputs. Input names never start with a
 * dot, so these cannot clash with one.
 */
export const CODE_SOURCE = '.code'
export const ENVIRONMENT_SOURCE = '.env'
/** The name under which a task's `sources` give the holders of the checkpoint to restore. */
export const CHECKPOINT_SOURCE = '.checkpoint'
/** What a task source is, in words: "input data", "its code", ... */
export function describeSource (name: string): string {
  if (name === CODE_SOURCE) return 'its code'
  if (name === ENVIRONMENT_SOURCE) return 'its environment files'
  if (name === CHECKPOINT_SOURCE) return 'its checkpoint save'
  return `input ${name}`
}

/** How often an agent reports the progress of an input it is fetching. */
export const FETCH_PROGRESS_MS = 500
/** An output this large is reported as stored (size, time) even when that was quick. */
export const STORING_REPORT_BYTES = 64 * 1024 * 1024

const digest = z.string().regex(/^sha256:[0-9a-f]{64}$/) as unknown as z.ZodType<Digest>
const name = z.string().min(1).max(256)

const artifactRef: z.ZodType<ArtifactRef> = z.object({
  digest,
  kind: z.enum(['file', 'tree']),
  size: z.number().int().nonnegative()
})

const wireError = z.object({
  // Unknown codes from a newer peer still arrive; fromWireError keeps them as they are.
  code: z.string().max(64) as unknown as z.ZodType<ErrorCode>,
  message: z.string().max(64 * 1024),
  retryable: z.boolean().optional(),
  hint: z.string().max(4096).optional()
})

const logLine: z.ZodType<LogLine> = z.object({
  t: z.number(),
  stream: z.enum(['stdout', 'stderr']),
  line: z.string().max(128 * 1024)
})

const gpu = z.object({
  index: z.number().int().nonnegative(),
  vendor: z.string().max(256),
  model: z.string().max(256),
  memory: z.number().nonnegative(),
  driver: z.string().max(256).optional(),
  uuid: z.string().max(128).optional()
})

export const capabilitiesSchema = z.object({
  hostname: z.string().max(256),
  os: z.string().max(256),
  arch: z.string().max(64),
  cpu: z.object({ model: z.string().max(256), cores: z.number().nonnegative() }),
  memory: z.number().nonnegative(),
  gpus: z.array(gpu).max(64),
  diskFree: z.number().nonnegative(),
  capacity: z.object({ cpu: z.number().nonnegative(), memory: z.number().nonnegative(), gpus: z.array(gpu).max(64) }),
  labels: z.record(z.string().max(128), z.string().max(256)),
  detectedAt: z.number()
})
export type WireCapabilities = z.infer<typeof capabilitiesSchema>

const peerAddr = z.object({ peerId: z.string().max(128), addrs: z.array(z.string().max(512)).max(32) })
export type PeerAddress = z.infer<typeof peerAddr>

const task: z.ZodType<Task> = z.object({
  attemptId: name,
  runId: name,
  stepId: name,
  attempt: z.number().int().positive(),
  command: z.union([z.string().max(256 * 1024), z.array(z.string().max(64 * 1024)).min(1).max(4096)]),
  code: digest.optional(),
  inputs: z.record(name, artifactRef),
  outputs: z.array(name).max(1024),
  env: z.record(z.string().max(256), z.string().max(64 * 1024)),
  environment: z.object({ name, digest, files: digest, setup: z.string().max(64 * 1024) }).optional(),
  timeoutMs: z.number().int().positive().optional(),
  gpus: z.array(z.number().int().nonnegative()).max(64),
  secretNames: z.array(z.string().max(256)).max(256).optional(),
  secrets: z.record(z.string().max(256), z.string().max(64 * 1024)).optional(),
  checkpoint: z.object({ path: z.string().min(1).max(4096), everyMs: z.number().int().positive(), restore: artifactRef.optional() }).optional()
}) as z.ZodType<Task>

const attemptResult: z.ZodType<AttemptResult> = z.object({
  attemptId: name,
  status: z.enum(['succeeded', 'failed', 'cancelled']),
  exitCode: z.number().int().nullable(),
  signal: z.string().max(32).optional(),
  outputs: z.record(name, artifactRef),
  error: wireError.optional(),
  startedAt: z.number(),
  finishedAt: z.number(),
  log: artifactRef.optional(),
  checkpoint: artifactRef.optional()
}) as z.ZodType<AttemptResult>

/** An attempt's progress moving an artifact (an input fetched, an output stored). */
const movingFields = {
  attemptId: name,
  bytes: z.number().nonnegative(),
  totalBytes: z.number().nonnegative(),
  elapsedMs: z.number().nonnegative(),
  done: z.boolean()
}

/** Messages an agent sends to the coordinator. */
export const agentMessageSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('hello'),
    name,
    version: z.string().max(64),
    /** CONTROL_REVISION of the agent; absent from agents older than revisions (1). */
    revision: z.number().int().positive().optional(),
    capabilities: capabilitiesSchema,
    addrs: z.array(z.string().max(512)).max(32),
    /** Attempts still running on the agent (after a reconnect), so the coordinator can adopt them. */
    running: z.array(name).max(4096)
  }),
  z.object({ type: z.literal('holdings'), add: z.array(artifactRef).max(HOLDINGS_BATCH), remove: z.array(digest).max(HOLDINGS_BATCH), done: z.boolean().optional() }),
  z.object({
    type: z.literal('heartbeat'),
    load: z.number().nonnegative(),
    running: z.array(name).max(4096),
    diskFree: z.number().nonnegative(),
    /** Bytes this agent served to and fetched from peers since it started. */
    transfers: z.object({ bytesServed: z.number().nonnegative(), bytesFetched: z.number().nonnegative() }).optional()
  }),
  z.object({ type: z.literal('started'), attemptId: name, pid: z.number().int().nonnegative() }),
  /** A save of the attempt's checkpoint directory, taken while its step runs; the newest counts. */
  z.object({ type: z.literal('checkpoint'), attemptId: name, ref: artifactRef, at: z.number() }),
  z.object({ type: z.literal('log'), attemptId: name, lines: z.array(logLine).max(10_000) }),
  /**
   * An input the attempt is fetching from peers before its process starts: bytes present so far
   * of its chunk bytes, at most every FETCH_PROGRESS_MS, and once when it is all here.
   */
  z.object({ type: z.literal('fetching'), input: name, ...movingFields }),
  /**
   * Storing an output of an attempt that exited 0, before its result: bytes stored so far of
   * those found, at most every FETCH_PROGRESS_MS once it has taken that long, and once at the
   * end if it was reported or is large (STORING_REPORT_BYTES). A small output sends nothing.
   */
  z.object({ type: z.literal('storing'), output: name, ...movingFields }),
  z.object({ type: z.literal('finished'), result: attemptResult }),
  /** Answer to a coordinator's `fetch`: which artifacts the agent now holds. */
  z.object({ type: z.literal('fetched'), requestId: name, refs: z.array(artifactRef).max(HOLDINGS_BATCH), error: wireError.optional() }),
  /** Answer to a coordinator's `gc`, after the `holdings` messages that removed what it dropped. */
  z.object({
    type: z.literal('collected'),
    requestId: name,
    removedArtifacts: z.number().int().nonnegative(),
    removedChunks: z.number().int().nonnegative(),
    /** Prepared environments (venvs, node_modules) no step had used for ENVIRONMENT_UNUSED_MS. */
    removedEnvironments: z.number().int().nonnegative(),
    freedBytes: z.number().nonnegative(),
    error: wireError.optional()
  })
])
export type AgentMessage = z.infer<typeof agentMessageSchema>

/** Messages the coordinator sends to an agent. */
export const coordinatorMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('welcome'), coordinator: z.string().max(128), heartbeatMs: z.number().int().positive(), revision: z.number().int().positive().optional() }),
  z.object({
    type: z.literal('task'),
    task,
    /** For each input not necessarily held locally: the agents that hold it. */
    sources: z.record(name, z.array(peerAddr).max(64))
  }),
  z.object({ type: z.literal('cancel'), attemptId: name, reason: z.string().max(4096) }),
  /** The attempt ids this coordinator no longer wants (fencing after a lost lease). */
  z.object({ type: z.literal('forget'), attemptIds: z.array(name).max(4096) }),
  /** The peers that are current members: the only ones an agent serves chunks to or accepts. */
  z.object({ type: z.literal('members'), peers: z.array(z.string().max(128)).max(100_000) }),
  /** Lets a client's peer fetch from this agent for a while (`pipemesh artifacts get`). */
  z.object({ type: z.literal('grant'), peerId: z.string().max(128), ttlMs: z.number().int().positive().max(24 * 3600 * 1000) }),
  /** Pull these artifacts from the given peers (a client's upload) and keep them. */
  z.object({ type: z.literal('fetch'), requestId: name, digests: z.array(digest).max(HOLDINGS_BATCH), from: z.array(peerAddr).min(1).max(64) }),
  /**
   * Garbage collection: artifacts this agent holds that no kept run and no reuse entry references
   * any more, in batches; on the last (`done`), the agent removes them, except any it made within
   * the last `graceMs` (the coordinator may not have heard of those yet), then what only they reached.
   */
  z.object({ type: z.literal('gc'), requestId: name, drop: z.array(digest).max(HOLDINGS_BATCH), graceMs: z.number().int().nonnegative(), done: z.boolean() })
])
export type CoordinatorMessage = z.infer<typeof coordinatorMessageSchema>
