// Turns files and directories into chunks and manifests in the store (the walk over a directory
// is tree-walk.ts, shared with the client's hasher). Multi-chunk files are read, hashed and
// written by the chunk workers (a few chunks in flight, each worker with one reusable buffer), so
// memory stays flat whatever the file size and hashing uses every core; small files are hashed on
// the main thread, where open/read/close latency dominates. Files the caller gives up (a step's
// outputs) are not copied at all: each becomes a pack of its own, hashed in place (adoptFile).
// Only regular files, directories and symlinks that stay inside the tree are accepted.

import type { Stats } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { PipemeshError, UnsafePathError, throwIfAborted } from '../errors.js'
import type { IngestedChunk } from './chunk-files.js'
import { chunkWorkers, type JobResult } from './chunk-workers.js'
import { INLINE_MAX, type Chunks } from './chunks.js'
import type { Batcher, ChunkRecord, StoreDb } from './db.js'
import { encodeManifest, sha256Digest, type ChunkRef, type FileManifest } from './manifest.js'
import { describeStats, openWalkedFile, readFull, walkListed, walkPath, type TreeSink } from './tree-walk.js'
import type { Digest } from './types.js'

/**
 * Digests of files an earlier ingest read, by path and what stat said of them then: a file the
 * memo knows, unchanged, is not read again (a checkpoint directory that gains one file per epoch
 * would otherwise be re-hashed whole at every save). What counts as unchanged is the memo's to
 * decide (size, inode, change time); file times are coarse, so it should record only files last
 * changed well before they were read.
 */
export interface FileDigestMemo {
  get: (abs: string, st: Stats) => IngestedFile | undefined
  set: (abs: string, st: Stats, file: IngestedFile) => void
}

export interface IngestContext {
  db: StoreDb
  chunks: Chunks
  batch: Batcher
  chunkSize: number
  maxArtifactBytes: number
  /** What is being ingested, for messages. */
  what: string
  signal?: AbortSignal | undefined
  onProgress?: ((bytes: number) => void) | undefined
  /** Called with the running total of the file sizes found, before they are read. */
  onScanned?: ((bytes: number) => void) | undefined
  /** Bytes read so far (onProgress reports this running total). */
  bytes: number
  memo?: FileDigestMemo | undefined
  /** The write group (see ChunkFiles.newGroup) whose packs this ingest fills. */
  group: string
  /** The caller gives the files up: large ones are moved into the store, not copied (adoptFile). */
  adopt?: boolean | undefined
}

export interface IngestedFile { digest: Digest, size: number, executable: boolean }

function countBytes (ctx: IngestContext, n: number): void {
  ctx.bytes += n
  if (ctx.bytes > ctx.maxArtifactBytes) throw overLimit(ctx, ctx.bytes)
  ctx.onProgress?.(ctx.bytes)
}

function overLimit (ctx: IngestContext, size: number): PipemeshError {
  return new PipemeshError('LIMIT_EXCEEDED',
    `${ctx.what} is ${size > ctx.bytes ? '' : 'at least '}${size} bytes, over the store's artifact size limit of ${ctx.maxArtifactBytes} bytes`,
    { hint: 'raise the store\'s maxArtifactBytes setting or make the artifact smaller' })
}

async function storeIfNew (ctx: IngestContext, digest: Digest, bytes: Buffer): Promise<void> {
  if (!ctx.batch.claim(digest)) return
  // A small chunk is cheaper to write again (in the batch) than to look up first.
  if (bytes.byteLength >= INLINE_MAX && await ctx.chunks.has(digest)) return
  const ops = await ctx.chunks.storeBody(digest, bytes, ctx.group)
  // Only inline bodies travel in the batch; file bodies are already on disk.
  ctx.batch.add(ops, ops.length > 1 ? bytes.byteLength : 0)
}

/** Chunks one regular file and queues its chunks and manifest; the file digest is returned. */
export async function ingestFile (ctx: IngestContext, abs: string): Promise<IngestedFile> {
  const fh = await openWalkedFile(abs)
  const chunks: ChunkRef[] = []
  let size = 0
  let executable: boolean
  let memoStats: Stats | undefined
  try {
    const st = await fh.stat()
    memoStats = st
    if (!st.isFile()) throw new UnsafePathError(abs, `is ${describeStats(st)}; only regular files, directories and symlinks can be stored`)
    executable = (st.mode & 0o111) !== 0
    const known = ctx.memo?.get(abs, st)
    // Trusted only while this store still has its manifest (and so its chunks).
    if (known !== undefined && known.executable === executable && await ctx.db.manifests.get(known.digest) !== undefined) {
      countBytes(ctx, known.size)
      return known
    }
    if (ctx.adopt === true && st.size >= ctx.chunkSize) {
      // `fh` stays open: if the file cannot be adopted, it is copied through it as usual.
      const adopted = await adoptFile(ctx, abs, st)
      if (adopted !== undefined) return adopted
    }
    let done = false
    if (st.size < ctx.chunkSize) {
      // One read for the common small file; one spare byte tells us whether it grew meanwhile.
      const buf = Buffer.allocUnsafe(st.size + 1)
      const n = await readFull(fh, buf, 0)
      if (n <= st.size) {
        if (n > 0) {
          const view = buf.subarray(0, n)
          const digest = sha256Digest(view)
          chunks.push({ digest, size: n })
          countBytes(ctx, n)
          await storeIfNew(ctx, digest, view)
        }
        size = n
        done = true
      }
    }
    if (!done) size = await chunkLargeFile(ctx, fh, st.size, chunks)
  } finally {
    await fh.close()
  }
  const manifest: FileManifest = { type: 'file', size, chunks }
  const bytes = encodeManifest(manifest)
  const digest = sha256Digest(bytes)
  ctx.batch.add([{ type: 'put', sublevel: ctx.db.manifests, key: digest, value: bytes }], bytes.byteLength)
  const file = { digest, size, executable }
  if (memoStats !== undefined) ctx.memo?.set(abs, memoStats, file)
  return file
}

/** Chunks written to packs are looked up in the index this many at a time. */
const INDEX_GROUP = 64

async function chunkLargeFile (ctx: IngestContext, fh: FileHandle, statSize: number, chunks: ChunkRef[]): Promise<number> {
  const cs = ctx.chunkSize
  const files = ctx.chunks.files
  // Chunks are read, hashed and written to a pack on the chunk workers, several at once;
  // results are taken in file order, so the manifest and the byte count stay sequential.
  const jobs = new Map<number, Promise<IngestedChunk>>()
  let issued = 0
  const issue = (): void => {
    // Pack space is reserved for the bytes the file had when it was opened: reads past them
    // (the file grew) come back to be stored here, so no region is reserved and left unwritten.
    const position = issued * cs
    const p = files.ingestRange(ctx.group, issued, fh.fd, position, cs, Math.max(0, Math.min(cs, statSize - position)), INLINE_MAX)
    p.catch(() => {})
    jobs.set(issued++, p)
  }
  for (let i = 0; i < chunkWorkers.depth; i++) issue()
  // Bodies written to packs wait here to be looked up in the index a group at a time (one
  // LevelDB read per group, not per MiB): a chunk the store already had keeps its old place,
  // and its new copy is dead space (a pack holding nothing else is deleted when sealed).
  let placed: Array<{ digest: Digest, chunk: IngestedChunk }> = []
  const indexPlaced = async (): Promise<void> => {
    const group = placed
    placed = []
    try {
      const known = await ctx.chunks.hasMany(group.map(g => g.digest))
      for (const [j, { digest, chunk }] of group.entries()) {
        const kept = known[j] !== true
        if (kept) {
          const record: ChunkRecord = { size: chunk.n, inline: false, ...chunk.placed }
          ctx.batch.add([{ type: 'put', sublevel: ctx.db.chunks, key: digest, value: record }])
        }
        await chunk.settle(kept)
      }
    } finally {
      // settle() is once only: this releases what an error left reserved.
      for (const { chunk } of group) await chunk.settle(false)
    }
  }
  let size = 0
  try {
    for (let i = 0; ; i++) {
      throwIfAborted(ctx.signal)
      const r = await jobs.get(i)!
      jobs.delete(i)
      if (r.n === 0) {
        await r.settle(false)
        break
      }
      const digest = r.digest as Digest
      chunks.push({ digest, size: r.n })
      size += r.n
      countBytes(ctx, r.n)
      if (r.placed !== undefined && ctx.batch.claim(digest)) {
        placed.push({ digest, chunk: r })
        if (placed.length >= INDEX_GROUP) await indexPlaced()
      } else {
        try {
          // A small tail chunk came back to go inline (or one past the size the file had).
          if (r.bytes !== undefined && ctx.batch.claim(digest) && (r.n < INLINE_MAX || !await ctx.chunks.has(digest))) {
            ctx.batch.add(await ctx.chunks.storeBody(digest, r.bytes, ctx.group), r.n)
          }
        } finally {
          await r.settle(false)
        }
      }
      if (r.n < cs) break
      issue()
    }
    await indexPlaced()
  } finally {
    for (const { chunk } of placed) await chunk.settle(false)
    // The descriptor must outlive every job still reading it: a closed and reused fd number
    // would be read from another file. Pack regions of chunks never taken are released unkept.
    for (const settled of await Promise.allSettled(jobs.values())) {
      if (settled.status === 'fulfilled') await settled.value.settle(false)
    }
  }
  return size
}

/** Why an output may change while it is stored, for the error that says it did. */
const CHANGED_HINT = 'a process still running after the step exited may be writing to it'

/**
 * Stores a file of at least one chunk by making the file itself a pack (Packs.adopt) and
 * indexing its chunks where they lie: hashed on the chunk workers, nothing written. Undefined
 * when the file cannot be adopted (see Packs.adopt), which leaves it to be copied. A file the
 * store mostly had already (less than half of its bytes new) is not kept as a pack, since it
 * would be mostly dead space: its new chunks are copied to the group's packs and it is deleted.
 * If storing fails, the file is put back where it was.
 */
async function adoptFile (ctx: IngestContext, abs: string, st: Stats): Promise<IngestedFile | undefined> {
  const packs = ctx.chunks.files.packs
  const pack = await packs.adopt(abs, st)
  if (pack === undefined) return undefined
  const size = pack.end
  const cs = ctx.chunkSize
  const count = Math.ceil(size / cs)
  let kept = 0
  let stored = false
  try {
    const chunks: ChunkRef[] = []
    // Chunks of a pack's size not yet known to the index: looked up a group at a time.
    const fresh: Array<{ digest: Digest, at: number, n: number }> = []
    let pending: typeof fresh = []
    const lookUp = async (): Promise<void> => {
      const known = await ctx.chunks.hasMany(pending.map(c => c.digest))
      for (const [j, c] of pending.entries()) if (known[j] !== true) fresh.push(c)
      pending = []
    }
    // A region copied out of the file (a short last chunk, or the new chunks of a file that is not
    // kept), read and hashed again on a worker: what is copied must be the bytes that were hashed.
    const copyOf = async (digest: Digest, at: number, n: number): Promise<Uint8Array> => {
      const r = await chunkWorkers.read({ file: pack.staged ?? pack.file, position: at }, n)
      if (r.digest !== digest || r.n !== n) throw new PipemeshError('CONFLICT', `${abs} changed while it was being stored (the chunk at offset ${at})`, { hint: CHANGED_HINT })
      return r.bytes
    }
    const jobs = new Map<number, Promise<JobResult & { digest: Digest }>>()
    const issue = (i: number): void => {
      const p = chunkWorkers.hash(pack.fd, i * cs, Math.min(cs, size - i * cs), i)
      p.catch(() => {})
      jobs.set(i, p)
    }
    for (let i = 0; i < Math.min(count, chunkWorkers.depth); i++) issue(i)
    try {
      for (let i = 0; i < count; i++) {
        throwIfAborted(ctx.signal)
        const r = await jobs.get(i)!
        jobs.delete(i)
        if (i + chunkWorkers.depth < count) issue(i + chunkWorkers.depth)
        const at = i * cs
        if (r.n !== Math.min(cs, size - at)) {
          throw new PipemeshError('CONFLICT', `${abs} changed while it was being stored: ${r.n} bytes at offset ${at}, where ${size} bytes were expected in all`, { hint: CHANGED_HINT })
        }
        chunks.push({ digest: r.digest, size: r.n })
        countBytes(ctx, r.n)
        if (!ctx.batch.claim(r.digest)) continue
        if (r.n < INLINE_MAX) {
          // Only a short last chunk: inline in the index, like any small body.
          ctx.batch.add(await ctx.chunks.storeBody(r.digest, await copyOf(r.digest, at, r.n), ctx.group), r.n)
          continue
        }
        pending.push({ digest: r.digest, at, n: r.n })
        if (pending.length >= INDEX_GROUP) await lookUp()
      }
      await lookUp()
    } finally {
      // The descriptor must outlive every job still reading it.
      await Promise.allSettled(jobs.values())
    }
    const freshBytes = fresh.reduce((sum, c) => sum + c.n, 0)
    if (freshBytes * 2 >= size) {
      // In the pack directory before the index can point into it.
      await packs.placeAdopted(pack)
      for (const c of fresh) {
        const record: ChunkRecord = { size: c.n, inline: false, pack: pack.name, at: c.at }
        ctx.batch.add([{ type: 'put', sublevel: ctx.db.chunks, key: c.digest, value: record }])
        kept++
      }
    } else {
      for (const c of fresh) ctx.batch.add(await ctx.chunks.storeBody(c.digest, await copyOf(c.digest, c.at, c.n), ctx.group))
    }
    const manifest: FileManifest = { type: 'file', size, chunks }
    const bytes = encodeManifest(manifest)
    const digest = sha256Digest(bytes)
    ctx.batch.add([{ type: 'put', sublevel: ctx.db.manifests, key: digest, value: bytes }], bytes.byteLength)
    stored = true
    return { digest, size, executable: ((pack.adoptedMode ?? 0) & 0o111) !== 0 }
  } finally {
    // A failure gives the file back; after a success its path is left empty, as promised.
    await packs.settleAdopted(pack, kept, stored ? undefined : abs)
  }
}

/** The store's side of a tree walk: files stored through the chunk workers, manifests batched. */
function storeSink (ctx: IngestContext): TreeSink {
  return {
    file: async (abs) => await ingestFile(ctx, abs),
    tree: (digest, bytes) => { ctx.batch.add([{ type: 'put', sublevel: ctx.db.manifests, key: digest, value: bytes }], bytes.byteLength) },
    chunkSize: ctx.chunkSize,
    onScanned: (bytes) => {
      if (bytes > ctx.maxArtifactBytes) throw overLimit(ctx, bytes)
      ctx.onScanned?.(bytes)
    },
    signal: ctx.signal
  }
}

/**
 * Ingests a file or a directory. A symlink at `abs` itself is refused: callers that trust the
 * path (a pipeline's own inputs) resolve it with fs.realpath first.
 */
export async function ingestPath (ctx: IngestContext, abs: string): Promise<{ digest: Digest, kind: 'file' | 'tree', size: number }> {
  return await walkPath(abs, storeSink(ctx))
}

/**
 * Ingests the listed paths (files or directories, relative to `baseDir`) as one tree that keeps
 * them at those relative paths, with their parent directories (see walkListed).
 */
export async function ingestListed (ctx: IngestContext, baseDir: string, relPaths: string[]): Promise<{ digest: Digest, size: number, files: Record<string, Digest> }> {
  return await walkListed(baseDir, relPaths, storeSink(ctx))
}
