// The agent's content-addressed store: artifacts (files and trees) as sha256-addressed chunks and
// manifests, indexed in LevelDB, large chunk bodies as files. Equal content is stored once across
// steps, runs and pipelines; every read is verified; gc keeps what callers still reference.

import fs from 'node:fs/promises'
import path from 'node:path'
import { MissingContentError, PipemeshError, throwIfAborted } from '../errors.js'
import { byteLengthOf } from '../util/bytes.js'
import { RwLock } from './async-util.js'
import { ChunkFiles } from './chunk-files.js'
import { Chunks } from './chunks.js'
import { Batcher, StoreDb, type Op, type RootRecord } from './db.js'
import { ingestListed, ingestPath, type FileDigestMemo, type IngestContext, type IngestedFile } from './ingest.js'
import { collectGarbage, verifyStore, type GcReport, type GcSelection, type VerifyOptions, type VerifyReport } from './maintenance.js'
import { MAX_CHUNK_BYTES, decodeManifest, manifestSize, type ChunkRef, type Manifest } from './manifest.js'
import { materializeTo } from './materialize.js'
import { absentChunks, closureOf, loadManifest, type Closure } from './reach.js'
import { isDigest, type ArtifactRef, type Digest } from './types.js'

export const DEFAULT_CHUNK_SIZE = 1024 * 1024
const DEFAULT_PACK_REWRITE_MAX_BYTES = 1024 * 1024 * 1024

export interface ContentStoreOptions {
  /**
   * Bytes per chunk. Part of every file's digest: stores that exchange artifacts must agree on
   * it, or equal files get different digests (still correct, but not deduplicated).
   */
  chunkSize?: number
  /** Largest artifact (total file bytes) ingested or accepted from a peer. */
  maxArtifactBytes?: number
  /**
   * Most live bytes one gc moves out of mostly dead packs (default 1 GiB): gc holds the store
   * while it runs, so steps and transfers wait; later runs rewrite the rest.
   */
  packRewriteMaxBytes?: number
}

export interface IngestOptions {
  signal?: AbortSignal
  /** Called with the running total of bytes read. */
  onProgress?: (bytes: number) => void
  /** Called with the running total of file sizes found, ahead of the reads (a directory is listed first). */
  onScanned?: (bytes: number) => void
  label?: string
  /** Files read by an earlier ingest, not read again while unchanged (see FileDigestMemo). */
  memo?: FileDigestMemo
  /**
   * The caller gives up the files (a finished step's outputs): each regular file of a chunk or
   * more, with a single link and on the store's filesystem, is moved into the store as a pack of
   * its own and hashed where it lies, instead of copied, and its path is left empty. Half the
   * disk writes, and no second copy of a large output on disk. Other files are copied as usual.
   * If the ingest fails, a file it was storing is put back.
   */
  adopt?: boolean
}

export interface MaterializeOptions {
  signal?: AbortSignal
  /** Files 0444 (0555 if executable), directories 0555. */
  readOnly?: boolean
  /** Called with the running total of bytes written. */
  onProgress?: (bytes: number) => void
}

/** An artifact this store holds in full (a root), as advertised to other peers. */
export interface HeldArtifact extends ArtifactRef { createdAt: number, label?: string }

export type { GcReport, VerifyOptions, VerifyReport, FileDigestMemo, IngestedFile }
/**
 * `bytes`: the chunks indexed; `logicalBytes`: the artifacts held, before deduplication;
 * `packBytes`: the disk `packs` take, with the dead space gc reclaims (copies of chunks already
 * held, bodies of collected chunks in packs that are still mostly live).
 */
export interface StoreStats { artifacts: number, chunks: number, bytes: number, logicalBytes: number, packs: number, packBytes: number }

/** A manifest put by a transfer stays safe from gc this long while its chunks arrive. */
const PENDING_TTL_MS = 60 * 60 * 1000

function assertDigest (digest: unknown): asserts digest is Digest {
  if (!isDigest(digest)) throw new PipemeshError('INVALID_ARGUMENT', `expected a digest "sha256:<64 hex digits>", got ${JSON.stringify(digest)?.slice(0, 80)}`)
}

export class ContentStore {
  readonly dir: string
  readonly chunkSize: number
  readonly maxArtifactBytes: number
  private readonly db: StoreDb
  private readonly chunks: Chunks
  /** Shared by everything that writes or reads content; exclusive for gc. */
  private readonly lock = new RwLock()
  private readonly pending = new Map<Digest, number>()

  private constructor (dir: string, db: StoreDb, chunks: Chunks, chunkSize: number, maxArtifactBytes: number, private readonly packRewriteMaxBytes: number) {
    this.dir = dir
    this.db = db
    this.chunks = chunks
    this.chunkSize = chunkSize
    this.maxArtifactBytes = maxArtifactBytes
  }

  static async open (dir: string, options: ContentStoreOptions = {}): Promise<ContentStore> {
    const chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
    if (!Number.isInteger(chunkSize) || chunkSize < 64 * 1024 || chunkSize > MAX_CHUNK_BYTES) {
      throw new PipemeshError('INVALID_ARGUMENT', `store chunkSize must be an integer from 65536 to ${MAX_CHUNK_BYTES}, got ${chunkSize}`)
    }
    const maxArtifactBytes = options.maxArtifactBytes ?? Number.MAX_SAFE_INTEGER
    if (!(maxArtifactBytes >= 0)) throw new PipemeshError('INVALID_ARGUMENT', `store maxArtifactBytes must be >= 0, got ${maxArtifactBytes}`)
    const packRewriteMaxBytes = options.packRewriteMaxBytes ?? DEFAULT_PACK_REWRITE_MAX_BYTES
    if (!(packRewriteMaxBytes >= 0)) throw new PipemeshError('INVALID_ARGUMENT', `store packRewriteMaxBytes must be >= 0, got ${packRewriteMaxBytes}`)
    const root = path.resolve(dir)
    await fs.mkdir(root, { recursive: true })
    // The index first: its lock says no other process has this store open, and only then may
    // what a crash left in tmp/ be cleared (a live agent stages the outputs it adopts there).
    const db = await StoreDb.open(path.join(root, 'index'), root)
    let files: ChunkFiles
    try {
      files = await ChunkFiles.open(root)
    } catch (err) {
      await db.close().catch(() => {})
      throw err
    }
    return new ContentStore(root, db, new Chunks(db, files), chunkSize, maxArtifactBytes, packRewriteMaxBytes)
  }

  async close (): Promise<void> {
    await this.lock.exclusive(async () => {
      await this.chunks.files.packs.sealAll()
      await this.db.close()
    })
  }

  private ingestContext (what: string, options: IngestOptions): IngestContext {
    return {
      db: this.db,
      chunks: this.chunks,
      batch: new Batcher(this.db, what),
      chunkSize: this.chunkSize,
      maxArtifactBytes: this.maxArtifactBytes,
      what,
      signal: options.signal,
      onProgress: options.onProgress,
      onScanned: options.onScanned,
      bytes: 0,
      memo: options.memo,
      adopt: options.adopt,
      group: this.chunks.files.newGroup()
    }
  }

  private rootOp (digest: Digest, kind: 'file' | 'tree', size: number, label: string | undefined): Op {
    const value: RootRecord = { kind, size, createdAt: Date.now(), ...(label === undefined ? {} : { label }) }
    return { type: 'put', sublevel: this.db.roots, key: digest, value }
  }

  /** Stores a file or directory (symlinks at `source` itself are refused) and records it as held. */
  async ingest (source: string, options: IngestOptions = {}): Promise<ArtifactRef> {
    throwIfAborted(options.signal)
    return await this.lock.shared(async () => {
      const ctx = this.ingestContext(source, options)
      try {
        const { digest, kind, size } = await ingestPath(ctx, path.resolve(source))
        ctx.batch.add([this.rootOp(digest, kind, size, options.label)])
        await ctx.batch.flush()
        return { digest, kind, size }
      } finally {
        await this.chunks.files.endGroup(ctx.group)
      }
    })
  }

  /**
   * Stores the listed files and directories (relative to `baseDir`) as one tree at those
   * relative paths (a code snapshot). `files` maps each regular file to its file digest.
   */
  async ingestFiles (baseDir: string, relPaths: string[], options: IngestOptions = {}): Promise<{ ref: ArtifactRef, files: Record<string, Digest> }> {
    throwIfAborted(options.signal)
    return await this.lock.shared(async () => {
      const ctx = this.ingestContext(`files listed in ${baseDir}`, options)
      try {
        const { digest, size, files } = await ingestListed(ctx, path.resolve(baseDir), relPaths)
        ctx.batch.add([this.rootOp(digest, 'tree', size, options.label)])
        await ctx.batch.flush()
        return { ref: { digest, kind: 'tree', size }, files }
      } finally {
        await this.chunks.files.endGroup(ctx.group)
      }
    })
  }

  /** Writes the artifact at `dest` (which must not exist); nothing is left there on failure. */
  async materialize (digest: Digest, dest: string, options: MaterializeOptions = {}): Promise<void> {
    throwIfAborted(options.signal)
    await this.lock.shared(async () => {
      const closure = await this.closure(digest)
      const manifest = closure.manifests.get(digest)
      if (manifest === undefined) throw new MissingContentError(digest, `no manifest in store ${this.dir}`)
      const missing = await this.absentChunks(closure)
      if (closure.missingManifests.length > 0 || missing.length > 0) {
        throw new MissingContentError(digest, `${closure.missingManifests.length} file manifests and ${missing.length} chunks are not in store ${this.dir}`)
      }
      await materializeTo({
        chunks: this.chunks,
        // The closure already decoded every manifest the artifact needs.
        loadManifest: async d => closure.manifests.get(d) ?? await this.requireManifest(d),
        readOnly: options.readOnly ?? false,
        signal: options.signal,
        onProgress: options.onProgress,
        bytes: 0
      }, digest, manifest, dest)
    })
  }

  /** True when the manifest and every chunk are indexed (no hashing). */
  async has (digest: Digest): Promise<boolean> {
    const closure = await this.closure(digest)
    if (!closure.manifests.has(digest) || closure.missingManifests.length > 0) return false
    return (await this.absentChunks(closure)).length === 0
  }

  async stat (digest: Digest): Promise<ArtifactRef | undefined> {
    const m = await loadManifest(this.db, digest)
    return m === undefined ? undefined : { digest, kind: m.type, size: manifestSize(m) }
  }

  // ---- peer-to-peer transfer: manifest first, then missingManifests, missingChunks, addRoot ----

  async getManifestBytes (digest: Digest): Promise<Uint8Array | undefined> {
    return await this.db.manifests.get(digest)
  }

  /** Accepts a manifest from a peer after checking hash, schema, canonical form, paths and size. */
  async putManifestBytes (digest: Digest, bytes: Uint8Array): Promise<void> {
    assertDigest(digest)
    const manifest = decodeManifest(bytes, digest)
    const size = manifestSize(manifest)
    if (size > this.maxArtifactBytes) {
      throw new PipemeshError('LIMIT_EXCEEDED', `artifact ${digest} is ${size} bytes, over the store's artifact size limit of ${this.maxArtifactBytes} bytes`)
    }
    await this.lock.shared(async () => {
      this.pending.set(digest, Date.now())
      await this.db.write([{ type: 'put', sublevel: this.db.manifests, key: digest, value: Buffer.from(bytes) }], `manifest ${digest}`)
    })
  }

  /** File manifests a stored tree manifest refers to that are not here yet (or [digest] itself). */
  async missingManifests (digest: Digest): Promise<Digest[]> {
    const closure = await this.closure(digest)
    return closure.manifests.has(digest) ? closure.missingManifests : [digest]
  }

  /** Every chunk of a file or tree, deduplicated. Needs all its manifests. */
  async listChunks (digest: Digest): Promise<ChunkRef[]> {
    const closure = await this.completeClosure(digest)
    return [...closure.chunks].map(([d, size]) => ({ digest: d, size }))
  }

  async missingChunks (digest: Digest): Promise<ChunkRef[]> {
    const closure = await this.completeClosure(digest)
    return await this.absentChunks(closure)
  }

  async hasChunk (digest: Digest): Promise<boolean> {
    return await this.chunks.has(digest)
  }

  /**
   * The verified bytes of one chunk (CorruptContentError after quarantining bad bytes). With
   * `verify: false`, the bytes as stored, only their size checked: for a peer, which hashes
   * every chunk it receives and reports bad ones back (checkChunk).
   */
  async readChunk (digest: Digest, options: { verify?: boolean } = {}): Promise<Uint8Array> {
    return options.verify === false ? await this.chunks.readRaw(digest) : await this.chunks.read(digest)
  }

  /** Hashes a stored chunk: 'ok', 'quarantined' (it was bad: moved aside, no longer indexed) or 'missing'. */
  async checkChunk (digest: Digest): Promise<'ok' | 'quarantined' | 'missing'> {
    assertDigest(digest)
    return await this.lock.shared(async () => await this.chunks.check(digest))
  }

  /**
   * Where a chunk's body is on disk (undefined when it is not indexed, or kept inside the index):
   * for diagnostics, and for tests that damage a body on purpose.
   */
  async chunkLocation (digest: Digest): Promise<{ file: string, offset: number, size: number } | undefined> {
    const record = await this.chunks.record(digest)
    if (record === undefined || record.inline) return undefined
    const body = this.chunks.files.bodyOf(digest, record)
    return { file: body.file, offset: body.position, size: record.size }
  }

  /**
   * Stores a chunk from a peer, given whole or as the pieces it arrived in; bytes that do not
   * hash to `digest` are refused.
   */
  async writeChunk (digest: Digest, bytes: Uint8Array | readonly Uint8Array[], options: { group?: string } = {}): Promise<void> {
    assertDigest(digest)
    const parts = bytes instanceof Uint8Array ? [bytes] : bytes
    const size = byteLengthOf(parts)
    if (size > MAX_CHUNK_BYTES) {
      throw new PipemeshError('LIMIT_EXCEEDED', `chunk ${digest} is ${size} bytes, over the ${MAX_CHUNK_BYTES}-byte chunk limit`)
    }
    await this.lock.shared(async () => { await this.chunks.putChecked(digest, parts, size, options.group) })
  }

  /**
   * A write group for writeChunk: the chunks of one artifact fetched from peers go to packs of
   * their own, so removing the artifact later frees whole packs. End it with endWriteGroup.
   */
  newWriteGroup (): string {
    return this.chunks.files.newGroup()
  }

  /** Seals the group's packs; writes made with it after this go to new packs. */
  async endWriteGroup (group: string): Promise<void> {
    await this.chunks.files.endGroup(group)
  }

  /** Records a fully present artifact as held (after a transfer); refuses an incomplete one. */
  async addRoot (digest: Digest, meta: { label?: string } = {}): Promise<HeldArtifact> {
    return await this.lock.shared(async () => {
      const closure = await this.closure(digest)
      const manifest = closure.manifests.get(digest)
      const absent = await this.absentChunks(closure)
      if (manifest === undefined || closure.missingManifests.length > 0 || absent.length > 0) {
        throw new MissingContentError(digest, `cannot record it as held: ${manifest === undefined ? 'its manifest' : `${closure.missingManifests.length} file manifests and ${absent.length} chunks`} are not in store ${this.dir}`)
      }
      const size = manifestSize(manifest)
      const op = this.rootOp(digest, manifest.type, size, meta.label)
      await this.db.write([op], `root ${digest}`)
      this.pending.delete(digest)
      const record = (op as { value: RootRecord }).value
      return { digest, ...record }
    })
  }

  async * roots (): AsyncIterable<HeldArtifact> {
    for await (const [key, r] of this.db.roots.iterator()) {
      yield { digest: key as Digest, kind: r.kind, size: r.size, createdAt: r.createdAt, ...(r.label === undefined ? {} : { label: r.label }) }
    }
  }

  /** The record of an artifact held as a root (what stored it, when), if it is one. */
  async held (digest: Digest): Promise<HeldArtifact | undefined> {
    const r = await this.db.roots.get(digest)
    if (r === undefined) return undefined
    return { digest, kind: r.kind, size: r.size, createdAt: r.createdAt, ...(r.label === undefined ? {} : { label: r.label }) }
  }

  async removeRoot (digest: Digest): Promise<void> {
    await this.db.write([{ type: 'del', sublevel: this.db.roots, key: digest }], `root ${digest}`)
  }

  /**
   * Re-hashes every stored chunk. Corrupt ones are quarantined; chunks that held artifacts need
   * but lack are reported missing. With `repair`, replacements are fetched and checked.
   */
  async verify (options: VerifyOptions = {}): Promise<VerifyReport> {
    return await this.lock.shared(async () => await verifyStore(this.db, this.chunks, options))
  }

  /** Removes roots not in `keep`, then every manifest and chunk no kept root reaches. */
  async gc (keep: Iterable<Digest>): Promise<GcReport> {
    const kept = new Set(keep)
    const { removedArtifacts, removedChunks, freedBytes } = await this.collect({ keepRoot: d => kept.has(d), live: kept })
    return { removedArtifacts, removedChunks, freedBytes }
  }

  /**
   * Removes the roots in `drop` (a coordinator's list of what no run references any more), except
   * those made at or after `keepNewerThan`: the coordinator may not have heard of them yet. Then
   * removes every manifest and chunk no remaining root reaches. Returns the roots removed.
   */
  async dropRoots (drop: Iterable<Digest>, keepNewerThan: number): Promise<GcReport & { removedRoots: Digest[] }> {
    const dropped = new Set(drop)
    return await this.collect({ keepRoot: (d, record) => !dropped.has(d) || record.createdAt >= keepNewerThan, live: [] })
  }

  private async collect (selection: GcSelection): Promise<GcReport & { removedRoots: Digest[] }> {
    return await this.lock.exclusive(async () => {
      const now = Date.now()
      for (const [d, t] of this.pending) if (now - t > PENDING_TTL_MS) this.pending.delete(d)
      return await collectGarbage(this.db, this.chunks, { keepRoot: selection.keepRoot, live: [...selection.live, ...this.pending.keys()] }, this.packRewriteMaxBytes)
    })
  }

  async stats (): Promise<StoreStats> {
    const s = { artifacts: 0, chunks: 0, bytes: 0, logicalBytes: 0 }
    for await (const r of this.db.roots.values()) { s.artifacts++; s.logicalBytes += r.size }
    for await (const c of this.db.chunks.values()) { s.chunks++; s.bytes += c.size }
    const { packs, bytes: packBytes } = await this.chunks.files.packs.usage()
    return { ...s, packs, packBytes }
  }

  // ---- closures ----

  private async closure (digest: Digest): Promise<Closure> {
    return await closureOf(this.db, digest)
  }

  private async absentChunks (closure: Closure): Promise<ChunkRef[]> {
    return await absentChunks(this.chunks, closure)
  }

  private async requireManifest (digest: Digest): Promise<Manifest> {
    const m = await loadManifest(this.db, digest)
    if (m === undefined) throw new MissingContentError(digest, `no manifest in store ${this.dir}`)
    return m
  }

  private async completeClosure (digest: Digest): Promise<Closure> {
    const closure = await this.closure(digest)
    if (!closure.manifests.has(digest)) throw new MissingContentError(digest, `no manifest in store ${this.dir}`)
    if (closure.missingManifests.length > 0) {
      throw new MissingContentError(digest, `${closure.missingManifests.length} of its file manifests are not in store ${this.dir} (first: ${closure.missingManifests[0]})`)
    }
    return closure
  }
}
