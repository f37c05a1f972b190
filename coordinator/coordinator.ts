// The coordinator process: owns run state (LevelDB), the mesh registry and the control protocol
// that agents dial into, and implements the client API (served over HTTP by api.ts, or called in
// process by an embedded CLI). It never carries artifact bytes: agents fetch from each other.

import '../src/util/polyfill.js'
import { on } from 'node:events'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Libp2p, Stream, Connection } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import type { Logger } from 'pino'
import { PipemeshError } from '../src/errors.js'
import { createNode } from '../src/net/node.js'
import { loadOrCreatePrivateKey } from '../src/net/identity.js'
import { openChannel, type MessageChannel } from '../src/protocol/channel.js'
import {
  CONTROL_PROTOCOL, CONTROL_REVISION, MAX_CONTROL_MESSAGE_BYTES, agentMessageSchema,
  type AgentMessage, type CoordinatorMessage, type PeerAddress
} from '../src/protocol/messages.js'
import { explainStep, type Explanation } from '../src/run/explain.js'
import { TERMINAL_STEP_STATUSES, type RunEvent, type RunSummary, type Submission } from '../src/run/types.js'
import { submitRequestSchema, type SubmitRequest } from '../src/client/submit-request.js'
import { parsePipeline, parsePipelineData } from '../src/spec/parse.js'
import type { AgentListEntry, CoordinatorApi, EventOptions, GcOptions, LogEntry, MeshGcReport, RunListEntry, UploadResult } from '../src/client/api.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { CoordinatorDb } from './db.js'
import { AgentRegistry } from './agents.js'
import { RUN_EVENT, RunManager } from './runs.js'
import { UploadBroker } from './uploads.js'
import { CheckpointReplicas } from './checkpoint-replicas.js'
import { GcBroker, addRunReferences } from './gc.js'
import { listenWhereLastTime } from './listen-address.js'
import { Membership, type Member } from './membership.js'
import { SecretStore } from './secrets.js'
import { ENROLL_PROTOCOL, MAX_ENROLL_MESSAGE_BYTES, enrollRequestSchema, type EnrollRequest, type EnrollResponse } from '../src/protocol/enroll.js'
import { toWireError } from '../src/errors.js'

/** Disk freed on an agent (between heartbeats) that is worth another look at the queued steps. */
const DISK_FREED_RECHECK_BYTES = 64 * 1024 * 1024

export interface CoordinatorOptions {
  dataDir: string
  /** Multiaddrs for agents to dial; default a random loopback TCP port. */
  listen?: string[]
  logger: Logger
  /** How long an agent may be silent or disconnected before its steps are rescheduled. */
  leaseMs?: number
  /** How often agents send heartbeats. */
  heartbeatMs?: number
  /** False opens only the database (offline queries: runs, explain, gc planning). */
  network?: boolean
  /** Collects garbage across the mesh every `everyMs`, keeping `keepRuns` runs of each pipeline. */
  gc?: { keepRuns: number, everyMs: number }
}

export class Coordinator implements CoordinatorApi {
  readonly runs: RunManager
  readonly registry = new AgentRegistry()
  readonly uploads: UploadBroker
  private readonly gcBroker: GcBroker
  private readonly replicas: CheckpointReplicas
  readonly membership: Membership
  readonly secrets: SecretStore
  private readonly db: CoordinatorDb
  private readonly node: Libp2p | undefined
  private readonly log: Logger
  private readonly leaseMs: number
  private readonly heartbeatMs: number
  private readonly leases = new Map<string, NodeJS.Timeout>()
  private readonly channels = new Map<string, MessageChannel<AgentMessage, CoordinatorMessage>>()
  private watchdog: NodeJS.Timeout | undefined
  private gcTimer: NodeJS.Timeout | undefined
  /** Aborted by stop(): a collection in progress gives up. */
  private readonly stopping = new AbortController()
  private stopped = false

  private constructor (db: CoordinatorDb, node: Libp2p | undefined, membership: Membership, secrets: SecretStore, options: CoordinatorOptions) {
    this.db = db
    this.node = node
    this.membership = membership
    this.secrets = secrets
    this.log = options.logger
    this.leaseMs = options.leaseMs ?? 15_000
    this.heartbeatMs = options.heartbeatMs ?? Math.max(250, Math.floor(this.leaseMs / 5))
    this.replicas = new CheckpointReplicas(this.registry, this.log)
    this.runs = new RunManager({ db, agents: this.registry, logger: this.log, leaseMs: this.leaseMs, replicas: this.replicas })
    this.uploads = new UploadBroker(this.registry, this.log)
    this.gcBroker = new GcBroker(this.registry, this.log)
  }

  static async start (options: CoordinatorOptions): Promise<Coordinator> {
    await mkdir(options.dataDir, { recursive: true })
    // Each LevelDB open replays and syncs its log (~15-25 ms here), on the thread pool: open the
    // three at once, and read the identity meanwhile. Whatever opened is closed if any failed.
    const opened = await Promise.allSettled([
      CoordinatorDb.open(join(options.dataDir, 'db')),
      Membership.open(join(options.dataDir, 'members')),
      SecretStore.open(join(options.dataDir, 'secrets'), join(options.dataDir, 'secrets.key')),
      options.network === false ? undefined : loadOrCreatePrivateKey(options.dataDir)
    ])
    const failed = opened.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed !== undefined) {
      for (const r of opened.slice(0, 3)) if (r.status === 'fulfilled') await (r.value as { close: () => Promise<void> }).close()
      throw failed.reason
    }
    const [db, membership, secrets, privateKey] = opened.map(r => (r as PromiseFulfilledResult<unknown>).value) as [CoordinatorDb, Membership, SecretStore, Awaited<ReturnType<typeof loadOrCreatePrivateKey>> | undefined]
    let node: Libp2p | undefined
    try {
      if (privateKey !== undefined) {
        const members = membership
        // Refused right after the Noise handshake unless a member, or while a join token is open
        // (then the peer may only use the enroll protocol: see onControlStream and onEnroll).
        const init: Parameters<typeof createNode>[0] = { privateKey, gater: { allowPeer: peer => members.isMember(peer) || members.enrollmentOpen() } }
        const listen = options.listen
        node = listen === undefined ? await createNode(init) : await listenWhereLastTime(options.dataDir, listen, async addrs => await createNode({ ...init, listen: addrs }))
      }
    } catch (err) {
      await secrets.close()
      await membership.close()
      await db.close()
      throw err
    }
    const coordinator = new Coordinator(db, node, membership, secrets, options)
    for (const agentId of await db.drainedAgents()) coordinator.registry.setDraining(agentId, true)
    if (node !== undefined) await coordinator.runs.recover()
    if (node !== undefined) {
      // Attempts recovered from a previous life: their agents get one lease to come back.
      for (const agentId of coordinator.runs.agentsWithAttempts()) coordinator.startLease(agentId, 'not reconnected after a coordinator restart')
      await node.handle(CONTROL_PROTOCOL, (stream: Stream, connection: Connection) => {
        void coordinator.onControlStream(stream, connection)
      }, { maxInboundStreams: 4 })
      await node.handle(ENROLL_PROTOCOL, (stream: Stream, connection: Connection) => {
        void coordinator.onEnroll(stream, connection)
      }, { maxInboundStreams: 2 })
      membership.events.on('changed', () => { coordinator.membersChanged() })
      coordinator.watchdog = setInterval(() => { coordinator.checkHeartbeats() }, coordinator.heartbeatMs)
      coordinator.watchdog.unref()
      if (options.gc !== undefined) coordinator.scheduleGc(options.gc)
    }
    return coordinator
  }

  /** The next periodic collection, `everyMs` after the last one ended (they never overlap). */
  private scheduleGc (gc: { keepRuns: number, everyMs: number }): void {
    this.gcTimer = setTimeout(() => {
      void this.collectGarbage(gc.keepRuns, { signal: this.stopping.signal })
        .catch((err: unknown) => {
          if (!this.stopped) this.log.warn({ err }, 'periodic garbage collection failed')
        })
        .finally(() => { if (!this.stopped) this.scheduleGc(gc) })
    }, gc.everyMs)
    this.gcTimer.unref()
  }

  get peerId (): string {
    if (this.node === undefined) throw new PipemeshError('INTERNAL', 'coordinator started without networking')
    return this.node.peerId.toString()
  }

  multiaddrs (): string[] {
    return this.node?.getMultiaddrs().map(a => a.toString()) ?? []
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.stopping.abort(new PipemeshError('CANCELLED', 'coordinator shutting down'))
    if (this.gcTimer !== undefined) clearTimeout(this.gcTimer)
    if (this.watchdog !== undefined) clearInterval(this.watchdog)
    this.replicas.close()
    for (const timer of this.leases.values()) clearTimeout(timer)
    for (const channel of this.channels.values()) channel.abort(new PipemeshError('UNREACHABLE', 'coordinator shutting down'))
    await this.runs.close()
    await this.node?.stop()
    await this.secrets.close()
    await this.membership.close()
    await this.db.close()
  }

  // --- the control protocol ---

  private async onControlStream (stream: Stream, connection: Connection): Promise<void> {
    const agentId = connection.remotePeer.toString()
    const channel = openChannel<AgentMessage, CoordinatorMessage>(stream, {
      inSchema: agentMessageSchema,
      maxMessageBytes: MAX_CONTROL_MESSAGE_BYTES
    })
    const log = this.log.child({ agentId })
    if (!this.membership.isMember(agentId)) {
      log.warn('refused a control stream from a peer that is not an enrolled agent')
      channel.abort(new PipemeshError('UNAUTHORIZED', 'not an enrolled agent of this coordinator'))
      await connection.close().catch(() => {})
      return
    }
    try {
      let hello: Extract<AgentMessage, { type: 'hello' }> | undefined
      for await (const msg of channel) {
        if (hello === undefined) {
          if (msg.type !== 'hello') throw new PipemeshError('PROTOCOL', `expected hello first, got ${msg.type}`)
          hello = msg
          this.channels.get(agentId)?.abort(new PipemeshError('CONFLICT', 'replaced by a newer connection of the same agent'))
          this.channels.set(agentId, channel)
          this.clearLease(agentId)
          const revision = msg.revision ?? 1
          this.registry.connect({
            id: agentId,
            name: msg.name,
            version: msg.version,
            revision,
            addrs: msg.addrs,
            capabilities: msg.capabilities,
            send: (out) => { this.sendToAgent(agentId, channel, out, log) }
          })
          await channel.send({ type: 'welcome', coordinator: this.peerId, heartbeatMs: this.heartbeatMs, revision: CONTROL_REVISION })
          if (revision < CONTROL_REVISION) log.warn({ name: msg.name, version: msg.version, revision }, 'agent runs an older pipemesh: it runs steps, except those that keep a checkpoint directory; upgrade it')
          await channel.send({ type: 'members', peers: this.membership.current() })
          log.info({ name: msg.name, running: msg.running.length }, 'agent connected')
          this.runs.agentReconnected(agentId, msg.running)
          continue
        }
        this.onAgentMessage(agentId, msg)
      }
    } catch (err) {
      // A reset stream is how a vanished or restarting agent looks: worth a line, not a stack.
      if (this.stopped) log.debug({ err }, 'control stream closed during shutdown')
      else if (err instanceof PipemeshError && err.code === 'PROTOCOL') log.warn({ err: err.message }, 'agent broke the control protocol; closing its stream')
      else log.info({ err: (err as Error).message }, 'control stream closed')
      channel.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      if (this.channels.get(agentId) === channel) {
        this.channels.delete(agentId)
        this.registry.disconnect(agentId)
        this.uploads.agentGone(agentId)
        this.gcBroker.agentGone(agentId)
        this.replicas.agentGone(agentId)
        log.info('agent disconnected')
        this.startLease(agentId, 'disconnected')
      }
    }
  }

  /** Sends to an agent; a task's secret values are looked up here, at the last moment. */
  private sendToAgent (agentId: string, channel: MessageChannel<AgentMessage, CoordinatorMessage>, out: CoordinatorMessage, log: Logger): void {
    const send = (msg: CoordinatorMessage): void => { void channel.send(msg).catch((err: unknown) => { log.warn({ err }, 'could not send to agent') }) }
    if (out.type !== 'task' || out.task.secretNames === undefined || out.task.secretNames.length === 0) { send(out); return }
    const task = out.task
    this.secrets.resolve(task.secretNames ?? []).then(values => {
      send({ ...out, task: { ...task, secrets: values } })
    }, (err: unknown) => {
      const now = Date.now()
      this.runs.attemptFinished(agentId, { attemptId: task.attemptId, status: 'failed', exitCode: null, outputs: {}, error: toWireError(err), startedAt: now, finishedAt: now })
    })
  }

  /** The enroll protocol: a join token in, membership out. The only thing a non-member may do. */
  private async onEnroll (stream: Stream, connection: Connection): Promise<void> {
    const peerId = connection.remotePeer.toString()
    const channel = openChannel<EnrollRequest, EnrollResponse>(stream, { inSchema: enrollRequestSchema, maxMessageBytes: MAX_ENROLL_MESSAGE_BYTES })
    try {
      for await (const request of channel) {
        try {
          await this.membership.redeem(request.token, peerId, request.name)
          this.log.info({ agentId: peerId, name: request.name }, 'agent enrolled with a join token')
          await channel.send({ ok: true, coordinator: this.peerId })
        } catch (err) {
          this.log.warn({ peerId, err: (err as Error).message }, 'refused an enrollment')
          const wire = toWireError(err)
          await channel.send({ ok: false, error: { code: wire.code, message: wire.message, ...(wire.hint === undefined ? {} : { hint: wire.hint }) } })
        }
        break
      }
      await channel.close()
    } catch (err) {
      channel.abort(err instanceof Error ? err : new Error(String(err)))
    } finally {
      // A non-member gets no more than this one exchange.
      if (!this.membership.isMember(peerId)) await connection.close().catch(() => {})
    }
  }

  /** Pushes the member list to every agent, and cuts off revoked ones at once. */
  private membersChanged (): void {
    const peers = this.membership.current()
    for (const session of this.registry.connected()) {
      if (!this.membership.isMember(session.id)) {
        this.log.warn({ agentId: session.id, name: session.name }, 'agent revoked: disconnecting it and rescheduling its steps')
        // Out of the scheduler's view now, before its steps are placed again.
        this.registry.disconnect(session.id)
        this.channels.get(session.id)?.abort(new PipemeshError('UNAUTHORIZED', 'this agent was revoked'))
        void this.node?.hangUp(peerIdFromString(session.id)).catch(() => {})
        this.clearLease(session.id)
        this.runs.agentLost(session.id, 'it was revoked')
        continue
      }
      session.send({ type: 'members', peers })
    }
  }

  // --- administration (members, tokens, secrets) ---

  async createToken (ttlMs: number): Promise<{ token: string, expiresAt: number, coordinator: string | null, multiaddrs: string[] }> {
    const created = await this.membership.createToken(ttlMs)
    return { ...created, coordinator: this.node === undefined ? null : this.peerId, multiaddrs: this.multiaddrs() }
  }

  async revokeAgent (idOrName: string): Promise<Member> {
    const member = this.membership.list().find(m => m.peerId === idOrName) ??
      this.membership.list().find(m => m.peerId.endsWith(idOrName) && idOrName.length >= 6) ??
      this.membership.list().find(m => m.name === idOrName && m.revokedAt === undefined)
    if (member === undefined) throw new PipemeshError('NOT_FOUND', `no enrolled agent with id or name "${idOrName}"`, { hint: 'list agents with `pipemesh agents`' })
    return await this.membership.revoke(member.peerId)
  }

  async setSecret (name: string, value: string): Promise<void> {
    await this.secrets.set(name, value)
  }

  async listSecrets (): Promise<Array<{ name: string, updatedAt: number }>> {
    return await this.secrets.list()
  }

  async deleteSecret (name: string): Promise<void> {
    if (!await this.secrets.delete(name)) throw new PipemeshError('NOT_FOUND', `no secret named ${name}`)
  }

  private onAgentMessage (agentId: string, msg: AgentMessage): void {
    const session = this.registry.get(agentId)
    if (session !== undefined) session.lastSeen = Date.now()
    switch (msg.type) {
      case 'hello':
        throw new PipemeshError('PROTOCOL', 'hello sent twice')
      case 'holdings':
        this.registry.addHoldings(agentId, msg.add)
        this.registry.removeHoldings(agentId, msg.remove)
        if (msg.done === true) {
          this.registry.markSynced(agentId)
          this.runs.capacityChanged()
        }
        break
      case 'heartbeat':
        if (session !== undefined) {
          session.load = msg.load
          const freed = msg.diskFree - (session.view.diskFree ?? Infinity)
          session.view = { ...session.view, load: msg.load, diskFree: msg.diskFree }
          session.capabilities = { ...session.capabilities, diskFree: msg.diskFree }
          // Steps waiting for disk space may fit now (a gc ran, files were deleted).
          if (freed >= DISK_FREED_RECHECK_BYTES) this.runs.capacityChanged()
          if (msg.transfers !== undefined) session.transfers = msg.transfers
        }
        break
      case 'started':
        this.runs.attemptStarted(agentId, msg.attemptId, msg.pid)
        break
      case 'checkpoint':
        this.runs.attemptCheckpoint(agentId, msg.attemptId, msg.ref, msg.at)
        break
      case 'log':
        this.runs.attemptLog(agentId, msg.attemptId, msg.lines)
        break
      case 'fetching':
        this.runs.attemptFetching(agentId, msg)
        break
      case 'storing':
        this.runs.attemptStoring(agentId, msg)
        break
      case 'finished':
        this.runs.attemptFinished(agentId, msg.result)
        break
      case 'fetched':
        // Each ignores the replies to requests it did not make.
        this.uploads.onFetched(agentId, msg)
        this.replicas.onFetched(agentId, msg)
        break
      case 'collected':
        this.gcBroker.onCollected(agentId, msg)
        break
    }
  }

  private checkHeartbeats (): void {
    const now = Date.now()
    for (const session of this.registry.connected()) {
      if (now - session.lastSeen > this.leaseMs) {
        // Silent for a whole lease (hung, stopped, cut off): lost now, not after a second lease.
        this.log.warn({ agentId: session.id, silentMs: now - session.lastSeen }, 'agent stopped sending heartbeats; rescheduling its steps')
        const channel = this.channels.get(session.id)
        this.channels.delete(session.id)
        this.registry.disconnect(session.id)
        this.uploads.agentGone(session.id)
        this.gcBroker.agentGone(session.id)
        this.replicas.agentGone(session.id)
        channel?.abort(new PipemeshError('UNREACHABLE', 'no heartbeat within the lease'))
        this.clearLease(session.id)
        this.runs.agentLost(session.id, `no heartbeat for more than ${this.leaseMs} ms`)
      }
    }
  }

  private startLease (agentId: string, why: string): void {
    this.clearLease(agentId)
    const timer = setTimeout(() => {
      this.leases.delete(agentId)
      if (this.registry.get(agentId)?.connected === true) return
      this.log.warn({ agentId }, 'agent lease expired; rescheduling its steps')
      this.runs.agentLost(agentId, `${why} for more than ${this.leaseMs} ms`)
    }, this.leaseMs)
    timer.unref()
    this.leases.set(agentId, timer)
  }

  private clearLease (agentId: string): void {
    const timer = this.leases.get(agentId)
    if (timer !== undefined) clearTimeout(timer)
    this.leases.delete(agentId)
  }

  /** Resolves once an agent has connected and reported what it holds. */
  async waitForAgent (agentId: string, options: { signal?: AbortSignal } = {}): Promise<void> {
    if (this.registry.isSynced(agentId)) return
    for await (const [id] of on(this.registry.events, 'synced', { signal: options.signal })) {
      if (id === agentId) return
    }
  }

  /**
   * Decides what store garbage collection keeps: the newest `keepRuns` finished runs of each
   * pipeline (older ones are deleted here), every unfinished run, and every reuse entry.
   */
  async planGc (keepRuns: number): Promise<{ keep: Set<Digest>, removedRuns: number }> {
    const byPipeline = new Map<string, Array<{ id: string, createdAt: number, status: string }>>()
    for await (const header of this.db.listRunHeaders()) {
      const list = byPipeline.get(header.pipeline) ?? []
      list.push({ id: header.id, createdAt: header.createdAt, status: header.status })
      byPipeline.set(header.pipeline, list)
    }
    const kept: string[] = []
    const removed: string[] = []
    for (const runs of byPipeline.values()) {
      runs.sort((a, b) => b.createdAt - a.createdAt)
      let finished = 0
      for (const run of runs) (run.status === 'running' || finished++ < keepRuns ? kept : removed).push(run.id)
    }
    const keep = new Set<Digest>()
    // A kept run that reused a step of a removed run still vouches for that reuse entry: without
    // it, a pipeline reused day after day would run everything again once its first run went.
    const fingerprints = new Set<string>()
    for (const runId of kept) {
      const run = await this.db.getRun(runId)
      if (run === undefined) continue
      const steps = await this.db.listSteps(runId)
      addRunReferences(keep, run.submission.artifacts, steps)
      for (const step of steps) if (step.fingerprint !== undefined) fingerprints.add(step.fingerprint)
    }
    for (const runId of removed) await this.db.deleteRun(runId, { keepReuse: fingerprints })
    for await (const entry of this.db.listReuse()) for (const ref of Object.values(entry.outputs)) keep.add(ref.digest)
    // Saves of steps that have not succeeded yet: a rerun of the pipeline resumes from them.
    for await (const saved of this.db.listCheckpoints()) {
      keep.add(saved.ref.digest)
      if (saved.older !== undefined) keep.add(saved.older.ref.digest)
    }
    return { keep, removedRuns: removed.length }
  }

  // --- the client API ---

  async collectGarbage (keepRuns: number, options: GcOptions = {}): Promise<MeshGcReport> {
    const plan = await this.planGc(keepRuns)
    // What steps produced while the plan read the database: no await from here to the drop lists.
    this.runs.addLiveReferences(plan.keep)
    const { agents, skipped } = await this.gcBroker.collect(plan.keep, options)
    const freedBytes = agents.reduce((n, a) => n + a.freedBytes, 0)
    const failed = agents.filter(a => a.error !== undefined).map(a => a.agent)
    this.log.info({ keepRuns, removedRuns: plan.removedRuns, agents: agents.length, freedBytes, failed, skipped }, 'garbage collected')
    return { removedRuns: plan.removedRuns, agents, skipped }
  }

  async submit (request: SubmitRequest): Promise<RunSummary> {
    const parsed = submitRequestSchema.safeParse(request)
    if (!parsed.success) throw new PipemeshError('INVALID_ARGUMENT', `invalid submit request: ${parsed.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
    const req = parsed.data
    const parseOptions: Parameters<typeof parsePipeline>[1] = { baseDir: req.pipeline.baseDir ?? '/', checkFiles: false, params: req.params }
    if (req.pipeline.file !== undefined) parseOptions.file = req.pipeline.file
    const pipeline = req.pipeline.text !== undefined ? parsePipeline(req.pipeline.text, parseOptions) : parsePipelineData(req.pipeline.data, parseOptions)
    const artifacts = req.artifacts as Submission['artifacts']
    const missing: string[] = []
    for (const name of Object.keys(pipeline.inputs)) if (artifacts.inputs[name] === undefined) missing.push(`input ${name}`)
    for (const step of Object.values(pipeline.steps)) if (step.code.length > 0 && artifacts.code[step.id] === undefined) missing.push(`code of step ${step.id}`)
    for (const name of Object.keys(pipeline.environments)) if (artifacts.environments[name] === undefined) missing.push(`files of environment ${name}`)
    if (missing.length > 0) throw new PipemeshError('INVALID_ARGUMENT', `the submission lacks the content of: ${missing.join(', ')}`)
    // Fail now, not hours later when the step that needs it becomes ready.
    const secretNames = [...new Set(Object.values(pipeline.steps).flatMap(s => s.secrets))]
    if (secretNames.length > 0) {
      try {
        await this.secrets.resolve(secretNames)
      } catch (err) {
        throw new PipemeshError('INVALID_ARGUMENT', (err as Error).message, (err as PipemeshError).hint === undefined ? {} : { hint: (err as PipemeshError).hint! })
      }
    }
    if (req.uploadedTo !== undefined) {
      const refs = [...Object.values(artifacts.inputs), ...Object.values(artifacts.code).map(c => c.ref), ...Object.values(artifacts.environments).map(e => e.files)]
      this.registry.addHoldings(req.uploadedTo, refs)
    }
    return await this.runs.submit({ pipeline, artifacts }, { resume: req.resume !== false })
  }

  async getRun (runId: string): Promise<RunSummary> {
    const run = await this.runs.getRun(runId)
    if (run === undefined) throw new PipemeshError('NOT_FOUND', `no run with id ${runId}`, { hint: 'list runs with `pipemesh runs`' })
    return run
  }

  async listRuns (options: { limit?: number } = {}): Promise<RunListEntry[]> {
    return await this.runs.listRuns(options.limit ?? 50)
  }

  async cancel (runId: string): Promise<RunSummary> {
    return await this.runs.cancel(runId)
  }

  async explain (runId: string, stepId: string): Promise<Explanation> {
    const found = await this.runs.getStep(runId, stepId)
    if (found === undefined) {
      await this.getRun(runId)
      throw new PipemeshError('NOT_FOUND', `run ${runId} has no step named ${stepId}`)
    }
    const history = (await this.db.history(found.run.pipeline, stepId)).filter(h => h.runId !== runId && h.at < (found.step.readyAt ?? Infinity))
    return explainStep({
      runId,
      step: found.step,
      spec: found.run.submission.pipeline.steps[stepId],
      steps: found.steps,
      history
    })
  }

  async missingArtifacts (digests: Digest[]): Promise<Digest[]> {
    return this.uploads.missing(digests)
  }

  async upload (refs: ArtifactRef[], from: PeerAddress, options: { signal?: AbortSignal } = {}): Promise<UploadResult> {
    return await this.uploads.upload(refs, from, options)
  }

  /** The connected holders of an artifact; `client` (a peer id) is allowed to fetch from them for 10 minutes. */
  async locate (digest: Digest, client?: string): Promise<PeerAddress[]> {
    const holders = this.registry.holdersOf(digest)
    if (client !== undefined) for (const id of holders) this.registry.get(id)?.send({ type: 'grant', peerId: client, ttlMs: 10 * 60_000 })
    return this.registry.addresses(holders)
  }

  async agents (): Promise<AgentListEntry[]> {
    return this.registry.info()
  }

  async drainAgent (idOrName: string, draining: boolean): Promise<AgentListEntry> {
    const agent = this.registry.find(idOrName)
    if (agent === undefined) throw new PipemeshError('NOT_FOUND', `no agent with id or name "${idOrName}" has connected since the coordinator started`, { hint: 'list agents with `pipemesh agents`' })
    this.registry.setDraining(agent.id, draining)
    this.db.setDrained(agent.id, draining)
    await this.db.flush()
    this.log.info({ agentId: agent.id, name: agent.name, draining }, draining ? 'agent drained: it takes no new steps' : 'agent undrained')
    if (!draining) this.runs.capacityChanged()
    return this.registry.info().find(a => a.id === agent.id)!
  }

  async * logs (runId: string, stepId: string, options: { follow?: boolean, attempt?: number, signal?: AbortSignal } = {}): AsyncIterable<LogEntry> {
    const controller = new AbortController()
    const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal])
    // Subscribe before reading stored lines so nothing falls between the two.
    const live = options.follow === true ? on(this.runs.events, 'event', { signal }) : undefined
    try {
      const found = await this.runs.getStep(runId, stepId)
      if (found === undefined) { await this.getRun(runId); throw new PipemeshError('NOT_FOUND', `run ${runId} has no step named ${stepId}`) }
      const attempt = options.attempt === undefined ? found.step.attempts.at(-1) : found.step.attempts.find(a => a.number === options.attempt)
      let seen = 0
      if (attempt !== undefined) {
        await this.db.flush()
        const { lines, seq } = await this.db.readLog(attempt.id)
        seen = seq
        for (const line of lines) yield { ...line, attempt: attempt.number }
      }
      if (live === undefined || TERMINAL_STEP_STATUSES.has(found.step.status)) return
      for await (const [event] of live as AsyncIterable<[RunEvent]>) {
        if (event.runId !== runId) continue
        if (event.type === 'log' && event.stepId === stepId) {
          if (attempt !== undefined && event.attempt === attempt.number && (event.seq ?? Infinity) <= seen) continue
          for (const line of event.lines) yield { ...line, attempt: event.attempt }
        } else if (event.type === 'step' && event.step.id === stepId && TERMINAL_STEP_STATUSES.has(event.step.status)) {
          return
        } else if (event.type === 'run' && event.status !== 'running') {
          return
        }
      }
    } finally {
      controller.abort()
    }
  }

  async * events (runId: string, options: EventOptions = {}): AsyncIterable<RunEvent> {
    const controller = new AbortController()
    const signal = options.signal === undefined ? controller.signal : AbortSignal.any([options.signal, controller.signal])
    const runOnly = options.only === 'run'
    // A run-only follower listens where only run events go: while no one follows every step,
    // the run manager does not even build step events.
    const live = on(this.runs.events, runOnly ? RUN_EVENT : 'event', { signal })
    try {
      const snapshot = await this.getRun(runId)
      const now = Date.now()
      if (!runOnly) for (const step of snapshot.steps) yield { type: 'step', runId, step, at: now }
      yield { type: 'run', runId, status: snapshot.status, at: now }
      if (snapshot.status !== 'running') return
      for await (const [event] of live as AsyncIterable<[RunEvent]>) {
        if (event.runId !== runId || (event.type === 'store' && options.store !== true)) continue
        yield event
        if (event.type === 'run' && event.status !== 'running') return
      }
    } finally {
      controller.abort()
    }
  }
}
