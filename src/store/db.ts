// The store's LevelDB layout: manifests, the chunk index, small chunk bodies and root records,
// each in its own sublevel so one atomic batch can touch several. Batcher groups the many small
// writes of an ingest into few batches, in order, so a crash leaves every record readable and
// never an index entry for a chunk whose body is not on disk.

import { Level } from 'level'
import { PipemeshError } from '../errors.js'
import { asStorageError } from './chunk-files.js'
import type { Digest } from './types.js'

export interface ChunkRecord {
  size: number
  /** True when the body is a LevelDB value (small chunks) rather than on disk. */
  inline: boolean
  /** The pack holding the body, at offset `at`; absent for a loose chunk file (stores from before packs). */
  pack?: string
  at?: number
}

export interface RootRecord {
  kind: 'file' | 'tree'
  size: number
  createdAt: number
  label?: string
}

function sublevels (level: Level<string, unknown>) {
  return {
    manifests: level.sublevel<string, Uint8Array>('m', { valueEncoding: 'view' }),
    chunks: level.sublevel<string, ChunkRecord>('c', { valueEncoding: 'json' }),
    inline: level.sublevel<string, Uint8Array>('i', { valueEncoding: 'view' }),
    roots: level.sublevel<string, RootRecord>('r', { valueEncoding: 'json' })
  }
}

type Sublevels = ReturnType<typeof sublevels>
type AnySublevel = Sublevels[keyof Sublevels]
export type Op =
  | { type: 'put', sublevel: AnySublevel, key: string, value: unknown }
  | { type: 'del', sublevel: AnySublevel, key: string }

export class StoreDb {
  readonly level: Level<string, unknown>
  readonly manifests: Sublevels['manifests']
  readonly chunks: Sublevels['chunks']
  readonly inline: Sublevels['inline']
  readonly roots: Sublevels['roots']
  /** The store directory, for messages. */
  readonly dir: string

  private constructor (level: Level<string, unknown>, dir: string) {
    this.level = level
    this.dir = dir
    const s = sublevels(level)
    this.manifests = s.manifests
    this.chunks = s.chunks
    this.inline = s.inline
    this.roots = s.roots
  }

  static async open (location: string, dir: string): Promise<StoreDb> {
    const level = new Level<string, unknown>(location, { valueEncoding: 'json', writeBufferSize: 16 * 1024 * 1024 })
    try {
      await level.open()
    } catch (err) {
      const code = (err as { cause?: { code?: string } }).cause?.code
      if (code === 'LEVEL_LOCKED') {
        throw new PipemeshError('CONFLICT', `store ${dir} is in use by another process (its LevelDB is locked)`, { cause: err })
      }
      throw asStorageError(err, 'the store index', dir)
    }
    return new StoreDb(level, dir)
  }

  async write (ops: Op[], what: string): Promise<void> {
    if (ops.length === 0) return
    try {
      // Ops name their sublevel; the typings cannot express mixed sublevel value types.
      await this.level.batch(ops as never)
    } catch (err) {
      throw asStorageError(err, what, this.dir)
    }
  }

  async close (): Promise<void> {
    await this.level.close()
  }
}

const FLUSH_OPS = 2000
const FLUSH_BYTES = 4 * 1024 * 1024

/**
 * Collects the writes of one ingest or transfer. Chunk digests are claimed before their body is
 * written, so equal chunks in one artifact (a file of zeros) are stored once.
 */
export class Batcher {
  private ops: Op[] = []
  private bytes = 0
  private readonly claimed = new Set<Digest>()
  private flushing: Promise<void> = Promise.resolve()

  constructor (private readonly db: StoreDb, private readonly what: string) {}

  /** True the first time a digest is claimed in this batcher. */
  claim (digest: Digest): boolean {
    if (this.claimed.has(digest)) return false
    this.claimed.add(digest)
    return true
  }

  /** Queues ops; they reach LevelDB in the order added. */
  add (ops: Op[], bytes = 0): void {
    this.ops.push(...ops)
    this.bytes += bytes + ops.length * 100
    if (this.ops.length >= FLUSH_OPS || this.bytes >= FLUSH_BYTES) void this.flush().catch(() => {})
  }

  /** Writes everything queued so far; rejects with the first write error of this batcher. */
  async flush (): Promise<void> {
    const ops = this.ops
    this.ops = []
    this.bytes = 0
    const previous = this.flushing
    this.flushing = previous.then(async () => { await this.db.write(ops, this.what) })
    await this.flushing
  }
}
