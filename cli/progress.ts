// Progress of a long operation over bytes (rehashing a store, fetching an artifact, reading a
// pipeline's inputs), on stderr so that stdout stays the command's result: a bar with bytes,
// total and rate on a terminal, and one summary line at the end otherwise. An operation can ask
// to stay silent when it is quick (`quietUnderMs`): a small pipeline's inputs take milliseconds,
// and a bar that flashes or a line on every run would only be noise. The bar's library is
// loaded only once a bar is due, which most runs of the CLI never reach.

import type { SingleBar } from 'cli-progress'
import { formatBytes } from '../src/util/units.js'

export interface ByteProgressOptions {
  /** What the bar says it is doing: "verifying", "fetching". */
  doing: string
  /** What the closing line says was done: "rehashed", "fetched". */
  done: string
  /** Shown at all (false: --json, --quiet). */
  enabled: boolean
  /** Neither a bar nor a line for an operation that ends within this long. Default 0. */
  quietUnderMs?: number
  /** Default process.stderr. */
  stream?: NodeJS.WriteStream
}

export interface ByteProgress {
  update: (bytes: number, totalBytes: number) => void
  /** Stops the bar; without one, prints the summary line of `bytes` (none after a failure: undefined). */
  finish: (bytes: number | undefined) => void
}

export function byteProgress (options: ByteProgressOptions): ByteProgress {
  const stream = options.stream ?? process.stderr
  const started = Date.now()
  const quietUnder = options.quietUnderMs ?? 0
  const rate = (bytes: number): string => formatBytes(bytes / Math.max((Date.now() - started) / 1000, 0.001))
  let bar: SingleBar | undefined
  let loading = false
  let finished = false
  let latest = { bytes: 0, totalBytes: 0 }
  const draw = (): void => {
    bar?.setTotal(Math.max(latest.totalBytes, 1))
    bar?.update(latest.bytes, { done: formatBytes(latest.bytes), all: formatBytes(latest.totalBytes), rate: rate(latest.bytes) })
  }
  return {
    update: (bytes, totalBytes) => {
      latest = { bytes, totalBytes }
      if (bar !== undefined) { draw(); return }
      if (loading || !options.enabled || stream.isTTY !== true || Date.now() - started < quietUnder) return
      loading = true
      void import('cli-progress').then(({ default: cliProgress }) => {
        if (finished) return
        bar = new cliProgress.SingleBar({ format: `${options.doing} {bar} {percentage}% | {done} of {all} | {rate}/s`, stream }, cliProgress.Presets.shades_classic)
        bar.start(1, 0, { done: '0 B', all: '?', rate: '0 B' })
        draw()
      }, () => {})
    },
    finish: (bytes) => {
      finished = true
      if (bar !== undefined) {
        bar.stop()
        return
      }
      const ms = Date.now() - started
      if (bytes === undefined || !options.enabled || ms < quietUnder) return
      const secs = ms / 1000
      stream.write(`${options.done} ${formatBytes(bytes)} in ${secs.toFixed(secs < 10 ? 2 : 1)} s (${rate(bytes)}/s)\n`)
    }
  }
}

/**
 * Runs `read` (which reads a pipeline's inputs, code and environment files: hashing them, or
 * storing them) with its progress shown, only when it takes over a second, as a large dataset does.
 */
export async function withReadingProgress<T> (doing: 'hashing' | 'storing', enabled: boolean, read: (onBytes: (bytes: number, totalBytes: number) => void) => Promise<T>): Promise<T> {
  const what = "the pipeline's inputs and code"
  const shown = byteProgress({ doing: `${doing} ${what}`, done: `${doing === 'hashing' ? 'hashed' : 'stored'} ${what}:`, enabled, quietUnderMs: 1000 })
  let bytes = 0
  try {
    const result = await read((b, total) => { bytes = b; shown.update(b, total) })
    shown.finish(bytes)
    return result
  } catch (err) {
    shown.finish(undefined)
    throw err
  }
}
