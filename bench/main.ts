// `npm run bench`: the workloads of shared/bench-workloads.md, each measured several times for
// pipemesh and its baselines (make -j2, cp, raw TCP, node:tls) in the same run, printed as a table
// of medians, ranges and ratios, then the issues' targets as PASS/MISS. Workloads run one after
// the other: the machine has 2 cores and any overlap would skew both sides.

import '../src/util/polyfill.js'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { timed } from './exec.js'
import { CLI, variantByName, type PipemeshVariant } from './runner.js'
import { fmt, ratio, renderTable, renderTargets, summarize, type Row, type Target } from './stats.js'
import { benchStore } from './store.js'
import { benchTransfer } from './transfer.js'
import { benchChain, benchDiamond, benchFanout, benchStartup, type WorkloadContext, type WorkloadId, type WorkloadResult } from './workloads.js'

const ALL = ['W0', 'W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'S1', 'T1'] as const
type Id = typeof ALL[number]

const USAGE = `usage: npm run bench -- [--reps N] [--only W1,W3,S1] [--json] [--size-mib N] [--variant embedded|mesh]
  --reps N        repetitions of each workload (default 5)
  --only LIST     workloads to run, from ${ALL.join(',')} (W4–W6 also run W3 first, unreported)
  --json          print machine-readable results on stdout (progress stays on stderr)
  --size-mib N    size of the S1 file and the T1 transfer (default 1024)
  --variant NAME  embedded (pipemesh run with no coordinator) or mesh (issue 3, not yet built)`

interface Options { reps: number, only: Set<Id>, json: boolean, bytes: number, variant: PipemeshVariant }

function parseOptions (): Options {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '5' },
      only: { type: 'string' },
      json: { type: 'boolean', default: false },
      'size-mib': { type: 'string', default: '1024' },
      variant: { type: 'string', default: 'embedded' },
      help: { type: 'boolean', short: 'h', default: false }
    }
  })
  if (values.help === true) { process.stdout.write(USAGE + '\n'); process.exit(0) }
  const reps = Number(values.reps)
  if (!Number.isInteger(reps) || reps < 1) throw new Error(`--reps must be a whole number >= 1, got ${values.reps ?? ''}`)
  const mib = Number(values['size-mib'])
  if (!Number.isInteger(mib) || mib < 1) throw new Error(`--size-mib must be a whole number >= 1, got ${values['size-mib'] ?? ''}`)
  const only = new Set<Id>()
  for (const raw of (values.only ?? ALL.join(',')).split(',')) {
    const id = raw.trim().toUpperCase()
    if (!(ALL as readonly string[]).includes(id)) throw new Error(`--only: unknown workload "${raw}", expected some of ${ALL.join(',')}`)
    only.add(id as Id)
  }
  return { reps, only, json: values.json === true, bytes: mib * 1024 * 1024, variant: variantByName(values.variant ?? 'embedded') }
}

interface TargetSpec {
  text: string
  /** The figure compared: a row's median, or its ratio against its baseline. */
  row?: { workload: string, system: string, metric: string, ratio?: boolean }
  /** Or a correctness check of a workload. */
  check?: WorkloadId
  op?: '>=' | '<=' | '<'
  limit?: number
  unit?: string
}

/** Issue 2's targets (embedded mode, this 2-core machine). Issue 3's for the mesh go in their own list. */
function embeddedTargets (label: string): TargetSpec[] {
  return [
    { text: 'W1 >= 500 steps/s', row: { workload: 'W1 fanout', system: label, metric: 'steps/s' }, op: '>=', limit: 500, unit: 'steps/s' },
    { text: 'W2 <= 5 ms/step', row: { workload: 'W2 chain', system: label, metric: 'ms/step' }, op: '<=', limit: 5, unit: 'ms/step' },
    { text: 'W4 <= 0.6 s (whole CLI)', row: { workload: 'W4 rerun-nochange', system: label, metric: 'wall' }, op: '<=', limit: 0.6, unit: 's' },
    { text: 'W5 runs exactly mid_2 and join', check: 'W5' },
    { text: 'W6 runs mid_2, reuses join', check: 'W6' },
    { text: 'S1 ingest >= 50% of cp rate', row: { workload: 'S1 store', system: label, metric: 'ingest', ratio: true }, op: '>=', limit: 0.5, unit: 'x cp' },
    { text: 'S1 peak RSS < 300 MB', row: { workload: 'S1 store', system: label, metric: 'peak RSS' }, op: '<', limit: 300, unit: 'MB' }
  ]
}

function evaluate (specs: readonly TargetSpec[], rows: readonly Row[], checks: Partial<Record<WorkloadId, boolean>>): Target[] {
  const targets: Target[] = []
  for (const spec of specs) {
    if (spec.check !== undefined) {
      const ok = checks[spec.check]
      targets.push({ id: spec.check, text: spec.text, measured: ok === undefined ? 'not run' : ok ? 'every rep' : 'not in every rep', pass: ok })
      continue
    }
    const sel = spec.row!
    const row = rows.find(r => r.workload === sel.workload && r.system === sel.system && r.metric === sel.metric)
    const value = row === undefined ? undefined : sel.ratio === true ? ratio(rows, row) : summarize(row.samples).median
    const id = sel.workload.split(' ')[0] ?? sel.workload
    if (value === undefined || !Number.isFinite(value)) {
      targets.push({ id, text: spec.text, measured: 'not measured', pass: undefined })
      continue
    }
    const pass = spec.op === '>=' ? value >= spec.limit! : spec.op === '<=' ? value <= spec.limit! : value < spec.limit!
    targets.push({ id, text: spec.text, measured: `${fmt(value)} ${spec.unit ?? ''}`.trim(), pass })
  }
  return targets
}

async function machine (): Promise<Record<string, string | number>> {
  const make = await timed('make', ['--version']).catch(() => undefined)
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    make: make?.stdout.split('\n')[0] ?? 'not found',
    loadAvg1m: Number(os.loadavg()[0]?.toFixed(2) ?? 0),
    date: new Date().toISOString()
  }
}

async function main (): Promise<number> {
  const options = parseOptions()
  const log = (line: string): void => { process.stderr.write(line + '\n') }
  const wantsPipemesh = [...options.only].some(id => id.startsWith('W'))
  if (wantsPipemesh && !existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`)
  const info = await machine()
  log(`pipemesh bench: ${options.reps} reps, ${[...options.only].join(',')}, variant ${options.variant.label}; ${info.cores} x ${info.cpu}, node ${info.node}, ${info.make}`)

  const scratch = await mkdtemp(join(os.tmpdir(), 'pipemesh-bench-'))
  const onSignal = (): void => { void rm(scratch, { recursive: true, force: true }).finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  const rows: Row[] = []
  const failures: string[] = []
  const checks: Partial<Record<WorkloadId, boolean>> = {}
  const ctx: WorkloadContext = { scratch, reps: options.reps, variant: options.variant, log }
  const collect = async (what: string, fn: () => Promise<{ rows: Row[], failures: string[], checksOk?: WorkloadResult['checksOk'] }>): Promise<void> => {
    try {
      const r = await fn()
      rows.push(...r.rows)
      failures.push(...r.failures)
      Object.assign(checks, r.checksOk ?? {})
    } catch (err) {
      failures.push(`${what}: ${(err as Error).message}`)
      log(`${what} aborted: ${(err as Error).message}`)
    }
  }
  const started = performance.now()
  try {
    if (options.only.has('W0')) await collect('W0', async () => await benchStartup(ctx))
    if (options.only.has('W1')) await collect('W1', async () => await benchFanout(ctx))
    if (options.only.has('W2')) await collect('W2', async () => await benchChain(ctx))
    const diamond = (['W3', 'W4', 'W5', 'W6'] as const).filter(id => options.only.has(id))
    if (diamond.length > 0) await collect('W3-W6', async () => await benchDiamond(ctx, new Set(diamond)))
    if (options.only.has('S1')) await collect('S1', async () => await benchStore(scratch, options.reps, options.bytes, log))
    if (options.only.has('T1')) await collect('T1', async () => await benchTransfer(scratch, options.reps, options.bytes, log))
  } finally {
    process.off('SIGINT', onSignal)
    await rm(scratch, { recursive: true, force: true })
  }
  const totalS = (performance.now() - started) / 1000
  const targets = options.variant.label === 'pipemesh' ? evaluate(embeddedTargets(options.variant.label), rows, checks) : []

  if (options.json) {
    const out = {
      machine: info,
      reps: options.reps,
      variant: options.variant.label,
      totalSeconds: totalS,
      rows: rows.map(r => ({ ...r, ...summarize(r.samples), ratio: ratio(rows, r) ?? null })),
      targets,
      failures
    }
    process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  } else {
    const lines = [
      '',
      `pipemesh benchmarks — ${info.cores} x ${info.cpu}, ${info.memoryGiB} GiB, node ${info.node}, ${info.make}`,
      `${options.reps} reps each; median, min–max; ratio = median ÷ the baseline's median (same run). ${totalS.toFixed(0)} s in all;`,
      `load average (1 min) ${info.loadAvg1m} at the start, ${os.loadavg()[0]?.toFixed(2) ?? '?'} at the end.`,
      '',
      renderTable(rows),
      ''
    ]
    if (targets.length > 0) lines.push('Targets (issue 2, embedded mode, 2 cores):', renderTargets(targets), '')
    lines.push('Notes: W0 is the fixed cost of one CLI invocation (start coordinator + agent, libp2p on loopback, exit).',
      'S1: the source file is in the page cache for cp and the store alike (dropping caches needs root); sync runs between measurements.')
    if (failures.length > 0) lines.push('', 'Failures:', ...failures.map(f => `  ${f}`))
    process.stdout.write(lines.join('\n') + '\n')
  }
  return failures.length === 0 ? 0 : 1
}

main().then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 2
})
