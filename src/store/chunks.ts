// Chunk bodies by digest, wherever they live (LevelDB value when small, pack region when large).
// Every read re-hashes; a body that does not match is quarantined and its index entry removed,
// so the chunk reads as missing and can be fetched again, and bad bytes never reach a caller.

import fs from 'node:fs/promises'
import { CorruptContentError, MissingContentError } from '../errors.js'
import { ChunkFiles, asStorageError } from './chunk-files.js'
import type { ChunkRecord, Op, StoreDb } from './db.js'
import { sha256Digest } from './manifest.js'
import type { Digest } from './types.js'

/** Chunks below this size are LevelDB values: small files would otherwise cost a file each. */
export const INLINE_MAX = 64 * 1024

export class Chunks {
  constructor (readonly db: StoreDb, readonly files: ChunkFiles) {}

  async record (digest: Digest): Promise<ChunkRecord | undefined> {
    return await this.db.chunks.get(digest)
  }

  async has (digest: Digest): Promise<boolean> {
    return (await this.db.chunks.get(digest)) !== undefined
  }

  /** Which of `digests` are indexed, in one LevelDB call. */
  async hasMany (digests: Digest[]): Promise<boolean[]> {
    if (digests.length === 0) return []
    const records = await this.db.chunks.getMany(digests)
    return records.map(r => r !== undefined)
  }

  /**
   * Stores a body whose digest the caller has already checked, and returns the index ops that
   * make it visible. A body in a pack is complete on disk before the ops exist, so an
   * index entry never points at a partial body. Inline bytes are copied: callers reuse buffers.
   */
  async storeBody (digest: Digest, bytes: Uint8Array, group?: string): Promise<Op[]> {
    if (bytes.byteLength < INLINE_MAX) {
      const record: ChunkRecord = { size: bytes.byteLength, inline: true }
      return [
        { type: 'put', sublevel: this.db.chunks, key: digest, value: record },
        { type: 'put', sublevel: this.db.inline, key: digest, value: Buffer.from(bytes) }
      ]
    }
    const record: ChunkRecord = { size: bytes.byteLength, inline: false, ...await this.files.write(digest, bytes, group) }
    return [{ type: 'put', sublevel: this.db.chunks, key: digest, value: record }]
  }

  /** storeBody and commit at once (one chunk from a peer or a repair). */
  async put (digest: Digest, bytes: Uint8Array): Promise<void> {
    await this.db.write(await this.storeBody(digest, bytes), `chunk ${digest}`)
  }

  /**
   * Stores a chunk from a peer or a repair: written to a pack, hashed back on a chunk worker,
   * indexed once its body is in place. Bytes that do not hash to `digest` are refused and nothing
   * is indexed.
   */
  async putChecked (digest: Digest, parts: readonly Uint8Array[], size: number, group?: string): Promise<void> {
    if (size < INLINE_MAX) {
      const bytes = parts.length === 1 ? parts[0] as Uint8Array : Buffer.concat(parts)
      const actual = sha256Digest(bytes)
      if (actual !== digest) throw new CorruptContentError(digest, `received bytes hash to ${actual}`)
      await this.put(digest, bytes)
      return
    }
    const r = await this.files.writeIfMatches(digest, parts, size, group)
    if (r.placed === undefined) throw new CorruptContentError(digest, `received bytes hash to ${r.digest}`)
    const record: ChunkRecord = { size, inline: false, ...r.placed }
    await this.db.write([{ type: 'put', sublevel: this.db.chunks, key: digest, value: record }], `chunk ${digest}`)
  }

  /**
   * Returns the verified body. Throws MissingContentError when absent and CorruptContentError
   * (after quarantining) when the bytes do not match.
   */
  async read (digest: Digest): Promise<Buffer> {
    const record = await this.db.chunks.get(digest)
    if (record === undefined) throw new MissingContentError(digest, `chunk not in store ${this.db.dir}`)
    return await this.readRecorded(digest, record)
  }

  /**
   * The body as stored, for a peer that hashes every chunk it receives: only its size is
   * checked here (a short or long body is quarantined as read() would). Small bodies are read
   * verified all the same; the hash of 64 KiB costs less than a second look.
   */
  async readRaw (digest: Digest): Promise<Buffer> {
    let record = await this.db.chunks.get(digest)
    if (record === undefined) throw new MissingContentError(digest, `chunk not in store ${this.db.dir}`)
    if (record.inline) return await this.readRecorded(digest, record)
    let bytes: Buffer
    try {
      bytes = await this.files.readRaw(digest, record)
    } catch (err) {
      record = await this.relocated(digest, record, err)
      bytes = await this.files.readRaw(digest, record).catch(async (again: unknown) => await this.vanished(digest, record!, again))
    }
    if (bytes.byteLength !== record.size) throw await this.corrupt(digest, bytes.byteLength, record.size, sha256Digest(bytes))
    return bytes
  }

  /**
   * Reads and hashes a chunk (a peer said the bytes it got hash otherwise): 'ok', 'quarantined'
   * when they were bad (moved aside and dropped from the index, as read() does), or 'missing'.
   */
  async check (digest: Digest): Promise<'ok' | 'quarantined' | 'missing'> {
    try {
      await this.read(digest)
      return 'ok'
    } catch (err) {
      if (err instanceof CorruptContentError) return 'quarantined'
      if (err instanceof MissingContentError) return 'missing'
      throw err
    }
  }

  /** read() for a caller that already looked up the index record. */
  async readRecorded (digest: Digest, record: ChunkRecord): Promise<Buffer> {
    let bytes: Buffer
    let actual: Digest
    if (record.inline) {
      const value = await this.db.inline.get(digest)
      if (value === undefined) {
        await this.forget(digest)
        throw new MissingContentError(digest, `chunk body missing from the index of ${this.db.dir}`)
      }
      bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
      actual = sha256Digest(bytes)
    } else {
      // Hashed on a chunk worker: a server reading ahead for a peer keeps its event loop for the
      // connection.
      let r: { bytes: Uint8Array, digest: Digest }
      try {
        r = await this.files.readHashed(digest, record)
      } catch (err) {
        record = await this.relocated(digest, record, err)
        r = await this.files.readHashed(digest, record).catch(async (again: unknown) => await this.vanished(digest, record, again))
      }
      bytes = Buffer.from(r.bytes.buffer, r.bytes.byteOffset, r.bytes.byteLength)
      actual = r.digest
    }
    if (actual !== digest || bytes.byteLength !== record.size) throw await this.corrupt(digest, bytes.byteLength, record.size, actual)
    return bytes
  }

  /**
   * Writes a body, verified, at `position` of the open `destFd` (materialize). Nothing is
   * written unless the bytes match; then the chunk is quarantined as read() would.
   */
  async copyOut (digest: Digest, record: ChunkRecord, destFd: number, position: number): Promise<void> {
    let r: { n: number, digest: Digest }
    try {
      r = await this.files.copyOut(digest, record, destFd, position)
    } catch (err) {
      record = await this.relocated(digest, record, err)
      r = await this.files.copyOut(digest, record, destFd, position).catch(async (again: unknown) => await this.vanished(digest, record, again))
    }
    if (r.digest !== digest || r.n !== record.size) throw await this.corrupt(digest, r.n, record.size, r.digest)
  }

  /** The index records of `digests` (undefined where absent), in one LevelDB call. */
  async records (digests: Digest[]): Promise<Array<ChunkRecord | undefined>> {
    if (digests.length === 0) return []
    return await this.db.chunks.getMany(digests)
  }

  /**
   * A body was not where `record` said. If the index now says elsewhere (gc rewrote its pack
   * meanwhile, or a second copy was indexed), that record is returned for one more try; if not,
   * the body is gone and the chunk is forgotten.
   */
  private async relocated (digest: Digest, record: ChunkRecord, err: unknown): Promise<ChunkRecord> {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    const now = await this.db.chunks.get(digest)
    if (now !== undefined && !now.inline && (now.pack !== record.pack || now.at !== record.at)) return now
    return await this.vanished(digest, record, err)
  }

  private async vanished (digest: Digest, record: ChunkRecord, err: unknown): Promise<never> {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
    const now = await this.db.chunks.get(digest)
    // Only the entry that pointed at the missing body is dropped.
    if (now !== undefined && now.pack === record.pack && now.at === record.at) await this.forget(digest)
    throw new MissingContentError(digest, `${this.files.describe(digest, record)} has vanished`)
  }

  private async corrupt (digest: Digest, got: number, size: number, actual: Digest): Promise<CorruptContentError> {
    const where = await this.quarantine(digest)
    return new CorruptContentError(digest,
      `stored bytes (${got} of ${size}) hash to ${actual}` +
      (where === undefined ? '' : `; copied to ${where}`) + '; it must be fetched or rebuilt again')
  }

  /**
   * Sets a bad body aside and drops its index entry. Re-reads first: a concurrent repair may
   * already have replaced it with good bytes, which must stay. Returns the quarantine path.
   */
  async quarantine (digest: Digest): Promise<string | undefined> {
    const record = await this.db.chunks.get(digest)
    let where: string | undefined
    if (record?.inline === true) {
      const value = await this.db.inline.get(digest)
      if (value !== undefined && sha256Digest(value) === digest) return undefined
      if (value !== undefined) {
        where = this.files.quarantinePath(digest)
        await fs.writeFile(where, value).catch(() => { where = undefined })
      }
    } else if (record !== undefined) {
      const current = await this.files.readRaw(digest, record).catch(() => undefined)
      if (current !== undefined && current.byteLength === record.size && sha256Digest(current) === digest) return undefined
      where = await this.files.quarantine(digest, record)
    }
    await this.forget(digest)
    return where
  }

  /** Drops the index entry (and inline body) of a chunk. */
  async forget (digest: Digest): Promise<void> {
    await this.db.write([
      { type: 'del', sublevel: this.db.chunks, key: digest },
      { type: 'del', sublevel: this.db.inline, key: digest }
    ], `index of chunk ${digest}`)
  }

  /** Removes chunks for good (gc): index entries first, so a crash leaves only orphan files; pack regions go with their pack (gc). */
  async removeMany (entries: Array<{ digest: Digest, record: ChunkRecord }>): Promise<void> {
    const ops: Op[] = []
    for (const { digest } of entries) {
      ops.push({ type: 'del', sublevel: this.db.chunks, key: digest }, { type: 'del', sublevel: this.db.inline, key: digest })
    }
    await this.db.write(ops, 'gc deletions')
    for (const { digest, record } of entries) {
      if (!record.inline) await this.files.remove(digest, record).catch((err: unknown) => { throw asStorageError(err, `removal of ${digest}`, this.db.dir) })
    }
  }
}
