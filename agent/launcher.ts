// The launcher: a small helper process that starts step processes for the agent.
// Why: fork+exec from a large process is slow. Measured here, spawning `sh -c true` blocked the
// event loop ~2 ms from a 57 MB process but 12-15 ms from a 236 MB one (an agent with libp2p,
// LevelDB and a store loaded), because the kernel copies the parent's page tables and libuv waits
// for the exec. So the agent forks this process once, and it forks the steps.
// Keep it tiny: it imports nothing but node:child_process. If the agent dies, the IPC channel
// closes and the launcher kills every process group it started, then exits.
// Where python3 exists, launcher.py does this job instead, with the same protocol: a Node
// launcher forks itself for every step (libuv has no vfork on Linux), which costs several times
// what Python's subprocess does. This one is the fallback and PIPEMESH_LAUNCHER=node.

import { spawn, type ChildProcess } from 'node:child_process'

/** What the agent asks of the launcher. */
export type LauncherRequest =
  | { type: 'spawn', id: number, file: string, args: string[], cwd: string, env: Record<string, string>, lingerMs: number, viaShell?: string }
  | { type: 'destroy-pipes', id: number }
  /** The agent is stopping the step (timeout, cancel): its group gets the agent's grace period. */
  | { type: 'stopping', id: number }

/** What the launcher reports back. */
export type LauncherEvent =
  | { type: 'spawned', id: number, pid: number }
  | { type: 'data', id: number, stream: 'stdout' | 'stderr', data: Uint8Array }
  | { type: 'close', id: number, code: number | null, signal: NodeJS.Signals | null }
  | { type: 'error', id: number, message: string, started: boolean }

const OUTPUT_HIGH = 4 * 1024 * 1024

function main (): void {
  const children = new Map<number, ChildProcess>()
  const stopping = new Set<number>()
  const send = (event: LauncherEvent): void => { process.send?.(event) }
  // Step output sent but not yet written to the agent. Past OUTPUT_HIGH the launcher stops
  // reading step output until it is: a step that prints faster than a busy agent takes it waits
  // on its pipe instead of filling this process's memory.
  let unsent = 0
  let outputPaused = false
  const setOutputPaused = (paused: boolean): void => {
    if (paused === outputPaused) return
    outputPaused = paused
    for (const child of children.values()) {
      for (const stream of [child.stdout, child.stderr]) {
        if (stream === null) continue
        if (paused) stream.pause()
        else stream.resume()
      }
    }
  }
  const sendOutput = (id: number, stream: 'stdout' | 'stderr', data: Buffer): void => {
    unsent += data.byteLength
    if (unsent > OUTPUT_HIGH) setOutputPaused(true)
    process.send?.({ type: 'data', id, stream, data } satisfies LauncherEvent, undefined, {}, () => {
      unsent -= data.byteLength
      if (unsent <= OUTPUT_HIGH / 2) setOutputPaused(false)
    })
  }

  process.on('message', (msg: LauncherRequest) => {
    if (msg.type === 'stopping') {
      stopping.add(msg.id)
      return
    }
    if (msg.type === 'destroy-pipes') {
      const child = children.get(msg.id)
      child?.stdout?.destroy()
      child?.stderr?.destroy()
      return
    }
    let child: ChildProcess
    try {
      const options = { cwd: msg.cwd, env: msg.env, stdio: ['ignore', 'pipe', 'pipe'] as Array<'ignore' | 'pipe'>, detached: true }
      child = spawn(msg.file, msg.args, options)
      if (child.pid === undefined && msg.viaShell !== undefined) {
        // Not found (or not executable) as a program: the shell reports it as it always would
        // (exit 127, "not found"), or finds what only it knows.
        child.once('error', () => {})
        child = spawn('/bin/sh', ['-c', msg.viaShell], options)
      }
    } catch (err) {
      send({ type: 'error', id: msg.id, message: (err as Error).message, started: false })
      return
    }
    children.set(msg.id, child)
    if (child.pid !== undefined) send({ type: 'spawned', id: msg.id, pid: child.pid })
    child.stdout?.on('data', (data: Buffer) => { sendOutput(msg.id, 'stdout', data) })
    child.stderr?.on('data', (data: Buffer) => { sendOutput(msg.id, 'stderr', data) })
    if (outputPaused) { child.stdout?.pause(); child.stderr?.pause() }
    child.once('error', (err) => { send({ type: 'error', id: msg.id, message: err.message, started: child.pid !== undefined }) })
    child.once('exit', () => {
      // Whatever the step left behind in its group (a background job holding our pipes) ends
      // with it, unless the agent is stopping it and gives the group its grace period.
      if (!stopping.has(msg.id) && child.pid !== undefined) {
        try { process.kill(-child.pid, 'SIGKILL') } catch {}
      }
      // A process that left the group (setsid) may hold the pipes forever: stop waiting for it.
      setTimeout(() => { child.stdout?.destroy(); child.stderr?.destroy() }, msg.lingerMs).unref()
    })
    child.once('close', (code, signal) => {
      children.delete(msg.id)
      stopping.delete(msg.id)
      send({ type: 'close', id: msg.id, code, signal })
    })
  })

  process.on('disconnect', () => {
    for (const child of children.values()) {
      if (child.pid === undefined) continue
      try { process.kill(-child.pid, 'SIGKILL') } catch {}
    }
    process.exit(0)
  })
}

if (process.send !== undefined) main()
