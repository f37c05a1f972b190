// The agent's side of the launcher (see launcher.ts): starts the launcher once, on first use, and
// returns a ChildProcess-like handle per step whose stdout/stderr are real streams fed by the
// launcher's reports.

import { fork, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { existsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { dirname, join } from 'node:path'
import { PassThrough } from 'node:stream'
import { fileURLToPath } from 'node:url'
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
  constructor (private readonly launcher: Launcher, readonly id: number) { super() }
  destroyPipes (): void { this.launcher.request({ type: 'destroy-pipes', id: this.id }) }
  stopping (): void { this.launcher.request({ type: 'stopping', id: this.id }) }
}

class Launcher {
  private readonly process: ChildProcess
  readonly children = new Map<number, LauncherChild>()
  private nextId = 1

  constructor () {
    this.process = fork(launcherScript(), [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.process.on('message', (event: LauncherEvent) => { this.onEvent(event) })
    this.process.on('exit', () => {
      const i = launchers.indexOf(this)
      if (i >= 0) launchers.splice(i, 1)
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

  spawn (file: string, args: string[], options: SpawnOptions): StepChild {
    const id = this.nextId++
    const child = new LauncherChild(this, id)
    this.children.set(id, child)
    if (this.children.size === 1) this.process.channel?.ref()
    this.request({ type: 'spawn', id, file, args, ...options })
    return child
  }

  request (msg: LauncherRequest): void {
    this.process.send(msg)
  }

  private onEvent (event: LauncherEvent): void {
    const child = this.children.get(event.id)
    if (child === undefined) return
    switch (event.type) {
      case 'spawned':
        child.pid = event.pid
        child.emit('spawn', event.pid)
        break
      case 'data':
        (event.stream === 'stdout' ? child.stdout : child.stderr).write(Buffer.from(event.data.buffer, event.data.byteOffset, event.data.byteLength))
        break
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

/** Starts a step process through the launcher (started on first use). */
export function spawnStep (file: string, args: string[], options: SpawnOptions): StepChild {
  let pick = launchers[0]
  for (const l of launchers) if (l.children.size < (pick?.children.size ?? Infinity)) pick = l
  if (pick === undefined || (pick.children.size > 0 && launchers.length < MAX_LAUNCHERS)) {
    pick = new Launcher()
    launchers.push(pick)
  }
  return pick.spawn(file, args, options)
}

/** dist/agent/launcher.js next to this module once built; from the sources (tests), the built copy. */
function launcherScript (): string {
  const here = dirname(fileURLToPath(import.meta.url))
  const beside = join(here, 'launcher.js')
  if (existsSync(beside)) return beside
  const built = join(here, '..', 'dist', 'agent', 'launcher.js')
  if (existsSync(built)) return built
  throw new Error(`cannot find the step launcher (looked for ${beside} and ${built}); run \`npm run build\``)
}
