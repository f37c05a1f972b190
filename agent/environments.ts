// Prepared environments (a node_modules, a Python venv): built once per digest at
// `<dir>/<digest-hex>` by materializing the environment's files and running its setup there, in
// place, since venvs hard-code their absolute path. `.pipemesh-ready`, written last, marks a
// complete build; a directory without it is a crashed or failed build and is rebuilt. Its mtime
// is the environment's last use, by which prune() removes the ones no step has wanted for long.

import { hostname } from 'node:os'
import { chmod, lstat, mkdir, readdir, readFile, rename, rm, stat, symlink, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { CancelledError, PipemeshError, throwIfAborted } from '../src/errors.js'
import type { LogLine, TaskEnvironment } from '../src/protocol/task.js'
import { isDigest, type Digest } from '../src/store/types.js'
import type { ContentStoreLike } from './attempt.js'
import { inheritedEnv, processStartTime, runProcess } from './process.js'

export const READY_MARKER = '.pipemesh-ready'
const BIN_DIRS = ['node_modules/.bin', '.venv/bin', 'bin']
const LOCK_POLL_MS = 100
/** A lock directory without an owner file this old was left by a process that died creating it. */
const OWNERLESS_LOCK_MS = 10_000

export interface PreparedEnvironment {
  name: string
  digest: Digest
  dir: string
  /** Existing of node_modules/.bin, .venv/bin, bin: put first on the step's PATH. */
  binDirs: string[]
  nodeModules?: string
  /** The environment's Python venv, when it has one (`.venv`). */
  venv?: string
}

export interface EnvironmentManagerOptions {
  dir: string
  store: Pick<ContentStoreLike, 'materialize'>
  /** Limit for one setup run. Default one hour. */
  setupTimeoutMs?: number
  /** The environment setup commands run with. Default: inheritedEnv(). */
  baseEnv?: Record<string, string>
}

interface Build {
  promise: Promise<PreparedEnvironment>
  controller: AbortController
  waiters: number
  listeners: Set<(line: LogLine) => void>
}

export class EnvironmentManager {
  readonly dir: string
  private readonly store: Pick<ContentStoreLike, 'materialize'>
  private readonly setupTimeoutMs: number
  private readonly baseEnv: Record<string, string>
  private readonly builds = new Map<string, Build>()
  /** Attempts using each environment (by digest hex) right now: prune() never touches these. */
  private readonly inUse = new Map<string, number>()

  constructor (options: EnvironmentManagerOptions) {
    this.dir = options.dir
    this.store = options.store
    this.setupTimeoutMs = options.setupTimeoutMs ?? 60 * 60 * 1000
    this.baseEnv = options.baseEnv ?? inheritedEnv()
  }

  /**
   * The built environment, building it first if needed. Concurrent calls for one digest share one
   * build; a caller that cancels stops waiting, and the build stops when no caller is left.
   */
  async prepare (env: TaskEnvironment, options: { signal?: AbortSignal, onLine?: (line: LogLine) => void } = {}): Promise<PreparedEnvironment> {
    throwIfAborted(options.signal)
    if (!isDigest(env.digest)) throw new PipemeshError('INVALID_ARGUMENT', `environment "${env.name}" has an invalid digest ${JSON.stringify(env.digest)}`)
    const hex = env.digest.slice('sha256:'.length)
    const prepared = await this.ready(env, hex, options)
    this.inUse.set(hex, (this.inUse.get(hex) ?? 0) + 1)
    const now = new Date()
    await utimes(join(prepared.dir, READY_MARKER), now, now).catch(() => {})
    return prepared
  }

  /** The attempt that prepared `prepared` is over: the environment may be pruned again. */
  release (prepared: PreparedEnvironment): void {
    const hex = prepared.digest.slice('sha256:'.length)
    const left = (this.inUse.get(hex) ?? 1) - 1
    if (left > 0) this.inUse.set(hex, left)
    else this.inUse.delete(hex)
  }

  /**
   * Removes the built environments no attempt is using and none has prepared since `unusedSince`
   * (ms since the epoch), with failed builds' leftovers. Returns the bytes freed, approximately.
   */
  async prune (unusedSince: number): Promise<{ removed: number, freedBytes: number }> {
    const names = await readdir(this.dir).catch(() => [] as string[])
    let removed = 0
    let freedBytes = 0
    for (const name of names) {
      if (!/^[0-9a-f]{64}$/.test(name) || this.inUse.has(name) || this.builds.has(name)) continue
      const path = join(this.dir, name)
      const lastUse = await stat(join(path, READY_MARKER)).then(s => s.mtimeMs, () => 0)
      if (lastUse >= unusedSince) continue
      const release = await acquireLock(`${path}.lock`, AbortSignal.timeout(10_000)).catch(() => undefined)
      if (release === undefined) continue
      try {
        // Prepared or built by another process meanwhile: keep it.
        if (this.inUse.has(name) || await stat(join(path, READY_MARKER)).then(s => s.mtimeMs >= unusedSince, () => false)) continue
        freedBytes += await treeBytes(path)
        await removeTree(path)
        await rm(`${path}.setup.log`, { force: true })
        removed++
      } finally {
        await release()
      }
    }
    return { removed, freedBytes }
  }

  private async ready (env: TaskEnvironment, hex: string, options: { signal?: AbortSignal, onLine?: (line: LogLine) => void }): Promise<PreparedEnvironment> {
    const path = join(this.dir, hex)
    if (await exists(join(path, READY_MARKER))) return await describe(env, path)

    let build = this.builds.get(hex)
    while (build?.controller.signal.aborted === true) {
      // Every caller of that build gave up; let it wind down, then start afresh.
      await build.promise.catch(() => {})
      build = this.builds.get(hex)
    }
    if (build === undefined) {
      const controller = new AbortController()
      const listeners = new Set<(line: LogLine) => void>()
      const created: Build = {
        controller,
        listeners,
        waiters: 0,
        promise: this.build(env, path, controller.signal, (line) => { for (const l of listeners) l(line) })
          .finally(() => { this.builds.delete(hex) })
      }
      created.promise.catch(() => {}) // every waiter sees the error; none may be left unhandled
      this.builds.set(hex, created)
      build = created
    }
    const shared = build
    shared.waiters++
    if (options.onLine !== undefined) shared.listeners.add(options.onLine)
    try {
      return await waitUnlessAborted(shared.promise, options.signal)
    } finally {
      if (options.onLine !== undefined) shared.listeners.delete(options.onLine)
      shared.waiters--
      if (shared.waiters === 0 && options.signal?.aborted === true) shared.controller.abort(options.signal.reason)
    }
  }

  /**
   * The step's environment with this one applied: its bin dirs first on PATH, NODE_PATH, VIRTUAL_ENV,
   * and a `node_modules` link in the workdir (ES modules ignore NODE_PATH) unless the code has one.
   */
  async apply (prepared: PreparedEnvironment, workdir: string, env: Record<string, string>): Promise<Record<string, string>> {
    const out = { ...env }
    if (prepared.binDirs.length > 0) out.PATH = [...prepared.binDirs, ...(env.PATH === undefined || env.PATH === '' ? [] : [env.PATH])].join(':')
    if (prepared.nodeModules !== undefined) {
      out.NODE_PATH = env.NODE_PATH === undefined || env.NODE_PATH === '' ? prepared.nodeModules : `${prepared.nodeModules}:${env.NODE_PATH}`
      try {
        await symlink(prepared.nodeModules, join(workdir, 'node_modules'), 'dir')
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
    }
    if (prepared.venv !== undefined) out.VIRTUAL_ENV = prepared.venv
    return out
  }

  private async build (env: TaskEnvironment, path: string, signal: AbortSignal, onLine: (line: LogLine) => void): Promise<PreparedEnvironment> {
    await mkdir(this.dir, { recursive: true })
    const release = await acquireLock(`${path}.lock`, signal)
    try {
      // Another agent process sharing this directory may have built it while we waited.
      if (await exists(join(path, READY_MARKER))) return await describe(env, path)
      await removeTree(path)
      await this.store.materialize(env.files, path, { signal })
      if (!(await stat(path)).isDirectory()) {
        await removeTree(path)
        throw new PipemeshError('ENVIRONMENT_FAILED', `environment "${env.name}": its files artifact ${env.files} is a single file, expected a directory tree`)
      }
      if (env.setup.trim() !== '') await this.runSetup(env, path, signal, onLine)
      await writeFile(join(path, READY_MARKER), JSON.stringify({ name: env.name, digest: env.digest, setup: env.setup, builtAt: new Date().toISOString() }) + '\n')
      return await describe(env, path)
    } finally {
      await release()
    }
  }

  private async runSetup (env: TaskEnvironment, path: string, signal: AbortSignal, onLine: (line: LogLine) => void): Promise<void> {
    const logFile = `${path}.setup.log`
    const r = await runProcess({ command: env.setup, cwd: path, env: this.baseEnv, signal, onLine, logFile, timeoutMs: this.setupTimeoutMs })
    if (r.exitCode === 0 && !r.timedOut && !r.cancelled) return
    await removeTree(path)
    if (r.cancelled) throw new CancelledError(`building environment "${env.name}" was cancelled`)
    const how = r.spawnError ?? (r.timedOut
      ? `did not finish within ${Math.round(this.setupTimeoutMs / 1000)} s and was killed`
      : r.exitCode !== null ? `exited with code ${r.exitCode}` : `was killed by signal ${r.signal ?? 'unknown'}`)
    const tail = r.stderrTail.length > 0 ? `\nlast lines of stderr:\n${r.stderrTail.map(l => `  ${l}`).join('\n')}` : ''
    throw new PipemeshError('ENVIRONMENT_FAILED', `environment "${env.name}" (${env.digest}): setup \`${env.setup}\` ${how}${tail}\nfull log: ${logFile}`, {
      hint: 'fix the setup command or the environment files; the build is retried from scratch on the next run'
    })
  }
}

async function describe (env: TaskEnvironment, path: string): Promise<PreparedEnvironment> {
  const binDirs: string[] = []
  for (const d of BIN_DIRS) if (await isDir(join(path, d))) binDirs.push(join(path, d))
  const prepared: PreparedEnvironment = { name: env.name, digest: env.digest, dir: path, binDirs }
  if (await isDir(join(path, 'node_modules'))) prepared.nodeModules = join(path, 'node_modules')
  if (await isDir(join(path, '.venv'))) prepared.venv = join(path, '.venv')
  return prepared
}

/** Bytes of the files under `dir` (links not followed). */
async function treeBytes (dir: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }).catch(() => [])) {
    if (entry.isFile()) total += await lstat(join(entry.parentPath ?? entry.path, entry.name)).then(s => s.size, () => 0)
  }
  return total
}

async function exists (p: string): Promise<boolean> {
  return await lstat(p).then(() => true, () => false)
}

async function isDir (p: string): Promise<boolean> {
  return await stat(p).then(s => s.isDirectory(), () => false)
}

async function waitUnlessAborted<T> (promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return await promise
  throwIfAborted(signal)
  let onAbort: (() => void) | undefined
  const aborted = new Promise<never>((_resolve, reject) => {
    onAbort = () => { reject(new CancelledError('cancelled while the environment was being prepared')) }
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    return await Promise.race([promise, aborted])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}

/**
 * Cross-process lock: an exclusive mkdir, with the owner's pid and start time inside. A lock whose
 * owner is dead (or whose pid now belongs to another process) is taken over.
 */
async function acquireLock (lockDir: string, signal: AbortSignal): Promise<() => Promise<void>> {
  const release = async (): Promise<void> => { await rm(lockDir, { recursive: true, force: true }) }
  for (;;) {
    throwIfAborted(signal)
    try {
      await mkdir(lockDir)
      await writeFile(join(lockDir, 'owner'), JSON.stringify({ pid: process.pid, host: hostname(), start: processStartTime(process.pid) }))
      return release
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    if (await lockIsStale(lockDir)) {
      // Renaming first means two processes that both judged it stale cannot both remove it.
      const aside = `${lockDir}.stale-${process.pid}-${Date.now()}`
      if (await rename(lockDir, aside).then(() => true, () => false)) await rm(aside, { recursive: true, force: true })
      continue
    }
    try {
      await sleep(LOCK_POLL_MS, undefined, { signal })
    } catch {
      throwIfAborted(signal)
    }
  }
}

async function lockIsStale (lockDir: string): Promise<boolean> {
  let owner: { pid?: unknown, host?: unknown, start?: unknown }
  try {
    owner = JSON.parse(await readFile(join(lockDir, 'owner'), 'utf8')) as typeof owner
  } catch {
    const s = await stat(lockDir).catch(() => undefined)
    return s !== undefined && Date.now() - s.mtimeMs > OWNERLESS_LOCK_MS
  }
  if (owner.host !== hostname()) return false // cannot check another machine's processes
  if (typeof owner.pid !== 'number') return true
  try {
    process.kill(owner.pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH'
  }
  // Alive, but maybe a later process with the dead owner's pid (a restarted container reuses pids).
  const start = processStartTime(owner.pid)
  return typeof owner.start === 'string' && start !== undefined && start !== owner.start
}

/** rm -rf that also works where a step or a read-only materialize left unwritable directories. */
export async function removeTree (p: string): Promise<void> {
  try {
    await rm(p, { recursive: true, force: true })
    return
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EACCES' && code !== 'EPERM' && code !== 'ENOTEMPTY') throw err
  }
  const walk = async (dir: string): Promise<void> => {
    await chmod(dir, 0o700).catch(() => {})
    for (const d of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (d.isDirectory()) await walk(join(dir, d.name))
    }
  }
  await walk(p)
  await rm(p, { recursive: true, force: true })
}
