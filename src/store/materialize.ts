// Writes a stored artifact back to disk. Everything is built in a temp sibling of the
// destination and moved into place at the end, so a failure (corrupt chunk, full disk, cancel)
// leaves nothing at the destination. Paths are re-checked here even though manifests were
// checked when accepted: this is the code that writes.

import { randomBytes } from 'node:crypto'
import { constants as fsConstants } from 'node:fs'
import fs from 'node:fs/promises'
import type { FileHandle } from 'node:fs/promises'
import path from 'node:path'
import { CorruptContentError, MissingContentError, PipemeshError, throwIfAborted } from '../errors.js'
import { resolveInside, assertSafeSymlinkTarget } from '../util/safe-path.js'
import { forEachLimit } from './async-util.js'
import { asStorageError } from './chunk-files.js'
import { chunkWorkers } from './chunk-workers.js'
import { INLINE_MAX, type Chunks } from './chunks.js'
import type { FileEntry, FileManifest, Manifest } from './manifest.js'
import type { Digest } from './types.js'

/** Small files at once (latency-bound), and multi-chunk files at once (they share the chunk workers). */
const SMALL_FILE_PARALLEL = 16
const LARGE_FILE_PARALLEL = 2
/** Files up to this size count as small. */
const SMALL_FILE = 1024 * 1024

export interface MaterializeContext {
  chunks: Chunks
  /** Returns a checked manifest or throws MissingContentError. */
  loadManifest: (digest: Digest) => Promise<Manifest>
  readOnly: boolean
  signal?: AbortSignal | undefined
  onProgress?: ((bytes: number) => void) | undefined
  bytes: number
}

function fileMode (executable: boolean, readOnly: boolean): number {
  if (readOnly) return executable ? 0o555 : 0o444
  return executable ? 0o755 : 0o644
}

async function writeAll (fh: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < bytes.byteLength) {
    const { bytesWritten } = await fh.write(bytes, done, bytes.byteLength - done, position + done)
    done += bytesWritten
  }
}

/** Index records are looked up this many chunks at a time, in one LevelDB call each. */
const RECORD_GROUP = 256

async function writeFileFromChunks (ctx: MaterializeContext, owner: Digest, m: FileManifest, file: string, executable: boolean): Promise<void> {
  const fh = await fs.open(file, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600)
  try {
    // Pack bodies are read, verified and written at their offset by the chunk workers, several
    // at once; only bodies that hash right are written. Inline chunks come from LevelDB here.
    const running = new Set<Promise<void>>()
    let failure: { err: unknown } | undefined
    const track = (p: Promise<void>): void => {
      const q: Promise<void> = p.catch((err: unknown) => { failure ??= { err } }).finally(() => running.delete(q))
      running.add(q)
    }
    const wrote = (n: number): void => {
      ctx.bytes += n
      ctx.onProgress?.(ctx.bytes)
    }
    let position = 0
    try {
      for (let g = 0; g < m.chunks.length && failure === undefined; g += RECORD_GROUP) {
        const group = m.chunks.slice(g, g + RECORD_GROUP)
        // Whether a body is inline follows from its size, and an inline body is stored and
        // removed with its record: small chunks need no record lookup (most code-tree files).
        const large = group.filter(c => c.size >= INLINE_MAX)
        const found = await ctx.chunks.records(large.map(c => c.digest))
        let k = 0
        const records = group.map(c => c.size < INLINE_MAX ? { size: c.size, inline: true } : found[k++])
        for (let j = 0; j < group.length && failure === undefined; j++) {
          throwIfAborted(ctx.signal)
          const chunk = group[j]!
          const record = records[j]
          if (record === undefined) throw new MissingContentError(chunk.digest, 'chunk not in store')
          if (record.size !== chunk.size) {
            throw new CorruptContentError(owner, `its manifest gives chunk ${chunk.digest} ${chunk.size} bytes, but it has ${record.size}`)
          }
          const at = position
          position += chunk.size
          if (record.inline) {
            track((async () => {
              const bytes = await ctx.chunks.readRecorded(chunk.digest, record)
              await writeAll(fh, bytes, at)
              wrote(bytes.byteLength)
            })())
          } else {
            track(ctx.chunks.copyOut(chunk.digest, record, fh.fd, at).then(() => { wrote(chunk.size) }))
          }
          while (running.size >= chunkWorkers.depth) await Promise.race(running)
        }
      }
    } finally {
      // The descriptor must outlive every job writing to it.
      await Promise.all(running)
    }
    if (failure !== undefined) throw failure.err
    await fh.chmod(fileMode(executable, ctx.readOnly))
  } finally {
    await fh.close()
  }
}

async function loadFile (ctx: MaterializeContext, tree: Digest, entry: FileEntry): Promise<FileManifest> {
  const m = await ctx.loadManifest(entry.digest)
  if (m.type !== 'file' || m.size !== entry.size) {
    throw new CorruptContentError(tree, `entry "${entry.path}" says file ${entry.digest} of ${entry.size} bytes, but that manifest is a ${m.type} of ${m.type === 'file' ? m.size : '?'} bytes`)
  }
  return m
}

/** Deletes a temp tree even where readOnly already made directories unwritable. */
async function removeTemp (p: string): Promise<void> {
  try {
    await fs.rm(p, { recursive: true, force: true })
  } catch {
    const walk = async (dir: string): Promise<void> => {
      await fs.chmod(dir, 0o700).catch(() => {})
      for (const d of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) {
        if (d.isDirectory()) await walk(path.join(dir, d.name))
      }
    }
    await walk(p)
    await fs.rm(p, { recursive: true, force: true }).catch(() => {})
  }
}

async function buildTree (ctx: MaterializeContext, digest: Digest, manifest: Manifest & { type: 'tree' }, root: string): Promise<void> {
  await fs.mkdir(root, { mode: 0o700 })
  const dirs: string[] = []
  const files: FileEntry[] = []
  for (const e of manifest.entries) {
    const target = resolveInside(root, e.path)
    if (e.type === 'dir') {
      await fs.mkdir(target, { mode: 0o700 })
      dirs.push(target)
    } else if (e.type === 'file') {
      files.push(e)
    }
  }
  const one = async (e: FileEntry): Promise<void> => {
    const m = await loadFile(ctx, digest, e)
    await writeFileFromChunks(ctx, e.digest, m, resolveInside(root, e.path), e.executable)
  }
  await forEachLimit(files.filter(e => e.size <= SMALL_FILE), SMALL_FILE_PARALLEL, one, ctx.signal)
  await forEachLimit(files.filter(e => e.size > SMALL_FILE), LARGE_FILE_PARALLEL, one, ctx.signal)
  // Links last: nothing is ever written through one.
  for (const e of manifest.entries) {
    if (e.type === 'symlink') await fs.symlink(assertSafeSymlinkTarget(e.path, e.target), resolveInside(root, e.path))
  }
  const dirMode = ctx.readOnly ? 0o555 : 0o755
  for (const d of dirs.reverse()) await fs.chmod(d, dirMode)
  await fs.chmod(root, dirMode)
}

/** Writes `manifest` (the artifact `digest`) at `dest`, which must not exist. */
export async function materializeTo (ctx: MaterializeContext, digest: Digest, manifest: Manifest, dest: string): Promise<void> {
  const target = path.resolve(dest)
  const conflict = (): PipemeshError => new PipemeshError('CONFLICT', `cannot materialize ${digest} at ${target}: something already exists there`)
  if (await fs.lstat(target).then(() => true, () => false)) throw conflict()
  const parent = path.dirname(target)
  await fs.mkdir(parent, { recursive: true })
  const tmp = path.join(parent, `.${path.basename(target)}.pipemesh-${randomBytes(6).toString('hex')}`)
  try {
    if (manifest.type === 'file') {
      await writeFileFromChunks(ctx, digest, manifest, tmp, false)
      // link() refuses to replace an existing path, unlike rename().
      try {
        await fs.link(tmp, target)
        await fs.rm(tmp, { force: true })
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code
        if (code === 'EEXIST') throw conflict()
        if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err
        await fs.rename(tmp, target)
      }
    } else {
      await buildTree(ctx, digest, manifest, tmp)
      if (await fs.lstat(target).then(() => true, () => false)) throw conflict()
      await fs.rename(tmp, target)
    }
  } catch (err) {
    await removeTemp(tmp)
    throw asStorageError(err, `${digest} (materializing it)`, parent)
  }
}
