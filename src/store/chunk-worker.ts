// The body of a chunk worker thread (see chunk-workers.ts): each job reads, hashes and maybe
// writes one chunk, synchronously, and replies once. It imports only node: modules, so it starts
// quickly and runs the same from dist/ whether the caller is the bundled CLI or the modules.

import { createHash } from 'node:crypto'
import fs from 'node:fs'
import { parentPort } from 'node:worker_threads'
import type { BodyAt, Job, Reply } from './chunk-workers.js'

let scratch: Buffer = Buffer.alloc(0)

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

/** Up to `buf.length` bytes of a stored body, read into `buf`. */
function readBodyInto (body: BodyAt, buf: Buffer): Buffer {
  const fd = fs.openSync(body.file, 'r')
  try {
    return buf.subarray(0, readFull(fd, buf, body.position))
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

interface Done { n: number, digest?: string, bytes?: Uint8Array, transfer?: ArrayBuffer[] }

function run (job: Job): Done {
  switch (job.op) {
    case 'ingest': {
      const buf = scratchOf(job.length)
      const n = readFull(job.fd, buf, job.position)
      if (n === 0) return { n: 0 }
      const view = buf.subarray(0, n)
      const digest = digestOf(view)
      if (n < job.inlineMax || n > job.packLength) {
        // Small enough to go inline in the index, or more than the region reserved for it (the
        // file grew while it was read): the main thread stores it.
        const copy = new Uint8Array(n)
        copy.set(view)
        return { n, digest, bytes: copy, transfer: [copy.buffer] }
      }
      writeFull(job.packFd, view, job.packAt)
      return { n, digest }
    }
    case 'hash': {
      const view = scratchOf(job.size)
      const n = readFull(job.fd, view, job.position)
      return { n, digest: digestOf(view.subarray(0, n)) }
    }
    case 'read': {
      const view = readBodyInto(job.body, Buffer.from(job.into, job.offset, job.size))
      return { n: view.length, digest: digestOf(view) }
    }
    case 'copyOut': {
      const view = readBodyInto(job.body, scratchOf(job.size))
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
