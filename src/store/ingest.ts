// Turns files and directories into chunks and manifests. Multi-chunk files are read, hashed and
// written by the chunk workers (a few chunks in flight, each worker with one reusable buffer), so
// memory stays flat whatever the file size and hashing uses every core; small files are hashed on
// the main thread, where open/read/close latency dominates. Only regular files, directories and
// symlinks that stay inside the tree are accepted.

import { constants as fsConstants, type Stats } from 'node:fs'
import fs from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { PipemeshError, UnsafePathError, throwIfAborted } from '../errors.js'
import { assertSafeRelativePath, assertSafeSymlinkTarget, normalizeRelativePath } from '../util/safe-path.js'
import { forEachLimit } from './async-util.js'
import { chunkWorkers, type JobResult } from './chunk-workers.js'
import { INLINE_MAX, type Chunks } from './chunks.js'
import type { Batcher, StoreDb } from './db.js'
import { comparePaths, encodeManifest, sha256Digest, type ChunkRef, type FileManifest, type TreeEntry } from './manifest.js'
import type { Digest } from './types.js'

/** Small files at once: they are dominated by open/read/close latency, not bandwidth. */
const SMALL_FILE_PARALLEL = 16
/** Multi-chunk files at once: they share the chunk workers. */
const LARGE_FILE_PARALLEL = 2

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
  /** Bytes read so far (onProgress reports this running total). */
  bytes: number
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

async function readFull (fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let filled = 0
  while (filled < buf.byteLength) {
    const { bytesRead } = await fh.read(buf, filled, buf.byteLength - filled, position + filled)
    if (bytesRead === 0) break
    filled += bytesRead
  }
  return filled
}

async function storeIfNew (ctx: IngestContext, digest: Digest, bytes: Buffer): Promise<void> {
  if (!ctx.batch.claim(digest)) return
  // A small chunk is cheaper to write again (in the batch) than to look up first.
  if (bytes.byteLength >= INLINE_MAX && await ctx.chunks.has(digest)) return
  const ops = await ctx.chunks.storeBody(digest, bytes)
  // Only inline bodies travel in the batch; file bodies are already on disk.
  ctx.batch.add(ops, ops.length > 1 ? bytes.byteLength : 0)
}

function describeStats (st: Stats): string {
  if (st.isSocket()) return 'a socket'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device'
  if (st.isSymbolicLink()) return 'a symbolic link'
  if (st.isDirectory()) return 'a directory'
  return 'not a regular file'
}

/** Chunks one regular file and queues its chunks and manifest; the file digest is returned. */
export async function ingestFile (ctx: IngestContext, abs: string): Promise<IngestedFile> {
  let fh: FileHandle
  try {
    // O_NOFOLLOW: a file swapped for a link after the scan is refused; O_NONBLOCK: a FIFO swapped
    // in cannot hang the open.
    fh = await fs.open(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new UnsafePathError(abs, 'is a symbolic link; expected a regular file')
    throw err
  }
  const chunks: ChunkRef[] = []
  let size = 0
  let executable: boolean
  try {
    const st = await fh.stat()
    if (!st.isFile()) throw new UnsafePathError(abs, `is ${describeStats(st)}; only regular files, directories and symlinks can be stored`)
    executable = (st.mode & 0o111) !== 0
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
    if (!done) size = await chunkLargeFile(ctx, fh, chunks)
  } finally {
    await fh.close()
  }
  const manifest: FileManifest = { type: 'file', size, chunks }
  const bytes = encodeManifest(manifest)
  const digest = sha256Digest(bytes)
  ctx.batch.add([{ type: 'put', sublevel: ctx.db.manifests, key: digest, value: bytes }], bytes.byteLength)
  return { digest, size, executable }
}

async function chunkLargeFile (ctx: IngestContext, fh: FileHandle, chunks: ChunkRef[]): Promise<number> {
  const cs = ctx.chunkSize
  const files = ctx.chunks.files
  // Chunks are read, hashed and written on the chunk workers, several at once; results are
  // taken in file order, so the manifest and the byte count stay sequential.
  const jobs = new Map<number, Promise<JobResult>>()
  let issued = 0
  const issue = (): void => {
    const p = files.ingestRange(fh.fd, issued * cs, cs, INLINE_MAX)
    p.catch(() => {})
    jobs.set(issued++, p)
  }
  for (let i = 0; i < chunkWorkers.depth; i++) issue()
  let size = 0
  try {
    for (let i = 0; ; i++) {
      throwIfAborted(ctx.signal)
      const r = await jobs.get(i)!
      jobs.delete(i)
      if (r.n === 0) break
      const digest = r.digest as Digest
      chunks.push({ digest, size: r.n })
      size += r.n
      countBytes(ctx, r.n)
      if (ctx.batch.claim(digest)) {
        // A small tail chunk came back to go inline; a large one is already on disk.
        if (r.bytes !== undefined) ctx.batch.add(await ctx.chunks.storeBody(digest, r.bytes), r.n)
        else ctx.batch.add([{ type: 'put', sublevel: ctx.db.chunks, key: digest, value: { size: r.n, inline: false } }])
      }
      if (r.n < cs) break
      issue()
    }
  } finally {
    // The descriptor must outlive every job still reading it: a closed and reused fd number
    // would be read from another file.
    await Promise.allSettled(jobs.values())
  }
  return size
}

interface Scan {
  entries: Map<string, TreeEntry>
  files: Array<{ rel: string, abs: string, size: number }>
  size: number
}

function addEntry (scan: Scan, entry: TreeEntry): void {
  const existing = scan.entries.get(entry.path)
  if (existing !== undefined && existing.type !== entry.type) {
    throw new UnsafePathError(entry.path, `listed both as a ${existing.type} and as a ${entry.type} (a path under a symlink?)`)
  }
  if (existing === undefined) scan.entries.set(entry.path, entry)
}

/** Adds `abs` (at tree path `rel`) and, for a directory, everything under it. */
async function scanPath (ctx: IngestContext, scan: Scan, abs: string, rel: string, st: Stats): Promise<void> {
  throwIfAborted(ctx.signal)
  assertSafeRelativePath(rel, 'file name')
  if (st.isDirectory()) {
    addEntry(scan, { path: rel, type: 'dir' })
    await scanDir(ctx, scan, abs, rel)
  } else if (st.isFile()) {
    if (!scan.entries.has(rel)) {
      scan.entries.set(rel, { path: rel, type: 'file', digest: 'sha256:', size: 0, executable: false })
      scan.files.push({ rel, abs, size: st.size })
      scan.size += st.size
      if (scan.size > ctx.maxArtifactBytes) throw overLimit(ctx, scan.size)
    }
  } else if (st.isSymbolicLink()) {
    const target = assertSafeSymlinkTarget(rel, await fs.readlink(abs))
    addEntry(scan, { path: rel, type: 'symlink', target })
  } else {
    throw new UnsafePathError(abs, `is ${describeStats(st)}; only regular files, directories and symlinks can be stored`)
  }
}

async function scanDir (ctx: IngestContext, scan: Scan, absDir: string, relDir: string): Promise<void> {
  const dirents = await fs.readdir(absDir, { withFileTypes: true })
  // lstat in small groups: one at a time is latency-bound on trees of many small files.
  for (let i = 0; i < dirents.length; i += 64) {
    const group = dirents.slice(i, i + 64)
    const stats = await Promise.all(group.map(async d => await fs.lstat(path.join(absDir, d.name))))
    for (let j = 0; j < group.length; j++) {
      const name = group[j]!.name
      await scanPath(ctx, scan, path.join(absDir, name), relDir === '' ? name : `${relDir}/${name}`, stats[j]!)
    }
  }
}

/** Ingests the scanned files and queues the tree manifest; returns its digest. */
async function finishTree (ctx: IngestContext, scan: Scan): Promise<{ digest: Digest, size: number, files: Record<string, Digest> }> {
  const one = async ({ rel, abs }: { rel: string, abs: string }): Promise<void> => {
    const f = await ingestFile(ctx, abs)
    scan.entries.set(rel, { path: rel, type: 'file', digest: f.digest, size: f.size, executable: f.executable })
  }
  await forEachLimit(scan.files.filter(f => f.size < ctx.chunkSize), SMALL_FILE_PARALLEL, one, ctx.signal)
  await forEachLimit(scan.files.filter(f => f.size >= ctx.chunkSize), LARGE_FILE_PARALLEL, one, ctx.signal)
  const entries = [...scan.entries.values()].sort((a, b) => comparePaths(a.path, b.path))
  let size = 0
  for (const e of entries) if (e.type === 'file') size += e.size
  const bytes = encodeManifest({ type: 'tree', entries })
  const digest = sha256Digest(bytes)
  ctx.batch.add([{ type: 'put', sublevel: ctx.db.manifests, key: digest, value: bytes }], bytes.byteLength)
  // fromEntries defines own properties: a file named "__proto__" stays a plain key.
  const files = Object.fromEntries(entries.flatMap(e => e.type === 'file' ? [[e.path, e.digest]] : [])) as Record<string, Digest>
  return { digest, size, files }
}

/**
 * Ingests a file or a directory. A symlink at `abs` itself is refused: callers that trust the
 * path (a pipeline's own inputs) resolve it with fs.realpath first.
 */
export async function ingestPath (ctx: IngestContext, abs: string): Promise<{ digest: Digest, kind: 'file' | 'tree', size: number }> {
  const st = await fs.lstat(abs).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new PipemeshError('NOT_FOUND', `cannot store ${abs}: it does not exist`)
    throw err
  })
  if (st.isFile()) {
    if (st.size > ctx.maxArtifactBytes) throw overLimit(ctx, st.size)
    const f = await ingestFile(ctx, abs)
    return { digest: f.digest, kind: 'file', size: f.size }
  }
  if (!st.isDirectory()) {
    throw new UnsafePathError(abs, `is ${describeStats(st)}; an artifact must be a regular file or a directory`)
  }
  const scan: Scan = { entries: new Map(), files: [], size: 0 }
  await scanDir(ctx, scan, abs, '')
  const tree = await finishTree(ctx, scan)
  return { digest: tree.digest, kind: 'tree', size: tree.size }
}

/**
 * Ingests the listed paths (files or directories, relative to `baseDir`) as one tree that keeps
 * them at those relative paths, with their parent directories. Directories on the way to a
 * listed path are followed even if they are links; the listed paths and what lies under them
 * are not.
 */
export async function ingestListed (ctx: IngestContext, baseDir: string, relPaths: string[]): Promise<{ digest: Digest, size: number, files: Record<string, Digest> }> {
  const scan: Scan = { entries: new Map(), files: [], size: 0 }
  for (const raw of relPaths) {
    const rel = normalizeRelativePath(raw, 'listed path')
    const abs = rel === '' ? baseDir : path.join(baseDir, ...rel.split('/'))
    const st = await fs.lstat(abs).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') throw new PipemeshError('NOT_FOUND', `${raw} does not exist in ${baseDir}`)
      throw err
    })
    if (rel === '') {
      if (!st.isDirectory()) throw new UnsafePathError(baseDir, 'is not a directory')
      await scanDir(ctx, scan, abs, '')
      continue
    }
    const segments = rel.split('/')
    for (let i = 1; i < segments.length; i++) addEntry(scan, { path: segments.slice(0, i).join('/'), type: 'dir' })
    await scanPath(ctx, scan, abs, rel, st)
  }
  return await finishTree(ctx, scan)
}
