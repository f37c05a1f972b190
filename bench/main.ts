// `npm run bench`: the workloads of shared/bench-workloads.md, each measured several times for
// pipemesh (embedded, and through a running coordinator and two agents) and its baselines
// (make -j2, cp, raw TCP, node:tls) in the same run, printed as a table of medians, ranges and
// ratios, then the issues' targets as PASS/MISS. Workloads run one after the other: the machine
// has 2 cores and any overlap would skew both sides.

import '../src/util/polyfill.js'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import os from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { timed } from './exec.js'
import type { MeshStartup } from './mesh.js'
import { CLI, createMeshVariant, embeddedVariant, type MeshVariant, type PipemeshVariant } from './runner.js'
import { fmt, ratio, renderTable, renderTargets, summarize, type Row, type Target } from './stats.js'
import { benchStore } from './store.js'
import { benchTransfer } from './transfer.js'
import { benchChain, benchDiamond, benchFanout, benchStartup, type CheckResults, type WorkloadContext, type WorkloadResult } from './workloads.js'

const ALL = ['W0', 'W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'S1', 'T1'] as const
type Id = typeof ALL[number]

const USAGE = `usage: npm run bench -- [--variant both|embedded|mesh] [--reps N] [--only W1,W3,T1] [--size-mib N] [--json] [--cpu-prof DIR]
  --variant NAME  which pipemesh to measure (default both):
                    embedded  pipemesh run FILE (coordinator + agent inside the CLI, issue 2)
                    mesh      pipemesh run FILE --coordinator URL against a coordinator and two
                              agents (one slot each, agent-a with a declared GPU) started once per
                              session and warmed up; their start-up is its own row (issue 3).
                              T1 adds agent to agent over libp2p, with the agents' peak RSS.
                    both      the two, rep by rep, next to the same baselines
  --reps N        repetitions of each workload (default 3)
  --only LIST     workloads to run, from ${ALL.join(',')} (default all; W4–W6 also run W3
                  first, unreported). S1 is the store alone (same for both variants).
  --size-mib N    size of the S1 file and the T1 transfer (default 1024)
  --json          print machine-readable results on stdout (progress stays on stderr)
  --cpu-prof DIR  write V8 CPU profiles of the mesh daemons (coordinator, agents, launchers) to
                  DIR (node --cpu-prof for them only; slows them down)
Baselines, measured in the same run: GNU make -j2 (W0–W6), cp (S1), raw TCP and node:tls (T1;
with the mesh, also one bare libp2p stream: the agents' transport without their store).
A full default run (both variants, 3 reps, 1 GiB) takes about 8 minutes on 2 quiet cores, 15 when loaded.`

interface Options { reps: number, only: Set<Id>, json: boolean, bytes: number, variants: PipemeshVariant[], mesh?: MeshVariant, daemonNodeArgs?: string[] }

function parseOptions (): Options {
  const { values } = parseArgs({
    options: {
      reps: { type: 'string', default: '3' },
      only: { type: 'string' },
      json: { type: 'boolean', default: false },
      'size-mib': { type: 'string', default: '1024' },
      variant: { type: 'string', default: 'both' },
      'cpu-prof': { type: 'string' },
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
  const variant = values.variant ?? 'both'
  if (!['both', 'embedded', 'mesh'].includes(variant)) throw new Error(`unknown --variant "${variant}": expected both, embedded or mesh`)
  const profDir = values['cpu-prof']
  const daemonNodeArgs = profDir === undefined ? undefined : ['--cpu-prof', `--cpu-prof-dir=${resolve(profDir)}`]
  const mesh = variant === 'embedded' ? undefined : createMeshVariant(daemonNodeArgs === undefined ? {} : { daemonNodeArgs })
  const variants = [...variant === 'mesh' ? [] : [embeddedVariant], ...mesh === undefined ? [] : [mesh]]
  return {
    reps, only, json: values.json === true, bytes: mib * 1024 * 1024, variants,
    ...mesh === undefined ? {} : { mesh },
    ...daemonNodeArgs === undefined ? {} : { daemonNodeArgs }
  }
}

interface TargetSpec {
  text: string
  /** The figure compared: a row's median, or its ratio against its baseline. */
  row?: { workload: string, system: string, metric: string, ratio?: boolean }
  /** Or a correctness check of a workload ("W5", "W1 gpu"), for the system of the target list. */
  check?: string
  /** What of the row's samples is compared (default its median). */
  stat?: 'median' | 'max'
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
    { text: 'S1 peak RSS < 300 MB', row: { workload: 'S1 store', system: 'pipemesh', metric: 'peak RSS' }, op: '<', limit: 300, unit: 'MB' }
  ]
}

/** Issue 3's targets: the mesh (coordinator + two agents already running) on this 2-core machine. */
function meshTargets (label: string, t1: string): TargetSpec[] {
  return [
    { text: 'W1 >= 611 steps/s (Dask distributed here)', row: { workload: 'W1 fanout', system: label, metric: 'steps/s' }, op: '>=', limit: 611, unit: 'steps/s' },
    { text: 'W1: all 50 GPU steps on the GPU agent', check: 'W1 gpu' },
    { text: 'W2 <= 4 ms/step (Dask: 6.1)', row: { workload: 'W2 chain', system: label, metric: 'ms/step' }, op: '<=', limit: 4, unit: 'ms/step' },
    { text: 'W4 <= 0.25 s (whole CLI)', row: { workload: 'W4 rerun-nochange', system: label, metric: 'wall' }, op: '<=', limit: 0.25, unit: 's' },
    { text: 'W5 runs exactly mid_2 and join', check: 'W5' },
    { text: 'W6 runs mid_2, reuses join', check: 'W6' },
    { text: 'T1 >= 400 MiB/s agent to agent', row: { workload: t1, system: label, metric: 'rate' }, op: '>=', limit: 400, unit: 'MiB/s' },
    { text: 'T1 >= 0.35x node:tls', row: { workload: t1, system: label, metric: 'rate', ratio: true }, op: '>=', limit: 0.35, unit: 'x node:tls' },
    { text: 'T1 each agent < 200 MB RSS (max)', row: { workload: t1, system: label, metric: 'peak RSS' }, stat: 'max', op: '<', limit: 200, unit: 'MB' }
  ]
}

function evaluate (specs: readonly TargetSpec[], system: string, rows: readonly Row[], results: CheckResults): Target[] {
  const checks = results[system] ?? {}
  const targets: Target[] = []
  for (const spec of specs) {
    if (spec.check !== undefined) {
      const ok = checks[spec.check]
      targets.push({ id: spec.check.split(' ')[0] ?? spec.check, text: spec.text, measured: ok === undefined ? 'not run' : ok ? 'every rep' : 'not in every rep', pass: ok })
      continue
    }
    const sel = spec.row!
    const row = rows.find(r => r.workload === sel.workload && r.system === sel.system && r.metric === sel.metric)
    const value = row === undefined ? undefined : sel.ratio === true ? ratio(rows, row) : summarize(row.samples)[spec.stat ?? 'median']
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

/** The mesh daemons' start-up, one sample per session (W0–W6 reps), as its own rows. */
function startupRows (label: string, startups: readonly MeshStartup[]): Row[] {
  if (startups.length === 0) return []
  const workload = 'M0 mesh start-up'
  return [
    { workload, system: label, metric: 'daemons ready', unit: 's', better: 'lower', samples: startups.map(s => s.daemonsMs / 1000), note: 'spawn coordinator, 2 join tokens, spawn 2 agents, until both connected' },
    { workload, system: label, metric: 'warm-up run', unit: 's', better: 'lower', samples: startups.map(s => s.warmupMs / 1000), note: 'then one pipemesh run of 2 steps (one per agent: starts their step launchers); the workload starts after it' }
  ]
}

async function main (): Promise<number> {
  const options = parseOptions()
  const log = (line: string): void => { process.stderr.write(line + '\n') }
  const labels = options.variants.map(v => v.label)
  const wantsPipemesh = [...options.only].some(id => id.startsWith('W')) || (options.mesh !== undefined && options.only.has('T1'))
  if (wantsPipemesh && !existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`)
  const info = await machine()
  log(`pipemesh bench: ${options.reps} reps, ${[...options.only].join(',')}, ${labels.join(' and ')}; ${info.cores} x ${info.cpu}, node ${info.node}, ${info.make}, load ${info.loadAvg1m}`)

  const scratch = await mkdtemp(join(os.tmpdir(), 'pipemesh-bench-'))
  // Daemons are killed by mesh.ts's exit hook; the scratch directory goes here.
  const onSignal = (): void => { void rm(scratch, { recursive: true, force: true }).finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  // The machine is shared: the load during the run says how far to trust the figures.
  const loads: number[] = [os.loadavg()[0] ?? 0]
  const loadTimer = setInterval(() => { loads.push(os.loadavg()[0] ?? 0) }, 10_000)
  loadTimer.unref()
  const rows: Row[] = []
  const failures: string[] = []
  const checks: CheckResults = {}
  const ctx: WorkloadContext = { scratch, reps: options.reps, variants: options.variants, log }
  const collect = async (what: string, fn: () => Promise<{ rows: Row[], failures: string[], checksOk?: WorkloadResult['checksOk'] }>): Promise<void> => {
    try {
      const r = await fn()
      rows.push(...r.rows)
      failures.push(...r.failures)
      for (const [system, c] of Object.entries(r.checksOk ?? {})) checks[system] = { ...checks[system], ...c }
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
    if (options.only.has('T1')) {
      const transfer = { mesh: options.mesh !== undefined, ...options.daemonNodeArgs === undefined ? {} : { daemonNodeArgs: options.daemonNodeArgs } }
      await collect('T1', async () => await benchTransfer(scratch, options.reps, options.bytes, log, transfer))
    }
  } finally {
    clearInterval(loadTimer)
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
    await rm(scratch, { recursive: true, force: true })
  }
  loads.push(os.loadavg()[0] ?? 0)
  if (options.mesh !== undefined) rows.unshift(...startupRows(options.mesh.label, options.mesh.startups))
  const totalS = (performance.now() - started) / 1000
  const t1 = `T1 transfer ${options.bytes / 1024 / 1024} MiB`
  const targetLists: Array<{ title: string, targets: Target[] }> = []
  if (labels.includes(embeddedVariant.label)) {
    targetLists.push({ title: 'Targets (issue 2, embedded mode, 2 cores):', targets: evaluate(embeddedTargets(embeddedVariant.label), embeddedVariant.label, rows, checks) })
  }
  if (options.mesh !== undefined) {
    targetLists.push({ title: 'Targets (issue 3, the mesh: coordinator + 2 agents already running, 2 cores):', targets: evaluate(meshTargets(options.mesh.label, t1), options.mesh.label, rows, checks) })
  }
  const load = summarize(loads)

  if (options.json) {
    const out = {
      machine: info,
      reps: options.reps,
      variants: labels,
      totalSeconds: totalS,
      loadAverage1m: { median: load.median, max: load.max, samples: loads },
      rows: rows.map(r => ({ ...r, ...summarize(r.samples), ratio: ratio(rows, r) ?? null })),
      targets: Object.fromEntries(targetLists.map(l => [l.title, l.targets])),
      failures
    }
    process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  } else {
    const lines = [
      '',
      `pipemesh benchmarks — ${info.cores} x ${info.cpu}, ${info.memoryGiB} GiB, node ${info.node}, ${info.make}`,
      `${options.reps} reps each; median, min–max; ratio = median ÷ the baseline's median (same run). ${totalS.toFixed(0)} s in all;`,
      `load average (1 min) ${info.loadAvg1m} at the start, ${loads.at(-1)?.toFixed(2) ?? '?'} at the end, median ${load.median.toFixed(2)} and max ${load.max.toFixed(2)} during the run (${info.cores} cores).`,
      '',
      renderTable(rows),
      ''
    ]
    for (const list of targetLists) lines.push(list.title, renderTargets(list.targets), '')
    lines.push('Notes: W0 is the fixed cost of one CLI invocation (embedded: start coordinator + agent, libp2p on loopback, exit;',
      '  mesh: the CLI alone, talking HTTP to daemons already running). Mesh daemons (M0) start outside the timings: once per',
      '  workload for W0–W2, whose first run after the start is rep 0 (its own "1st run" row), followed by untimed runs until',
      '  1000 steps have run since the start (at most 10 runs), then the reps; and once per rep for W3–W6 (W3 is the first run after the start).',
      'S1: the source file is in the page cache for cp and the store alike (dropping caches needs root); sync runs between measurements.')
    if (options.mesh !== undefined && options.only.has('T1')) {
      lines.push('T1 mesh: the fetch time is agent-b\'s own report of it (the run\'s \'fetch\' event: first request to last chunk stored and',
        '  verified); "rate to step start" counts from the step\'s placement (coordinator) to its process\'s first line (`date`).',
        '  The daemons start once for T1; the first transfer after the start is rep 0 (its own "1st transfer" row), then the reps.')
    }
    if (failures.length > 0) lines.push('', 'Failures:', ...failures.map(f => `  ${f}`))
    process.stdout.write(lines.join('\n') + '\n')
  }
  return failures.length === 0 ? 0 : 1
}

main().then(code => { process.exitCode = code }, (err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exitCode = 2
})
