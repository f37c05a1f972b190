// Chunk bodies by digest, wherever they live (LevelDB value when small, chunk file when large).
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
   * make it visible. The chunk file (if any) is complete on disk before the ops exist, so an
   * index entry never points at a partial body. Inline bytes are copied: callers reuse buffers.
   */
  async storeBody (digest: Digest, bytes: Uint8Array): Promise<Op[]> {
    const record: ChunkRecord = { size: bytes.byteLength, inline: bytes.byteLength < INLINE_MAX }
    const ops: Op[] = [{ type: 'put', sublevel: this.db.chunks, key: digest, value: record }]
    if (record.inline) ops.push({ type: 'put', sublevel: this.db.inline, key: digest, value: Buffer.from(bytes) })
    else await this.files.write(digest, bytes)
    return ops
  }

  /** storeBody and commit at once (one chunk from a peer or a repair). */
  async put (digest: Digest, bytes: Uint8Array): Promise<void> {
    await this.db.write(await this.storeBody(digest, bytes), `chunk ${digest}`)
  }

  /**
   * Returns the verified body. `scratch`, when large enough, receives file bodies (callers that
   * stream reuse a few buffers); the result may be a view of it. Throws MissingContentError when
   * absent and CorruptContentError (after quarantining) when the bytes do not match.
   */
  async read (digest: Digest, scratch?: Buffer): Promise<Buffer> {
    // Inline bodies first: one LevelDB lookup for the many small files of a code tree. An inline
    // body and its index entry are written and deleted together.
    const value = await this.db.inline.get(digest)
    const record = value === undefined ? await this.db.chunks.get(digest) : { size: value.byteLength, inline: true }
    if (record === undefined) throw new MissingContentError(digest, `chunk not in store ${this.db.dir}`)
    let bytes: Buffer
    if (value !== undefined) {
      bytes = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
    } else if (record.inline) {
      await this.forget(digest)
      throw new MissingContentError(digest, `chunk body missing from the index of ${this.db.dir}`)
    } else {
      const buf = scratch !== undefined && scratch.byteLength >= record.size
        ? scratch.subarray(0, record.size)
        : Buffer.allocUnsafe(record.size)
      let n: number
      try {
        n = await this.files.readInto(digest, buf)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
        await this.forget(digest)
        throw new MissingContentError(digest, `chunk file ${this.files.pathOf(digest)} has vanished`)
      }
      bytes = buf.subarray(0, n)
    }
    const actual = sha256Digest(bytes)
    if (actual !== digest || bytes.byteLength !== record.size) {
      const where = await this.quarantine(digest)
      throw new CorruptContentError(digest,
        `stored bytes (${bytes.byteLength} of ${record.size}) hash to ${actual}` +
        (where === undefined ? '' : `; moved to ${where}`) + '; it must be fetched or rebuilt again')
    }
    return bytes
  }

  /**
   * Moves a bad body aside and drops its index entry. Re-reads first: a concurrent repair may
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
      const current = await fs.readFile(this.files.pathOf(digest)).catch(() => undefined)
      if (current !== undefined && current.byteLength === record.size && sha256Digest(current) === digest) return undefined
      where = await this.files.quarantine(digest)
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

  /** Removes chunks for good (gc): index entries first, so a crash leaves only orphan files. */
  async removeMany (entries: Array<{ digest: Digest, record: ChunkRecord }>): Promise<void> {
    const ops: Op[] = []
    for (const { digest } of entries) {
      ops.push({ type: 'del', sublevel: this.db.chunks, key: digest }, { type: 'del', sublevel: this.db.inline, key: digest })
    }
    await this.db.write(ops, 'gc deletions')
    for (const { digest, record } of entries) {
      if (!record.inline) await this.files.remove(digest).catch((err: unknown) => { throw asStorageError(err, `removal of ${digest}`, this.db.dir) })
    }
  }
}
