// The coordinator's HTTP API: the client API (src/client/api.ts) over fastify. JSON in and out;
// a step's log streams as NDJSON, run events as server-sent events. Errors carry their code and
// a message meant for the person at the other end.

import { createHash, timingSafeEqual } from 'node:crypto'
import type { Writable } from 'node:stream'
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify'
import type { Logger } from 'pino'
import { PipemeshError, toWireError, type ErrorCode } from '../src/errors.js'
import type { CoordinatorApi } from '../src/client/api.js'
import type { SubmitRequest } from '../src/client/submit-request.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { z } from 'zod'

const digestSchema = z.string().regex(/^sha256:[0-9a-f]{64}$/)
const locateSchema = z.object({ digest: digestSchema, client: z.string().min(1).max(128).optional() })
const gcSchema = z.object({ keepRuns: z.number().int().nonnegative(), graceMs: z.number().int().nonnegative().optional() }).strict()
const tokenSchema = z.object({ ttlMs: z.number().positive().max(365 * 24 * 3600 * 1000).default(3600 * 1000) })
const secretSchema = z.object({ value: z.string().min(1).max(64 * 1024) })
const missingSchema = z.object({ digests: z.array(digestSchema).max(100_000) })
const uploadSchema = z.object({
  refs: z.array(z.object({ digest: digestSchema, kind: z.enum(['file', 'tree']), size: z.number().int().nonnegative() })).max(100_000),
  from: z.object({ peerId: z.string().max(128), addrs: z.array(z.string().max(512)).min(1).max(32) })
})

export interface ApiServerOptions {
  api: CoordinatorApi
  host: string
  port: number
  logger: Logger
  /** Largest request body, bytes. */
  bodyLimit?: number
  /** When set, every request must carry `Authorization: Bearer <token>` (compared in constant time). */
  token?: string
  /** Extra information served by GET /v1/health (peer id, multiaddrs). */
  health?: () => Record<string, unknown>
}

const STATUS: Partial<Record<ErrorCode, number>> = {
  NOT_FOUND: 404,
  INVALID_ARGUMENT: 400,
  INVALID_PIPELINE: 400,
  UNAUTHORIZED: 401,
  CONFLICT: 409,
  LIMIT_EXCEEDED: 413,
  UNSCHEDULABLE: 422
}

export async function startApiServer (options: ApiServerOptions): Promise<{ server: FastifyInstance, url: string }> {
  const { api } = options
  const server = Fastify({ bodyLimit: options.bodyLimit ?? 16 * 1024 * 1024, logger: false })

  server.setErrorHandler((err, _request, reply) => {
    if (err instanceof PipemeshError) {
      const body: Record<string, unknown> = { error: toWireError(err) }
      if ('issues' in err) body.issues = (err as PipemeshError & { issues: unknown }).issues
      void reply.code(STATUS[err.code] ?? 500).send(body)
      return
    }
    const status = typeof (err as { statusCode?: number }).statusCode === 'number' ? (err as { statusCode: number }).statusCode : 500
    if (status >= 500) options.logger.error({ err }, 'API request failed')
    void reply.code(status).send({ error: { code: status === 413 ? 'LIMIT_EXCEEDED' : status < 500 ? 'INVALID_ARGUMENT' : 'INTERNAL', message: (err as Error).message } })
  })

  if (options.token !== undefined) {
    const expected = createHash('sha256').update(options.token).digest()
    server.addHook('onRequest', async (request, reply) => {
      const header = request.headers.authorization ?? ''
      const given = createHash('sha256').update(header.startsWith('Bearer ') ? header.slice(7) : '').digest()
      // Hashes of equal length compared in constant time: the timing says nothing about the token.
      if (!timingSafeEqual(given, expected)) {
        await reply.code(401).header('www-authenticate', 'Bearer').send({ error: { code: 'UNAUTHORIZED', message: 'this coordinator API needs a bearer token', hint: 'pass --api-token-file FILE or set PIPEMESH_API_TOKEN' } })
      }
    })
  }

  server.get('/v1/health', async () => ({ ok: true, ...(options.health?.() ?? {}) }))
  server.post<{ Body: SubmitRequest }>('/v1/runs', async (request, reply) => {
    const run = await api.submit(request.body)
    return await reply.code(201).send(run)
  })
  server.get<{ Querystring: { limit?: string } }>('/v1/runs', async (request) => {
    const limit = request.query.limit === undefined ? undefined : Number(request.query.limit)
    return await api.listRuns(limit === undefined || !Number.isFinite(limit) ? {} : { limit })
  })
  server.get<{ Params: { run: string } }>('/v1/runs/:run', async (request) => await api.getRun(request.params.run))
  server.post<{ Params: { run: string } }>('/v1/runs/:run/cancel', async (request) => await api.cancel(request.params.run))
  server.get<{ Params: { run: string, step: string } }>('/v1/runs/:run/steps/:step/explain', async (request) => await api.explain(request.params.run, request.params.step))
  server.get('/v1/agents', async () => await api.agents())
  server.post<{ Body: unknown }>('/v1/artifacts/missing', async (request) => {
    const body = missingSchema.safeParse(request.body)
    if (!body.success) throw new PipemeshError('INVALID_ARGUMENT', `expected {digests: [sha256:…]}: ${body.error.issues[0]?.message ?? ''}`)
    return { missing: await api.missingArtifacts(body.data.digests as Digest[]) }
  })
  server.post<{ Body: unknown }>('/v1/artifacts/locate', async (request) => {
    const body = locateSchema.safeParse(request.body)
    if (!body.success) throw new PipemeshError('INVALID_ARGUMENT', `expected {digest: "sha256:…", client?: "<peer id>"}: ${body.error.issues[0]?.message ?? ''}`)
    return await api.locate(body.data.digest as Digest, body.data.client)
  })
  server.post<{ Body: unknown }>('/v1/tokens', async (request, reply) => {
    const body = tokenSchema.safeParse(request.body ?? {})
    if (!body.success) throw new PipemeshError('INVALID_ARGUMENT', `expected {ttlMs: <positive number>}: ${body.error.issues[0]?.message ?? ''}`)
    return await reply.code(201).send(await api.createToken(body.data.ttlMs))
  })
  server.post<{ Params: { agent: string } }>('/v1/agents/:agent/drain', async (request) => await api.drainAgent(request.params.agent, true))
  server.post<{ Params: { agent: string } }>('/v1/agents/:agent/undrain', async (request) => await api.drainAgent(request.params.agent, false))
  server.post<{ Params: { agent: string } }>('/v1/agents/:agent/revoke', async (request) => await api.revokeAgent(request.params.agent))
  server.get('/v1/secrets', async () => await api.listSecrets())
  server.put<{ Params: { name: string }, Body: unknown }>('/v1/secrets/:name', async (request, reply) => {
    const body = secretSchema.safeParse(request.body)
    if (!body.success) throw new PipemeshError('INVALID_ARGUMENT', 'expected {value: "<secret>"}')
    await api.setSecret(request.params.name, body.data.value)
    return await reply.code(204).send()
  })
  server.delete<{ Params: { name: string } }>('/v1/secrets/:name', async (request, reply) => {
    await api.deleteSecret(request.params.name)
    return await reply.code(204).send()
  })
  server.post<{ Body: unknown }>('/v1/gc', async (request, reply) => {
    const body = gcSchema.safeParse(request.body ?? {})
    if (!body.success) throw new PipemeshError('INVALID_ARGUMENT', `expected {keepRuns: <whole number, 0 or more>, graceMs?: <milliseconds>}: ${body.error.issues[0]?.message ?? ''}`)
    const controller = abortOnClose(reply)
    return await api.collectGarbage(body.data.keepRuns, { signal: controller.signal, ...body.data.graceMs === undefined ? {} : { graceMs: body.data.graceMs } })
  })
  server.post<{ Body: unknown }>('/v1/uploads', async (request, reply) => {
    const body = uploadSchema.safeParse(request.body)
    if (!body.success) throw new PipemeshError('INVALID_ARGUMENT', `expected {refs, from: {peerId, addrs}}: ${body.error.issues[0]?.message ?? ''}`)
    const controller = abortOnClose(reply)
    return await api.upload(body.data.refs as ArtifactRef[], body.data.from, { signal: controller.signal })
  })

  server.get<{ Params: { run: string, step: string }, Querystring: { follow?: string, attempt?: string } }>('/v1/runs/:run/steps/:step/logs', async (request, reply) => {
    const controller = abortOnClose(reply)
    const opts: { follow: boolean, signal: AbortSignal, attempt?: number } = { follow: request.query.follow === 'true' || request.query.follow === '1', signal: controller.signal }
    if (request.query.attempt !== undefined) opts.attempt = Number(request.query.attempt)
    const iterator = api.logs(request.params.run, request.params.step, opts)[Symbol.asyncIterator]()
    // Errors before the first line (unknown run) become a proper HTTP error.
    const first = await iterator.next()
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-cache' })
    try {
      if (first.done !== true) reply.raw.write(JSON.stringify(first.value) + '\n')
      for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) {
        if (!reply.raw.write(JSON.stringify(next.value) + '\n')) await new Promise(resolve => reply.raw.once('drain', resolve))
      }
    } catch (err) {
      if (!controller.signal.aborted) reply.raw.write(JSON.stringify({ error: toWireError(err) }) + '\n')
    }
    reply.raw.end()
  })

  server.get<{ Params: { run: string }, Querystring: { only?: string, store?: string } }>('/v1/runs/:run/events', async (request, reply) => {
    const { only, store } = request.query
    if (only !== undefined && only !== 'run') throw new PipemeshError('INVALID_ARGUMENT', `events: unknown value "${only}" for "only"; expected "run" (the run's own events alone), or leave it out for every event`)
    if (store !== undefined && store !== '1') throw new PipemeshError('INVALID_ARGUMENT', `events: unknown value "${store}" for "store"; expected "1" (with the progress of outputs being stored), or leave it out`)
    const controller = abortOnClose(reply)
    const iterator = api.events(request.params.run, { signal: controller.signal, ...only === undefined ? {} : { only }, store: store === '1' })[Symbol.asyncIterator]()
    const first = await iterator.next()
    reply.hijack()
    reply.raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    const out = new CoalescingWriter(reply.raw, EVENT_FLUSH_MS)
    try {
      if (first.done !== true) out.write(`data: ${JSON.stringify(first.value)}\n\n`)
      for (let next = await iterator.next(); next.done !== true; next = await iterator.next()) out.write(`data: ${JSON.stringify(next.value)}\n\n`)
    } catch (err) {
      if (!controller.signal.aborted) out.write(`event: error\ndata: ${JSON.stringify(toWireError(err))}\n\n`)
    }
    out.flush()
    reply.raw.end()
  })

  const address = await server.listen({ host: options.host, port: options.port })
  return { server, url: address }
}

/**
 * How long run events wait to go out together. A fan-out run changes hundreds of steps a second;
 * one write per change cost the coordinator a syscall each and woke the follower as often, for
 * a view that a person reads a few times a second. The stream's end is never delayed.
 */
const EVENT_FLUSH_MS = 20

class CoalescingWriter {
  private pending: string[] = []
  private timer: NodeJS.Timeout | undefined
  constructor (private readonly out: Writable, private readonly delayMs: number) {}

  write (text: string): void {
    this.pending.push(text)
    this.timer ??= setTimeout(() => { this.flush() }, this.delayMs)
  }

  flush (): void {
    if (this.timer !== undefined) { clearTimeout(this.timer); this.timer = undefined }
    if (this.pending.length === 0) return
    const text = this.pending.join('')
    this.pending = []
    // The follower may be gone (it closed the stream): nothing to tell it then.
    if (!this.out.destroyed && !this.out.writableEnded) this.out.write(text)
  }
}

function abortOnClose (reply: FastifyReply): AbortController {
  const controller = new AbortController()
  reply.raw.on('close', () => { controller.abort() })
  return controller
}
