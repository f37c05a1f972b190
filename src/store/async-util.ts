// Small concurrency tools for the store: a read/write lock that keeps gc away from ingests and
// materializations in flight, and a bounded parallel loop for file and chunk work.

import { throwIfAborted } from '../errors.js'

export class RwLock {
  private readers = 0
  private writer = false
  private queue: Array<{ write: boolean, go: () => void }> = []

  async shared<T> (fn: () => Promise<T>): Promise<T> {
    await this.acquire(false)
    try { return await fn() } finally { this.release(false) }
  }

  async exclusive<T> (fn: () => Promise<T>): Promise<T> {
    await this.acquire(true)
    try { return await fn() } finally { this.release(true) }
  }

  private async acquire (write: boolean): Promise<void> {
    // No writer preference: a reader that nests (a verify repair callback that writes a chunk)
    // must not wait behind a queued gc that waits for the outer reader.
    if (write ? !this.writer && this.readers === 0 : !this.writer) {
      if (write) this.writer = true
      else this.readers++
      return
    }
    await new Promise<void>(resolve => this.queue.push({ write, go: resolve }))
  }

  private release (write: boolean): void {
    if (write) this.writer = false
    else this.readers--
    if (this.writer) return
    // Wake every waiting reader, or one writer once no reader holds the lock.
    const readers = this.queue.filter(w => !w.write)
    if (readers.length > 0) {
      this.queue = this.queue.filter(w => w.write)
      this.readers += readers.length
      for (const r of readers) r.go()
      return
    }
    if (this.readers === 0 && this.queue.length > 0) {
      const next = this.queue.shift()!
      this.writer = true
      next.go()
    }
  }
}

/**
 * Runs `fn` over `items` with at most `limit` in flight; stops starting new ones after the first
 * failure or abort, waits for those in flight, then throws that first error.
 */
export async function forEachLimit<T> (
  items: Iterable<T> | AsyncIterable<T>, limit: number, fn: (item: T) => Promise<void>, signal?: AbortSignal
): Promise<void> {
  const running = new Set<Promise<void>>()
  let failure: { err: unknown } | undefined
  for await (const item of items) {
    if (failure !== undefined) break
    if (signal?.aborted === true) {
      try { throwIfAborted(signal) } catch (err) { failure = { err } }
      break
    }
    const p: Promise<void> = fn(item).catch((err: unknown) => { failure ??= { err } }).finally(() => running.delete(p))
    running.add(p)
    if (running.size >= limit) await Promise.race(running)
  }
  await Promise.all(running)
  if (failure !== undefined) throw failure.err
}
