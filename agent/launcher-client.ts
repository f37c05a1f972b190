// The agent's side of the launcher (see launcher.ts): starts launchers on first use, and returns a
// ChildProcess-like handle per step whose stdout/stderr are real streams fed by the launcher's
// reports. Where python3 (>= 3.8) is found, the launcher is launcher.py, which starts a process
// about four times cheaper than Node can (see there); otherwise, or when it fails to start, the
// Node one. PIPEMESH_LAUNCHER=node or =python picks one.

import { fork, spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { accessSync, constants, existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { delimiter, dirname, join } from 'node:path'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { PipemeshError } from '../src/errors.js'
import type { LauncherEvent, LauncherRequest } from './launcher.js'

/** A started step process as the executor sees it. */
export interface StepChild extends EventEmitter {
  pid: number | undefined
  stdout: PassThrough
  stderr: PassThrough
  /** Stop reading its pipes (a process that left its group may hold them open). */
  destroyPipes: () => void
  /**
   * The agent is stopping the step: when its main process exits, the rest of its group is left
   * to the agent's grace period instead of being killed at once.
   */
  stopping: () => void
}

class LauncherChild extends EventEmitter implements StepChild {
  pid: number | undefined
  readonly stdout = new PassThrough()
  readonly stderr = new PassThrough()
  constructor (public launcher: Launcher, readonly id: number) { super() }
  destroyPipes (): void { this.launcher.request({ type: 'destroy-pipes', id: this.id }) }
  stopping (): void { this.launcher.request({ type: 'stopping', id: this.id }) }
}

/** What launcher.py reports: launcher.ts's events, a first 'ready', and data as base64. */
type PythonEvent = Exclude<LauncherEvent, { type: 'data' }> | { type: 'ready' } | { type: 'data', id: number, stream: 'stdout' | 'stderr', data64: string }

/** Which launcher to start: the Node one, or launcher.py under a given interpreter. */
type Choice = { kind: 'node' } | { kind: 'python', python: string }

class Launcher {
  private readonly process: ChildProcess
  readonly children = new Map<number, LauncherChild>()
  private nextId = 1
  /** Requests sent before launcher.py said it is ready: sent again to a Node launcher if it never does. */
  private unconfirmed: LauncherRequest[] | undefined

  constructor (choice: Choice) {
    if (choice.kind === 'python') {
      this.unconfirmed = []
      // -I: no PYTHON* variables, no user site; -S: no site module (stdlib only, faster start).
      this.process = spawn(choice.python, ['-I', '-S', launcherFile('launcher.py')], { serialization: 'json', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    } else {
      this.process = fork(launcherFile('launcher.js'), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    }
    this.process.on('message', (event: LauncherEvent | PythonEvent) => { this.onEvent(event) })
    // A launcher that cannot be started at all (a PIPEMESH_PYTHON that does not exist).
    this.process.on('error', () => { if (this.unconfirmed !== undefined) this.fallBack() })
    this.process.on('exit', () => {
      const i = launchers.indexOf(this)
      if (i >= 0) launchers.splice(i, 1)
      if (this.unconfirmed !== undefined) {
        this.fallBack()
        return
      }
      for (const child of this.children.values()) {
        child.stdout.end()
        child.stderr.end()
        child.emit('error', new Error('the step launcher exited'))
        child.emit('close', null, 'SIGKILL')
      }
      this.children.clear()
    })
    // The agent must be able to exit while the launcher idles.
    this.process.unref()
    this.process.channel?.unref()
  }

  /**
   * launcher.py could not start (no usable python3 after all): nothing it was asked for has
   * started, so a Node launcher takes it all over, as will every launcher from now on.
   */
  private fallBack (): void {
    const unconfirmed = this.unconfirmed ?? []
    this.unconfirmed = undefined
    pythonUsable = false
    const i = launchers.indexOf(this)
    if (i >= 0) launchers.splice(i, 1)
    const node = new Launcher({ kind: 'node' })
    launchers.push(node)
    for (const child of this.children.values()) node.adopt(child)
    this.children.clear()
    for (const msg of unconfirmed) node.request(msg)
  }

  async stop (): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return
    const exited = new Promise<void>((resolve) => { this.process.once('exit', () => { resolve() }) })
    this.unconfirmed = undefined
    // A launcher whose agent goes away kills what it started and exits.
    if (this.process.connected) this.process.disconnect()
    else this.process.kill('SIGKILL')
    await exited
  }

  private adopt (child: LauncherChild): void {
    child.launcher = this
    this.children.set(child.id, child)
    this.nextId = Math.max(this.nextId, child.id + 1)
    this.process.channel?.ref()
  }

  spawn (file: string, args: string[], options: SpawnOptions): StepChild {
    const id = this.nextId++
    const child = new LauncherChild(this, id)
    this.children.set(id, child)
    if (this.children.size === 1) this.process.channel?.ref()
    this.request({ type: 'spawn', id, file, args, ...options })
    return child
  }

  request (msg: LauncherRequest): void {
    this.unconfirmed?.push(msg)
    this.process.send(msg)
  }

  private onEvent (event: LauncherEvent | PythonEvent): void {
    if (event.type === 'ready') {
      this.unconfirmed = undefined
      return
    }
    const child = this.children.get(event.id)
    if (child === undefined) return
    switch (event.type) {
      case 'spawned':
        child.pid = event.pid
        child.emit('spawn', event.pid)
        break
      case 'data': {
        const bytes = 'data64' in event ? Buffer.from(event.data64, 'base64') : Buffer.from(event.data.buffer, event.data.byteOffset, event.data.byteLength)
        ;(event.stream === 'stdout' ? child.stdout : child.stderr).write(bytes)
        break
      }
      case 'error':
        child.emit('error', new Error(event.message))
        if (!event.started) this.finish(child, null, null)
        break
      case 'close':
        this.finish(child, event.code, event.signal)
        break
    }
  }

  private finish (child: LauncherChild, code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.children.delete(child.id)) return
    if (this.children.size === 0) this.process.channel?.unref()
    child.stdout.end()
    child.stderr.end()
    // 'close' after the streams have delivered everything, as with a real ChildProcess.
    let pending = 2
    const done = (): void => { if (--pending === 0) child.emit('close', code, signal) }
    if (child.stdout.readableEnded) done(); else child.stdout.once('end', done)
    if (child.stderr.readableEnded) done(); else child.stderr.once('end', done)
  }
}

/**
 * Launchers started so far. Node's spawn blocks its caller until the child has exec'd (2-4 ms
 * here), so one launcher serializes every step start; with a few, steps start in parallel.
 */
const launchers: Launcher[] = []
const MAX_LAUNCHERS = Math.min(4, Math.max(1, availableParallelism()))

export interface SpawnOptions {
  cwd: string
  env: Record<string, string>
  /** How long the pipes are still read after the process exited. */
  lingerMs: number
  /** When `file` cannot be found: run this under /bin/sh -c instead (see splitCommand). */
  viaShell?: string
}

/** Starts a step process through a launcher (started on first use). */
export function spawnStep (file: string, args: string[], options: SpawnOptions): StepChild {
  let pick = launchers[0]
  for (const l of launchers) if (l.children.size < (pick?.children.size ?? Infinity)) pick = l
  if (pick === undefined || (pick.children.size > 0 && launchers.length < MAX_LAUNCHERS)) {
    pick = new Launcher(chooseLauncher())
    launchers.push(pick)
  }
  return pick.spawn(file, args, options)
}

/** Which kind of launcher new ones are; throws on an unknown PIPEMESH_LAUNCHER. */
export function launcherKind (): Choice['kind'] {
  return chooseLauncher().kind
}

/** PIPEMESH_LAUNCHER, else launcher.py when a python3 is found (and has not failed here). */
function chooseLauncher (): Choice {
  const asked = process.env.PIPEMESH_LAUNCHER
  if (asked === 'node') return { kind: 'node' }
  if (asked !== undefined && asked !== '' && asked !== 'python') throw new PipemeshError('INVALID_ARGUMENT', `PIPEMESH_LAUNCHER must be "node" or "python", not ${JSON.stringify(asked)}`)
  const python = pythonUsable ? pythonPath() : undefined
  return python === undefined ? { kind: 'node' } : { kind: 'python', python }
}

/** False once launcher.py failed to start in this process. */
let pythonUsable = true

/** PIPEMESH_PYTHON, else /usr/bin/python3, else the first python3 on PATH (found without running anything). */
function pythonPath (): string | undefined {
  const asked = process.env.PIPEMESH_PYTHON
  if (asked !== undefined && asked !== '') return asked
  for (const dir of ['/usr/bin', ...(process.env.PATH ?? '').split(delimiter)]) {
    if (dir === '') continue
    try {
      accessSync(join(dir, 'python3'), constants.X_OK)
      return join(dir, 'python3')
    } catch {}
  }
  return undefined
}

/**
 * Stops every launcher, and with them any step they still run; the next step starts new ones,
 * of the kind launcherKind() then says. (Launchers also stop by themselves when the agent exits.)
 */
export async function stopLaunchers (): Promise<void> {
  const all = launchers.splice(0)
  pythonUsable = true
  await Promise.all(all.map(async l => { await l.stop() }))
}

/** dist/agent/<name> next to this module once built; from the sources (tests), the built copy. */
function launcherFile (name: string): string {
  const here = dirname(fileURLToPath(import.meta.url))
  const beside = join(here, name)
  if (existsSync(beside)) return beside
  const built = join(here, '..', 'dist', 'agent', name)
  if (existsSync(built)) return built
  throw new Error(`cannot find the step launcher (looked for ${beside} and ${built}); run \`npm run build\``)
}
