// Runs one step process in its own process group so that a timeout, a cancel or the agent's
// shutdown can kill the whole tree it started, and captures its output as log lines.
// node:child_process rather than execa: execa took ~1.2 ms more of the agent's CPU per spawn of
// `true` (~2.8 vs ~1.6 ms, measured here), a third of a step's budget at 500 steps/s, and none of
// its features (buffering, its own kill, rejecting) fit: we kill groups and stream lines ourselves.
// Leftovers: processes a step leaves behind when it exits are killed with it; children of an
// agent that dies are killed by the agent's exit handler, or (after kill -9) by reapOrphans().

import { readdirSync, readFileSync } from 'node:fs'
import { mkdir, readdir, readFile, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PipemeshError, throwIfAborted } from '../src/errors.js'
import type { LogLine } from '../src/protocol/task.js'
import { LogCapture } from './log-capture.js'
import { spawnStep } from './launcher-client.js'

export interface RunProcessOptions {
  /** A string runs under `/bin/sh -c`; an array is argv, run without a shell. */
  command: string | string[]
  cwd: string
  /** The complete environment of the child: nothing of the agent's own is added. */
  env: Record<string, string>
  timeoutMs?: number
  /** Time between SIGTERM and SIGKILL on timeout or cancel. Default 5000. */
  killGraceMs?: number
  signal?: AbortSignal
  onLine?: (line: LogLine) => void
  logFile?: string
  /** Secret values replaced by `***` in captured lines. */
  redact?: string[]
  maxLogBytes?: number
  /** Called with its pid (also its process group id) once the process has run for 100 ms. */
  onStart?: (pid: number) => void
  /** Directory of pid records, so that a restarted agent can kill what a crashed one left running. */
  trackDir?: string
  /**
   * Receives a function that adds a line from pipemesh to the step's log (marked as such); it
   * does nothing once the process has ended.
   */
  onNotes?: (note: (text: string) => void) => void
}

export interface RunProcessResult {
  /** Null when killed by a signal or never started. */
  exitCode: number | null
  signal: string | null
  timedOut: boolean
  cancelled: boolean
  /** 0 when the process could not be started. */
  pid: number
  durationMs: number
  /** Last lines of stderr, redacted. */
  stderrTail: string[]
  /** Why the process could not be started (a missing program, a missing cwd). */
  spawnError?: string
  /** True when the log file got at least one line. */
  logWritten: boolean
}

const running = new Set<number>()
/** How long output is still read after the step's main process exited. */
const PIPE_LINGER_MS = 2000
/** A step that runs longer than this gets its pid recorded and announced (see runProcess). */
const ANNOUNCE_AFTER_MS = 100
let exitHookInstalled = false

/**
 * SIGKILLs every process group this module started that is still running. Synchronous, so it is
 * safe in a process 'exit' handler; the agent also calls it from its shutdown path.
 */
export function killAllRunning (): number {
  let n = 0
  for (const pgid of running) {
    if (signalGroup(pgid, 'SIGKILL')) n++
  }
  running.clear()
  return n
}

function installExitHook (): void {
  if (exitHookInstalled) return
  exitHookInstalled = true
  // 'exit' runs on process.exit() and on normal end; signal handlers belong to the agent, which
  // calls killAllRunning() when it shuts down on SIGINT/SIGTERM.
  process.once('exit', () => { killAllRunning() })
}

function signalGroup (pgid: number, sig: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, sig)
    return true
  } catch {
    return false
  }
}

export async function runProcess (options: RunProcessOptions): Promise<RunProcessResult> {
  throwIfAborted(options.signal)
  const { file, args, viaShell } = splitCommand(options.command)
  const grace = options.killGraceMs ?? 5000
  const capture = new LogCapture({
    ...(options.logFile !== undefined ? { logFile: options.logFile } : {}),
    ...(options.onLine !== undefined ? { onLine: options.onLine } : {}),
    ...(options.redact !== undefined ? { redact: options.redact } : {}),
    ...(options.maxLogBytes !== undefined ? { maxLogBytes: options.maxLogBytes } : {})
  })
  let capturing = true
  options.onNotes?.(text => { if (capturing) capture.note(text) })
  installExitHook()
  const started = performance.now()
  // Started by the launcher process (see launcher.ts), in its own process group: the child's pid
  // is the group id that kills the tree.
  const child = spawnStep(file, args, { cwd: options.cwd, env: options.env, lingerMs: PIPE_LINGER_MS, ...(viaShell !== undefined ? { viaShell } : {}) })
  capture.attach(child.stdout, 'stdout')
  capture.attach(child.stderr, 'stderr')
  const ended = new Promise<{ code: number | null, signal: NodeJS.Signals | null, error?: Error }>((resolve) => {
    let error: Error | undefined
    child.once('error', (err: Error) => { error = err })
    child.once('close', (code: number | null, signal: NodeJS.Signals | null) => { resolve(error === undefined ? { code, signal } : { code, signal, error }) })
  })
  // The pid arrives with the launcher's first report (or never, when the program cannot start).
  await new Promise<void>((resolve) => {
    child.once('spawn', () => { resolve() })
    child.once('close', () => { resolve() })
  })
  const pid = child.pid ?? 0

  let killing: 'timeout' | 'cancel' | undefined
  let graceTimer: NodeJS.Timeout | undefined
  let timeoutTimer: NodeJS.Timeout | undefined
  let killDeadline = 0
  const startKill = (why: 'timeout' | 'cancel'): void => {
    if (killing !== undefined || pid === 0) return
    killing = why
    killDeadline = Date.now() + grace
    child.stopping()
    signalGroup(pid, 'SIGTERM')
    graceTimer = setTimeout(() => { signalGroup(pid, 'SIGKILL') }, grace)
  }
  const onAbort = (): void => { startKill('cancel') }
  let recording: Promise<void> | undefined
  let announce: NodeJS.Timeout | undefined

  if (pid !== 0) {
    running.add(pid)
    // What the step leaves behind in its group when it exits is killed by the launcher.
    if (options.timeoutMs !== undefined && options.timeoutMs > 0) {
      timeoutTimer = setTimeout(() => { startKill('timeout') }, options.timeoutMs)
    }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    // Output read while the start was being reported may already have led to an abort.
    if (options.signal?.aborted === true) onAbort()
    // Most steps of a fan-out end within milliseconds; recording them would double their file
    // operations for nothing. A step still running after ANNOUNCE_AFTER_MS gets its pid record
    // (for reapOrphans) and its onStart. Until then the launcher is the guard: it kills what it
    // started when the agent dies.
    const trackDir = options.trackDir
    const onStart = options.onStart
    if (trackDir !== undefined || onStart !== undefined) {
      announce = setTimeout(() => {
        announce = undefined
        if (trackDir !== undefined) recording = recordPid(trackDir, pid)
        onStart?.(pid)
      }, ANNOUNCE_AFTER_MS)
    }
  }

  const result = await ended
  if (announce !== undefined) clearTimeout(announce)
  if (timeoutTimer !== undefined) clearTimeout(timeoutTimer)
  options.signal?.removeEventListener('abort', onAbort)
  if (killing !== undefined) {
    // The leader is gone; members that trapped SIGTERM get the rest of the grace period.
    await waitGroupGone(pid, killDeadline)
    if (groupAlive(pid)) {
      signalGroup(pid, 'SIGKILL')
      await waitGroupGone(pid, Date.now() + 2000)
    }
  }
  if (graceTimer !== undefined) clearTimeout(graceTimer)
  running.delete(pid)
  if (recording !== undefined && options.trackDir !== undefined) {
    const record = join(options.trackDir, String(pid))
    void recording.then(async () => { await unlink(record) }).catch(() => {})
  }
  capturing = false
  await capture.close()

  const out: RunProcessResult = {
    exitCode: result.code,
    signal: result.signal,
    timedOut: killing === 'timeout',
    cancelled: killing === 'cancel',
    pid,
    durationMs: performance.now() - started,
    stderrTail: capture.stderrTail,
    logWritten: capture.wroteFile
  }
  if (pid === 0 || (result.error !== undefined && result.code === null && result.signal === null)) {
    out.spawnError = `could not start ${file}: ${result.error?.message ?? 'unknown error'}`
  }
  return out
}

/** Characters that mean nothing to /bin/sh outside quotes (no expansion, globbing, redirection). */
const PLAIN_WORDS = /^[A-Za-z0-9_./:=,+@%-]+( +[A-Za-z0-9_./:=,+@%-]+)*$/
/** Words /bin/sh gives a meaning no program of that name has. */
const SHELL_ONLY = new Set([
  '.', ':', '!', '{', '}', 'alias', 'bg', 'break', 'case', 'cd', 'command', 'continue', 'do', 'done', 'elif', 'else',
  'esac', 'eval', 'exec', 'exit', 'export', 'fc', 'fg', 'fi', 'for', 'function', 'getopts', 'hash', 'if', 'in',
  'jobs', 'local', 'read', 'readonly', 'return', 'set', 'shift', 'source', 'then', 'times', 'trap', 'type',
  'ulimit', 'umask', 'unalias', 'unset', 'until', 'wait', 'while'
])

/**
 * A string command runs under `/bin/sh -c`. When it is plain words (`true`, `python3 train.py
 * --epochs 3 data/x`), sh would only split it on spaces and exec the first: doing that here saves
 * starting a shell, about a third of the cost of a short step. A program that is not found is
 * run through sh after all (by the launcher), so its exit code and message are the shell's.
 */
function splitCommand (command: string | string[]): { file: string, args: string[], viaShell?: string } {
  if (typeof command === 'string') {
    if (PLAIN_WORDS.test(command)) {
      const [file, ...args] = command.split(/ +/) as [string, ...string[]]
      if (!SHELL_ONLY.has(file) && !file.includes('=')) return { file, args, viaShell: command }
    }
    return { file: '/bin/sh', args: ['-c', command] }
  }
  const [file, ...args] = command
  if (file === undefined || file === '') throw new PipemeshError('INVALID_ARGUMENT', 'command is an empty argv array')
  return { file, args }
}

/**
 * True while a process of the group is alive. Zombies do not count: where PID 1 does not reap
 * orphans (some containers and VMs), a killed grandchild stays a zombie for good.
 */
function groupAlive (pgid: number): boolean {
  try {
    process.kill(-pgid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return true // no /proc: trust kill(0)
  }
  for (const name of entries) {
    const c = name.charCodeAt(0)
    if (c < 48 || c > 57) continue
    const stat = readStat(name)
    if (stat !== undefined && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X') return true
  }
  return false
}

function readStat (pid: string): { state: string, pgrp: number, startTime: string } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ')
    return { state: fields[0] ?? '', pgrp: Number(fields[2]), startTime: fields[19] ?? '' }
  } catch {
    return undefined
  }
}

/** The kernel's start time of a process (Linux), telling it from a later process with the same pid. */
export function processStartTime (pid: number): string | undefined {
  const t = readStat(String(pid))?.startTime
  return t === undefined || t === '' ? undefined : t
}

async function waitGroupGone (pgid: number, deadline: number): Promise<void> {
  while (groupAlive(pgid) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function recordPid (dir: string, pid: number): Promise<void> {
  try {
    await mkdir(dir, { recursive: true })
    // The start time tells a recorded process from an unrelated one that got the same pid later.
    await writeFile(join(dir, String(pid)), readStat(String(pid))?.startTime ?? '')
  } catch { /* best effort: only used to clean up after a crash */ }
}

/**
 * Kills the process groups recorded in trackDir by a previous agent process that died without
 * cleaning up (kill -9, power loss). Call it when the agent starts, before it runs steps.
 * Returns how many groups were signalled.
 */
export async function reapOrphans (trackDir: string): Promise<number> {
  let names: string[]
  try {
    names = await readdir(trackDir)
  } catch {
    return 0
  }
  let n = 0
  for (const name of names) {
    const pgid = Number(name)
    if (!Number.isInteger(pgid) || pgid <= 1) continue
    const recorded = await readFile(join(trackDir, name), 'utf8').catch(() => '')
    const leader = readStat(name)
    // A live leader must be the recorded process (same start time) and still lead its group; a
    // leaderless group with this id can only be what remains of ours.
    const ours = leader === undefined || ((recorded === '' || leader.startTime === recorded) && leader.pgrp === pgid)
    if (ours && signalGroup(pgid, 'SIGKILL')) n++
    await unlink(join(trackDir, name)).catch(() => {})
  }
  return n
}

/** Agent environment variables a step inherits; the rest stays private to the agent. */
export const INHERITED_ENV = [
  'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'LANG', 'LANGUAGE', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR',
  'HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy',
  'SSL_CERT_FILE', 'SSL_CERT_DIR', 'NODE_EXTRA_CA_CERTS', 'LD_LIBRARY_PATH', 'CUDA_HOME', 'CUDA_PATH',
  'PYENV_ROOT', 'PYENV_VERSION'
]

/** The listed variables of the agent's own environment that are set. */
export function inheritedEnv (names: readonly string[] = INHERITED_ENV): Record<string, string> {
  const env: Record<string, string> = {}
  for (const name of names) {
    const value = process.env[name]
    if (value !== undefined) env[name] = value
  }
  if (env.PATH === undefined) env.PATH = '/usr/local/bin:/usr/bin:/bin'
  return env
}
