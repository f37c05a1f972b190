// Artifact transfer between peers (`/pipemesh/chunks/1.0.0`). A client asks a holder for
// manifests or chunks by digest, in batches, on one stream per holder; the holder answers in
// order, each item a JSON header frame and a data frame. The client fetches manifests first, then
// only the chunks its store lacks (so an interrupted transfer resumes), splitting them among
// holders; every byte is verified by the store before it is kept. A holder sends its chunk bodies
// as they are, unhashed: the client hashes every chunk anyway, and hashing on both ends cost the
// holder a third of its CPU. A client that receives a chunk that hashes otherwise tells the
// holder ('corrupt', on a stream of its own), which hashes its copy and quarantines it if it is
// bad, before the client reports the failure: a rerun of the step that made it never finds the
// bad body still in place.

import type { Libp2p, PeerId, Stream } from '@libp2p/interface'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { z } from 'zod'
import { CancelledError, CorruptContentError, MissingContentError, PipemeshError, fromWireError, toWireError } from '../errors.js'
import { FrameStream } from '../protocol/channel.js'
import { byteLengthOf } from '../util/bytes.js'
import type { ContentStore } from '../store/content-store.js'
import { MAX_CHUNK_BYTES, MAX_MANIFEST_BYTES, type ChunkRef } from '../store/manifest.js'
import { DIGEST_PATTERN, type Digest } from '../store/types.js'

export const CHUNKS_PROTOCOL = '/pipemesh/chunks/1.0.0'
/** Most digests in one request. */
const MAX_BATCH_ITEMS = 512
/**
 * A chunk batch is cut at this many bytes. Three batches are kept in flight per holder, so the
 * holder always has the next one queued when it finishes one: requests cost the client no
 * memory (its stream is paused past CLIENT_HIGH_WATER, and the yamux window stops the holder).
 */
const BATCH_BYTES = 8 * 1024 * 1024
const BATCHES_IN_FLIGHT = 3
/**
 * Chunks a client hashes and writes at once, and a server reads ahead of the one it sends; the
 * work runs on the store's chunk workers and libuv's pool, so these only bound the bytes held.
 */
const WRITES_IN_FLIGHT = 4
const READ_AHEAD = 4
const MAX_REQUEST_BYTES = 64 * 1024
/** Received bytes a holder's stream may queue before it is paused (4 chunks: the writes in flight hold as many). */
const CLIENT_HIGH_WATER = 4 * 1024 * 1024

const digest = z.string().regex(DIGEST_PATTERN) as unknown as z.ZodType<Digest>
const requestSchema = z.object({
  type: z.enum(['manifests', 'chunks', 'corrupt']),
  digests: z.array(digest).min(1).max(MAX_BATCH_ITEMS)
})
type TransferRequest = z.infer<typeof requestSchema>
const responseSchema = z.discriminatedUnion('type', [
  z.object({ type: z.enum(['manifest', 'chunk']), digest, size: z.number().int().nonnegative() }),
  z.object({ type: z.literal('missing'), digest }),
  z.object({ type: z.literal('checked'), digest, state: z.enum(['ok', 'quarantined', 'missing']) }),
  z.object({ type: z.literal('error'), error: z.object({ code: z.string().max(64), message: z.string().max(4096), retryable: z.boolean().optional(), hint: z.string().max(4096).optional() }) })
])
type TransferResponse = z.infer<typeof responseSchema>

/** What serving needs from a store (a test may wrap one to serve lies). */
export type ServableStore = Pick<ContentStore, 'getManifestBytes' | 'readChunk' | 'checkChunk'>
/** How long a client waits for a holder to check chunks it reported corrupt. */
const CHECK_TIMEOUT_MS = 30_000

export interface ServeOptions {
  /** Asked for every request; a refused peer gets an UNAUTHORIZED error. Default: everyone. */
  authorize?: (peerId: string) => boolean
  /** Called after each manifest or chunk sent, with its size. */
  onServed?: (bytes: number) => void
}

/** Answers manifest and chunk requests from `store`. Stop with `node.unhandle(CHUNKS_PROTOCOL)`. */
export async function serveArtifacts (node: Libp2p, store: ServableStore, options: ServeOptions = {}): Promise<void> {
  const stats = transferStats(node)
  await node.handle(CHUNKS_PROTOCOL, async (stream, connection) => {
    const peer = connection.remotePeer.toString()
    const frames = new FrameStream(stream, { maxFrameBytes: MAX_REQUEST_BYTES, maxSendFrameBytes: MAX_MANIFEST_BYTES, peer })
    const sendJson = async (value: TransferResponse): Promise<void> => { await frames.send(Buffer.from(JSON.stringify(value))) }
    try {
      for (;;) {
        const frame = await frames.next()
        if (frame === null) break
        const req = parseRequest(frame, peer)
        if (options.authorize !== undefined && !options.authorize(peer)) {
          await sendJson({ type: 'error', error: toWireError(new PipemeshError('UNAUTHORIZED', `peer ${peer} may not fetch artifacts from ${node.peerId.toString()}`)) })
          break
        }
        if (req.type === 'corrupt') {
          for (const d of req.digests) await sendJson({ type: 'checked', digest: d, state: await store.checkChunk(d) })
          continue
        }
        const type = req.type === 'manifests' ? 'manifest' : 'chunk'
        const read = async (d: Digest): Promise<Uint8Array | undefined> => {
          try {
            return req.type === 'manifests' ? await store.getManifestBytes(d) : await store.readChunk(d, { verify: false })
          } catch (err) {
            // A body the store knows is bad (wrong size, or found bad before) is never sent: to
            // the client it is missing.
            if (err instanceof CorruptContentError || err instanceof MissingContentError) return undefined
            throw err
          }
        }
        const readAhead = (d: Digest): Promise<Uint8Array | undefined> => {
          const p = read(d)
          // Awaited below unless sending fails first; then its failure must not go unhandled.
          p.catch(() => {})
          return p
        }
        // Read the next chunks from disk while the current one is on the wire (manifests, up to
        // 64 MiB each, one at a time).
        const depth = req.type === 'chunks' ? READ_AHEAD : 1
        const ahead: Array<Promise<Uint8Array | undefined>> = []
        let queued = 0
        for (const d of req.digests) {
          while (ahead.length < depth && queued < req.digests.length) ahead.push(readAhead(req.digests[queued++] as Digest))
          const bytes = await ahead.shift()
          if (bytes === undefined) {
            await sendJson({ type: 'missing', digest: d })
            continue
          }
          await sendJson({ type, digest: d, size: bytes.byteLength })
          await frames.send(bytes)
          stats.record(peer, 'served', bytes.byteLength)
          options.onServed?.(bytes.byteLength)
        }
      }
      await frames.close()
    } catch (err) {
      frames.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }, { maxInboundStreams: 64 })
}

function parseRequest (frame: Uint8Array, peer: string): TransferRequest {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('utf8'))
  } catch {
    throw new PipemeshError('PROTOCOL', `${CHUNKS_PROTOCOL} request from ${peer} is not JSON`)
  }
  const parsed = requestSchema.safeParse(value)
  if (!parsed.success) throw new PipemeshError('PROTOCOL', `invalid ${CHUNKS_PROTOCOL} request from ${peer}: ${parsed.error.issues[0]?.message ?? 'schema mismatch'}`)
  return parsed.data
}

export interface Holder { peerId: string, addrs: string[] }

export interface FetchOptions {
  signal?: AbortSignal
  /** Called after each chunk stored: bytes present so far out of the artifact's chunk bytes. */
  onProgress?: (p: { bytes: number, totalBytes: number }) => void
  /** Holders fetched from at once (default 4); the rest stand in for holders that fail. */
  parallel?: number
}

export interface FetchResult {
  /** Chunk bytes received and stored by this call (0 when everything was already here). */
  bytes: number
  /** Manifest bytes received. */
  manifestBytes: number
  /** Chunk bytes received from each holder, by peer id. */
  fromPeers: Record<string, number>
}

/**
 * Makes `digest` fully present in `store`, fetching what is missing from `holders`, and records
 * it as held. A holder that sends bad bytes, lacks content or fails is dropped for this transfer
 * and its share goes to the others; when none is left the error says what could not be had.
 */
export async function fetchArtifact (node: Libp2p, store: ContentStore, digest: Digest, holders: Holder[], options: FetchOptions = {}): Promise<FetchResult> {
  const signal = options.signal
  const result: FetchResult = { bytes: 0, manifestBytes: 0, fromPeers: {} }
  const self = node.peerId.toString()
  const sessions = holders.filter(h => h.peerId !== self).map(h => new HolderSession(node, h, signal))
  const stats = transferStats(node)
  const failures: Array<{ peerId: string, err: unknown }> = []
  const drop = (s: HolderSession, err: unknown): void => {
    s.drop(err)
    if (signal?.aborted !== true) failures.push({ peerId: s.peerId, err })
  }
  const explain = (): string => failures.length === 0
    ? `${sessions.length === 0 ? 'no holder was given' : 'no holder has it'} (${holders.length} listed)`
    : `no holder could supply it (${failures.map(f => `${f.peerId}: ${f.err instanceof Error ? f.err.message : String(f.err)}`).join('; ')})`
  // The artifact's chunks go to packs of their own (see ContentStore.newWriteGroup).
  const group = store.newWriteGroup()
  try {
    // 1. Manifests: the root, then the file manifests a tree refers to.
    for (let round = 0; round < 2; round++) {
      let need = await store.missingManifests(digest)
      for (const s of sessions) {
        if (need.length === 0) break
        if (s.dropped) continue
        try {
          need = await fetchManifests(store, s, need, result, stats)
        } catch (err) {
          rethrowIfLocal(err, signal)
          drop(s, err)
          need = await store.missingManifests(digest)
        }
      }
      if (need.length > 0) throw new MissingContentError(need[0] as Digest, `needed for ${digest}: ${explain()}`)
    }

    // 2. Chunks, split among holders.
    const all = await store.listChunks(digest)
    const missing = await store.missingChunks(digest)
    const totalBytes = sum(all)
    let present = totalBytes - sum(missing)
    const queue = new TransferQueue(missing)
    let fatal: unknown
    const worker = async (s: HolderSession): Promise<void> => {
      const corrupt: Digest[] = []
      try {
        await fetchShare(s, corrupt)
      } finally {
        if (corrupt.length > 0) {
          // Dropped first: the holder must not go on sending while it checks.
          if (!s.dropped) drop(s, new CorruptContentError(corrupt[0] as Digest, `holder ${s.peerId} sent bytes that hash otherwise`))
          await s.reportCorrupt(corrupt)
        }
      }
    }
    const fetchShare = async (s: HolderSession, corrupt: Digest[]): Promise<void> => {
      const inFlight: ChunkItem[][] = []
      // Chunks being hashed and written while the next ones arrive.
      const writes = new Set<Promise<void>>()
      let writeError: unknown
      const keep = (item: ChunkItem, parts: Uint8Array[]): void => {
        const size = byteLengthOf(parts)
        const p: Promise<void> = store.writeChunk(item.digest, parts, { group }).then(() => {
          queue.done(item)
          result.bytes += size
          result.fromPeers[s.peerId] = (result.fromPeers[s.peerId] ?? 0) + size
          stats.record(s.peerId, 'fetched', size)
          present += size
          options.onProgress?.({ bytes: present, totalBytes })
        }, (err: unknown) => {
          if (err instanceof CorruptContentError) corrupt.push(item.digest)
          else fatal ??= err
          writeError ??= err
          queue.giveBack(item)
        }).finally(() => { writes.delete(p) })
        writes.add(p)
      }
      try {
        for (;;) {
          if (writeError !== undefined) throw writeError
          if (fatal !== undefined || signal?.aborted === true) return
          while (inFlight.length < BATCHES_IN_FLIGHT) {
            const batch = queue.take(s.peerId, BATCH_BYTES, MAX_BATCH_ITEMS)
            if (batch.length === 0) break
            inFlight.push(batch)
            await s.send({ type: 'chunks', digests: batch.map(c => c.digest) })
          }
          const batch = inFlight[0]
          if (batch === undefined) {
            if (!queue.mayGetWork(s.peerId)) return
            await queue.changed(signal)
            continue
          }
          while (batch.length > 0) {
            while (writes.size >= WRITES_IN_FLIGHT) await Promise.race(writes)
            if (writeError !== undefined) throw writeError
            const item = batch[0] as ChunkItem
            const parts = await s.receiveParts('chunk', item.digest, MAX_CHUNK_BYTES)
            batch.shift()
            if (parts === undefined) queue.giveBack(item, s.peerId)
            else keep(item, parts)
          }
          inFlight.shift()
        }
      } catch (err) {
        for (const b of inFlight) for (const item of b) queue.giveBack(item)
        if (fatal === undefined) drop(s, err)
        else s.drop(err)
      } finally {
        await Promise.all(writes)
      }
    }
    const parallel = Math.max(1, options.parallel ?? 4)
    const standby = sessions.filter(s => !s.dropped)
    const running = new Set<Promise<void>>()
    const startNext = (): void => {
      const s = standby.shift()
      if (s === undefined) return
      const p: Promise<void> = worker(s).finally(() => {
        running.delete(p)
        if (queue.remaining > 0 && fatal === undefined && signal?.aborted !== true) startNext()
      })
      running.add(p)
    }
    for (let i = 0; i < parallel; i++) startNext()
    while (running.size > 0) await Promise.race(running)
    if (signal?.aborted === true) throw cancelled(signal)
    if (fatal !== undefined) throw fatal
    const left = queue.firstRemaining()
    if (left !== undefined) {
      const corrupt = failures.length > 0 && failures.every(f => f.err instanceof CorruptContentError)
      const detail = `needed for ${digest}: ${explain()}`
      throw corrupt ? new CorruptContentError(left, detail) : new MissingContentError(left, detail)
    }
    options.onProgress?.({ bytes: present, totalBytes })

    // 3. Everything is here and verified.
    await store.addRoot(digest)
    return result
  } catch (err) {
    if (signal?.aborted === true) throw cancelled(signal)
    throw err
  } finally {
    await Promise.all(sessions.map(async s => { await s.close() }))
    await store.endWriteGroup(group)
  }
}

async function fetchManifests (store: ContentStore, s: HolderSession, need: Digest[], result: FetchResult, stats: TransferStats): Promise<Digest[]> {
  const lacking: Digest[] = []
  for (let i = 0; i < need.length; i += MAX_BATCH_ITEMS) {
    const batch = need.slice(i, i + MAX_BATCH_ITEMS)
    await s.send({ type: 'manifests', digests: batch })
    for (const d of batch) {
      const bytes = await s.receive('manifest', d, MAX_MANIFEST_BYTES)
      if (bytes === undefined) { lacking.push(d); continue }
      await store.putManifestBytes(d, bytes)
      result.manifestBytes += bytes.byteLength
      stats.record(s.peerId, 'fetched', bytes.byteLength)
    }
  }
  return lacking
}

/** Errors that say nothing about the holder: cancellation, our disk, our size limit. */
function rethrowIfLocal (err: unknown, signal: AbortSignal | undefined): void {
  if (signal?.aborted === true) throw cancelled(signal)
  if (err instanceof PipemeshError && err.code === 'LIMIT_EXCEEDED') throw err
}

function cancelled (signal: AbortSignal): PipemeshError {
  const reason: unknown = signal.reason
  return reason instanceof PipemeshError ? reason : new CancelledError('artifact transfer cancelled')
}

function sum (chunks: ChunkRef[]): number {
  let total = 0
  for (const c of chunks) total += c.size
  return total
}

/** One stream to one holder, opened on first use; requests are answered in order. */
class HolderSession {
  readonly peerId: string
  dropped = false
  private readonly node: Libp2p
  private readonly holder: Holder
  private readonly signal: AbortSignal | undefined
  private frames: FrameStream | undefined

  constructor (node: Libp2p, holder: Holder, signal: AbortSignal | undefined) {
    this.node = node
    this.holder = holder
    this.peerId = holder.peerId
    this.signal = signal
  }

  async send (req: TransferRequest): Promise<void> {
    const frames = this.frames ?? await this.open()
    await frames.send(Buffer.from(JSON.stringify(req)), { signal: this.signal })
  }

  /** The bytes of `expected`, or undefined when the holder lacks it. */
  async receive (type: 'manifest' | 'chunk', expected: Digest, maxBytes: number): Promise<Uint8Array | undefined> {
    const size = await this.receiveHeader(type, expected, maxBytes)
    if (size === undefined) return undefined
    const data = await this.next(this.frames as FrameStream)
    this.checkSize(expected, size, data.byteLength)
    return data
  }

  /**
   * receive(), as the pieces the bytes arrived in: a chunk arrives in ~64 KiB pieces, and the
   * store writes them to disk as they are (one writev) rather than joined first.
   */
  async receiveParts (type: 'manifest' | 'chunk', expected: Digest, maxBytes: number): Promise<Uint8Array[] | undefined> {
    const size = await this.receiveHeader(type, expected, maxBytes)
    if (size === undefined) return undefined
    const parts = await (this.frames as FrameStream).nextParts({ signal: this.signal })
    if (parts === null) throw closedMidTransfer(this.peerId)
    this.checkSize(expected, size, byteLengthOf(parts))
    return parts
  }

  /** Reads the response header for `expected`: its announced size, or undefined when missing. */
  private async receiveHeader (type: 'manifest' | 'chunk', expected: Digest, maxBytes: number): Promise<number | undefined> {
    const head = parseResponse(await this.next(this.frames as FrameStream), this.peerId)
    if (head.type === 'error') throw fromWireError({ ...head.error, code: head.error.code as PipemeshError['code'] })
    if (head.digest !== expected) throw new PipemeshError('PROTOCOL', `holder ${this.peerId} answered ${head.digest} where ${expected} was next`)
    if (head.type === 'missing') return undefined
    if (head.type === 'checked') throw new PipemeshError('PROTOCOL', `holder ${this.peerId} answered a check of ${expected} where ${type} ${expected} was next`)
    if (head.type !== type || head.size > maxBytes) throw new PipemeshError('PROTOCOL', `holder ${this.peerId} sent a ${head.size}-byte ${head.type} for ${expected}, expected a ${type} of at most ${maxBytes} bytes`)
    return head.size
  }

  private checkSize (expected: Digest, announced: number, received: number): void {
    if (received !== announced) throw new PipemeshError('PROTOCOL', `holder ${this.peerId} announced ${announced} bytes for ${expected} and sent ${received}`)
  }

  /**
   * Tells the holder that `digests` arrived bad, on a stream of its own (the session's may be
   * mid-batch or dropped), and waits while it hashes its copies and quarantines the bad ones.
   * Best effort: a holder that cannot be reached, or does not answer in time, is left as it is.
   */
  async reportCorrupt (digests: Digest[]): Promise<void> {
    const signal = this.signal === undefined ? AbortSignal.timeout(CHECK_TIMEOUT_MS) : AbortSignal.any([this.signal, AbortSignal.timeout(CHECK_TIMEOUT_MS)])
    let frames: FrameStream | undefined
    try {
      const stream = await this.node.dialProtocol(dialTarget(this.holder), CHUNKS_PROTOCOL, { signal })
      frames = new FrameStream(stream, { maxFrameBytes: MAX_REQUEST_BYTES, peer: this.peerId })
      for (let i = 0; i < digests.length; i += MAX_BATCH_ITEMS) {
        const batch = digests.slice(i, i + MAX_BATCH_ITEMS)
        await frames.send(Buffer.from(JSON.stringify({ type: 'corrupt', digests: batch } satisfies TransferRequest)), { signal })
        // One answer per digest, sent once that chunk is checked.
        for (const d of batch) {
          const frame = await frames.next({ signal })
          if (frame === null) throw closedMidTransfer(this.peerId)
          const head = parseResponse(frame, this.peerId)
          if (head.type !== 'checked' || head.digest !== d) throw new PipemeshError('PROTOCOL', `holder ${this.peerId} answered a corrupt-chunk report with ${head.type}`)
        }
      }
      await frames.close()
    } catch (err) {
      frames?.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  drop (err: unknown): void {
    this.dropped = true
    this.frames?.abort(err instanceof Error ? err : new Error(String(err)))
  }

  async close (): Promise<void> {
    const frames = this.frames
    if (frames === undefined || this.dropped) return
    // Everything asked for has been read, so a polite close costs one frame and no wait.
    await frames.close().catch(() => {})
  }

  private async next (frames: FrameStream): Promise<Uint8Array> {
    const frame = await frames.next({ signal: this.signal })
    if (frame === null) throw closedMidTransfer(this.peerId)
    return frame
  }

  private async open (): Promise<FrameStream> {
    let stream: Stream
    try {
      stream = await this.node.dialProtocol(dialTarget(this.holder), CHUNKS_PROTOCOL, { signal: this.signal })
    } catch (err) {
      if (this.signal?.aborted === true) throw cancelled(this.signal)
      throw new PipemeshError('UNREACHABLE', `cannot reach holder ${this.peerId}: ${(err as Error).message}`, { retryable: true, cause: err })
    }
    const options = { maxFrameBytes: MAX_MANIFEST_BYTES, maxSendFrameBytes: MAX_REQUEST_BYTES, highWaterBytes: CLIENT_HIGH_WATER, peer: this.peerId, ...(this.signal === undefined ? {} : { signal: this.signal }) }
    this.frames = new FrameStream(stream, options)
    return this.frames
  }
}

function closedMidTransfer (peer: string): PipemeshError {
  return new PipemeshError('UNREACHABLE', `holder ${peer} closed the stream mid-transfer`, { retryable: true })
}

function parseResponse (frame: Uint8Array, peer: string): TransferResponse {
  let value: unknown
  try {
    value = JSON.parse(Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength).toString('utf8'))
  } catch {
    throw new PipemeshError('PROTOCOL', `holder ${peer} sent a response header that is not JSON`)
  }
  const parsed = responseSchema.safeParse(value)
  if (!parsed.success) throw new PipemeshError('PROTOCOL', `holder ${peer} sent an invalid response header: ${parsed.error.issues[0]?.message ?? 'schema mismatch'}`)
  return parsed.data
}

function dialTarget (holder: Holder): PeerId | Multiaddr[] {
  if (holder.addrs.length === 0) return peerIdFromString(holder.peerId)
  return holder.addrs.map(a => {
    const ma = multiaddr(a)
    return ma.getComponents().some(c => c.name === 'p2p') ? ma : ma.encapsulate(`/p2p/${holder.peerId}`)
  })
}

export interface PeerTransferCounters { served: number, fetched: number }

/** Bytes of chunks and manifests this node served and fetched, in total and per peer. */
export class TransferStats {
  bytesServed = 0
  bytesFetched = 0
  readonly peers = new Map<string, PeerTransferCounters>()

  record (peerId: string, direction: 'served' | 'fetched', bytes: number): void {
    let c = this.peers.get(peerId)
    if (c === undefined) { c = { served: 0, fetched: 0 }; this.peers.set(peerId, c) }
    c[direction] += bytes
    if (direction === 'served') this.bytesServed += bytes
    else this.bytesFetched += bytes
  }

  servedTo (peerId: string): number { return this.peers.get(peerId)?.served ?? 0 }
  fetchedFrom (peerId: string): number { return this.peers.get(peerId)?.fetched ?? 0 }

  toJSON (): { bytesServed: number, bytesFetched: number, peers: Record<string, PeerTransferCounters> } {
    return { bytesServed: this.bytesServed, bytesFetched: this.bytesFetched, peers: Object.fromEntries([...this.peers].map(([p, c]) => [p, { ...c }])) }
  }
}

const statsByNode = new WeakMap<Libp2p, TransferStats>()

/** The transfer counters of `node` (one object per node, shared by serving and fetching). */
export function transferStats (node: Libp2p): TransferStats {
  let stats = statsByNode.get(node)
  if (stats === undefined) { stats = new TransferStats(); statsByNode.set(node, stats) }
  return stats
}

interface ChunkItem extends ChunkRef { lackedBy?: Set<string> }

/** Chunks still to fetch, shared by the holders' workers; faster holders simply take more. */
class TransferQueue {
  private pending: ChunkItem[]
  private inFlight = 0
  private waiters: Array<() => void> = []

  constructor (chunks: ChunkRef[]) {
    this.pending = chunks.map(c => ({ digest: c.digest, size: c.size }))
  }

  get remaining (): number { return this.pending.length + this.inFlight }

  firstRemaining (): Digest | undefined { return this.pending[0]?.digest }

  /** Up to maxItems chunks (at least one, then up to maxBytes) that `peerId` is not known to lack. */
  take (peerId: string, maxBytes: number, maxItems: number): ChunkItem[] {
    const out: ChunkItem[] = []
    const keep: ChunkItem[] = []
    let bytes = 0
    let i = 0
    for (; i < this.pending.length && out.length < maxItems; i++) {
      const item = this.pending[i] as ChunkItem
      if (item.lackedBy?.has(peerId) === true) { keep.push(item); continue }
      if (out.length > 0 && bytes + item.size > maxBytes) break
      out.push(item)
      bytes += item.size
    }
    if (out.length > 0) {
      this.pending = keep.length === 0 ? this.pending.slice(i) : keep.concat(this.pending.slice(i))
      this.inFlight += out.length
    }
    return out
  }

  done (_item: ChunkItem): void {
    this.inFlight--
    this.wake()
  }

  /** Returns a chunk that was not stored; `lackedBy` names a holder that said it has none. */
  giveBack (item: ChunkItem, lackedBy?: string): void {
    this.inFlight--
    if (lackedBy !== undefined) (item.lackedBy ??= new Set()).add(lackedBy)
    this.pending.unshift(item)
    this.wake()
  }

  /** False once nothing pending suits `peerId` and nothing in flight can come back. */
  mayGetWork (peerId: string): boolean {
    return this.inFlight > 0 || this.pending.some(item => item.lackedBy?.has(peerId) !== true)
  }

  async changed (signal: AbortSignal | undefined): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      if (signal?.aborted === true) { reject(cancelled(signal)); return }
      const onAbort = (): void => { reject(cancelled(signal as AbortSignal)) }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(() => { signal?.removeEventListener('abort', onAbort); resolve() })
    })
  }

  private wake (): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }
}
