// Content digests of a pipeline's files without storing anything: the digests a ContentStore
// would give the same files (same 1 MiB chunking, same manifests, same tree rules), so a client
// can ask a mesh what it lacks before it opens a store or starts libp2p. Trees are walked by the
// store's own walk (src/store/tree-walk.ts); a file is chunked as src/store/ingest.ts chunks it,
// and test/src/client/digests.test.ts checks the two agree. A disagreement is safe (the digest is
// then held by nobody, and the CLI falls back to ingesting into its store), as long as different
// content never gets the digest of something else.
//
// Large files' digests are remembered across runs in a small file (DigestCache), keyed by what
// stat says; an entry is trusted only when device, inode, size, mtime and ctime all match to the
// nanosecond, and is only written for files that had not been modified for a while before they
// were hashed (a write in the same clock tick as the hash would otherwise go unseen: "racy git").

import { randomBytes } from 'node:crypto'
import type { BigIntStats } from 'node:fs'
import fs from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { UnsafePathError, throwIfAborted } from '../errors.js'
import { encodeManifest, sha256Digest, type ChunkRef } from '../store/manifest.js'
import { openWalkedFile, readFull, walkListed, walkPath, type TreeSink, type WalkedFile } from '../store/tree-walk.js'
import type { ReadProgress } from './prepare.js'
import type { ArtifactRef, Digest } from '../store/types.js'

/** The chunk size of a ContentStore opened with default options (DEFAULT_CHUNK_SIZE). */
export const CHUNK_SIZE = 1024 * 1024

/** Files smaller than this are hashed every time: a cache look-up would cost about as much. */
const CACHE_MIN_BYTES = CHUNK_SIZE
/** A file modified this recently before hashing is not cached (see the module comment). */
const RACY_NS = 2_000_000_000n
const CACHE_MAX_ENTRIES = 1024
const CACHE_VERSION = 1

interface CacheEntry { dev: string, ino: string, size: number, mtimeNs: string, ctimeNs: string, digest: Digest, executable: boolean, usedAt: number }

/** Remembered file digests, one JSON file; unreadable or foreign content counts as empty. */
export class DigestCache {
  private entries = new Map<string, CacheEntry>()
  private dirty = false

  private constructor (private readonly file: string) {}

  static async load (file: string): Promise<DigestCache> {
    const cache = new DigestCache(file)
    try {
      const parsed = JSON.parse(await fs.readFile(file, 'utf8')) as { version?: number, entries?: Record<string, CacheEntry> }
      if (parsed.version === CACHE_VERSION && parsed.entries !== undefined && typeof parsed.entries === 'object') {
        for (const [key, entry] of Object.entries(parsed.entries)) {
          if (isEntry(entry)) cache.entries.set(key, entry)
        }
      }
    } catch {}
    return cache
  }

  lookup (abs: string, st: BigIntStats): { digest: Digest, size: number, executable: boolean } | undefined {
    const e = this.entries.get(abs)
    if (e === undefined || e.dev !== String(st.dev) || e.ino !== String(st.ino) || e.size !== Number(st.size) ||
      e.mtimeNs !== String(st.mtimeNs) || e.ctimeNs !== String(st.ctimeNs) || e.executable !== ((Number(st.mode) & 0o111) !== 0)) return undefined
    e.usedAt = Date.now()
    this.dirty = true
    return { digest: e.digest, size: e.size, executable: e.executable }
  }

  /** Remembers a digest computed between stats `before` and `after` (the same file, unchanged). */
  remember (abs: string, before: BigIntStats, after: BigIntStats, hashStartedNs: bigint, digest: Digest): void {
    const same = before.dev === after.dev && before.ino === after.ino && before.size === after.size &&
      before.mtimeNs === after.mtimeNs && before.ctimeNs === after.ctimeNs
    const newest = after.mtimeNs > after.ctimeNs ? after.mtimeNs : after.ctimeNs
    if (!same || newest > hashStartedNs - RACY_NS) return
    this.entries.set(abs, {
      dev: String(after.dev), ino: String(after.ino), size: Number(after.size), mtimeNs: String(after.mtimeNs), ctimeNs: String(after.ctimeNs),
      digest, executable: (Number(after.mode) & 0o111) !== 0, usedAt: Date.now()
    })
    this.dirty = true
  }

  /** Writes the cache if anything changed: a temporary file renamed over it, so readers never see half. */
  async save (): Promise<void> {
    if (!this.dirty) return
    const kept = [...this.entries].sort((a, b) => b[1].usedAt - a[1].usedAt).slice(0, CACHE_MAX_ENTRIES)
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`
    try {
      await fs.mkdir(path.dirname(this.file), { recursive: true })
      await fs.writeFile(tmp, JSON.stringify({ version: CACHE_VERSION, entries: Object.fromEntries(kept) }), { mode: 0o600 })
      await fs.rename(tmp, this.file)
      this.dirty = false
    } catch {
      // Only a cache: the next run hashes again.
      await fs.rm(tmp, { force: true }).catch(() => {})
    }
  }
}

function isEntry (e: unknown): e is CacheEntry {
  const x = e as CacheEntry
  return typeof x === 'object' && x !== null && typeof x.dev === 'string' && typeof x.ino === 'string' && typeof x.size === 'number' &&
    typeof x.mtimeNs === 'string' && typeof x.ctimeNs === 'string' && typeof x.digest === 'string' && /^sha256:[0-9a-f]{64}$/.test(x.digest) &&
    typeof x.executable === 'boolean' && typeof x.usedAt === 'number'
}

/**
 * Computes what `ContentStore.ingest` and `ingestFiles` would return, storing nothing. Used
 * through the same interface as the store (see prepare.ts). Trees are walked by the store's own
 * walk (tree-walk.ts); only a file's chunking is done here, hashing without writing.
 */
export class ContentHasher {
  constructor (private readonly cache?: DigestCache) {}

  async ingest (source: string, options: { signal?: AbortSignal } & ReadProgress = {}): Promise<ArtifactRef> {
    const { digest, kind, size } = await walkPath(path.resolve(source), this.sink(options))
    return { digest, kind, size }
  }

  async ingestFiles (baseDir: string, relPaths: string[], options: { signal?: AbortSignal } & ReadProgress = {}): Promise<{ ref: ArtifactRef, files: Record<string, Digest> }> {
    const tree = await walkListed(path.resolve(baseDir), relPaths, this.sink(options))
    return { ref: { digest: tree.digest, kind: 'tree', size: tree.size }, files: tree.files }
  }

  private sink (options: { signal?: AbortSignal } & ReadProgress): TreeSink {
    const { signal, onProgress, onScanned } = options
    // Bytes hashed so far in this walk (files are hashed a few at a time), as the store counts them.
    let read = 0
    const count = onProgress === undefined ? undefined : (n: number): void => { read += n; onProgress(read) }
    return {
      file: async (abs) => await this.hashFile(abs, signal, count),
      tree: () => {},
      chunkSize: CHUNK_SIZE,
      signal,
      ...(onScanned === undefined ? {} : { onScanned })
    }
  }

  /** The file manifest's digest: 1 MiB chunks, each hashed, as the store chunks the file. */
  private async hashFile (abs: string, signal?: AbortSignal, count?: (bytes: number) => void): Promise<WalkedFile> {
    const fh = await openWalkedFile(abs)
    try {
      const before = await fh.stat({ bigint: true })
      if (!before.isFile()) throw new UnsafePathError(abs, 'is not a regular file; only regular files, directories and symlinks can be stored')
      const cacheable = this.cache !== undefined && before.size >= BigInt(CACHE_MIN_BYTES)
      if (cacheable) {
        const hit = this.cache.lookup(abs, before)
        if (hit !== undefined) {
          count?.(hit.size)
          return hit
        }
      }
      // File times are wall-clock times.
      const startedNs = BigInt(Date.now()) * 1_000_000n
      const chunks: ChunkRef[] = []
      let size = 0
      if (Number(before.size) < CHUNK_SIZE) {
        // As the store does: one read with a spare byte; a file that grew meanwhile is chunked.
        const buf = Buffer.allocUnsafe(Number(before.size) + 1)
        const n = await readFull(fh, buf, 0)
        if (n <= Number(before.size)) {
          if (n > 0) chunks.push({ digest: sha256Digest(buf.subarray(0, n)), size: n })
          size = n
          count?.(n)
        } else {
          size = await chunkAll(fh, chunks, signal, count)
        }
      } else {
        size = await chunkAll(fh, chunks, signal, count)
      }
      const digest = sha256Digest(encodeManifest({ type: 'file', size, chunks }))
      const executable = (Number(before.mode) & 0o111) !== 0
      if (cacheable) this.cache.remember(abs, before, await fh.stat({ bigint: true }), startedNs, digest)
      return { digest, size, executable }
    } finally {
      await fh.close()
    }
  }
}

/** Hashes the whole file in CHUNK_SIZE pieces, reading the next piece while hashing this one. */
async function chunkAll (fh: FileHandle, chunks: ChunkRef[], signal?: AbortSignal, count?: (bytes: number) => void): Promise<number> {
  const bufs = [Buffer.allocUnsafe(CHUNK_SIZE), Buffer.allocUnsafe(CHUNK_SIZE)]
  let size = 0
  let next = readFull(fh, bufs[0]!, 0)
  for (let i = 0; ; i++) {
    throwIfAborted(signal)
    const n = await next
    if (n === 0) break
    const buf = bufs[i % 2]!
    if (n === CHUNK_SIZE) next = readFull(fh, bufs[(i + 1) % 2]!, (i + 1) * CHUNK_SIZE)
    chunks.push({ digest: sha256Digest(buf.subarray(0, n)), size: n })
    size += n
    count?.(n)
    if (n < CHUNK_SIZE) break
  }
  return size
}
