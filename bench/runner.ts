// How a workload asks pipemesh to run a pipeline. The workloads only see `PipemeshVariant`, so the
// same W0–W6 run in embedded mode (`pipemesh run` alone) and through a running coordinator and
// two agents (`pipemesh run --coordinator URL`), whose session starts the daemons once and
// records their start-up apart from the runs.

import { mkdtemp } from 'node:fs/promises'
import { join } from 'node:path'
import type { RunSummary, StepSummary } from '../src/run/types.js'
import { CLI, timed } from './exec.js'
import { GPU_AGENT, startMesh, type MeshStartup } from './mesh.js'
import { discard } from './scratch.js'

export { CLI }

/** One pipemesh invocation as the user sees it: the whole command, start to exit. */
export interface PipemeshRun {
  ms: number
  exitCode: number | null
  summary?: RunSummary
  /** Why there is no summary, or the stderr tail of a failed run. */
  error?: string
}

/** State that starts empty (no run records, no reuse entries, empty store) and is reused across runs. */
export interface PipemeshSession {
  /** Daemon start-up, reported separately; 0 where start-up is part of each run (embedded). */
  readonly startupMs: number
  run: (pipelineFile: string, options?: { params?: Record<string, string>, signal?: AbortSignal }) => Promise<PipemeshRun>
  close: () => Promise<void>
}

export interface PipemeshVariant {
  /** Shown as the system name in the table: "pipemesh", "pipemesh mesh". */
  readonly label: string
  /** Also marks, for W1, that every 10th step needs `gpu: 1` (mesh only). */
  readonly gpuSteps: boolean
  /** The agent that must run every `gpu: 1` step (mesh only). */
  readonly gpuAgent?: string
  /** Most steps that may run at once (the workloads' rule: 2 on this 2-core machine). */
  readonly maxParallel: number
  /**
   * Its runs go to daemons that outlive them (the mesh): a workload of W0–W2 keeps one session for
   * all its reps, as a mesh already running would, and times its first run apart.
   */
  readonly daemons: boolean
  session: (scratch: string) => Promise<PipemeshSession>
}

/** The mesh variant also keeps the start-up of every session it made, for its own table row. */
export interface MeshVariant extends PipemeshVariant {
  readonly startups: MeshStartup[]
}

const RUN_TIMEOUT_MS = 180_000

export async function runCli (args: readonly string[], options: { signal?: AbortSignal, env?: NodeJS.ProcessEnv } = {}): Promise<PipemeshRun> {
  // Through the bin, as users run it (its shell line sets the malloc threshold, then execs node).
  const result = await timed(CLI, args, {
    timeoutMs: RUN_TIMEOUT_MS,
    ...options.signal === undefined ? {} : { signal: options.signal },
    ...options.env === undefined ? {} : { env: options.env }
  })
  const run: PipemeshRun = { ms: result.ms, exitCode: result.code }
  try {
    // The summary is the JSON document on stdout; anything printed before it is skipped.
    const start = result.stdout.search(/^\{/m)
    run.summary = JSON.parse(result.stdout.slice(Math.max(0, start))) as RunSummary
  } catch {
    run.error = `no JSON summary on stdout (exit ${result.code ?? result.signal ?? '?'})`
  }
  if (result.code !== 0) {
    const tail = condense(result.stderr)
    run.error = `${run.error ?? `exit ${result.code ?? result.signal ?? '?'}`}${tail === '' ? '' : `: ${tail}`}`
  }
  return run
}

/** The gist of a failed CLI's stderr: its error lines (pino JSON reduced to message and cause). */
function condense (stderr: string): string {
  const all = stderr.trim().split('\n').map(l => l.trim()).filter(l => l !== '')
  const errors = all.map(line => {
    if (line.startsWith('{')) {
      try {
        const j = JSON.parse(line) as { level?: number, msg?: string, err?: { message?: string } }
        return (j.level ?? 0) >= 50 ? [j.msg, j.err?.message].filter(x => x !== undefined).join(': ') : undefined
      } catch {}
    }
    return /^(\w*Error\b|error:|pipemesh:)/i.test(line) ? line : undefined
  }).filter((l): l is string => l !== undefined && l !== '')
  const text = [...new Set(errors.length > 0 ? errors.slice(-3) : all.slice(-3))].join(' | ')
  return text.length > 300 ? text.slice(0, 300) + '…' : text
}

/** `pipemesh run` with no --coordinator: coordinator and agent start inside the CLI, state in --data. */
export const embeddedVariant: PipemeshVariant = {
  label: 'pipemesh',
  gpuSteps: false,
  maxParallel: 2,
  daemons: false,
  async session (scratch) {
    const data = await mkdtemp(join(scratch, 'data-'))
    return {
      startupMs: 0,
      run: async (file, options = {}) => {
        return await runCli(['--data', data, 'run', file, '--json', ...paramArgs(options.params)], options)
      },
      close: async () => { await discard(data) }
    }
  }
}

function paramArgs (params: Record<string, string> | undefined): string[] {
  return Object.entries(params ?? {}).flatMap(([k, v]) => ['--param', `${k}=${v}`])
}

/**
 * `pipemesh run FILE --coordinator URL --json` against a coordinator and two agents started once
 * per session (see mesh.ts). `daemonNodeArgs` go to the daemons' node only (e.g. --cpu-prof).
 */
export function createMeshVariant (options: { daemonNodeArgs?: string[] } = {}): MeshVariant {
  const startups: MeshStartup[] = []
  return {
    label: 'pipemesh mesh',
    gpuSteps: true,
    gpuAgent: GPU_AGENT,
    maxParallel: 2,
    daemons: true,
    startups,
    async session (scratch) {
      const root = await mkdtemp(join(scratch, 'mesh-'))
      const mesh = await startMesh(root, {
        ...options.daemonNodeArgs === undefined ? {} : { nodeArgs: options.daemonNodeArgs },
        warmup: async (file, url, env) => {
          const run = await runCli(['run', file, '--coordinator', url, '--json'], { env })
          if (run.summary?.status !== 'succeeded') throw new Error(`the warm-up run failed: ${run.error ?? run.summary?.status ?? '?'}`)
          return run.ms
        }
      })
      startups.push(mesh.startup)
      return {
        startupMs: mesh.startup.daemonsMs + mesh.startup.warmupMs,
        run: async (file, runOptions = {}) => await runCli(['run', file, '--coordinator', mesh.url, '--json', ...paramArgs(runOptions.params)], {
          env: mesh.cliEnv,
          ...runOptions.signal === undefined ? {} : { signal: runOptions.signal }
        }),
        close: async () => {
          await mesh.stop()
          await discard(root)
        }
      }
    }
  }
}

export function variantByName (name: string, options: { daemonNodeArgs?: string[] } = {}): PipemeshVariant {
  if (name === 'embedded') return embeddedVariant
  if (name === 'mesh') return createMeshVariant(options)
  throw new Error(`unknown --variant "${name}": expected embedded, mesh or both`)
}

/** Step id -> status of a run summary. */
export function statuses (run: PipemeshRun): Map<string, StepSummary['status']> {
  return new Map((run.summary?.steps ?? []).map(s => [s.id, s.status]))
}

/** Ids of the steps that executed (status succeeded), sorted. */
export function executed (run: PipemeshRun): string[] {
  return [...statuses(run)].filter(([, s]) => s === 'succeeded').map(([id]) => id).sort()
}

/** Undefined when the run succeeded, with every step in `expected` status; else what differs. */
export function checkRun (run: PipemeshRun, expected: (step: string) => StepSummary['status'], stepCount: number): string | undefined {
  if (run.summary === undefined || run.summary.status !== 'succeeded') {
    return `run ${run.summary?.status ?? 'failed'}${run.error === undefined ? '' : ` (${run.error})`}`
  }
  const seen = statuses(run)
  if (seen.size !== stepCount) return `${seen.size} steps in the summary, expected ${stepCount}`
  const wrong = [...seen].filter(([id, s]) => s !== expected(id))
  if (wrong.length === 0) return undefined
  const shown = wrong.slice(0, 4).map(([id, s]) => `${id} ${s} (expected ${expected(id)})`).join(', ')
  return `${wrong.length} steps not as expected: ${shown}${wrong.length > 4 ? ', …' : ''}`
}

/**
 * Most steps of a run in flight at one moment, from the coordinator's placement (startedAt) and
 * completion (finishedAt) times; at equal times a finish counts before a start.
 */
export function maxConcurrency (run: PipemeshRun): number {
  const events: Array<[number, number]> = []
  for (const s of run.summary?.steps ?? []) {
    if (s.startedAt === undefined || s.finishedAt === undefined) continue
    events.push([s.startedAt, 1], [s.finishedAt, -1])
  }
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let now = 0
  let most = 0
  for (const [, delta] of events) most = Math.max(most, now += delta)
  return most
}

/** Undefined when every step in `steps` ran on `agent`; else how many did not, and where they went. */
export function checkPlacement (run: PipemeshRun, steps: ReadonlySet<string>, agent: string): string | undefined {
  const all = (run.summary?.steps ?? []).filter(s => steps.has(s.id))
  if (all.length !== steps.size) return `${all.length} of the ${steps.size} GPU steps in the summary`
  const elsewhere = all.filter(s => s.agent !== agent)
  if (elsewhere.length === 0) return undefined
  return `${elsewhere.length} of ${steps.size} GPU steps not on ${agent} (${elsewhere.slice(0, 3).map(s => `${s.id} on ${s.agent ?? 'none'}`).join(', ')})`
}
