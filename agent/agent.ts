// The agent process: keeps a content store, dials its coordinator over libp2p, advertises its
// capabilities and holdings, and runs the attempts it is given. Inputs it lacks are fetched
// directly from the agents that hold them. Results wait in an outbox while the coordinator is
// unreachable and are delivered after the agent reconnects.

import '../src/util/polyfill.js'
import { mkdir, rm } from 'node:fs/promises'
import { hostname, loadavg, cpus } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { multiaddr } from '@multiformats/multiaddr'
import type { Libp2p } from '@libp2p/interface'
import type { Logger } from 'pino'
import { PipemeshError, toWireError } from '../src/errors.js'
import { createNode } from '../src/net/node.js'
import { PIPEMESH_VERSION } from '../src/version.js'
import { loadOrCreatePrivateKey } from '../src/net/identity.js'
import { openChannel, type MessageChannel } from '../src/protocol/channel.js'
import { fetchArtifact, serveArtifacts, transferStats, type TransferStats } from '../src/net/transfer.js'
import {
  CHECKPOINT_SOURCE, CHECKPOINT_SWEEP_BYTES, CHECKPOINT_SWEEP_MS, CODE_SOURCE, CONTROL_PROTOCOL, CONTROL_REVISION, ENVIRONMENT_SOURCE, ENVIRONMENT_UNUSED_MS, FETCH_PROGRESS_MS, HOLDINGS_BATCH, MAX_CONTROL_MESSAGE_BYTES, STORING_REVISION, coordinatorMessageSchema, describeSource,
  type AgentMessage, type CoordinatorMessage, type PeerAddress, type WireCapabilities
} from '../src/protocol/messages.js'
import type { AttemptResult, LogLine, Task } from '../src/protocol/task.js'
import { ContentStore } from '../src/store/content-store.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { detectCapabilities, freeDisk, type ResourceOverrides } from './capabilities.js'
import { EnvironmentManager } from './environments.js'
import { runAttempt } from './attempt.js'
import { isCheckpointLabel } from './checkpoints.js'
import { WorkdirPool } from './workdirs.js'
import { launcherKind } from './launcher-client.js'
import { ContentGuard } from './integrity.js'
import { killAllRunning, reapOrphans } from './process.js'
import { Admission, ensureEnrolled } from './admission.js'
import { peerIdFromString } from '@libp2p/peer-id'


export interface AgentOptions {
  dataDir: string
  /**
   * The coordinator's multiaddr, including /p2p/<peer id>. A promise lets the agent open its
   * store and detect capabilities while that coordinator is still starting (embedded mode).
   */
  coordinator: string | Promise<string>
  logger: Logger
  name?: string
  listen?: string[]
  resources?: ResourceOverrides
  labels?: Record<string, string>
  /** A join token, redeemed once when this agent is not yet enrolled with the coordinator. */
  join?: string
  /**
   * Called with this agent's peer id before it first connects. The embedded mode uses it to admit
   * its in-process agent directly, without a token.
   */
  onIdentity?: (peerId: string) => Promise<void>
  /** Keep attempt working directories (debugging). */
  keepWorkdirs?: boolean
  /** Largest artifact a step may output or this agent accepts from a peer. */
  maxArtifactBytes?: number
  /** Most bytes of one attempt's log kept; the rest is dropped with a note in the log. */
  maxLogBytes?: number
}

interface Running {
  task: Task
  controller: AbortController
  done: Promise<void>
}

export class Agent {
  readonly store: ContentStore
  readonly transfers: TransferStats
  private readonly node: Libp2p
  private readonly options: AgentOptions & { coordinator: string }
  private readonly log: Logger
  private readonly environments: EnvironmentManager
  private readonly capabilities: WireCapabilities
  private readonly running = new Map<string, Running>()
  /** Messages that must reach the coordinator (results), kept until a connection takes them. */
  private readonly outbox: AgentMessage[] = []
  /** Drop lists of a coordinator's gc request, gathered until its last batch. */
  private readonly gcDrops = new Map<string, Digest[]>()
  private channel: MessageChannel<CoordinatorMessage, AgentMessage> | undefined
  /** The connected coordinator's CONTROL_REVISION: newer messages go only where it reads them. */
  private coordinatorRevision = 1
  private readonly stopping = new AbortController()
  private connectLoop: Promise<void> | undefined
  private heartbeat: NodeJS.Timeout | undefined
  private connectedWaiters: Array<() => void> = []
  private guard: ContentGuard | undefined
  private readonly admission: Admission
  private readonly workdirs: WorkdirPool
  /** Bytes of checkpoint saves removed since the store was last swept (see dropCheckpoints). */
  private unsweptCheckpointBytes = 0
  private lastCheckpointSweep = Date.now()

  private constructor (init: { node: Libp2p, store: ContentStore, transfers: TransferStats, environments: EnvironmentManager, capabilities: WireCapabilities, options: AgentOptions & { coordinator: string }, admission: Admission }) {
    this.admission = init.admission
    this.node = init.node
    this.store = init.store
    this.transfers = init.transfers
    this.environments = init.environments
    this.capabilities = init.capabilities
    this.options = init.options
    this.log = init.options.logger
    this.workdirs = new WorkdirPool(join(init.options.dataDir, 'work'), { keep: init.options.keepWorkdirs === true })
  }

  static async start (startOptions: AgentOptions): Promise<Agent> {
    // A launcher setting that every step would trip over stops the agent before it starts.
    launcherKind()
    await mkdir(startOptions.dataDir, { recursive: true })
    const detectOptions: Parameters<typeof detectCapabilities>[0] = { dataDir: startOptions.dataDir }
    if (startOptions.resources !== undefined) detectOptions.overrides = startOptions.resources
    if (startOptions.labels !== undefined) detectOptions.labels = startOptions.labels
    const opening = ContentStore.open(join(startOptions.dataDir, 'store'), startOptions.maxArtifactBytes === undefined ? {} : { maxArtifactBytes: startOptions.maxArtifactBytes })
    let started: [Awaited<ReturnType<typeof detectCapabilities>>, Awaited<ReturnType<typeof loadOrCreatePrivateKey>>, ContentStore, string]
    try {
      started = await Promise.all([detectCapabilities(detectOptions), loadOrCreatePrivateKey(startOptions.dataDir), opening, startOptions.coordinator])
    } catch (err) {
      await opening.then(async store => { await store.close() }, () => {})
      throw err
    }
    const [capabilities, privateKey, store, coordinator] = started
    const options = { ...startOptions, coordinator }
    const coordinatorId = coordinatorPeerId(options.coordinator)
    if (typeof coordinatorId !== 'string') {
      await store.close()
      throw new PipemeshError('INVALID_ARGUMENT', `coordinator address "${options.coordinator}" ${coordinatorId.problem}; it looks like /ip4/10.0.0.5/tcp/7071/p2p/12D3KooW…`, { hint: 'copy the libp2p address the coordinator printed at start' })
    }
    const admission = new Admission(coordinatorId)
    const nodeOptions: Parameters<typeof createNode>[0] = { privateKey, gater: { allowPeer: peer => admission.allowConnection(peer) } }
    if (options.listen !== undefined) nodeOptions.listen = options.listen
    let node: Libp2p
    try {
      node = await createNode(nodeOptions)
    } catch (err) {
      await store.close()
      throw err
    }
    try {
      if (options.onIdentity !== undefined) await options.onIdentity(node.peerId.toString())
      else await ensureEnrolled(node, options.dataDir, options.coordinator, coordinatorId, { name: options.name ?? hostname(), ...(options.join === undefined ? {} : { token: options.join }) })
    } catch (err) {
      await node.stop()
      await store.close()
      throw err
    }
    // Damage found while serving (or running a step) is reported, so the coordinator stops
    // counting on this copy.
    let self: Agent | undefined
    const guard = new ContentGuard(store, lost => {
      for (let i = 0; i < lost.length; i += HOLDINGS_BATCH) self?.sendNow({ type: 'holdings', add: [], remove: lost.slice(i, i + HOLDINGS_BATCH) })
    }, options.logger)
    await serveArtifacts(node, guard.servable(), { authorize: peer => admission.mayFetch(peer) })
    const transfers = transferStats(node)
    // Steps left running by an agent that was killed (kill -9) are found by their pid files and
    // ended before anything new starts; their working directories go too.
    const reaped = await reapOrphans(join(options.dataDir, 'pids')).catch(() => 0)
    if (reaped > 0) options.logger.warn({ reaped }, 'killed step processes left by a previous agent run')
    await rm(join(options.dataDir, 'work'), { recursive: true, force: true }).catch(() => {})
    const environments = new EnvironmentManager({ dir: join(options.dataDir, 'envs'), store })
    const agent = new Agent({ node, store, transfers, environments, capabilities: { ...capabilities, labels: capabilities.labels }, options, admission })
    self = agent
    agent.guard = guard
    agent.connectLoop = agent.keepConnected()
    return agent
  }

  get peerId (): string {
    return this.node.peerId.toString()
  }

  get name (): string {
    return this.options.name ?? hostname()
  }

  multiaddrs (): string[] {
    return this.node.getMultiaddrs().map(a => a.toString())
  }

  /** Resolves when the agent is connected to its coordinator and has sent its holdings. */
  async connected (options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.channel !== undefined) return
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(new PipemeshError('CANCELLED', 'stopped waiting for the agent to connect')) }
      options.signal?.addEventListener('abort', onAbort, { once: true })
      this.connectedWaiters.push(() => { options.signal?.removeEventListener('abort', onAbort); resolve() })
    })
  }

  /** Tells the coordinator about artifacts added to the store outside of a step (uploads). */
  announce (refs: ArtifactRef[]): void {
    for (let i = 0; i < refs.length; i += HOLDINGS_BATCH) {
      this.sendNow({ type: 'holdings', add: refs.slice(i, i + HOLDINGS_BATCH), remove: [] })
    }
  }

  /**
   * Stops the agent. Running attempts get `graceMs` to finish; the rest are cancelled and handed
   * back to the coordinator, which runs them elsewhere.
   */
  async stop (options: { graceMs?: number } = {}): Promise<void> {
    if (this.stopping.signal.aborted) return
    const grace = options.graceMs ?? 10_000
    const all = [...this.running.values()]
    if (all.length > 0) {
      this.log.info({ running: all.length, graceMs: grace }, 'waiting for running steps before stopping')
      const timer = setTimeout(() => { for (const r of all) r.controller.abort(new PipemeshError('CANCELLED', 'agent is shutting down')) }, grace)
      await Promise.all(all.map(async r => { await r.done }))
      clearTimeout(timer)
      await this.flushOutbox()
    }
    this.stopping.abort()
    killAllRunning()
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat)
    this.channel?.abort(new PipemeshError('CANCELLED', 'agent stopping'))
    await this.connectLoop?.catch(() => {})
    // Every attempt is over (each one's `done` includes giving its directories back).
    await this.workdirs.clear()
    await this.node.stop()
    await this.store.close()
  }

  // --- connection to the coordinator ---

  private async keepConnected (): Promise<void> {
    let backoff = 100
    const signal = this.stopping.signal
    while (!signal.aborted) {
      try {
        await this.session(signal)
        backoff = 100
      } catch (err) {
        if (signal.aborted) return
        this.log.warn({ err: (err as Error).message, retryInMs: backoff }, 'cannot reach the coordinator; retrying')
      }
      if (signal.aborted) return
      await sleep(backoff, undefined, { signal }).catch(() => {})
      backoff = Math.min(backoff * 2, 5_000)
    }
  }

  private async session (signal: AbortSignal): Promise<void> {
    const stream = await this.node.dialProtocol(multiaddr(this.options.coordinator), CONTROL_PROTOCOL, { signal: AbortSignal.any([signal, AbortSignal.timeout(10_000)]) })
    const channel = openChannel<CoordinatorMessage, AgentMessage>(stream, { inSchema: coordinatorMessageSchema, maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES })
    const pendingResults = this.outbox.filter(m => m.type === 'finished').map(m => (m as Extract<AgentMessage, { type: 'finished' }>).result.attemptId)
    await channel.send({
      type: 'hello',
      name: this.name,
      version: PIPEMESH_VERSION,
      revision: CONTROL_REVISION,
      capabilities: this.capabilities,
      addrs: this.multiaddrs(),
      running: [...this.running.keys(), ...pendingResults]
    })
    let welcomed = false
    try {
      for await (const msg of channel) {
        if (!welcomed) {
          if (msg.type !== 'welcome') throw new PipemeshError('PROTOCOL', `expected welcome, got ${msg.type}`)
          welcomed = true
          this.coordinatorRevision = msg.revision ?? 1
          this.channel = channel
          await this.sendHoldings(channel)
          await this.flushOutbox()
          this.startHeartbeat(msg.heartbeatMs)
          this.log.info({ coordinator: msg.coordinator }, 'connected to coordinator')
          for (const resolve of this.connectedWaiters.splice(0)) resolve()
          continue
        }
        this.onMessage(msg)
      }
    } finally {
      if (this.channel === channel) this.channel = undefined
      if (this.heartbeat !== undefined) clearInterval(this.heartbeat)
      // A gc whose last batch never came is abandoned: the coordinator reports it as not done.
      this.gcDrops.clear()
    }
  }

  private async sendHoldings (channel: MessageChannel<CoordinatorMessage, AgentMessage>): Promise<void> {
    let batch: ArtifactRef[] = []
    for await (const ref of this.store.roots()) {
      batch.push(ref)
      if (batch.length === HOLDINGS_BATCH) { await channel.send({ type: 'holdings', add: batch, remove: [] }); batch = [] }
    }
    await channel.send({ type: 'holdings', add: batch, remove: [], done: true })
  }

  private startHeartbeat (intervalMs: number): void {
    if (this.heartbeat !== undefined) clearInterval(this.heartbeat)
    this.heartbeat = setInterval(() => {
      const load = (loadavg()[0] ?? 0) / Math.max(1, cpus().length)
      // Measured for the next beat: the coordinator places by it, and steps and gc change it.
      freeDisk(this.store.dir).then(bytes => { this.capabilities.diskFree = bytes }, () => {})
      this.sendNow({
        type: 'heartbeat',
        load,
        running: [...this.running.keys()],
        diskFree: this.capabilities.diskFree,
        transfers: { bytesServed: this.transfers.bytesServed, bytesFetched: this.transfers.bytesFetched }
      })
    }, intervalMs)
    this.heartbeat.unref()
  }

  private onMessage (msg: CoordinatorMessage): void {
    switch (msg.type) {
      case 'welcome':
        break
      case 'task':
        this.startTask(msg.task, msg.sources)
        break
      case 'cancel':
        this.running.get(msg.attemptId)?.controller.abort(new PipemeshError('CANCELLED', msg.reason))
        break
      case 'fetch':
        // The client serving the upload must be let through our gater for the dial.
        for (const peer of msg.from) this.admission.grant(peer.peerId, 60 * 60_000)
        void this.pullUpload(msg.requestId, msg.digests, msg.from)
        break
      case 'members':
        for (const gone of this.admission.setMembers(msg.peers)) {
          this.log.info({ peer: gone }, 'peer is no longer a member: disconnecting it')
          void this.node.hangUp(peerIdFromString(gone)).catch(() => {})
        }
        break
      case 'grant':
        this.admission.grant(msg.peerId, msg.ttlMs)
        break
      case 'gc': {
        const drop = this.gcDrops.get(msg.requestId) ?? []
        drop.push(...msg.drop)
        if (!msg.done) {
          this.gcDrops.set(msg.requestId, drop)
          break
        }
        this.gcDrops.delete(msg.requestId)
        void this.collectGarbage(msg.requestId, drop, msg.graceMs)
        break
      }
      case 'forget':
        for (const id of msg.attemptIds) {
          this.running.get(id)?.controller.abort(new PipemeshError('CANCELLED', 'the coordinator no longer wants this attempt'))
          const i = this.outbox.findIndex(m => m.type === 'finished' && m.result.attemptId === id)
          if (i >= 0) this.outbox.splice(i, 1)
        }
        break
    }
  }

  /** Pulls a client's upload from its node, as the coordinator asked, and reports what it holds. */
  private async pullUpload (requestId: string, digests: Digest[], from: PeerAddress[]): Promise<void> {
    const refs: ArtifactRef[] = []
    try {
      for (const digest of digests) {
        if (!await this.store.has(digest)) await fetchArtifact(this.node, this.store, digest, from, { signal: this.stopping.signal })
        const ref = await this.store.stat(digest)
        if (ref !== undefined) refs.push(ref)
      }
      this.sendNow({ type: 'fetched', requestId, refs })
    } catch (err) {
      this.log.warn({ err, requestId }, 'pulling an upload failed')
      this.sendNow({ type: 'fetched', requestId, refs, error: toWireError(err) })
    }
  }

  /** Removes what the coordinator found unreferenced, then tells it which artifacts went. */
  private async collectGarbage (requestId: string, drop: Digest[], graceMs: number): Promise<void> {
    try {
      const { removedRoots, removedArtifacts, removedChunks, freedBytes } = await this.store.dropRoots(drop, Date.now() - graceMs)
      for (let i = 0; i < removedRoots.length; i += HOLDINGS_BATCH) this.sendNow({ type: 'holdings', add: [], remove: removedRoots.slice(i, i + HOLDINGS_BATCH) })
      const envs = await this.environments.prune(Date.now() - ENVIRONMENT_UNUSED_MS)
      const report = { removedArtifacts, removedChunks, removedEnvironments: envs.removed, freedBytes: freedBytes + envs.freedBytes }
      this.log.info({ requestId, listed: drop.length, ...report }, 'collected garbage')
      this.sendNow({ type: 'collected', requestId, ...report })
    } catch (err) {
      this.log.warn({ err, requestId }, 'garbage collection failed')
      this.sendNow({ type: 'collected', requestId, removedArtifacts: 0, removedChunks: 0, removedEnvironments: 0, freedBytes: 0, error: toWireError(err) })
    }
  }

  /** Sends now if connected; drops when not (heartbeats, logs, holdings are re-sent on reconnect). */
  private sendNow (msg: AgentMessage): void {
    const channel = this.channel
    if (channel === undefined) return
    channel.send(msg).catch((err: unknown) => { this.log.debug({ err }, 'send to coordinator failed') })
  }

  /** Queues a message that must arrive; it is sent now or after the next reconnect. */
  private deliver (msg: AgentMessage): void {
    this.outbox.push(msg)
    void this.flushOutbox()
  }

  private async flushOutbox (): Promise<void> {
    const channel = this.channel
    while (channel !== undefined && this.channel === channel && this.outbox.length > 0) {
      const msg = this.outbox[0]!
      try {
        await channel.send(msg)
        if (this.outbox[0] === msg) this.outbox.shift()
      } catch {
        return
      }
    }
  }

  // --- running attempts ---

  private startTask (task: Task, sources: Record<string, PeerAddress[]>): void {
    if (this.running.has(task.attemptId)) return
    const controller = new AbortController()
    const log = this.log.child({ runId: task.runId, step: task.stepId, attempt: task.attempt })
    const entry: Running = { task, controller, done: Promise.resolve() }
    this.running.set(task.attemptId, entry)
    let reported = false
    const report = (result: AttemptResult): void => {
      if (reported) return
      reported = true
      // The coordinator counts the outputs and the log as held here from the result itself.
      this.deliver({ type: 'finished', result })
      log.debug({ status: result.status, exitCode: result.exitCode }, 'attempt finished')
    }
    // The result goes out as soon as it is known; the attempt stays in `running` (and shutdown
    // waits for it) until its working directory is cleaned up.
    entry.done = this.execute(task, sources, controller.signal, log, report)
      .then(result => {
        this.running.delete(task.attemptId)
        report(result)
      })
  }

  private async execute (task: Task, sources: Record<string, PeerAddress[]>, signal: AbortSignal, log: Logger, report: (result: AttemptResult) => void): Promise<AttemptResult> {
    const startedAt = Date.now()
    try {
      await this.ensureContent(task, sources, signal, log)
    } catch (err) {
      const cancelled = signal.aborted
      return { attemptId: task.attemptId, status: cancelled ? 'cancelled' : 'failed', exitCode: null, outputs: {}, error: toWireError(err), startedAt, finishedAt: Date.now() }
    }
    const lines = new LogBatcher(batch => { this.sendNow({ type: 'log', attemptId: task.attemptId, lines: batch }) })
    // This attempt's checkpoint saves, oldest first. Two are kept while it runs: whichever of them
    // the coordinator last heard of is still here to restore after a crash.
    const saves: Digest[] = []
    try {
      const result = await runAttempt(task, {
        store: this.store,
        environments: this.environments,
        workdirs: this.workdirs,
        signal,
        onLine: line => { lines.push(line) },
        onStart: pid => { this.sendNow({ type: 'started', attemptId: task.attemptId, pid }) },
        // Log lines still batched go first: the coordinator drops lines of a finished attempt.
        onResult: result => { lines.flush(); report(result) },
        trackDir: join(this.options.dataDir, 'pids'),
        ...(this.options.maxLogBytes === undefined ? {} : { maxLogBytes: this.options.maxLogBytes }),
        repairContent: async (what, digest) => { await this.repairContent(what, digest, sources, signal, log) },
        onStoring: p => {
          if (this.coordinatorRevision >= STORING_REVISION) this.sendNow({ type: 'storing', attemptId: task.attemptId, ...p })
        },
        onCheckpoint: ref => {
          this.deliver({ type: 'checkpoint', attemptId: task.attemptId, ref, at: Date.now() })
          saves.push(ref.digest)
          if (saves.length > 2) void this.dropCheckpoints(saves.splice(0, saves.length - 2), log)
        },
        logger: log
      })
      // A step that succeeded has no use for its saves.
      if (result.status === 'succeeded' && saves.length > 0) void this.dropCheckpoints(saves, log)
      return result
    } finally {
      lines.flush()
    }
  }

  /**
   * Removes superseded checkpoint saves from the store (a training's checkpoint can be many GiB,
   * saved every few minutes: waiting for a gc would fill the disk), and frees their chunks once
   * enough is there to free (CHECKPOINT_SWEEP_BYTES). Only what was stored as a checkpoint goes:
   * a save identical to some other artifact held here is left to gc.
   */
  private async dropCheckpoints (digests: Digest[], log: Logger): Promise<void> {
    try {
      const removed: Digest[] = []
      let bytes = 0
      for (const digest of digests) {
        const held = await this.store.held(digest)
        if (held === undefined || !isCheckpointLabel(held.label)) continue
        await this.store.removeRoot(digest)
        removed.push(digest)
        bytes += held.size
      }
      if (removed.length === 0) return
      this.sendNow({ type: 'holdings', add: [], remove: removed })
      this.unsweptCheckpointBytes += bytes
      if (this.unsweptCheckpointBytes < CHECKPOINT_SWEEP_BYTES && Date.now() - this.lastCheckpointSweep < CHECKPOINT_SWEEP_MS) return
      this.unsweptCheckpointBytes = 0
      this.lastCheckpointSweep = Date.now()
      const { freedBytes } = await this.store.dropRoots([], Infinity)
      log.debug({ dropped: removed.length, freedBytes }, 'freed superseded checkpoint saves')
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'dropping superseded checkpoint saves failed; gc will remove them')
    }
  }

  /**
   * Fetches again an artifact that a read found damaged (its bad chunk quarantined). When no
   * holder can supply it, the store is rechecked first, so that the coordinator hears it is gone
   * here before it hears that the attempt failed.
   */
  private async repairContent (what: string, digest: Digest, sources: Record<string, PeerAddress[]>, signal: AbortSignal, log: Logger): Promise<void> {
    log.warn({ input: what, digest }, 'a stored input is damaged; fetching it again from other holders')
    try {
      await fetchArtifact(this.node, this.store, digest, sources[what] ?? [], { signal })
    } catch (err) {
      await this.guard?.recheck()
      throw err
    }
  }

  /** Fetches the code, environment files and inputs this agent does not hold yet. */
  private async ensureContent (task: Task, sources: Record<string, PeerAddress[]>, signal: AbortSignal, log: Logger): Promise<void> {
    const wanted: Array<{ name: string, digest: Digest }> = []
    if (task.code !== undefined) wanted.push({ name: CODE_SOURCE, digest: task.code })
    if (task.environment !== undefined) wanted.push({ name: ENVIRONMENT_SOURCE, digest: task.environment.files })
    for (const [name, ref] of Object.entries(task.inputs)) wanted.push({ name, digest: ref.digest })
    if (task.checkpoint?.restore !== undefined) wanted.push({ name: CHECKPOINT_SOURCE, digest: task.checkpoint.restore.digest })
    const fetched: ArtifactRef[] = []
    for (const { name, digest } of wanted) {
      if (await this.store.has(digest)) continue
      const holders = sources[name] ?? []
      if (holders.length === 0) throw new PipemeshError('MISSING_CONTENT', `${describeSource(name)} (${digest}) is not in this agent's store and no other agent holds it`, { retryable: true })
      log.debug({ input: name, digest, holders: holders.length }, 'fetching input from peers')
      // Progress goes to the coordinator, which shows it with the step (a large input can take
      // minutes, before the step's process even starts).
      const started = performance.now()
      let reportedAt = started
      let total = 0
      const report = (bytes: number, done: boolean): void => {
        const now = performance.now()
        if (!done && now - reportedAt < FETCH_PROGRESS_MS) return
        reportedAt = now
        this.sendNow({ type: 'fetching', attemptId: task.attemptId, input: name, bytes, totalBytes: total, elapsedMs: Math.round(now - started), done })
      }
      const result = await fetchArtifact(this.node, this.store, digest, holders, {
        signal,
        onProgress: p => { total = p.totalBytes; report(p.bytes, false) }
      })
      log.debug({ input: name, digest, bytes: result.bytes, ms: Math.round(performance.now() - started), peers: Object.keys(result.fromPeers).length }, 'fetched input from peers')
      report(total, true)
      const ref = await this.store.stat(digest)
      if (ref !== undefined) fetched.push(ref)
    }
    if (fetched.length > 0) this.sendNow({ type: 'holdings', add: fetched, remove: [] })
  }
}

/** Groups log lines into messages: at most every 50 ms or 500 lines, so chatty steps stay cheap. */
class LogBatcher {
  private lines: LogLine[] = []
  private timer: NodeJS.Timeout | undefined
  constructor (private readonly send: (lines: LogLine[]) => void) {}

  push (line: LogLine): void {
    this.lines.push(line)
    if (this.lines.length >= 500) this.flush()
    else this.timer ??= setTimeout(() => { this.flush() }, 50)
  }

  flush (): void {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    if (this.lines.length === 0) return
    const batch = this.lines
    this.lines = []
    this.send(batch)
  }
}

/** The peer id in a coordinator's multiaddr, or what is wrong with the address. */
function coordinatorPeerId (address: string): string | { problem: string } {
  let components
  try {
    components = multiaddr(address).getComponents()
  } catch (err) {
    return { problem: `is not a multiaddr (${(err as Error).message})` }
  }
  return components.find(c => c.name === 'p2p')?.value ?? { problem: 'has no /p2p/<peer id> part' }
}
