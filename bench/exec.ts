// Runs one subprocess and times it from spawn to exit, the way a user's shell would see it.
// Plain child_process (not execa): its own overhead should not be part of what we measure.
// Also what the host took from this VM meanwhile (stealMs), to tell its slow reps from ours.

import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'

// The bundled bin, exactly what users run (dist/bench/ -> dist/pipemesh.mjs).
export const CLI = fileURLToPath(new URL('../pipemesh.mjs', import.meta.url))

export interface Timed {
  code: number | null
  signal: NodeJS.Signals | null
  /** Wall time from spawn to the child's exit with its output closed. */
  ms: number
  stdout: string
  stderr: string
}

export interface TimedOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** Killed (SIGTERM, then SIGKILL 2 s later) past this. */
  timeoutMs?: number
  signal?: AbortSignal
}

export async function timed (command: string, args: readonly string[], options: TimedOptions = {}): Promise<Timed> {
  return await new Promise((resolve, reject) => {
    const start = performance.now()
    const child = spawn(command, args, { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    const err: Buffer[] = []
    child.stdout.on('data', (b: Buffer) => out.push(b))
    child.stderr.on('data', (b: Buffer) => err.push(b))
    let killTimer: NodeJS.Timeout | undefined
    const kill = (): void => {
      child.kill('SIGTERM')
      killTimer = setTimeout(() => child.kill('SIGKILL'), 2000)
      killTimer.unref()
    }
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(kill, options.timeoutMs)
    options.signal?.addEventListener('abort', kill, { once: true })
    child.on('error', e => { clearTimeout(timer); reject(e) })
    child.on('close', (code, signal) => {
      const ms = performance.now() - start
      clearTimeout(timer)
      clearTimeout(killTimer)
      options.signal?.removeEventListener('abort', kill)
      resolve({ code, signal, ms, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') })
    })
  })
}

/** Throws with the command's last stderr lines unless it exited 0. */
export function ensureOk (what: string, result: Timed): Timed {
  if (result.code === 0) return result
  const tail = result.stderr.trim().split('\n').slice(-8).join('\n')
  throw new Error(`${what} exited ${result.code ?? result.signal ?? '?'}${tail === '' ? '' : `:\n${tail}`}`)
}

/** The last line of a child's stdout parsed as JSON: how bench children report their figures. */
export function lastJsonLine<T> (what: string, stdout: string): T {
  const line = stdout.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(line) as T
  } catch {
    throw new Error(`${what} did not report a JSON result line (got ${JSON.stringify(line.slice(0, 200))})`)
  }
}

/** Steal time of all CPUs since boot, ms (the 8th field of /proc/stat's `cpu` line, in USER_HZ ticks of 10 ms). */
export async function stealMs (): Promise<number | undefined> {
  try {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? ''
    const steal = Number(line.trim().split(/\s+/)[8])
    return Number.isFinite(steal) ? steal * 10 : undefined
  } catch {
    return undefined
  }
}
