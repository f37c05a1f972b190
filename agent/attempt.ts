// Runs one attempt of a step on this agent: a fresh working directory with the code snapshot,
// read-only inputs and an empty outputs/, the environment prepared, the process run, declared
// outputs and the log stored. Step failures come back as an AttemptResult, never as a throw.

import { existsSync, mkdirSync } from 'node:fs'
import { chmod, lstat, realpath } from 'node:fs/promises'
import { dirname, isAbsolute, join, sep } from 'node:path'
import { CorruptContentError, MissingContentError, PipemeshError, toWireError, type WireError } from '../src/errors.js'
import type { Logger } from 'pino'
import { CHECKPOINT_SOURCE, CODE_SOURCE, FETCH_PROGRESS_MS, STORING_REPORT_BYTES, describeSource } from '../src/protocol/messages.js'
import type { AttemptResult, LogLine, Task } from '../src/protocol/task.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import type { EnvironmentManager, PreparedEnvironment } from './environments.js'
import { inheritedEnv, runProcess } from './process.js'
import type { AttemptDirs, WorkdirPool } from './workdirs.js'
import { diffTrees, snapshotTree } from './tree-state.js'
import { CheckpointSaver, checkpointLabel } from './checkpoints.js'

/** What the executor needs of the content store (src/store/content-store.ts implements it). */
export interface ContentStoreLike {
  /** `adopt`: the files may be moved into the store instead of copied (see IngestOptions.adopt). */
  ingest: (path: string, options?: { signal?: AbortSignal, label?: string, adopt?: boolean, onProgress?: (bytes: number) => void, onScanned?: (bytes: number) => void }) => Promise<ArtifactRef>
  /** `dest` must not exist; nothing is left there on failure. */
  materialize: (digest: Digest, dest: string, options?: { signal?: AbortSignal, readOnly?: boolean }) => Promise<void>
}

export interface StoringProgress { output: string, bytes: number, totalBytes: number, elapsedMs: number, done: boolean }

export interface AttemptDeps {
  store: ContentStoreLike
  environments: EnvironmentManager
  /** Where attempts run (their working directory, TMPDIR and log). */
  workdirs: WorkdirPool
  signal?: AbortSignal
  onLine?: (line: LogLine) => void
  /** Called with the step process's pid once it has run for a moment (see runProcess). */
  onStart?: (pid: number) => void
  /**
   * Called with the result of an attempt whose process ran, as soon as it is known: before its
   * working directory is removed, which runAttempt's own promise waits for.
   */
  onResult?: (result: AttemptResult) => void
  maxLogBytes?: number
  killGraceMs?: number
  /** The agent's variables a step sees. Default: inheritedEnv() (PATH, HOME, locale, proxies...). */
  baseEnv?: Record<string, string>
  /** Where pid records go so that a restarted agent can reap what a crashed one left (reapOrphans). */
  trackDir?: string
  /**
   * Makes an artifact whole again after reading it found a chunk corrupt (quarantined) or gone,
   * by fetching it from other holders; throws when it cannot. `what` is the input name, or
   * `.code` for the code snapshot. Without it, such an attempt fails.
   */
  repairContent?: (what: string, digest: Digest) => Promise<void>
  /** A save of the step's checkpoint directory taken while it runs (see checkpoints.ts). */
  onCheckpoint?: (ref: ArtifactRef) => void
  /**
   * Progress of storing an output after exit 0: every `progressMs` (default FETCH_PROGRESS_MS)
   * once it has taken that long, then once with `done`; an output stored sooner is reported
   * only if it has STORING_REPORT_BYTES or more.
   */
  onStoring?: (progress: StoringProgress) => void
  progressMs?: number
  logger?: Logger
}

/** Top-level names of the working directory that the code snapshot may not use. */
const RESERVED = ['inputs', 'outputs']

/**
 * The step's environment, later entries winning: the agent's allow-listed variables; TMPDIR in a
 * per-attempt directory removed afterwards; the step's `env`; its secrets; then what pipemesh
 * sets. GPUs: CUDA_VISIBLE_DEVICES and NVIDIA_VISIBLE_DEVICES list the assigned devices; a step
 * given none sees none (CUDA_VISIBLE_DEVICES='', NVIDIA_VISIBLE_DEVICES='none'), so that a
 * `gpu: 0` step cannot take memory on a GPU that the scheduler gave to another step.
 */
function stepEnv (task: Task, base: Record<string, string>, workdir: string, tmpDir: string, checkpointDir: string | undefined): Record<string, string> {
  const gpus = task.gpus.join(',')
  return {
    ...base,
    TMPDIR: tmpDir,
    ...task.env,
    ...(task.secrets ?? {}),
    PIPEMESH_RUN_ID: task.runId,
    PIPEMESH_STEP: task.stepId,
    PIPEMESH_ATTEMPT: String(task.attempt),
    PIPEMESH_ATTEMPT_ID: task.attemptId,
    PIPEMESH_WORKDIR: workdir,
    ...(checkpointDir === undefined ? {} : { PIPEMESH_CHECKPOINT_DIR: checkpointDir }),
    CUDA_VISIBLE_DEVICES: gpus,
    NVIDIA_VISIBLE_DEVICES: task.gpus.length > 0 ? gpus : 'none'
  }
}

export async function runAttempt (task: Task, deps: AttemptDeps): Promise<AttemptResult> {
  const startedAt = Date.now()
  const step = `step "${task.stepId}"`
  const finish = (status: AttemptResult['status'], extra: Partial<AttemptResult> = {}): AttemptResult =>
    ({ attemptId: task.attemptId, status, exitCode: null, outputs: {}, startedAt, finishedAt: Date.now(), ...extra })
  const failure = (err: unknown): AttemptResult => {
    const wire = toWireError(err)
    const cancelled = deps.signal?.aborted === true || wire.code === 'CANCELLED'
    return finish(cancelled ? 'cancelled' : 'failed', { error: cancelled ? cancelledError(task) : wire })
  }
  if (deps.signal?.aborted === true) return finish('cancelled', { error: cancelledError(task) })

  const unsafe = unsafeNames(task)
  if (unsafe !== undefined) return finish('failed', { error: toWireError(new PipemeshError('INVALID_ARGUMENT', `${step}: ${unsafe}`)) })
  let dirs: AttemptDirs
  try {
    dirs = deps.workdirs.take(task, task.code !== undefined)
  } catch (err) {
    return failure(err)
  }
  const { cwd: workdir, tmp: tmpDir, log: logFile } = dirs
  let logWritten = false
  let linkedModules = false
  let prepared: PreparedEnvironment | undefined
  const cleanup = async (): Promise<void> => {
    if (prepared !== undefined) deps.environments.release(prepared)
    const known = [...(task.outputs.length > 0 ? ['outputs'] : []), ...(linkedModules ? ['node_modules'] : [])]
    await deps.workdirs.give(dirs, { known, logWritten })
  }

  let env: Record<string, string>
  let inputsBefore: Map<string, string> | undefined
  let checkpointDir: string | undefined
  try {
    await prepareWorkdir(task, deps, workdir)
    if (Object.keys(task.inputs).length > 0) inputsBefore = await snapshotTree(join(workdir, 'inputs'))
    if (task.checkpoint !== undefined) checkpointDir = await prepareCheckpoint(task, deps, workdir)
    env = stepEnv(task, deps.baseEnv ?? inheritedEnv(), workdir, tmpDir, checkpointDir)
    if (task.environment !== undefined) {
      prepared = await deps.environments.prepare(task.environment, { ...signalOpt(deps.signal), ...(deps.onLine !== undefined ? { onLine: deps.onLine } : {}) })
      env = await deps.environments.apply(prepared, workdir, env)
      linkedModules = prepared.nodeModules !== undefined
    }
  } catch (err) {
    await cleanup()
    return failure(err)
  }

  const secrets = Object.values(task.secrets ?? {})
  let note: ((text: string) => void) | undefined
  const saver = checkpointDir === undefined || task.checkpoint === undefined
    ? undefined
    : new CheckpointSaver({
      dir: checkpointDir,
      everyMs: task.checkpoint.everyMs,
      store: deps.store,
      label: checkpointLabel(task),
      adoptLast: !deps.workdirs.keeps,
      ...(task.checkpoint.restore === undefined ? {} : { initial: task.checkpoint.restore.digest }),
      onSaved: ref => { deps.onCheckpoint?.(ref) },
      onProblem: text => { note?.(text) },
      ...(deps.logger === undefined ? {} : { log: deps.logger })
    })
  saver?.start()
  let r
  try {
    r = await runProcess({
      command: task.command,
      cwd: workdir,
      env,
      logFile,
      ...(secrets.length > 0 ? { redact: secrets } : {}),
      ...(task.timeoutMs !== undefined ? { timeoutMs: task.timeoutMs } : {}),
      ...(deps.killGraceMs !== undefined ? { killGraceMs: deps.killGraceMs } : {}),
      ...(deps.maxLogBytes !== undefined ? { maxLogBytes: deps.maxLogBytes } : {}),
      ...(deps.onLine !== undefined ? { onLine: deps.onLine } : {}),
      ...(deps.onStart !== undefined ? { onStart: deps.onStart } : {}),
      ...(deps.trackDir !== undefined ? { trackDir: deps.trackDir } : {}),
      ...(saver !== undefined ? { onNotes: (n: (text: string) => void) => { note = n } } : {}),
      ...signalOpt(deps.signal)
    })
  } catch (err) {
    await saver?.stop()
    await cleanup()
    return failure(err)
  }
  await saver?.stop()

  const base: Partial<AttemptResult> = { exitCode: r.exitCode, ...(r.signal !== null ? { signal: r.signal } : {}) }
  // The log is kept whatever happened: it is what explains a failure.
  logWritten = r.logWritten
  if (r.logWritten) {
    try {
      base.log = await deps.store.ingest(logFile, { label: `log of ${task.runId}/${task.stepId} attempt ${task.attempt}` })
    } catch { /* a log that cannot be stored (a full disk) must not change the step's outcome */ }
  }

  let result: AttemptResult
  if (r.cancelled) {
    result = finish('cancelled', { ...base, error: cancelledError(task) })
  } else if (r.timedOut) {
    result = finish('failed', { ...base, error: wire('TIMEOUT', `${step} exceeded its timeout of ${formatTimeout(task.timeoutMs ?? 0)}; its process tree was killed`) })
  } else if (r.spawnError !== undefined) {
    result = finish('failed', { ...base, error: wire('STEP_FAILED', `${step} ${r.spawnError}`) })
  } else if (r.exitCode !== 0) {
    const how = r.exitCode !== null ? `exited with code ${r.exitCode}` : `was killed by signal ${r.signal ?? 'unknown'}`
    const tail = r.stderrTail.length > 0 ? `; last lines of stderr:\n${r.stderrTail.map(l => `  ${l}`).join('\n')}` : ' (nothing on stderr)'
    const hint = r.signal === 'SIGKILL' ? 'SIGKILL from outside pipemesh is often the out-of-memory killer' : undefined
    result = finish('failed', { ...base, error: wire('STEP_FAILED', `${step} ${how}${tail}`, hint) })
  } else {
    result = await collect(task, deps, workdir, inputsBefore, base, finish)
  }
  if (saver !== undefined && result.status !== 'succeeded') {
    // Where the step got to, for the next attempt: more recent than the last periodic save.
    const last = await saver.finish()
    if (last !== undefined) result = { ...result, checkpoint: last }
  }
  // The outcome is final: whoever waits for it need not also wait for the directories to go.
  deps.onResult?.(result)
  await cleanup()
  return result
}

/**
 * Fills the working directory (an empty one from the pool, or none yet when the step has code):
 * the code snapshot materialized as the directory itself, then inputs/ (when the step has inputs)
 * and outputs/ (when it declares outputs). Empty directories are made synchronously: a mkdir
 * takes ~0.05 ms here, where a round trip through the thread pool added ~1.2 ms to every step of
 * a chain.
 */
async function prepareWorkdir (task: Task, deps: AttemptDeps, workdir: string): Promise<void> {
  if (task.code !== undefined) {
    // The pool gave a path nothing was ever at (and cleared a kept one): materialize makes it.
    await materializeRepairing(deps, CODE_SOURCE, task.code, workdir, signalOpt(deps.signal))
    for (const name of RESERVED) {
      if (existsSync(join(workdir, name))) {
        throw new PipemeshError('INVALID_ARGUMENT', `step "${task.stepId}": its code has "${name}" at the top level, a name reserved for the step's ${name}; rename or move it`)
      }
    }
  }
  if (task.outputs.length > 0) mkdirSync(join(workdir, 'outputs'))
  const names = Object.keys(task.inputs)
  if (names.length === 0) return
  const inputs = join(workdir, 'inputs')
  mkdirSync(inputs)
  for (const name of names) {
    await materializeRepairing(deps, name, (task.inputs[name] as ArtifactRef).digest, join(inputs, name), { ...signalOpt(deps.signal), readOnly: true })
  }
  await chmod(inputs, 0o555)
}

/**
 * Materializes an artifact; when the read finds it damaged (the store has quarantined the bad
 * chunk), has it repaired from other holders and tries once more. A step never sees bad bytes:
 * the store verifies every chunk it writes out.
 */
async function materializeRepairing (deps: AttemptDeps, what: string, digest: Digest, dest: string, options: { signal?: AbortSignal, readOnly?: boolean }): Promise<void> {
  try {
    await deps.store.materialize(digest, dest, options)
  } catch (err) {
    if (deps.repairContent === undefined || deps.signal?.aborted === true || !(err instanceof CorruptContentError || err instanceof MissingContentError)) throw err
    try {
      await deps.repairContent(what, digest)
    } catch (repairErr) {
      const code = repairErr instanceof PipemeshError && (repairErr.code === 'CANCELLED' || repairErr.code === 'LIMIT_EXCEEDED') ? repairErr.code : (err as PipemeshError).code
      throw new PipemeshError(code, `${what === CODE_SOURCE ? 'the code snapshot' : describeSource(what)} (${digest}) is damaged in this agent's store (${(err as Error).message}) and could not be fetched again: ${(repairErr as Error).message}`, { cause: repairErr })
    }
    await deps.store.materialize(digest, dest, options)
  }
}

/**
 * Makes the step's checkpoint directory: the save to resume from, restored writable, or an empty
 * directory. Returns its absolute path.
 */
async function prepareCheckpoint (task: Task, deps: AttemptDeps, workdir: string): Promise<string> {
  const checkpoint = task.checkpoint!
  // Checked by the coordinator's validation; checked again here, where it becomes a path.
  if (isAbsolute(checkpoint.path) || checkpoint.path.split('/').some(p => p === '..' || p === '' || p === '.')) {
    throw new PipemeshError('INVALID_ARGUMENT', `step "${task.stepId}": checkpoint directory "${checkpoint.path}" is not a plain relative path inside the working directory`)
  }
  const dir = join(workdir, checkpoint.path)
  if (existsSync(dir)) throw new PipemeshError('INVALID_ARGUMENT', `step "${task.stepId}": its code has "${checkpoint.path}", the step's checkpoint directory; keep the checkpoint directory apart from the code`)
  mkdirSync(dirname(dir), { recursive: true })
  if (checkpoint.restore === undefined) mkdirSync(dir)
  else if (checkpoint.restore.kind !== 'tree') throw new PipemeshError('INVALID_ARGUMENT', `step "${task.stepId}": the checkpoint to restore (${checkpoint.restore.digest}) is a file, not a directory`)
  else await materializeRepairing(deps, CHECKPOINT_SOURCE, checkpoint.restore.digest, dir, signalOpt(deps.signal))
  return dir
}

type Finish = (status: AttemptResult['status'], extra?: Partial<AttemptResult>) => AttemptResult

/** After exit 0: checks the inputs were left alone, then stores each declared output. */
async function collect (task: Task, deps: AttemptDeps, workdir: string, inputsBefore: Map<string, string> | undefined, base: Partial<AttemptResult>, finish: Finish): Promise<AttemptResult> {
  const step = `step "${task.stepId}"`
  if (inputsBefore !== undefined) {
    // Permission bits do not stop a step running as root (or one that chmods): compare instead.
    const changed = diffTrees(inputsBefore, await snapshotTree(join(workdir, 'inputs')))
    if (changed.length > 0) {
      return finish('failed', { ...base, error: wire('STEP_FAILED', `${step} modified its read-only inputs (${changed.slice(0, 5).map(p => `inputs/${p}`).join(', ')}${changed.length > 5 ? ', …' : ''}); write results to outputs/ instead`) })
    }
  }
  const missing: string[] = []
  const found: Array<{ name: string, path: string, linked: boolean }> = []
  for (const name of task.outputs) {
    const path = join(workdir, 'outputs', name)
    const st = await lstat(path).catch(() => undefined)
    if (st === undefined) { missing.push(name); continue }
    if (!st.isSymbolicLink()) { found.push({ name, path, linked: false }); continue }
    // A link to something the step wrote elsewhere in its workdir is stored as that content.
    const target = await realpath(path).catch(() => undefined)
    const root = await realpath(workdir)
    if (target === undefined) { missing.push(name); continue }
    if (target !== root && !target.startsWith(root + sep)) {
      return finish('failed', { ...base, error: wire('UNSAFE_PATH', `${step}: output "${name}" is a link to ${target}, outside the step's working directory`) })
    }
    found.push({ name, path: target, linked: true })
  }
  if (missing.length > 0) {
    const list = missing.map(n => `"${n}" (expected at outputs/${n})`).join(', ')
    return finish('failed', { ...base, error: wire('MISSING_OUTPUT', `${step} exited 0 but did not write its declared output${missing.length > 1 ? 's' : ''} ${list}`) })
  }
  const outputs: Record<string, ArtifactRef> = {}
  // The working directory goes once the attempt is over, so its outputs are moved into the store,
  // not copied (unless it is kept for debugging). An output that is a link may point into
  // another output: those are stored first, by copy, before what they point at is moved away.
  const adopt = !deps.workdirs.keeps
  found.sort((a, b) => Number(b.linked) - Number(a.linked))
  try {
    for (const { name, path, linked } of found) {
      const progress = storingProgress(name, deps)
      outputs[name] = await deps.store.ingest(path, { ...signalOpt(deps.signal), label: `${task.runId}/${task.stepId}/${name}`, adopt: adopt && !linked, ...progress.options })
      progress.done(outputs[name].size)
    }
  } catch (err) {
    if (deps.signal?.aborted === true) return finish('cancelled', { ...base, error: cancelledError(task) })
    const w = toWireError(err)
    // The store's generic hint names its setting; here the limit is the agent's own option.
    if (w.code === 'LIMIT_EXCEEDED' && w.message.includes('artifact size limit')) w.hint = "the agent's --max-artifact-size refused it: write a smaller output or run the step on an agent with a larger limit"
    return finish('failed', { ...base, error: { ...w, message: `${step}: storing its outputs failed: ${w.message}` } })
  }
  return finish('succeeded', { ...base, outputs })
}

/**
 * Reports the progress of storing one output through deps.onStoring (see there): silent for the
 * usual small, quick output, so that a step costs no extra messages.
 */
function storingProgress (output: string, deps: AttemptDeps): { options: { onProgress?: (bytes: number) => void, onScanned?: (bytes: number) => void }, done: (size: number) => void } {
  const onStoring = deps.onStoring
  if (onStoring === undefined) return { options: {}, done: () => {} }
  const every = deps.progressMs ?? FETCH_PROGRESS_MS
  const started = performance.now()
  let reportedAt = started
  let reported = false
  let total = 0
  return {
    options: {
      onScanned: bytes => { total = bytes },
      onProgress: bytes => {
        const now = performance.now()
        if (now - reportedAt < every) return
        reportedAt = now
        reported = true
        onStoring({ output, bytes, totalBytes: Math.max(total, bytes), elapsedMs: Math.round(now - started), done: false })
      }
    },
    done: size => {
      if (reported || size >= STORING_REPORT_BYTES) onStoring({ output, bytes: size, totalBytes: size, elapsedMs: Math.round(performance.now() - started), done: true })
    }
  }
}

function unsafeNames (task: Task): string | undefined {
  const checks: Array<[string, string]> = [['run id', task.runId], ['step id', task.stepId], ['attempt id', task.attemptId]]
  for (const n of Object.keys(task.inputs)) checks.push(['input name', n])
  for (const n of task.outputs) checks.push(['output name', n])
  for (const [what, value] of checks) {
    if (value === '' || value === '.' || value === '..' || /[/\\\0]/.test(value)) {
      return `${what} ${JSON.stringify(value)} cannot be used as a file name`
    }
  }
  return undefined
}

function cancelledError (task: Task): WireError {
  return wire('CANCELLED', `step "${task.stepId}" attempt ${task.attempt} was cancelled; its process tree was killed`)
}

function wire (code: WireError['code'], message: string, hint?: string): WireError {
  return toWireError(new PipemeshError(code, message, hint === undefined ? {} : { hint }))
}

function signalOpt (signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal === undefined ? {} : { signal }
}

/** `10m`, `1h30m`, `45s`, `1500ms`: the way a timeout is written in a pipeline file. */
export function formatTimeout (ms: number): string {
  if (ms % 1000 !== 0) return `${ms}ms`
  let s = ms / 1000
  const parts: string[] = []
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (s >= size) { parts.push(`${Math.floor(s / size)}${unit}`); s %= size }
  }
  if (s > 0 || parts.length === 0) parts.push(`${s}s`)
  return parts.join('')
}
