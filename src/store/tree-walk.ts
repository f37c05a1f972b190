// How a file or a directory becomes an artifact digest: which entries a tree has (regular files,
// directories, symlinks that stay inside it; nothing else), in what order, with what manifest.
// The store (ingest.ts) and the client's hasher (src/client/digests.ts), which must agree to the
// byte, both walk trees here; they differ only in what they do with each file and manifest.

import { constants as fsConstants, type Stats } from 'node:fs'
import fs from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { PipemeshError, UnsafePathError, throwIfAborted } from '../errors.js'
import { assertSafeRelativePath, assertSafeSymlinkTarget, normalizeRelativePath } from '../util/safe-path.js'
import { forEachLimit } from './async-util.js'
import { comparePaths, encodeManifest, sha256Digest, type TreeEntry } from './manifest.js'
import type { Digest } from './types.js'

/** Small files at once: they are dominated by open/read/close latency, not bandwidth. */
const SMALL_FILE_PARALLEL = 16
/** Multi-chunk files at once. */
const LARGE_FILE_PARALLEL = 2
/** lstat calls at once while listing a directory. */
const LSTAT_PARALLEL = 64

export interface WalkedFile { digest: Digest, size: number, executable: boolean }

/** What a walk does with the content it finds. */
export interface TreeSink {
  /** Turns one regular file into its file manifest's digest (storing it, or only hashing it). */
  file: (abs: string) => Promise<WalkedFile>
  /** Receives the encoded tree manifest and its digest. */
  tree: (digest: Digest, bytes: Uint8Array) => void
  /** Files at or above this size go through `file` two at a time, smaller ones sixteen. */
  chunkSize: number
  /** Called with the running total of file sizes as the scan finds them; may throw to refuse. */
  onScanned?: (bytes: number) => void
  signal?: AbortSignal | undefined
}

interface Scan {
  entries: Map<string, TreeEntry>
  files: Array<{ rel: string, abs: string, size: number }>
  size: number
}

/**
 * Walks a file or a directory. A symlink at `abs` itself is refused: callers that trust the path
 * (a pipeline's own inputs) resolve it with fs.realpath first.
 */
export async function walkPath (abs: string, sink: TreeSink): Promise<{ digest: Digest, kind: 'file' | 'tree', size: number }> {
  throwIfAborted(sink.signal)
  const st = await fs.lstat(abs).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new PipemeshError('NOT_FOUND', `cannot store ${abs}: it does not exist`)
    throw err
  })
  if (st.isFile()) {
    sink.onScanned?.(st.size)
    const f = await sink.file(abs)
    return { digest: f.digest, kind: 'file', size: f.size }
  }
  if (!st.isDirectory()) {
    throw new UnsafePathError(abs, `is ${describeStats(st)}; an artifact must be a regular file or a directory`)
  }
  const scan: Scan = { entries: new Map(), files: [], size: 0 }
  await scanDir(sink, scan, abs, '')
  const tree = await finishTree(sink, scan)
  return { digest: tree.digest, kind: 'tree', size: tree.size }
}

/**
 * Walks the listed paths (files or directories, relative to `baseDir`) as one tree that keeps
 * them at those relative paths, with their parent directories. Directories on the way to a
 * listed path are followed even if they are links; the listed paths and what lies under them
 * are not.
 */
export async function walkListed (baseDir: string, relPaths: string[], sink: TreeSink): Promise<{ digest: Digest, size: number, files: Record<string, Digest> }> {
  throwIfAborted(sink.signal)
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
      await scanDir(sink, scan, abs, '')
      continue
    }
    const segments = rel.split('/')
    for (let i = 1; i < segments.length; i++) addEntry(scan, { path: segments.slice(0, i).join('/'), type: 'dir' })
    await scanPath(sink, scan, abs, rel, st)
  }
  return await finishTree(sink, scan)
}

/**
 * Opens a file the walk found as a regular file. O_NOFOLLOW: one swapped for a link since the
 * scan is refused; O_NONBLOCK: a FIFO swapped in cannot hang the open.
 */
export async function openWalkedFile (abs: string): Promise<FileHandle> {
  try {
    return await fs.open(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') throw new UnsafePathError(abs, 'is a symbolic link; expected a regular file')
    throw err
  }
}

/** Fills `buf` from `position` on, short only at the end of the file; returns the bytes read. */
export async function readFull (fh: FileHandle, buf: Buffer, position: number): Promise<number> {
  let filled = 0
  while (filled < buf.byteLength) {
    const { bytesRead } = await fh.read(buf, filled, buf.byteLength - filled, position + filled)
    if (bytesRead === 0) break
    filled += bytesRead
  }
  return filled
}

export function describeStats (st: Stats): string {
  if (st.isSocket()) return 'a socket'
  if (st.isFIFO()) return 'a FIFO'
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device'
  if (st.isSymbolicLink()) return 'a symbolic link'
  if (st.isDirectory()) return 'a directory'
  return 'not a regular file'
}

function addEntry (scan: Scan, entry: TreeEntry): void {
  const existing = scan.entries.get(entry.path)
  if (existing !== undefined && existing.type !== entry.type) {
    throw new UnsafePathError(entry.path, `listed both as a ${existing.type} and as a ${entry.type} (a path under a symlink?)`)
  }
  if (existing === undefined) scan.entries.set(entry.path, entry)
}

/** Adds `abs` (at tree path `rel`) and, for a directory, everything under it. */
async function scanPath (sink: TreeSink, scan: Scan, abs: string, rel: string, st: Stats): Promise<void> {
  throwIfAborted(sink.signal)
  assertSafeRelativePath(rel, 'file name')
  if (st.isDirectory()) {
    addEntry(scan, { path: rel, type: 'dir' })
    await scanDir(sink, scan, abs, rel)
  } else if (st.isFile()) {
    if (!scan.entries.has(rel)) {
      scan.entries.set(rel, { path: rel, type: 'file', digest: 'sha256:', size: 0, executable: false })
      scan.files.push({ rel, abs, size: st.size })
      scan.size += st.size
      sink.onScanned?.(scan.size)
    }
  } else if (st.isSymbolicLink()) {
    const target = assertSafeSymlinkTarget(rel, await fs.readlink(abs))
    addEntry(scan, { path: rel, type: 'symlink', target })
  } else {
    throw new UnsafePathError(abs, `is ${describeStats(st)}; only regular files, directories and symlinks can be stored`)
  }
}

async function scanDir (sink: TreeSink, scan: Scan, absDir: string, relDir: string): Promise<void> {
  const dirents = await fs.readdir(absDir, { withFileTypes: true })
  // lstat in small groups: one at a time is latency-bound on trees of many small files.
  for (let i = 0; i < dirents.length; i += LSTAT_PARALLEL) {
    const group = dirents.slice(i, i + LSTAT_PARALLEL)
    const stats = await Promise.all(group.map(async d => await fs.lstat(path.join(absDir, d.name))))
    for (let j = 0; j < group.length; j++) {
      const name = group[j]!.name
      await scanPath(sink, scan, path.join(absDir, name), relDir === '' ? name : `${relDir}/${name}`, stats[j]!)
    }
  }
}

/** Turns the scanned files into manifests and hands over the tree manifest; returns its digest. */
async function finishTree (sink: TreeSink, scan: Scan): Promise<{ digest: Digest, size: number, files: Record<string, Digest> }> {
  const one = async ({ rel, abs }: { rel: string, abs: string }): Promise<void> => {
    const f = await sink.file(abs)
    scan.entries.set(rel, { path: rel, type: 'file', digest: f.digest, size: f.size, executable: f.executable })
  }
  await forEachLimit(scan.files.filter(f => f.size < sink.chunkSize), SMALL_FILE_PARALLEL, one, sink.signal)
  await forEachLimit(scan.files.filter(f => f.size >= sink.chunkSize), LARGE_FILE_PARALLEL, one, sink.signal)
  const entries = [...scan.entries.values()].sort((a, b) => comparePaths(a.path, b.path))
  let size = 0
  for (const e of entries) if (e.type === 'file') size += e.size
  const bytes = encodeManifest({ type: 'tree', entries })
  const digest = sha256Digest(bytes)
  sink.tree(digest, bytes)
  // fromEntries defines own properties: a file named "__proto__" stays a plain key.
  const files = Object.fromEntries(entries.flatMap(e => e.type === 'file' ? [[e.path, e.digest]] : [])) as Record<string, Digest>
  return { digest, size, files }
}
