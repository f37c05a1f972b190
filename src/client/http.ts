// CoordinatorApi over HTTP, for the CLI and the TypeScript SDK. It imports nothing of libp2p, so
// status queries start fast. Errors from the server come back as PipemeshErrors with their code;
// an unreachable coordinator, or a response stream that breaks, as UNREACHABLE. Built on
// node:http rather than fetch: Node 20 loads undici on the first fetch, ~70 ms of a CLI run
// whose whole budget is a quarter of a second.

import http, { type IncomingMessage } from 'node:http'
import { createParser } from 'eventsource-parser'
import { PipemeshError, fromWireError, type WireError } from '../errors.js'
import type { Explanation } from '../run/explain.js'
import type { RunEvent, RunSummary } from '../run/types.js'
import type { AgentListEntry, CoordinatorApi, EventOptions, GcOptions, LogEntry, MeshGcReport, RunListEntry, UploadResult } from './api.js'
import type { SubmitRequest } from './submit-request.js'
import type { PeerAddress } from '../protocol/messages.js'
import type { ArtifactRef, Digest } from '../store/types.js'

const KNOWN_EVENTS = new Set<string>(['run', 'step', 'log', 'fetch', 'store'] satisfies Array<RunEvent['type']>)

export class HttpCoordinatorClient implements CoordinatorApi {
  private readonly base: string

  constructor (url: string, private readonly token?: string) {
    this.base = url.replace(/\/+$/, '')
    if (!/^https?:\/\//.test(this.base)) throw new PipemeshError('INVALID_ARGUMENT', `coordinator URL "${url}" must start with http:// or https://`)
  }

  async submit (request: SubmitRequest): Promise<RunSummary> {
    return await this.json('POST', '/v1/runs', request)
  }

  async getRun (runId: string): Promise<RunSummary> {
    return await this.json('GET', `/v1/runs/${encodeURIComponent(runId)}`)
  }

  async listRuns (options: { limit?: number } = {}): Promise<RunListEntry[]> {
    return await this.json('GET', `/v1/runs${options.limit === undefined ? '' : `?limit=${options.limit}`}`)
  }

  async cancel (runId: string): Promise<RunSummary> {
    return await this.json('POST', `/v1/runs/${encodeURIComponent(runId)}/cancel`)
  }

  async explain (runId: string, stepId: string): Promise<Explanation> {
    return await this.json('GET', `/v1/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(stepId)}/explain`)
  }

  async agents (): Promise<AgentListEntry[]> {
    return await this.json('GET', '/v1/agents')
  }

  async missingArtifacts (digests: Digest[]): Promise<Digest[]> {
    return (await this.json<{ missing: Digest[] }>('POST', '/v1/artifacts/missing', { digests })).missing
  }

  async upload (refs: ArtifactRef[], from: PeerAddress, options: { signal?: AbortSignal } = {}): Promise<UploadResult> {
    return await this.json('POST', '/v1/uploads', { refs, from }, options.signal)
  }

  async locate (digest: Digest, client?: string): Promise<PeerAddress[]> {
    return await this.json('POST', '/v1/artifacts/locate', client === undefined ? { digest } : { digest, client })
  }

  async createToken (ttlMs: number): Promise<{ token: string, expiresAt: number, coordinator: string | null, multiaddrs: string[] }> {
    return await this.json('POST', '/v1/tokens', { ttlMs })
  }

  async drainAgent (idOrName: string, draining: boolean): Promise<AgentListEntry> {
    return await this.json('POST', `/v1/agents/${encodeURIComponent(idOrName)}/${draining ? 'drain' : 'undrain'}`)
  }

  async revokeAgent (idOrName: string): Promise<{ peerId: string, name: string, revokedAt?: number }> {
    return await this.json('POST', `/v1/agents/${encodeURIComponent(idOrName)}/revoke`)
  }

  async collectGarbage (keepRuns: number, options: GcOptions = {}): Promise<MeshGcReport> {
    return await this.json('POST', '/v1/gc', { keepRuns, ...options.graceMs === undefined ? {} : { graceMs: options.graceMs } }, options.signal)
  }

  async setSecret (name: string, value: string): Promise<void> {
    await this.request('PUT', `/v1/secrets/${encodeURIComponent(name)}`, { value })
  }

  async listSecrets (): Promise<Array<{ name: string, updatedAt: number }>> {
    return await this.json('GET', '/v1/secrets')
  }

  async deleteSecret (name: string): Promise<void> {
    await this.request('DELETE', `/v1/secrets/${encodeURIComponent(name)}`)
  }

  async health (): Promise<Record<string, unknown>> {
    return await this.json('GET', '/v1/health')
  }

  async * logs (runId: string, stepId: string, options: { follow?: boolean, attempt?: number, signal?: AbortSignal } = {}): AsyncIterable<LogEntry> {
    const query = new URLSearchParams()
    if (options.follow === true) query.set('follow', 'true')
    if (options.attempt !== undefined) query.set('attempt', String(options.attempt))
    const response = await this.request('GET', `/v1/runs/${encodeURIComponent(runId)}/steps/${encodeURIComponent(stepId)}/logs?${query.toString()}`, undefined, options.signal)
    let buffered = ''
    for await (const chunk of readText(response, options.signal)) {
      buffered += chunk
      let nl
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        if (line === '') continue
        const value = JSON.parse(line) as LogEntry | { error: WireError }
        if ('error' in value) throw fromWireError(value.error)
        yield value
      }
    }
  }

  async * events (runId: string, options: EventOptions = {}): AsyncIterable<RunEvent> {
    const params = new URLSearchParams()
    if (options.only !== undefined) params.set('only', options.only)
    if (options.store === true) params.set('store', '1')
    const query = params.size > 0 ? `?${params.toString()}` : ''
    const response = await this.request('GET', `/v1/runs/${encodeURIComponent(runId)}/events${query}`, undefined, options.signal)
    const queue: RunEvent[] = []
    let failure: PipemeshError | undefined
    const parser = createParser({
      onEvent: (event) => {
        if (event.event === 'error') failure = fromWireError(JSON.parse(event.data) as WireError)
        else {
          const value = JSON.parse(event.data) as RunEvent
          // A newer coordinator may send kinds this client does not know: passed over.
          if (KNOWN_EVENTS.has(value.type)) queue.push(value)
        }
      }
    })
    for await (const chunk of readText(response, options.signal)) {
      parser.feed(chunk)
      while (queue.length > 0) yield queue.shift()!
      if (failure !== undefined) throw failure
    }
  }

  private async json<T> (method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<T> {
    const response = await this.request(method, path, body, signal)
    let text = ''
    for await (const chunk of readText(response, signal)) text += chunk
    signal?.throwIfAborted()
    return JSON.parse(text) as T
  }

  private async request (method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<IncomingMessage> {
    const headers: Record<string, string> = {}
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body), 'utf8')
    if (payload !== undefined) {
      headers['content-type'] = 'application/json'
      headers['content-length'] = String(payload.byteLength)
    }
    if (this.token !== undefined) headers.authorization = `Bearer ${this.token}`
    signal?.throwIfAborted()
    const url = new URL(this.base + path)
    // https only where asked for: node:tls is not worth loading for a loopback coordinator.
    const client = url.protocol === 'https:' ? (await import('node:https')).default : http
    let response: IncomingMessage
    try {
      response = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = client.request(url, { method, headers, ...(signal === undefined ? {} : { signal }) }, resolve)
        req.once('error', reject)
        req.end(payload)
      })
    } catch (err) {
      if (signal?.aborted === true) throw signal.reason ?? err
      throw new PipemeshError('UNREACHABLE', `cannot reach the coordinator at ${this.base}: ${(err as Error).message}`, {
        retryable: true,
        hint: 'check the URL and that `pipemesh coordinator` is running there'
      })
    }
    const status = response.statusCode ?? 0
    if (status < 200 || status > 299) {
      let wire: WireError = { code: 'INTERNAL', message: `${method} ${path} answered HTTP ${status}` }
      try {
        let text = ''
        for await (const chunk of readText(response, signal)) text += chunk
        const parsed = JSON.parse(text) as { error?: WireError, issues?: Array<{ path: string, message: string }> }
        if (parsed.error !== undefined) wire = parsed.error
      } catch {}
      throw fromWireError(wire)
    }
    return response
  }
}

/** A response body as text; a stream that breaks (not by the caller's abort) is UNREACHABLE. */
async function * readText (response: IncomingMessage, signal: AbortSignal | undefined): AsyncIterable<string> {
  response.setEncoding('utf8')
  try {
    for await (const chunk of response) yield chunk as string
  } catch (err) {
    if (signal?.aborted === true) return
    throw new PipemeshError('UNREACHABLE', `the connection to the coordinator broke: ${(err as Error).message}`, { retryable: true })
  }
  // A server that goes away mid-response ends the stream early instead of failing it.
  if (!response.complete && signal?.aborted !== true) {
    throw new PipemeshError('UNREACHABLE', 'the connection to the coordinator closed in the middle of a response', { retryable: true })
  }
}
