// The coordinator's client-facing API as one interface. The HTTP server exposes it, the HTTP
// client implements it over the network, and an embedded coordinator implements it in process,
// so the CLI has a single code path for "local" and "remote".

import type { LogLine } from '../protocol/task.js'
import type { RunEvent, RunRecord, RunSummary } from '../run/types.js'
import type { SubmitRequest } from './submit-request.js'
import type { PeerAddress, WireCapabilities } from '../protocol/messages.js'
import type { ArtifactRef, Digest } from '../store/types.js'
import type { AgentView } from '../scheduler/types.js'
import type { Explanation } from '../run/explain.js'

export interface RunListEntry {
  runId: string
  pipeline: string
  status: RunRecord['status']
  createdAt: number
  finishedAt?: number
  steps: number
}

export interface AgentListEntry {
  id: string
  name: string
  /** The pipemesh version the agent runs, and its control protocol revision. */
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
  /** Bytes the agent served to and fetched from peers (the coordinator relays none). */
  transfers?: { bytesServed: number, bytesFetched: number }
}

export interface LogEntry extends LogLine {
  attempt: number
}

/** Which of a run's events a follower wants: all (the default), or the run's own alone. */
export interface EventOptions {
  signal?: AbortSignal
  only?: 'run'
  /**
   * `store` events too (outputs being stored). Sent only to followers that ask: clients from
   * before they existed could not read them.
   */
  store?: boolean
}

/** Which agent pulled an upload (peer id and name; both null when the mesh held everything already). */
export interface UploadResult { agentId: string | null, agent: string | null, fetched: ArtifactRef[] }

/** What a mesh-wide garbage collection did: run records pruned, then each agent's store. */
export interface MeshGcReport {
  removedRuns: number
  agents: Array<{ agentId: string, agent: string, removedArtifacts: number, removedChunks: number, removedEnvironments: number, freedBytes: number, error?: string }>
  /** Agents the coordinator knows that are not connected: their stores were left alone. */
  skipped: string[]
}

export interface GcOptions {
  /** Artifacts made this recently stay (default GC_GRACE_MS): results and uploads in flight. */
  graceMs?: number
  signal?: AbortSignal
}

export interface CoordinatorApi {
  /** Validates the pipeline again (the coordinator trusts no client) and starts a run. */
  submit: (request: SubmitRequest) => Promise<RunSummary>
  getRun: (runId: string) => Promise<RunSummary>
  listRuns: (options?: { limit?: number }) => Promise<RunListEntry[]>
  cancel: (runId: string) => Promise<RunSummary>
  explain: (runId: string, stepId: string) => Promise<Explanation>
  agents: () => Promise<AgentListEntry[]>
  /** The step's log; with follow, keeps yielding until the step finishes or the signal aborts. */
  logs: (runId: string, stepId: string, options?: { follow?: boolean, attempt?: number, signal?: AbortSignal }) => AsyncIterable<LogEntry>
  /** Which of these artifacts no connected agent holds (the client must upload them). */
  missingArtifacts: (digests: Digest[]) => Promise<Digest[]>
  /** Has an agent pull the artifacts the mesh lacks from the client's own libp2p node. */
  upload: (refs: ArtifactRef[], from: PeerAddress, options?: { signal?: AbortSignal }) => Promise<UploadResult>
  /** The connected agents holding an artifact; `client`, a peer id, may fetch from them for a while. */
  locate: (digest: Digest, client?: string) => Promise<PeerAddress[]>
  /** Mints a single-use join token for an agent (administrators). */
  createToken: (ttlMs: number) => Promise<{ token: string, expiresAt: number, coordinator: string | null, multiaddrs: string[] }>
  /** Drains an agent (its running steps finish, it gets no new ones), or with false undrains it. */
  drainAgent: (idOrName: string, draining: boolean) => Promise<AgentListEntry>
  /** Cuts an agent off at once; its running steps are rescheduled. */
  revokeAgent: (idOrName: string) => Promise<{ peerId: string, name: string, revokedAt?: number }>
  /**
   * Drops run records beyond the newest `keepRuns` of each pipeline (running ones stay), then has
   * every connected agent remove the artifacts no kept run and no reuse entry references.
   */
  collectGarbage: (keepRuns: number, options?: GcOptions) => Promise<MeshGcReport>
  setSecret: (name: string, value: string) => Promise<void>
  listSecrets: () => Promise<Array<{ name: string, updatedAt: number }>>
  deleteSecret: (name: string) => Promise<void>
  /**
   * Events of one run, starting with a snapshot; ends when the run ends or the signal aborts.
   * With `only: 'run'`, the run's own events alone (its status now, then when it ends): what a
   * follower that shows no steps waits for, without every step's change coming its way.
   */
  events: (runId: string, options?: EventOptions) => AsyncIterable<RunEvent>
}
