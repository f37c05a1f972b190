// W0–W6 of shared/bench-workloads.md as pipemesh pipelines and equivalent Makefiles, each rep
// measured for every pipemesh variant asked for (embedded, mesh) and then GNU make -j2 under the
// same conditions. Every run is checked: which steps executed and which were reused, that no more
// than two ran at once, and in the mesh that every GPU step ran on the GPU agent.

import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { runMake } from './baselines.js'
import { checkPlacement, checkRun, maxConcurrency, type PipemeshRun, type PipemeshSession, type PipemeshVariant } from './runner.js'
import type { Row } from './stats.js'
import { discard } from './scratch.js'

export interface WorkloadContext {
  scratch: string
  reps: number
  variants: readonly PipemeshVariant[]
  log: (line: string) => void
}

export type WorkloadId = 'W0' | 'W1' | 'W2' | 'W3' | 'W4' | 'W5' | 'W6'

/** Check name ("W5", "W1 gpu") -> whether it held in every rep, per system label. */
export type CheckResults = Record<string, Record<string, boolean>>

/** Per-rep check results of one row: "ok 5/5", or the count and first failure. */
class Checks {
  private readonly failures: string[] = []
  private count = 0
  add (rep: number, failure: string | undefined): void {
    this.count++
    if (failure !== undefined) this.failures.push(`rep ${rep}: ${failure}`)
  }

  get ok (): boolean { return this.failures.length === 0 && this.count > 0 }
  get all (): readonly string[] { return this.failures }
  toString (): string {
    return this.failures.length === 0 ? `ok ${this.count}/${this.count}` : `FAIL ${this.failures.length}/${this.count}: ${this.failures[0] ?? ''}`
  }
}

export interface WorkloadResult { rows: Row[], failures: string[], checksOk: CheckResults }

function pushIfRan (samples: number[], run: PipemeshRun, value: number): void {
  if (run.exitCode === 0) samples.push(value)
}

/** The run's own check, then the rule that at most `maxParallel` steps ran at once. */
function checkAll (run: PipemeshRun, variant: PipemeshVariant, expected: Parameters<typeof checkRun>[1], stepCount: number): string | undefined {
  const failure = checkRun(run, expected, stepCount)
  if (failure !== undefined) return failure
  const most = maxConcurrency(run)
  return most > variant.maxParallel ? `${most} steps ran at once, more than ${variant.maxParallel}` : undefined
}

/** One variant's samples and checks for one workload. */
interface Side { variant: PipemeshVariant, samples: number[], check: Checks, gpu?: Checks, onGpuAgent?: number[], first?: number[] }

function sides (variants: readonly PipemeshVariant[]): Side[] {
  return variants.map(variant => ({ variant, samples: [], check: new Checks() }))
}

function wallRows (workload: string, pm: readonly Side[], make: number[], makeCheck: Checks, makeNote?: string): Row[] {
  return [
    ...pm.map((side): Row => ({ workload, system: side.variant.label, metric: 'wall', unit: 's', better: 'lower', samples: side.samples, vs: 'make -j2', check: side.check.toString() })),
    { workload, system: 'make -j2', metric: 'wall', unit: 's', better: 'lower', samples: make, check: makeCheck.toString(), ...makeNote === undefined ? {} : { note: makeNote } }
  ]
}

// ---- W0, W1, W2: order-only graphs of `true` steps ------------------------------------------------

interface TrueGraph { name: string, steps: Array<{ id: string, after: string[], gpu?: boolean }>, target: string }

function fanout (n: number, gpuEvery: number | undefined): TrueGraph {
  const steps = Array.from({ length: n }, (_, i) => ({ id: `s${i + 1}`, after: [] as string[], ...gpuEvery !== undefined && (i + 1) % gpuEvery === 0 ? { gpu: true } : {} }))
  return { name: 'bench-w1-fanout', steps: [...steps, { id: 'join', after: steps.map(s => s.id) }], target: 'join' }
}

function chain (n: number): TrueGraph {
  const steps = Array.from({ length: n }, (_, i) => ({ id: `s${i + 1}`, after: i === 0 ? [] : [`s${i}`] }))
  return { name: 'bench-w2-chain', steps, target: `s${n}` }
}

function pipelineYaml (graph: TrueGraph): string {
  const steps: Record<string, unknown> = {}
  for (const s of graph.steps) {
    // cache: false, as in make's phony targets: these steps are all alike (same command, no inputs),
    // so with reuse on, every step after the first would be reused instead of run.
    steps[s.id] = { command: 'true', cache: false, ...s.after.length > 0 ? { after: s.after } : {}, ...s.gpu === true ? { resources: { gpu: 1 } } : {} }
  }
  return stringify({ name: graph.name, steps }, { lineWidth: 0 })
}

function makefile (graph: TrueGraph): string {
  const phony = graph.steps.map(s => s.id).join(' ')
  const rules = graph.steps.map(s => `${s.id}:${s.after.length > 0 ? ' ' + s.after.join(' ') : ''}\n\ttrue\n`)
  return `.PHONY: ${phony}\n${rules.join('')}`
}

/** Steps a mesh's daemons run after their start before a W0–W2 rep is timed (see benchTrueGraph). */
const WARM_STEPS = 1000
/** ...in at most this many runs (W0 has a single step). */
const MAX_WARM_RUNS = 10

/** `graphFor(true)` is the graph of a variant with GPU steps (W1 in the mesh). */
async function benchTrueGraph (ctx: WorkloadContext, workload: string, graphFor: (gpu: boolean) => TrueGraph, perStep: 'steps/s' | 'ms/step'): Promise<WorkloadResult> {
  const dir = await mkdtemp(join(ctx.scratch, 'graph-'))
  const plain = graphFor(false)
  const files = new Map<boolean, string>()
  for (const gpu of new Set(ctx.variants.map(v => v.gpuSteps))) {
    const file = join(dir, gpu ? 'pipeline-gpu.yaml' : 'pipeline.yaml')
    await writeFile(file, pipelineYaml(graphFor(gpu)))
    files.set(gpu, file)
  }
  await writeFile(join(dir, 'Makefile'), makefile(plain))
  const n = plain.steps.length
  const pm = sides(ctx.variants)
  const make: number[] = []
  const makeCheck = new Checks()
  // Daemons started for this workload serve all its reps, as a mesh that is already running
  // would. A fresh daemon runs its per-step code unoptimized until V8 has compiled it, which takes
  // some hundreds of steps: its first run is timed on a row of its own (rep 0), then the workload
  // runs untimed until WARM_STEPS steps have run since the start (or MAX_WARM_RUNS runs), then
  // the reps.
  const kept = new Map<Side, PipemeshSession>()
  const gpuStepsOf = new Map([false, true].map(gpu => [gpu, new Set(graphFor(gpu).steps.filter(s => s.gpu === true).map(s => s.id))]))
  const check = (side: Side, rep: number, run: PipemeshRun): void => {
    const { variant } = side
    side.check.add(rep, checkAll(run, variant, () => 'succeeded', n))
    const gpuSteps = gpuStepsOf.get(variant.gpuSteps)!
    if (gpuSteps.size > 0 && variant.gpuAgent !== undefined) {
      side.gpu ??= new Checks()
      side.gpu.add(rep, run.summary === undefined ? 'no summary' : checkPlacement(run, gpuSteps, variant.gpuAgent))
      if (rep > 0) {
        side.onGpuAgent ??= []
        side.onGpuAgent.push((run.summary?.steps ?? []).filter(s => gpuSteps.has(s.id) && s.agent === variant.gpuAgent).length)
      }
    }
  }
  try {
    for (let rep = 1; rep <= ctx.reps; rep++) {
      const said: string[] = []
      for (const side of pm) {
        const { variant } = side
        const file = files.get(variant.gpuSteps)!
        let session = kept.get(side)
        if (session === undefined) {
          session = await variant.session(ctx.scratch)
          if (variant.daemons) {
            kept.set(side, session)
            const first = await session.run(file)
            check(side, 0, first)
            side.first = []
            pushIfRan(side.first, first, first.ms / 1000)
            said.push(`${variant.label} first run after start ${(first.ms / 1000).toFixed(3)} s${first.error === undefined ? '' : ` (${first.error})`}`)
            let warm = 0
            for (let ran = n; ran < WARM_STEPS && warm < MAX_WARM_RUNS; ran += n, warm++) check(side, 0, await session.run(file))
            if (warm > 0) said.push(`${warm} untimed warm-up runs`)
          }
        }
        let run: PipemeshRun
        try {
          run = await session.run(file)
        } finally {
          if (!variant.daemons) await session.close()
        }
        check(side, rep, run)
        pushIfRan(side.samples, run, run.ms / 1000)
        said.push(`${variant.label} ${(run.ms / 1000).toFixed(3)} s${run.error === undefined ? '' : ` (${run.error})`}`)
      }
      const m = await runMake(dir, plain.target)
      const ran = m.recipes.filter(r => r === 'true').length
      makeCheck.add(rep, ran === n ? undefined : `make ran ${ran} recipes, expected ${n}`)
      make.push(m.ms / 1000)
      ctx.log(`${workload} rep ${rep}/${ctx.reps}: ${said.join(', ')}, make ${(m.ms / 1000).toFixed(3)} s`)
    }
  } finally {
    for (const session of kept.values()) await session.close()
    await discard(dir)
  }
  const derive = (s: number): number => perStep === 'steps/s' ? n / s : s * 1000 / n
  const better = perStep === 'steps/s' ? 'higher' : 'lower'
  const rows: Row[] = [
    ...wallRows(workload, pm, make, makeCheck),
    ...pm.map((side): Row => ({ workload, system: side.variant.label, metric: perStep, unit: '', better, samples: side.samples.map(derive), vs: 'make -j2' })),
    ...pm.filter(side => side.first !== undefined).map((side): Row => ({
      workload, system: side.variant.label, metric: `${perStep}, 1st run`, unit: '', better, samples: (side.first ?? []).map(derive), vs: 'make -j2', note: 'the first run on daemons just started (rep 0, not among the reps)'
    })),
    { workload, system: 'make -j2', metric: perStep, unit: '', better, samples: make.map(derive) }
  ]
  for (const side of pm) {
    if (side.gpu === undefined) continue
    const gpuCount = graphFor(true).steps.filter(s => s.gpu === true).length
    rows.push({ workload, system: side.variant.label, metric: 'GPU steps on GPU agent', unit: `of ${gpuCount}`, better: 'higher', samples: side.onGpuAgent ?? [], check: side.gpu.toString(), note: `from the --json summary's steps[].agent; only ${side.variant.gpuAgent ?? '?'} declares a GPU` })
  }
  const id = workload.slice(0, 2) as WorkloadId
  const checksOk: CheckResults = {}
  for (const side of pm) {
    checksOk[side.variant.label] = { [id]: side.check.ok, ...side.gpu === undefined ? {} : { [`${id} gpu`]: side.gpu.ok } }
  }
  const failures = [...pm.flatMap(side => [...side.check.all, ...side.gpu?.all ?? []].map(f => `${workload} ${side.variant.label}: ${f}`)), ...makeCheck.all.map(f => `${workload} make: ${f}`)]
  return { rows, failures, checksOk }
}

export async function benchStartup (ctx: WorkloadContext): Promise<WorkloadResult> {
  const result = await benchTrueGraph(ctx, 'W0 one step', () => ({ name: 'bench-w0-one', steps: [{ id: 's1', after: [] }], target: 's1' }), 'ms/step')
  // A single step: its ms/step is its wall time again; keep only the wall rows, as the fixed cost.
  result.rows = result.rows.filter(r => r.metric === 'wall').map(r => r.system === 'make -j2' ? r : { ...r, note: 'fixed cost of one CLI invocation' })
  return result
}

export async function benchFanout (ctx: WorkloadContext): Promise<WorkloadResult> {
  return await benchTrueGraph(ctx, 'W1 fanout', gpu => fanout(500, gpu ? 10 : undefined), 'steps/s')
}

export async function benchChain (ctx: WorkloadContext): Promise<WorkloadResult> {
  return await benchTrueGraph(ctx, 'W2 chain', () => chain(100), 'ms/step')
}

// ---- W3–W6: the diamond, then three reruns in the same state ------------------------------------

const DATA_BYTES = 64 * 1024 * 1024
const MIDS = ['mid_1', 'mid_2', 'mid_3', 'mid_4'] as const
const DIAMOND_STEPS = ['prep', ...MIDS, 'join']

function midScript (id: string, label: string): string {
  return `# ${id}: sha256 of the data, labelled\nh=$(sha256sum "$1" | cut -c1-64)\nprintf '%s %s\\n' '${label}' "$h" > "$2"\n`
}

const DIAMOND_SCRIPTS: Record<string, string> = {
  'prep.sh': `head -c ${DATA_BYTES} /dev/urandom > "$1"\n`,
  'join.sh': 'out=$1\nshift\ncat "$@" > "$out"\n',
  ...Object.fromEntries(MIDS.map(id => [`${id}.sh`, midScript(id, id)]))
}

function diamondPipeline (): string {
  const steps: Record<string, unknown> = {
    prep: { command: 'sh prep.sh ${{outputs.data}}', code: ['prep.sh'], outputs: ['data'] }
  }
  for (const id of MIDS) {
    steps[id] = { command: `sh ${id}.sh \${{inputs.data}} \${{outputs.hash}}`, code: [`${id}.sh`], inputs: { data: '${{steps.prep.outputs.data}}' }, outputs: ['hash'] }
  }
  steps.join = {
    command: `sh join.sh \${{outputs.all}} ${MIDS.map((_, i) => `\${{inputs.h${i + 1}}}`).join(' ')}`,
    code: ['join.sh'],
    inputs: Object.fromEntries(MIDS.map((id, i) => [`h${i + 1}`, `\${{steps.${id}.outputs.hash}}`])),
    outputs: ['all']
  }
  return stringify({ name: 'bench-diamond', steps }, { lineWidth: 0 })
}

function diamondMakefile (): string {
  const mids = MIDS.map(id => `${id}.txt: data.bin ${id}.sh\n\tsh ${id}.sh data.bin ${id}.txt\n`).join('')
  const txts = MIDS.map(id => `${id}.txt`).join(' ')
  return `all: join.txt\ndata.bin: prep.sh\n\tsh prep.sh data.bin\n${mids}join.txt: ${txts} join.sh\n\tsh join.sh join.txt ${txts}\n`
}

async function writeDiamond (dir: string, withMakefile: boolean): Promise<void> {
  for (const [name, text] of Object.entries(DIAMOND_SCRIPTS)) await writeFile(join(dir, name), text)
  if (withMakefile) await writeFile(join(dir, 'Makefile'), diamondMakefile())
  else await writeFile(join(dir, 'pipeline.yaml'), diamondPipeline())
}

/** W5's edit changes what mid_2 writes; W6's adds a comment only. */
async function editMid2 (dir: string, kind: 'output' | 'comment'): Promise<void> {
  const file = join(dir, 'mid_2.sh')
  if (kind === 'output') await writeFile(file, midScript('mid_2', 'mid_2 (edited)'))
  else await writeFile(file, (await readFile(file, 'utf8')) + '# a comment: the output stays the same\n')
}

/** Which step ids make executed, from the recipe lines it echoed ("sh mid_2.sh …"). */
function makeSteps (recipes: readonly string[]): string[] {
  return recipes.map(r => /^sh (\w+)\.sh /.exec(r)?.[1]).filter((s): s is string => s !== undefined).sort()
}

function expectSteps (what: string, got: readonly string[], want: readonly string[]): string | undefined {
  const a = [...got].sort().join(',')
  const b = [...want].sort().join(',')
  return a === b ? undefined : `${what} executed [${a}], expected [${b}]`
}

interface Phase { id: WorkloadId, name: string, pmExecuted: string[], makeExecuted: string[], edit?: 'output' | 'comment', makeNote?: string }

const PHASES: Phase[] = [
  { id: 'W3', name: 'W3 diamond-data', pmExecuted: DIAMOND_STEPS, makeExecuted: DIAMOND_STEPS },
  { id: 'W4', name: 'W4 rerun-nochange', pmExecuted: [], makeExecuted: [] },
  { id: 'W5', name: 'W5 rerun-one-changed', pmExecuted: ['mid_2', 'join'], makeExecuted: ['mid_2', 'join'], edit: 'output' },
  { id: 'W6', name: 'W6 rerun-same-output', pmExecuted: ['mid_2'], makeExecuted: ['mid_2', 'join'], edit: 'comment', makeNote: 'make cannot cut off: it reruns join too (2 steps)' }
]

/** W3 then W4, W5, W6 in the same state, per rep and variant; `only` picks the rows reported (W3 always runs). */
export async function benchDiamond (ctx: WorkloadContext, only: ReadonlySet<WorkloadId>): Promise<WorkloadResult> {
  const phases = PHASES.filter(p => p.id === 'W3' || only.has(p.id))
  const last = Math.max(...phases.map(p => PHASES.indexOf(p)))
  const run = PHASES.slice(0, last + 1)
  const pm = new Map(run.map(p => [p.id, sides(ctx.variants)]))
  const make = new Map(run.map(p => [p.id, [] as number[]]))
  const makeChecks = new Map(run.map(p => [p.id, new Checks()]))
  for (let rep = 1; rep <= ctx.reps; rep++) {
    for (const [v, variant] of ctx.variants.entries()) {
      const pmDir = await mkdtemp(join(ctx.scratch, 'diamond-'))
      try {
        await writeDiamond(pmDir, false)
        const session = await variant.session(ctx.scratch)
        try {
          let broken: string | undefined
          for (const phase of run) {
            const side = pm.get(phase.id)![v]!
            if (phase.edit !== undefined) await editMid2(pmDir, phase.edit)
            if (broken !== undefined) {
              side.check.add(rep, `not run: ${broken}`)
              continue
            }
            const r = await session.run(join(pmDir, 'pipeline.yaml'))
            const want = new Set(phase.pmExecuted)
            const failure = checkAll(r, variant, id => want.has(id) ? 'succeeded' : 'reused', DIAMOND_STEPS.length)
            side.check.add(rep, failure)
            pushIfRan(side.samples, r, r.ms / 1000)
            if (r.exitCode !== 0) broken = `${phase.id} failed`
            ctx.log(`${phase.name} rep ${rep}/${ctx.reps}: ${variant.label} ${(r.ms / 1000).toFixed(3)} s${failure === undefined ? '' : ` (${failure})`}`)
          }
        } finally {
          await session.close()
        }
      } finally {
        await discard(pmDir)
      }
    }
    const makeDir = await mkdtemp(join(ctx.scratch, 'diamond-make-'))
    try {
      await writeDiamond(makeDir, true)
      for (const phase of run) {
        if (phase.edit !== undefined) await editMid2(makeDir, phase.edit)
        const m = await runMake(makeDir)
        make.get(phase.id)!.push(m.ms / 1000)
        makeChecks.get(phase.id)!.add(rep, expectSteps('make', makeSteps(m.recipes), phase.makeExecuted))
      }
    } finally {
      await discard(makeDir)
    }
  }
  const result: WorkloadResult = { rows: [], failures: [], checksOk: {} }
  for (const phase of phases) {
    const side = pm.get(phase.id)!
    const makeCheck = makeChecks.get(phase.id)!
    result.rows.push(...wallRows(phase.name, side, make.get(phase.id)!, makeCheck, phase.makeNote))
    for (const s of side) {
      result.failures.push(...s.check.all.map(f => `${phase.name} ${s.variant.label}: ${f}`))
      result.checksOk[s.variant.label] = { ...result.checksOk[s.variant.label], [phase.id]: s.check.ok }
    }
    result.failures.push(...makeCheck.all.map(f => `${phase.name} make: ${f}`))
  }
  return result
}
