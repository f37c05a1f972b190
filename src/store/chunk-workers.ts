// Chunk hashing and chunk-file I/O on worker threads. sha256 runs at ~1.2 GB/s on one core, so
// on the event loop it capped ingest and materialize near that (less, since the loop also waits on
// every read and write), and on the transfer path it competed with Noise decryption for the one
// thread. A job here does a chunk's read + hash (+ write) synchronously on a worker, with
// positional I/O on descriptors the main thread opened and keeps open until the job settles; the
// main thread keeps the index, the order of chunks and the error policy. One message each way per
// chunk, no thread-pool hops in between.

import { existsSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { Digest } from './types.js'

/** A worker's answer to one job (chunk-worker.ts). */
export interface Reply { id: number, n: number, digest?: Digest, bytes?: Uint8Array, error?: { message: string, code?: string, syscall?: string, path?: string, digest?: string } }
export interface JobResult { n: number, digest?: Digest, bytes?: Uint8Array }

/** Where a stored body is: a region of a pack, or (stores from before packs) a whole chunk file. */
export interface BodyAt { file: string, position: number }

/** One chunk's work, done by chunk-worker.ts. */
export type Job =
  | { op: 'ingest', fd: number, position: number, length: number, inlineMax: number, packFd: number, packAt: number, packLength: number }
  | { op: 'hash', fd: number, position: number, size: number }
  | { op: 'read', body: BodyAt, size: number, into: SharedArrayBuffer, offset: number }
  | { op: 'copyOut', body: BodyAt, size: number, digest: Digest, destFd: number, position: number }

interface Slot { worker: Worker, pending: number }

/** Where data starts in a shared buffer: mid-page, away from 4K aliasing in copies (see readBuffer in chunk-worker.ts). */
const SHARED_OFFSET = 2048
/** Idle workers are stopped after this long, giving their memory back. */
const IDLE_MS = 30_000

function workerError (e: NonNullable<Reply['error']>): NodeJS.ErrnoException & { digest?: string } {
  const err: NodeJS.ErrnoException & { digest?: string } = new Error(e.message)
  if (e.digest !== undefined) err.digest = e.digest
  if (e.code !== undefined) err.code = e.code
  if (e.syscall !== undefined) err.syscall = e.syscall
  if (e.path !== undefined) err.path = e.path
  return err
}

/**
 * A small pool of chunk workers, shared by every store in the process. Workers start on first
 * use, keep the process alive only while they have jobs, and stop after a while idle.
 */
export class ChunkWorkers {
  /** Jobs a caller should keep queued to keep every worker busy. */
  readonly depth: number
  private readonly size: number
  private readonly ingestSize: number
  private slots: Slot[] = []
  private nextId = 1
  private readonly waiting = new Map<number, { slot: Slot, resolve: (r: JobResult) => void, reject: (err: unknown) => void }>()
  private idleTimer: NodeJS.Timeout | undefined
  private sharedFree: SharedArrayBuffer[] = []

  /**
   * Most jobs leave one core to the event loop (it still decrypts, frames and indexes): on the
   * 2-core machines this runs on, a second worker bought a transfer no speed under load and cost
   * its ~11 MB. Ingesting a local file leaves the event loop little to do, and there a worker per
   * core hashed 1.3–1.8x faster (S1: 170–280 MiB/s with one, 350–430 with two).
   */
  constructor (size = Math.max(1, Math.min(4, os.availableParallelism() - 1)), ingestSize = Math.max(size, Math.min(4, os.availableParallelism()))) {
    this.size = size
    this.ingestSize = ingestSize
    // Two jobs queued per worker, at least four in all: each worker always has its next chunk.
    // (Four per worker measured no faster, and a serving agent kept more shared read buffers:
    // up to 2 per queued job, ~30 MB more at its peak in T1.)
    this.depth = Math.max(4, ingestSize * 2)
  }

  /**
   * Reads `length` bytes of `fd` at `position` and hashes them; a body of `inlineMax` bytes or
   * more that fits the `packLength` bytes reserved at `packAt` of `packFd` is written there (both
   * descriptors stay open until this settles); any other comes back in `bytes`. `n` 0: end of file.
   */
  async ingest (lane: number, fd: number, position: number, length: number, inlineMax: number, packFd: number, packAt: number, packLength: number): Promise<JobResult> {
    return await this.submit({ op: 'ingest', fd, position, length, inlineMax, packFd, packAt, packLength }, [], this.ingestSize, lane)
  }

  /**
   * How many workers ingest jobs spread over. Each lane's jobs run on one worker, one at a
   * time, so a caller that gives each lane its own output file has no two threads writing one
   * file: ext4 serializes writes to a file, and two threads contending for it spent 2-4x the
   * system time of the same writes to two files.
   */
  get lanes (): number {
    return this.ingestSize
  }

  /**
   * Hashes `size` bytes of `fd` at `position` (a body just written there); `n` is how many were
   * read. With a `lane`, on that ingest lane's worker (a whole file being hashed, as ingest).
   */
  async hash (fd: number, position: number, size: number, lane?: number): Promise<JobResult & { digest: Digest }> {
    const job: Job = { op: 'hash', fd, position, size }
    return await (lane === undefined ? this.submit(job) : this.submit(job, [], this.ingestSize, lane)) as JobResult & { digest: Digest }
  }

  /** Reads up to `size` bytes of a body; `digest` is their hash. Rejects ENOENT when absent. */
  async read (body: BodyAt, size: number): Promise<JobResult & { bytes: Uint8Array, digest: Digest }> {
    // The worker reads into a shared buffer and the bytes are copied out here, into a buffer made
    // on this thread. A buffer the worker made and transferred was counted by V8 against the
    // heap's headroom until a full GC freed it: serving a GiB forced dozens of full GCs and held
    // ~30 MB more at the peak. One made here dies young, once the peer's stream has sent it.
    const shared = this.sharedBuffer(size)
    try {
      const r = await this.submit({ op: 'read', body, size, into: shared, offset: SHARED_OFFSET })
      const bytes = Buffer.allocUnsafeSlow(r.n)
      bytes.set(new Uint8Array(shared, SHARED_OFFSET, r.n))
      return { n: r.n, digest: r.digest as Digest, bytes }
    } finally {
      this.releaseShared(shared)
    }
  }

  /** Reads a body, and writes it at `position` of `destFd` only if it hashes to `digest` with `size` bytes. */
  async copyOut (body: BodyAt, size: number, digest: Digest, destFd: number, position: number): Promise<JobResult & { digest: Digest }> {
    return await this.submit({ op: 'copyOut', body, size, digest, destFd, position }) as JobResult & { digest: Digest }
  }

  /** Stops the workers now (jobs in flight are rejected); the next job starts them again. */
  async close (): Promise<void> {
    const slots = this.slots
    this.slots = []
    if (this.idleTimer !== undefined) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
    await Promise.all(slots.map(async s => await s.worker.terminate()))
  }

  /** Runs `job` on a worker, starting one if all are busy and fewer than `limit` run. */
  private async submit (job: Job, transfer: ArrayBuffer[] = [], limit = this.size, lane?: number): Promise<JobResult> {
    const slot = lane === undefined ? this.pick(limit) : this.laneSlot(lane % limit)
    const id = this.nextId++
    return await new Promise<JobResult>((resolve, reject) => {
      this.waiting.set(id, { slot, resolve, reject })
      if (slot.pending++ === 0) slot.worker.ref()
      if (this.idleTimer !== undefined) { clearTimeout(this.idleTimer); this.idleTimer = undefined }
      slot.worker.postMessage({ ...job, id }, transfer)
    })
  }

  /**
   * Keeps a shared buffer for the next job (up to two per queued job). Each worker holds on to
   * every shared buffer it was sent until its own rare GC, so a fresh one per chunk piled up by
   * the gigabyte; a fresh transferred copy per chunk piled up as garbage in the worker instead
   * (~60 MB of a receiving agent's RSS).
   */
  private releaseShared (shared: SharedArrayBuffer): void {
    if (this.sharedFree.length < 2 * this.depth) this.sharedFree.push(shared)
  }

  private sharedBuffer (n: number): SharedArrayBuffer {
    const i = this.sharedFree.findIndex(b => b.byteLength - SHARED_OFFSET >= n)
    if (i >= 0) return this.sharedFree.splice(i, 1)[0]!
    return new SharedArrayBuffer(n + 2 * SHARED_OFFSET)
  }

  private pick (limit: number): Slot {
    let best: Slot | undefined
    for (const s of this.slots) if (best === undefined || s.pending < best.pending) best = s
    if (best !== undefined && (best.pending === 0 || this.slots.length >= limit)) return best
    return this.spawn()
  }

  private laneSlot (lane: number): Slot {
    while (this.slots.length <= lane) this.spawn()
    return this.slots[lane]!
  }

  private spawn (): Slot {
    const worker = new Worker(workerScript(), { name: 'pipemesh-chunks' })
    const slot: Slot = { worker, pending: 0 }
    worker.unref()
    worker.on('message', (reply: Reply) => {
      const w = this.waiting.get(reply.id)
      if (w === undefined) return
      this.waiting.delete(reply.id)
      this.settled(w.slot)
      if (reply.error !== undefined) w.reject(workerError(reply.error))
      else w.resolve({ n: reply.n, ...(reply.digest === undefined ? {} : { digest: reply.digest }), ...(reply.bytes === undefined ? {} : { bytes: reply.bytes }) })
    })
    const fail = (err: unknown): void => {
      this.slots = this.slots.filter(s => s !== slot)
      for (const [id, w] of this.waiting) {
        if (w.slot !== slot) continue
        this.waiting.delete(id)
        w.reject(err instanceof Error ? err : new Error(`chunk worker stopped: ${String(err)}`))
      }
    }
    worker.on('error', fail)
    worker.on('exit', code => { fail(new Error(`chunk worker exited with code ${code}`)) })
    this.slots.push(slot)
    return slot
  }

  private settled (slot: Slot): void {
    if (--slot.pending === 0) slot.worker.unref()
    if (this.waiting.size === 0 && this.slots.length > 0 && this.idleTimer === undefined) {
      this.idleTimer = setTimeout(() => { this.idleTimer = undefined; if (this.waiting.size === 0) void this.close() }, IDLE_MS)
      this.idleTimer.unref()
    }
  }
}

/**
 * dist/src/store/chunk-worker.js: beside this module once built; from the bundled CLI
 * (dist/pipemesh-bundle.cjs) or from the sources (tests), the built copy.
 */
function workerScript (): string {
  const here = dirname(fileURLToPath(import.meta.url))
  const candidates = [join(here, 'chunk-worker.js'), join(here, 'src', 'store', 'chunk-worker.js'), join(here, '..', '..', 'dist', 'src', 'store', 'chunk-worker.js')]
  const found = candidates.find(f => existsSync(f))
  if (found === undefined) throw new Error(`cannot find the chunk worker (looked for ${candidates.join(', ')}); run \`npm run build\``)
  return found
}

/** The process's pool. */
export const chunkWorkers = new ChunkWorkers()
