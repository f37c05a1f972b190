// The body of a chunk worker thread (see chunk-workers.ts): each job reads, hashes and maybe
// writes one chunk, synchronously, and replies once. It imports only node: modules, so it starts
// quickly and runs the same from dist/ whether the caller is the bundled CLI or the modules.

import { createHash, randomBytes } from 'node:crypto'
import fs from 'node:fs'
import path from 'node:path'
import { parentPort } from 'node:worker_threads'
import type { ChunkDirs, Job, Reply } from './chunk-workers.js'

let scratch: Buffer = Buffer.alloc(0)
const madeDirs = new Set<string>()

/**
 * A large allocation starts 16 bytes past a page boundary, and the kernel copies page-cache pages
 * into such a buffer 4-5x slower than into one placed elsewhere in the page (4K aliasing in the
 * copy: measured 0.7-0.9 GB/s against 3-7 GB/s). Reads go into buffers placed mid-page.
 */
function readBuffer (n: number): Buffer {
  return Buffer.from(new ArrayBuffer(n + 4096), 2048, n)
}

function scratchOf (n: number): Buffer {
  if (scratch.length < n) scratch = readBuffer(n)
  return scratch.subarray(0, n)
}

function readFull (fd: number, buf: Buffer, position: number): number {
  let filled = 0
  while (filled < buf.length) {
    const n = fs.readSync(fd, buf, filled, buf.length - filled, position + filled)
    if (n === 0) break
    filled += n
  }
  return filled
}

/** The start of `file`, read into `buf` (at most its length). */
function readFileInto (file: string, buf: Buffer): Buffer {
  const fd = fs.openSync(file, 'r')
  try {
    return buf.subarray(0, readFull(fd, buf, 0))
  } finally {
    fs.closeSync(fd)
  }
}

function writeFull (fd: number, buf: Buffer, position: number): void {
  let done = 0
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, position + done)
}

function digestOf (bytes: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(bytes).digest('hex')
}

function chunkPath (dir: string, digest: string): string {
  const hex = digest.slice(7)
  return path.join(dir, hex.slice(0, 2), hex)
}

/** Whether a complete body of `size` bytes is already in place: stored earlier, or by a concurrent job. */
function present (dest: string, size: number): boolean {
  // No exception for the usual answer (not there yet): building one costs more than the stat.
  return fs.statSync(dest, { throwIfNoEntry: false })?.size === size
}

/**
 * Stores a body unless a complete one is already there: bodies only ever appear by rename, so
 * one of the right size is left alone; anything else is replaced. Returns whether it wrote.
 */
function place (dirs: ChunkDirs, digest: string, bytes: Buffer): boolean {
  if (present(chunkPath(dirs.chunksDir, digest), bytes.length)) return false
  const tmp = path.join(dirs.tmpDir, `${digest.slice(7, 23)}.${randomBytes(6).toString('hex')}`)
  try {
    const fd = fs.openSync(tmp, 'wx')
    try { writeFull(fd, bytes, 0) } finally { fs.closeSync(fd) }
  } catch (err) {
    try { fs.unlinkSync(tmp) } catch {}
    throw tagged(err, digest)
  }
  adopt(dirs, digest, tmp, bytes.length)
  return true
}

/** Renames the complete body in `tmp` into place (or drops it, if a complete one is there). */
function adopt (dirs: ChunkDirs, digest: string, tmp: string, size: number): void {
  const dest = chunkPath(dirs.chunksDir, digest)
  try {
    if (present(dest, size)) {
      fs.unlinkSync(tmp)
      return
    }
    const dir = path.dirname(dest)
    if (!madeDirs.has(dir)) {
      fs.mkdirSync(dir, { recursive: true })
      madeDirs.add(dir)
    }
    try {
      fs.renameSync(tmp, dest)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !fs.existsSync(tmp)) throw err
      // The directory was made once and removed since (a store wiped and made again at the same
      // path while this worker lived): make it again.
      madeDirs.clear()
      fs.mkdirSync(dir, { recursive: true })
      madeDirs.add(dir)
      fs.renameSync(tmp, dest)
    }
  } catch (err) {
    try { fs.unlinkSync(tmp) } catch {}
    // A directory removed under us (a wiped store) must be made again next time.
    madeDirs.clear()
    throw tagged(err, digest)
  }
}

function tagged (err: unknown, digest: string): unknown {
  if (typeof err === 'object' && err !== null) (err as { digest?: string }).digest = digest
  return err
}

interface Done { n: number, digest?: string, bytes?: Uint8Array, transfer?: ArrayBuffer[] }

function run (job: Job): Done {
  switch (job.op) {
    case 'ingest': {
      const buf = scratchOf(job.length)
      const n = readFull(job.fd, buf, job.position)
      if (n === 0) return { n: 0 }
      const view = buf.subarray(0, n)
      const digest = digestOf(view)
      if (n < job.inlineMax) {
        // Small enough to go inline in the index: the main thread stores it.
        const copy = new Uint8Array(n)
        copy.set(view)
        return { n, digest, bytes: copy, transfer: [copy.buffer] }
      }
      place(job, digest, view)
      return { n, digest }
    }
    case 'adopt': {
      // The main thread wrote the body to `tmp` (open as `fd`); it becomes the chunk only if the
      // bytes on disk hash to the digest asked for.
      const view = scratchOf(job.size + 1)
      const n = readFull(job.fd, view, 0)
      const digest = digestOf(view.subarray(0, n))
      if (digest === job.digest && n === job.size) adopt(job, digest, job.tmp, n)
      else fs.rmSync(job.tmp, { force: true })
      return { n, digest }
    }
    case 'read': {
      const view = readFileInto(job.file, Buffer.from(job.into, job.offset, job.size))
      return { n: view.length, digest: digestOf(view) }
    }
    case 'copyOut': {
      const view = readFileInto(job.file, scratchOf(job.size))
      const digest = digestOf(view)
      if (digest === job.digest && view.length === job.size) writeFull(job.destFd, view, job.position)
      return { n: view.length, digest }
    }
  }
}

parentPort?.on('message', (job: Job & { id: number }) => {
  try {
    const r = run(job)
    const reply: Reply = { id: job.id, n: r.n }
    if (r.digest !== undefined) reply.digest = r.digest as Reply['digest']
    if (r.bytes !== undefined) reply.bytes = r.bytes
    parentPort?.postMessage(reply, r.transfer ?? [])
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { digest?: string }
    const error: NonNullable<Reply['error']> = { message: String(e?.message) }
    if (typeof e?.code === 'string') error.code = e.code
    if (typeof e?.syscall === 'string') error.syscall = e.syscall
    if (typeof e?.path === 'string') error.path = e.path
    if (typeof e?.digest === 'string') error.digest = e.digest
    parentPort?.postMessage({ id: job.id, n: 0, error } satisfies Reply)
  }
})
