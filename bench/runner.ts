// How a workload asks pipemesh to run a pipeline. The workloads only see `PipemeshVariant`, so the
// same W1–W6 run in embedded mode (implemented here) and, next, through a running coordinator
// and two agents (issue 3: add a `mesh` variant whose session starts the daemons and reports
// their start-up in `startupMs`, and whose `run` passes `--coordinator`).

import { mkdtemp, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { RunSummary, StepSummary } from '../src/run/types.js'
import { timed } from './exec.js'

export const CLI = fileURLToPath(new URL('../cli/main.js', import.meta.url))

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
  session: (scratch: string) => Promise<PipemeshSession>
}

const RUN_TIMEOUT_MS = 180_000

export async function runCli (args: readonly string[], options: { signal?: AbortSignal } = {}): Promise<PipemeshRun> {
  const result = await timed(process.execPath, [CLI, ...args], { timeoutMs: RUN_TIMEOUT_MS, ...options.signal === undefined ? {} : { signal: options.signal } })
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
  async session (scratch) {
    const data = await mkdtemp(join(scratch, 'data-'))
    return {
      startupMs: 0,
      run: async (file, options = {}) => {
        const params = Object.entries(options.params ?? {}).flatMap(([k, v]) => ['--param', `${k}=${v}`])
        return await runCli(['--data', data, 'run', file, '--json', ...params], options)
      },
      close: async () => { await rm(data, { recursive: true, force: true }) }
    }
  }
}

export function variantByName (name: string): PipemeshVariant {
  if (name === 'embedded') return embeddedVariant
  if (name === 'mesh') {
    throw new Error('the mesh variant (coordinator + two agents, issue 3) is not implemented yet: add it in bench/runner.ts')
  }
  throw new Error(`unknown --variant "${name}": expected embedded or mesh`)
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
