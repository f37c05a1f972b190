// Whole-store maintenance: verify re-hashes every chunk (and repairs through a callback), gc
// keeps what callers still reference and deletes the rest, orphans of crashes included. The
// caller (ContentStore) holds the lock that keeps them apart from ingests.

import fs from 'node:fs/promises'
import { CorruptContentError, MissingContentError, throwIfAborted } from '../errors.js'
import { forEachLimit } from './async-util.js'
import type { Chunks } from './chunks.js'
import type { ChunkRecord, Op, RootRecord, StoreDb } from './db.js'
import { sha256Digest } from './manifest.js'
import { absentChunks, closureOf } from './reach.js'
import type { Digest } from './types.js'

export interface VerifyReport { chunksChecked: number, bytesChecked: number, corrupt: Digest[], missing: Digest[], repaired: Digest[] }
export interface VerifyProgress { chunks: number, bytes: number, totalChunks: number, totalBytes: number }
export interface VerifyOptions {
  repair?: (chunk: Digest) => Promise<Uint8Array | undefined>
  signal?: AbortSignal
  /** Called after each chunk is checked: how far the rehash is, out of what the index held at its start. */
  onProgress?: (progress: VerifyProgress) => void
}
export interface GcReport { removedArtifacts: number, removedChunks: number, freedBytes: number }

const QUARANTINE_TTL_MS = 7 * 24 * 60 * 60 * 1000

export async function verifyStore (db: StoreDb, chunks: Chunks, options: VerifyOptions): Promise<VerifyReport> {
  const report: VerifyReport = { chunksChecked: 0, bytesChecked: 0, corrupt: [], missing: [], repaired: [] }
  const tryRepair = async (d: Digest): Promise<void> => {
    const bytes = await options.repair?.(d)
    if (bytes !== undefined && sha256Digest(bytes) === d) {
      await chunks.put(d, bytes)
      report.repaired.push(d)
    }
  }
  const progress: VerifyProgress = { chunks: 0, bytes: 0, totalChunks: 0, totalBytes: 0 }
  if (options.onProgress !== undefined) {
    for await (const record of db.chunks.values()) { progress.totalChunks++; progress.totalBytes += record.size }
  }
  await forEachLimit(db.chunks.iterator(), 2, async ([key, record]) => {
    const d = key as Digest
    report.chunksChecked++
    try {
      const bytes = await chunks.read(d)
      report.bytesChecked += bytes.byteLength
      if (!record.inline && record.pack === undefined && (await chunks.files.size(d)) !== record.size) {
        // Good bytes followed by junk: keep the good bytes, drop the junk.
        report.corrupt.push(d)
        await chunks.put(d, Buffer.from(bytes))
        report.repaired.push(d)
      }
    } catch (err) {
      if (err instanceof CorruptContentError) report.corrupt.push(d)
      else if (err instanceof MissingContentError) report.missing.push(d)
      else throw err
      await tryRepair(d)
    }
    progress.chunks++
    progress.bytes += record.size
    options.onProgress?.(progress)
  }, options.signal)
  // Chunks quarantined earlier (or lost with their index entry) that held artifacts still need.
  const seen = new Set<Digest>([...report.corrupt, ...report.missing])
  for await (const key of db.roots.keys()) {
    throwIfAborted(options.signal)
    for (const c of await absentChunks(chunks, await closureOf(db, key as Digest))) {
      if (seen.has(c.digest)) continue
      seen.add(c.digest)
      report.missing.push(c.digest)
      await tryRepair(c.digest)
    }
  }
  return report
}

/** Which roots a gc keeps, and what content stays whether or not a root reaches it. */
export interface GcSelection {
  keepRoot: (digest: Digest, record: RootRecord) => boolean
  /** Digests whose closures stay (references held elsewhere, artifacts arriving right now). */
  live: Iterable<Digest>
}

/**
 * Deletes the roots `keepRoot` rejects, then everything neither a kept root nor `live` reaches;
 * moves at most `rewriteMaxBytes` of live chunks out of mostly dead packs (see sweepPacks).
 */
export async function collectGarbage (db: StoreDb, chunks: Chunks, selection: GcSelection, rewriteMaxBytes: number): Promise<GcReport & { removedRoots: Digest[] }> {
  const report: GcReport = { removedArtifacts: 0, removedChunks: 0, freedBytes: 0 }
  const rootDels: Op[] = []
  const removedRoots: Digest[] = []
  const keptRoots: Digest[] = []
  for await (const [key, record] of db.roots.iterator()) {
    if (selection.keepRoot(key as Digest, record)) {
      keptRoots.push(key as Digest)
      continue
    }
    rootDels.push({ type: 'del', sublevel: db.roots, key })
    removedRoots.push(key as Digest)
  }
  await db.write(rootDels, 'gc of roots')
  report.removedArtifacts = rootDels.length

  const liveManifests = new Set<Digest>()
  const liveChunks = new Set<Digest>()
  for (const d of new Set([...keptRoots, ...selection.live])) {
    const closure = await closureOf(db, d)
    for (const m of closure.manifests.keys()) liveManifests.add(m)
    for (const c of closure.chunks.keys()) liveChunks.add(c)
  }

  let dels: Op[] = []
  for await (const key of db.manifests.keys()) {
    if (liveManifests.has(key as Digest)) continue
    dels.push({ type: 'del', sublevel: db.manifests, key })
    if (dels.length >= 1000) { await db.write(dels, 'gc of manifests'); dels = [] }
  }
  await db.write(dels, 'gc of manifests')

  let dead: Array<{ digest: Digest, record: ChunkRecord }> = []
  for await (const [key, record] of db.chunks.iterator()) {
    if (liveChunks.has(key as Digest)) continue
    dead.push({ digest: key as Digest, record })
    report.removedChunks++
    // A pack region is freed with its pack (sweepPacks counts those bytes).
    if (record.pack === undefined) report.freedBytes += record.size
    if (dead.length >= 1000) { await chunks.removeMany(dead); dead = [] }
  }
  await chunks.removeMany(dead)

  // Loose chunk files (stores from before packs) a crash left without an index entry.
  for await (const { digest, file } of chunks.files.list()) {
    if (liveChunks.has(digest) || (await chunks.has(digest))) continue
    const st = await fs.stat(file).catch(() => undefined)
    await fs.rm(file, { force: true })
    report.freedBytes += st?.size ?? 0
  }
  report.freedBytes += await sweepPacks(db, chunks, rewriteMaxBytes)
  await chunks.files.pruneQuarantine(QUARANTINE_TTL_MS)
  return { ...report, removedRoots }
}

/** A pack is rewritten when less than this share of its disk blocks hold indexed bodies. */
const REPACK_BELOW = 0.5
/** Packs smaller than this on disk are left as they are (rewriting them frees too little). */
const REPACK_MIN_BYTES = 256 * 1024

/**
 * Deletes packs no index record points into (what gc dropped, duplicates, a crash's leftovers)
 * and rewrites packs that are mostly dead space: their indexed bodies are read, verified and
 * written to packs of a new write group, then the old pack goes. Runs with every pack sealed and no writer
 * (gc's exclusive lock); a reader that still held an old place finds the new one (chunks.ts).
 * Returns the bytes of disk freed.
 */
async function sweepPacks (db: StoreDb, chunks: Chunks, rewriteMaxBytes: number): Promise<number> {
  const packs = chunks.files.packs
  await packs.sealAll()
  const liveBytes = new Map<string, number>()
  for await (const record of db.chunks.values()) {
    if (record.pack !== undefined) liveBytes.set(record.pack, (liveBytes.get(record.pack) ?? 0) + record.size)
  }
  let freed = 0
  const candidates: Array<{ name: string, live: number, onDisk: number }> = []
  for (const name of await packs.list()) {
    if (packs.isOpen(name)) continue
    const st = await fs.stat(packs.pathOf(name)).catch(() => undefined)
    if (st === undefined) continue
    // Allocated blocks, not the length: regions reserved and never written are holes.
    const onDisk = st.blocks * 512
    const live = liveBytes.get(name) ?? 0
    if (live === 0) {
      await packs.remove(name)
      freed += onDisk
    } else if (onDisk >= REPACK_MIN_BYTES && live < onDisk * REPACK_BELOW) {
      candidates.push({ name, live, onDisk })
    }
  }
  // The deadest packs first, and no more live bytes moved than rewriteMaxBytes: gc holds the
  // store, so steps and transfers wait while it runs. A pack with more live bytes than the budget
  // leaves (an adopted output can be tens of GiB) is drained a part at a time, its lowest offsets
  // first (at least one chunk a run), and deleted by the run that moves its last live chunk.
  candidates.sort((a, b) => a.live / a.onDisk - b.live / b.onDisk)
  /** Pack name to the bytes that may move out of it this run. */
  const allowance = new Map<string, number>()
  let moving = 0
  for (const c of candidates) {
    const room = rewriteMaxBytes - moving
    if (c.live <= room) {
      allowance.set(c.name, c.live)
      moving += c.live
      continue
    }
    if (room > 0 || allowance.size === 0) allowance.set(c.name, Math.max(room, 0))
    break
  }
  if (allowance.size === 0) return freed
  const byPack = new Map<string, Array<{ digest: Digest, record: ChunkRecord }>>()
  for await (const [key, record] of db.chunks.iterator()) {
    if (record.pack === undefined || !allowance.has(record.pack)) continue
    let list = byPack.get(record.pack)
    if (list === undefined) byPack.set(record.pack, list = [])
    list.push({ digest: key as Digest, record })
  }
  const moves: Array<{ digest: Digest, record: ChunkRecord }> = []
  const emptied: string[] = []
  for (const [name, may] of allowance) {
    const list = (byPack.get(name) ?? []).sort((a, b) => (a.record.at ?? 0) - (b.record.at ?? 0))
    let taken = 0
    let bytes = 0
    while (taken < list.length && (taken === 0 || bytes + list[taken]!.record.size <= may)) bytes += list[taken++]!.record.size
    moves.push(...list.slice(0, taken))
    // Chunks moved out of a pack that stays are on disk twice until a later run deletes it (freed
    // bytes are reported by runs that delete, never below zero: agents send them as such).
    if (taken === list.length) emptied.push(name)
  }
  // The bodies kept go to packs of their own, sealed before the old ones are deleted.
  const group = chunks.files.newGroup()
  try {
    for (const { digest, record } of moves) {
      let bytes: Buffer
      try {
        bytes = await chunks.readRecorded(digest, record)
      } catch (err) {
        // A bad or vanished body was quarantined and forgotten by the read: nothing to move.
        if (err instanceof CorruptContentError || err instanceof MissingContentError) continue
        throw err
      }
      await db.write(await chunks.storeBody(digest, bytes, group), `chunk ${digest} moved out of pack ${record.pack ?? ''}`)
    }
  } finally {
    await chunks.files.endGroup(group)
  }
  for (const name of emptied) {
    const st = await fs.stat(packs.pathOf(name)).catch(() => undefined)
    await packs.remove(name)
    freed += (st?.blocks ?? 0) * 512 - (liveBytes.get(name) ?? 0)
  }
  return freed
}
