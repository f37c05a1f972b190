// Chunk bodies too large for LevelDB: written to pack files (packs.ts; measured 2.5-5x faster to
// write than LevelDB values, with no compaction rewriting them), and read from packs or, in stores
// written before packs, from one file per chunk, `<dir>/chunks/ab/<hex>`. The bulk paths (ingest,
// materialize, peers' chunks) hash and move bodies on the chunk workers. Writes made on the main
// thread get a pack lane here: their write group's one lane, or one of a few shared lanes.

import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { PipemeshError } from '../errors.js'
import { chunkWorkers, type BodyAt, type JobResult } from './chunk-workers.js'
import { Packs, type Region } from './packs.js'
import { readFull } from './tree-walk.js'
import type { Digest } from './types.js'

/** Pack lanes for writes made from the main thread (peers' chunks, small files, repairs). */
const MAIN_LANES = 4

/** Turns "disk full" into LIMIT_EXCEEDED naming what was being stored and where. */
export function asStorageError (err: unknown, what: string, dir: string): unknown {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  const message = err instanceof Error ? err.message : String(err)
  if (code === 'ENOSPC' || code === 'EDQUOT' || /no space left on device/i.test(message)) {
    return new PipemeshError('LIMIT_EXCEEDED', `disk full while storing ${what} in ${dir}: ${message}`, {
      cause: err,
      hint: 'free disk space (pipemesh store gc removes unreferenced artifacts) and try again'
    })
  }
  return err
}

function hexOf (digest: Digest): string {
  return digest.slice('sha256:'.length)
}

/** `parts` less their first `n` bytes (after a short write). */
function advance (parts: Uint8Array[], n: number): Uint8Array[] {
  let i = 0
  while (i < parts.length && n >= (parts[i] as Uint8Array).byteLength) n -= (parts[i++] as Uint8Array).byteLength
  const rest = parts.slice(i)
  if (n > 0 && rest.length > 0) rest[0] = (rest[0] as Uint8Array).subarray(n)
  return rest
}

/** Where an indexed body lives: a region of a pack, or (stores from before packs) its own file. */
export interface BodyRecord { size: number, pack?: string | undefined, at?: number | undefined }

/** A body written to a pack, to be indexed with these fields. */
export interface Placed { pack: string, at: number }

/** A chunk read, hashed and (when not inline) written to a pack by ingestRange. */
export interface IngestedChunk extends JobResult {
  placed?: Placed
  /** Ends the pack reservation: `kept` when the caller indexes `placed`. */
  settle: (kept: boolean) => Promise<void>
}

export class ChunkFiles {
  readonly root: string
  readonly chunksDir: string
  readonly tmpDir: string
  readonly quarantineDir: string
  readonly packs: Packs
  /** Main-thread pack lanes, busy or not (see withLane). */
  private readonly laneBusy: boolean[] = []
  private readonly laneWaiters: Array<() => void> = []
  /** The last write queued on each group's main-thread lane. */
  private readonly groupWrites = new Map<string, Promise<void>>()
  private groups = 0

  private constructor (root: string) {
    this.root = root
    this.chunksDir = path.join(root, 'chunks')
    this.tmpDir = path.join(root, 'tmp')
    this.quarantineDir = path.join(root, 'quarantine')
    this.packs = new Packs(root)
  }

  /** Prepares the directories and clears temp files left by a crash. */
  static async open (root: string): Promise<ChunkFiles> {
    const files = new ChunkFiles(root)
    // Temp files are only ever what a crashed process left: half-written chunks (of a version
    // that wrote chunk files), or outputs it was adopting and had not yet indexed (Packs.adopt).
    await fs.rm(files.tmpDir, { recursive: true, force: true })
    await fs.mkdir(files.quarantineDir, { recursive: true })
    await files.packs.init()
    return files
  }

  /** A loose chunk file's path (stores written before packs). */
  pathOf (digest: Digest): string {
    const hex = hexOf(digest)
    return path.join(this.chunksDir, hex.slice(0, 2), hex)
  }

  /** Where the body of an indexed chunk is read from. */
  bodyOf (digest: Digest, record: BodyRecord): BodyAt {
    if (record.pack === undefined) return { file: this.pathOf(digest), position: 0 }
    return { file: this.packs.pathOf(record.pack), position: record.at ?? 0 }
  }

  /** Names a body's place for messages. */
  describe (digest: Digest, record: BodyRecord): string {
    return record.pack === undefined ? `chunk file ${this.pathOf(digest)}` : `pack ${this.packs.pathOf(record.pack)} at offset ${record.at ?? 0}`
  }

  /**
   * Appends a body to the open pack. No fsync: after a power loss the region may come back
   * zeroed or short, but every read re-hashes, so such a chunk is reported corrupt, quarantined
   * and fetched again; an fsync per chunk would cost far more than that.
   */
  async write (digest: Digest, bytes: Uint8Array, group?: string): Promise<Placed> {
    return await this.withLane(group, async lane => {
      let region: Region | undefined
      try {
        region = await this.packs.reserve(bytes.byteLength, lane)
        let done = 0
        while (done < bytes.byteLength) {
          done += (await region.pack.handle.write(bytes, done, bytes.byteLength - done, region.at + done)).bytesWritten
        }
      } catch (err) {
        if (region !== undefined) await this.packs.release(region, false)
        throw asStorageError(err, `chunk ${digest}`, this.root)
      }
      await this.packs.release(region, true)
      return { pack: region.pack.name, at: region.at }
    })
  }

  /**
   * A new write group: the chunks written with it go to packs of its own, sealed by
   * endGroup(), so that the chunks of one artifact lie together and removing it frees whole packs
   * instead of leaving holes in packs shared with whatever was written at the same time.
   */
  newGroup (): string {
    return `g${++this.groups}`
  }

  /** Seals the group's packs (a pack that kept nothing, all duplicates, is deleted). */
  async endGroup (group: string): Promise<void> {
    await this.packs.sealLanes(`${group}/`)
  }

  /**
   * Runs a main-thread write with a pack lane of its own (see packs.ts). In a group, its one
   * main-thread lane, one write at a time; otherwise the first idle shared lane, a new one while
   * there are fewer than MAIN_LANES, or the next to come free.
   */
  private async withLane<T> (group: string | undefined, fn: (lane: string) => Promise<T>): Promise<T> {
    if (group !== undefined) {
      const lane = `${group}/m`
      const previous = this.groupWrites.get(lane) ?? Promise.resolve()
      const mine = previous.then(async () => await fn(lane))
      const done = mine.then(() => {}, () => {})
      this.groupWrites.set(lane, done)
      void done.then(() => { if (this.groupWrites.get(lane) === done) this.groupWrites.delete(lane) })
      return await mine
    }
    let i = this.laneBusy.indexOf(false)
    if (i < 0 && this.laneBusy.length < MAIN_LANES) i = this.laneBusy.push(false) - 1
    while (i < 0) {
      await new Promise<void>(resolve => { this.laneWaiters.push(resolve) })
      i = this.laneBusy.indexOf(false)
    }
    this.laneBusy[i] = true
    try {
      return await fn(`m${i}`)
    } finally {
      this.laneBusy[i] = false
      this.laneWaiters.shift()?.()
    }
  }

  /**
   * Reads the next chunk of an open file (`fd` stays open until this settles) and hashes it on a
   * chunk worker, which writes a body of INLINE_MAX bytes or more into a pack region of
   * `expected` bytes reserved here; a smaller body, or one larger than expected (the file grew),
   * comes back in `bytes` for the caller to store. `n` 0: end of file. The caller must settle()
   * the result once it knows whether it indexes the body.
   */
  async ingestRange (group: string, lane: number, fd: number, position: number, length: number, expected: number, inlineMax: number): Promise<IngestedChunk> {
    // The worker of lane n writes only to the packs of lanes wn, whatever their group.
    const region = await this.packs.reserve(expected, `${group}/w${lane % chunkWorkers.lanes}`)
    let r: JobResult
    try {
      r = await chunkWorkers.ingest(lane, fd, position, length, inlineMax, region.pack.fd, region.at, expected)
    } catch (err) {
      await this.packs.release(region, false)
      throw asStorageError(err, `a chunk at offset ${position}`, this.root)
    }
    const written = r.n > 0 && r.bytes === undefined
    let settled = false
    return {
      ...r,
      ...(written ? { placed: { pack: region.pack.name, at: region.at } } : {}),
      settle: async (kept) => {
        if (settled) return
        settled = true
        await this.packs.release(region, written && kept)
      }
    }
  }

  /**
   * Stores the `size` bytes of `parts` if they are `digest`, and returns where (undefined when
   * they are not: nothing is indexed and their region is dead space) with the digest they have.
   * The pieces go to a pack region in one writev on libuv's pool, and a chunk worker hashes them
   * back from the page cache. Copying them into shared memory for the worker instead cost the
   * event loop ~0.35 s per GiB received, the loop that also decrypts the connection.
   */
  async writeIfMatches (digest: Digest, parts: readonly Uint8Array[], size: number, group?: string): Promise<{ digest: Digest, placed?: Placed }> {
    let region: Region | undefined
    let kept = false
    try {
      region = await this.withLane(group, async lane => {
        const reserved = await this.packs.reserve(size, lane)
        let pending = parts.filter(p => p.byteLength > 0)
        let at = reserved.at
        try {
          while (pending.length > 0) {
            const n = (await reserved.pack.handle.writev(pending, at)).bytesWritten
            at += n
            pending = advance(pending, n)
          }
        } catch (err) {
          await this.packs.release(reserved, false)
          throw err
        }
        return reserved
      })
      // Hashed outside the lane: the next write need not wait for it.
      const r = await chunkWorkers.hash(region.pack.fd, region.at, size)
      kept = r.digest === digest && r.n === size
      return { digest: r.digest, ...(kept ? { placed: { pack: region.pack.name, at: region.at } } : {}) }
    } catch (err) {
      throw asStorageError(err, `chunk ${digest}`, this.root)
    } finally {
      if (region !== undefined) await this.packs.release(region, kept)
    }
  }

  /**
   * Reads the body as it is on disk, unhashed, for a peer that verifies every chunk it receives
   * (ENOENT when absent). A loose file is read to `size` + 1 bytes, so one that grew is seen as
   * the wrong size. Read on libuv's pool straight into a buffer of this thread: no worker, no copy.
   */
  async readRaw (digest: Digest, record: BodyRecord): Promise<Buffer> {
    const body = this.bodyOf(digest, record)
    const want = record.pack === undefined ? record.size + 1 : record.size
    // Placed mid-page: the kernel copies into a buffer that starts near a page boundary several
    // times slower (see readBuffer in chunk-worker.ts).
    const buf = Buffer.from(new ArrayBuffer(want + 4096), 2048, want)
    const fh = await fs.open(body.file, 'r')
    try {
      return buf.subarray(0, await readFull(fh, buf, body.position))
    } finally {
      await fh.close()
    }
  }

  /** Reads up to `record.size` bytes of the body and hashes them (ENOENT when absent). */
  async readHashed (digest: Digest, record: BodyRecord): Promise<{ bytes: Uint8Array, digest: Digest }> {
    return await chunkWorkers.read(this.bodyOf(digest, record), record.size)
  }

  /**
   * Writes the body at `position` of `destFd` if it still hashes to `digest` with its recorded
   * size; returns what was read (ENOENT when absent). `destFd` stays open until this settles.
   */
  async copyOut (digest: Digest, record: BodyRecord, destFd: number, position: number): Promise<{ n: number, digest: Digest }> {
    return await chunkWorkers.copyOut(this.bodyOf(digest, record), record.size, digest, destFd, position)
  }

  /** The size of a loose chunk file (undefined when absent). */
  async size (digest: Digest): Promise<number | undefined> {
    try {
      return (await fs.stat(this.pathOf(digest))).size
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  /**
   * Sets a bad body aside for inspection: a loose file is moved, a pack region copied (the region
   * itself becomes dead space). Returns where it went, or undefined if it was gone.
   */
  async quarantine (digest: Digest, record: BodyRecord): Promise<string | undefined> {
    const dest = this.quarantinePath(digest)
    try {
      if (record.pack === undefined) await fs.rename(this.pathOf(digest), dest)
      else await fs.writeFile(dest, await this.readRaw(digest, record))
      return dest
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  quarantinePath (digest: Digest): string {
    return path.join(this.quarantineDir, `${hexOf(digest)}.${Date.now()}.${randomBytes(3).toString('hex')}`)
  }

  /** Removes a loose chunk file (a pack region is freed by gc, with its pack). */
  async remove (digest: Digest, record: BodyRecord): Promise<void> {
    if (record.pack === undefined) await fs.rm(this.pathOf(digest), { force: true })
  }

  /** Every loose chunk file on disk, indexed or not (gc uses it to find orphans left by a crash). */
  async * list (): AsyncIterable<{ digest: Digest, file: string }> {
    for (const fan of await fs.readdir(this.chunksDir).catch(() => [] as string[])) {
      if (!/^[0-9a-f]{2}$/.test(fan)) continue
      for (const name of await fs.readdir(path.join(this.chunksDir, fan))) {
        if (/^[0-9a-f]{64}$/.test(name)) yield { digest: `sha256:${name}`, file: path.join(this.chunksDir, fan, name) }
      }
    }
  }

  /** Deletes quarantined bodies older than `maxAgeMs`; they are kept a while to diagnose a disk. */
  async pruneQuarantine (maxAgeMs: number): Promise<void> {
    const now = Date.now()
    for (const name of await fs.readdir(this.quarantineDir).catch(() => [] as string[])) {
      const file = path.join(this.quarantineDir, name)
      const st = await fs.stat(file).catch(() => undefined)
      if (st !== undefined && now - st.mtimeMs > maxAgeMs) await fs.rm(file, { force: true })
    }
  }
}
