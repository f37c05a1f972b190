// Where a step runs: a pure, deterministic function from a step's requirements and the agents'
// state to a placement, with a human-readable reason for every agent. Hard constraints decide
// `never`; free capacity decides `busy`; the rest are ranked by data locality, best fit, load and
// id. The coordinator applies a placement with allocate/release so no agent is ever over-committed.

import { PipemeshError } from '../errors.js'
import type { Resources } from '../spec/types.js'
import { formatBytes } from '../util/units.js'
import type { AgentView, CandidateReport, GpuInfo, Placement, PlacementRequest } from './types.js'

/** Slack for fractional cpu sums (0.1 + 0.2 must fit in 0.3). */
const EPS = 1e-9

/** An agent that could run the step right now, with the figures it is ranked on. */
interface Fit {
  agent: AgentView
  /** Devices it would get, smallest fitting first. */
  gpus: GpuInfo[]
  /** Input bytes it already holds. */
  local: number
  hasGpus: boolean
  /** Largest memory among the devices it would get. */
  gpuSize: number
  cpuFraction: number
  load: number
}

interface Tier {
  cmp: (a: Fit, b: Fit) => number
  /** Why `loser` ranked below `winner`. */
  lost: (loser: Fit, winner: Fit) => string
  /** Why `winner` ranked above `next`. */
  won: (winner: Fit, next: Fit) => string
}

export function placeStep (req: PlacementRequest, agents: AgentView[]): Placement {
  const res = req.resources
  const never: CandidateReport[] = []
  const busy: CandidateReport[] = []
  const fits: Fit[] = []
  for (const agent of [...agents].sort(byNameThenId)) {
    const failures = hardFailures(res, agent)
    if (failures.length > 0) {
      never.push(report(agent, 'never', failures.join('; ')))
      continue
    }
    const free = freeGpus(res, agent)
    const waits = capacityWaits(req, agent, free)
    if (waits.length > 0) {
      busy.push(report(agent, 'busy', waits.join('; ')))
      continue
    }
    fits.push(makeFit(req, agent, free.slice(0, res.gpu)))
  }

  if (fits.length === 0) {
    const candidates = [...busy, ...never]
    if (agents.length === 0) return { kind: 'queued', reason: 'waiting for an agent: none is connected', candidates }
    if (busy.length === 0) return { kind: 'unschedulable', reason: unschedulableReason(res, agents, never), candidates }
    const shown = busy.slice(0, 5).map(c => `agent ${c.name}: ${c.reason}`)
    if (busy.length > shown.length) shown.push(`${busy.length - shown.length} more busy`)
    return { kind: 'queued', reason: `waiting for capacity: needs ${needsText(res)}; ${shown.join('; ')}`, candidates }
  }

  const tiers = rankingTiers(req, fits)
  const compare = (a: Fit, b: Fit): number => {
    for (const tier of tiers) {
      const c = tier.cmp(a, b)
      if (c !== 0) return c
    }
    return 0
  }
  fits.sort(compare)
  const [best, next] = fits as [Fit, ...Fit[]]
  const decisive = (loser: Fit): Tier => tiers.find(t => t.cmp(loser, best) > 0) ?? tiers[tiers.length - 1]!

  const gpus = best.gpus.map(g => g.index).sort((a, b) => a - b)
  const onGpus = best.gpus.length === 0 ? '' : ` on ${gpuList(best.gpus)}`
  let why = next === undefined ? 'the only agent with room for it now' : decisive(next).won(best, next)
  if (res.gpu === 0 && best.hasGpus && !fits.some(f => !f.hasGpus)) why += '; it has GPUs, but no CPU-only agent has room'
  const candidates: CandidateReport[] = [
    report(best.agent, 'chosen', best.gpus.length === 0 ? why : `gets ${gpuList(best.gpus)}; ${why}`),
    ...fits.slice(1).map(f => report(f.agent, 'eligible', `ranked below ${best.agent.name}: ${decisive(f).lost(f, best)}`)),
    ...busy,
    ...never
  ]
  return { kind: 'placed', agentId: best.agent.id, gpus, reason: `${best.agent.name}${onGpus}: ${why}`, candidates }
}

/**
 * The agent with `resources` taken for one more step on device indices `gpus` (from a placement).
 * Throws CONFLICT instead of over-committing: a coordinator bug or a race must not double-book.
 */
export function allocate (agent: AgentView, resources: Resources, gpus: number[]): AgentView {
  const problems: string[] = []
  const { capacity, allocated } = agent
  if (allocated.cpu + resources.cpu > capacity.cpu + EPS) problems.push(`cpu ${formatCpu(resources.cpu)} does not fit, ${formatCpu(allocated.cpu)}/${formatCpu(capacity.cpu)} in use`)
  if (allocated.memory + resources.memory > capacity.memory) problems.push(`memory ${formatBytes(resources.memory)} does not fit, ${formatBytes(allocated.memory)}/${formatBytes(capacity.memory)} in use`)
  if (gpus.length !== resources.gpu) problems.push(`${plural(gpus.length, 'GPU device')} given for a step needing ${resources.gpu}`)
  const seen = new Set<number>()
  for (const index of gpus) {
    const device = capacity.gpus.find(g => g.index === index)
    if (device === undefined) problems.push(`GPU ${index} does not exist`)
    else if (allocated.gpus.includes(index) || seen.has(index)) problems.push(`GPU ${index} is already in use`)
    else if (device.memory < resources.gpuMemory) problems.push(`GPU ${index} has ${formatBytes(device.memory)}, needs ${formatBytes(resources.gpuMemory)}`)
    seen.add(index)
  }
  if (problems.length > 0) throw new PipemeshError('CONFLICT', `cannot allocate on agent ${agent.name}: ${problems.join('; ')}`)
  return {
    ...agent,
    allocated: {
      cpu: roundCpu(allocated.cpu + resources.cpu),
      memory: allocated.memory + resources.memory,
      gpus: [...allocated.gpus, ...gpus].sort((a, b) => a - b)
    },
    running: agent.running + 1
  }
}

/** The agent with one finished step's `resources` and devices handed back. Never goes below zero. */
export function release (agent: AgentView, resources: Resources, gpus: number[]): AgentView {
  const { allocated } = agent
  return {
    ...agent,
    allocated: {
      cpu: Math.max(0, roundCpu(allocated.cpu - resources.cpu)),
      memory: Math.max(0, allocated.memory - resources.memory),
      gpus: allocated.gpus.filter(i => !gpus.includes(i))
    },
    running: Math.max(0, agent.running - 1)
  }
}

/** One line for `pipemesh agents`: capacity, what is in use, devices, labels. */
export function describeCapacity (agent: AgentView): string {
  const { capacity, allocated } = agent
  const parts = [
    `cpu ${formatCpu(allocated.cpu)}/${formatCpu(capacity.cpu)} in use`,
    `memory ${formatBytes(allocated.memory)}/${formatBytes(capacity.memory)} in use`
  ]
  if (capacity.gpus.length === 0) parts.push('no GPU')
  else {
    const devices = capacity.gpus.map(g => `${g.index}: ${g.model} ${formatBytes(g.memory)}${allocated.gpus.includes(g.index) ? ' (in use)' : ''}`)
    parts.push(`${plural(capacity.gpus.length, 'GPU')} [${devices.join(', ')}]`)
  }
  parts.push(`${plural(agent.running, 'step')} running`)
  const labels = Object.entries(agent.labels).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
  if (labels.length > 0) parts.push(`labels ${labels.map(([k, v]) => `${k}=${v}`).join(',')}`)
  if (agent.draining === true) parts.push('draining')
  return parts.join(', ')
}

/** Why the agent could never run the step, whatever else it is doing; empty when it could. */
function hardFailures (res: Resources, agent: AgentView): string[] {
  const out: string[] = []
  const cap = agent.capacity
  for (const [key, want] of sortedEntries(res.labels)) {
    const has = agent.labels[key]
    if (has === undefined) out.push(`lacks label ${key}=${want}`)
    else if (has !== want) out.push(`has label ${key}=${has}, needs ${key}=${want}`)
  }
  if (cap.cpu + EPS < res.cpu) out.push(`has cpu ${formatCpu(cap.cpu)}, needs ${formatCpu(res.cpu)}`)
  if (cap.memory < res.memory) out.push(`has memory ${formatBytes(cap.memory)}, needs ${formatBytes(res.memory)}`)
  if (res.gpu > 0) {
    if (cap.gpus.length < res.gpu) out.push(`has ${plural(cap.gpus.length, 'GPU')}, needs ${res.gpu}`)
    else if (res.gpuMemory > 0) {
      const big = cap.gpus.filter(g => g.memory >= res.gpuMemory).length
      if (big < res.gpu) out.push(`has ${plural(big, 'GPU')} with at least ${formatBytes(res.gpuMemory)} (largest ${formatBytes(largestGpu(agent))}), needs ${res.gpu}`)
    }
  }
  return out
}

/** Free devices that satisfy the step's per-device memory, smallest first so big ones stay free. */
function freeGpus (res: Resources, agent: AgentView): GpuInfo[] {
  if (res.gpu === 0) return []
  return agent.capacity.gpus
    .filter(g => g.memory >= res.gpuMemory && !agent.allocated.gpus.includes(g.index))
    .sort((a, b) => a.memory - b.memory || a.index - b.index)
}

/**
 * Disk an agent must have free beyond the inputs it would fetch, for the step's outputs (of
 * unknown size). Only a step with inputs to fetch is held to it: those bytes are sure to be
 * written. A step with nothing to fetch runs even on a nearly full agent (its outputs may fit;
 * if not, storing them fails with a clear message), so that a lone agent (embedded mode, a
 * laptop) never waits for space that nothing will free.
 */
export const DISK_SPARE_BYTES = 256 * 1024 * 1024

/** What the step would wait for on an agent that could run it some day; empty when it fits now. */
function capacityWaits (req: PlacementRequest, agent: AgentView, free: GpuInfo[]): string[] {
  if (agent.draining === true) return ['draining: it takes no new steps']
  const res = req.resources
  const out: string[] = []
  const { capacity: cap, allocated: used } = agent
  if (used.cpu + res.cpu > cap.cpu + EPS) out.push(`${formatCpu(used.cpu)}/${formatCpu(cap.cpu)} cpu in use`)
  if (used.memory + res.memory > cap.memory) out.push(`${formatBytes(used.memory)}/${formatBytes(cap.memory)} memory in use`)
  if (free.length < res.gpu) {
    const fitting = cap.gpus.filter(g => g.memory >= res.gpuMemory)
    const busyOnes = fitting.filter(g => used.gpus.includes(g.index)).map(g => g.index).sort((a, b) => a - b)
    const what = res.gpuMemory > 0 ? ` GPUs with at least ${formatBytes(res.gpuMemory)}` : ' GPU'
    out.push(`${busyOnes.length}/${fitting.length}${what} in use (device ${busyOnes.join(', ')})`)
  }
  if (agent.diskFree !== undefined) {
    let toFetch = 0
    for (const input of req.inputs) if (!input.holders.includes(agent.id)) toFetch += input.size
    if (toFetch > 0 && toFetch + DISK_SPARE_BYTES > agent.diskFree) {
      out.push(`${formatBytes(agent.diskFree)} free on disk, needs ${formatBytes(toFetch)} for the inputs it lacks and ${formatBytes(DISK_SPARE_BYTES)} to spare`)
    }
  }
  return out
}

function makeFit (req: PlacementRequest, agent: AgentView, gpus: GpuInfo[]): Fit {
  let local = 0
  for (const input of req.inputs) if (input.holders.includes(agent.id)) local += input.size
  return {
    agent,
    gpus,
    local,
    hasGpus: agent.capacity.gpus.length > 0,
    gpuSize: gpus.reduce((m, g) => Math.max(m, g.memory), 0),
    cpuFraction: agent.capacity.cpu > 0 ? roundCpu(agent.allocated.cpu / agent.capacity.cpu) : 0,
    load: agent.load ?? 0
  }
}

/**
 * How many input bytes an agent may lack and still rank as holding the data. Fetching this much
 * from a peer takes a fraction of a second, about a step's start-up, so it must not pull a
 * CPU-only step onto a GPU machine or a GPU step onto a larger GPU than it needs. Smaller
 * differences still decide after the fit, between otherwise equal agents: each fetch saved is a
 * round trip saved, and that keeps a chain of quick steps on one agent.
 */
export const LOCALITY_SLACK_BYTES = 64 * 1024 * 1024

/**
 * The ranking, most important first: locality (differences above the slack), best fit, locality
 * (any difference), load, then agent id for a stable answer.
 */
function rankingTiers (req: PlacementRequest, fits: Fit[]): Tier[] {
  const total = req.inputs.reduce((s, i) => s + i.size, 0)
  const most = fits.reduce((m, f) => Math.max(m, f.local), 0)
  // A key per agent, not a pairwise tolerance, so that the order stays transitive.
  const material = (f: Fit): number => f.local >= most - LOCALITY_SLACK_BYTES ? most : f.local
  const tiers: Tier[] = [{
    cmp: (a, b) => material(b) - material(a),
    lost: (l, w) => `holds ${formatBytes(l.local)} of the ${formatBytes(total)} of inputs, ${w.agent.name} holds ${formatBytes(w.local)}`,
    won: (w, n) => `data locality: holds ${formatBytes(w.local)} of the ${formatBytes(total)} of inputs (next best: ${n.agent.name} with ${formatBytes(n.local)})`
  }]
  if (req.resources.gpu === 0) {
    tiers.push({
      cmp: (a, b) => Number(a.hasGpus) - Number(b.hasGpus),
      lost: (_l, w) => `it has GPUs, kept free for GPU steps while a CPU-only agent (${w.agent.name}) has room`,
      won: () => 'a CPU-only agent, leaving GPU agents free for GPU steps'
    })
  } else {
    tiers.push({
      cmp: (a, b) => a.gpuSize - b.gpuSize,
      lost: (l, w) => `its fitting GPU has ${formatBytes(l.gpuSize)}; ${w.agent.name}'s ${formatBytes(w.gpuSize)} is a closer fit`,
      won: (w, n) => `the smallest GPU that fits (${formatBytes(w.gpuSize)}; next: ${n.agent.name} with ${formatBytes(n.gpuSize)})`
    }, {
      cmp: (a, b) => a.agent.capacity.gpus.length - b.agent.capacity.gpus.length,
      lost: (l, w) => `has ${plural(l.agent.capacity.gpus.length, 'GPU')}, ${w.agent.name} has fewer (${w.agent.capacity.gpus.length})`,
      won: (w, n) => `the fewest GPUs (${w.agent.capacity.gpus.length}; ${n.agent.name} has ${n.agent.capacity.gpus.length})`
    })
  }
  tiers.push({
    cmp: (a, b) => b.local - a.local,
    lost: (l, w) => `fewer inputs to fetch: holds ${formatBytes(l.local)} of the ${formatBytes(total)}, ${w.agent.name} holds ${formatBytes(w.local)}`,
    won: (w, n) => `the least to fetch: holds ${formatBytes(w.local)} of the ${formatBytes(total)} of inputs (${n.agent.name}: ${formatBytes(n.local)})`
  }, {
    cmp: (a, b) => a.cpuFraction - b.cpuFraction,
    lost: (l, w) => `more loaded: ${cpuUse(l.agent)} cpu in use, ${w.agent.name} ${cpuUse(w.agent)}`,
    won: (w, n) => `the least loaded: ${cpuUse(w.agent)} cpu in use (${n.agent.name}: ${cpuUse(n.agent)})`
  }, {
    cmp: (a, b) => a.load - b.load,
    lost: (l, w) => `busier machine: load ${l.load.toFixed(2)} per core, ${w.agent.name} ${w.load.toFixed(2)}`,
    won: (w, n) => `the lowest machine load: ${w.load.toFixed(2)} per core (${n.agent.name}: ${n.load.toFixed(2)})`
  }, {
    cmp: (a, b) => a.agent.running - b.agent.running,
    lost: (l, w) => `runs ${plural(l.agent.running, 'step')}, ${w.agent.name} runs ${w.agent.running}`,
    won: (w, n) => `the fewest running steps: ${w.agent.running} (${n.agent.name}: ${n.agent.running})`
  }, {
    cmp: (a, b) => a.agent.id < b.agent.id ? -1 : a.agent.id > b.agent.id ? 1 : 0,
    lost: (_l, w) => `ties with ${w.agent.name} on every criterion; the lower agent id wins`,
    won: (_w, n) => `ties with ${n.agent.name} on every criterion; the lower agent id wins`
  })
  return tiers
}

/** Names each requirement that no agent meets, with the largest offer; else what each agent lacks. */
function unschedulableReason (res: Resources, agents: AgentView[], never: CandidateReport[]): string {
  const out: string[] = []
  const most = (value: (a: AgentView) => number): AgentView =>
    agents.reduce((m, a) => value(a) > value(m) || (value(a) === value(m) && a.id < m.id) ? a : m)

  if (res.gpu > 0) {
    const byCount = most(a => a.capacity.gpus.length)
    const countShort = byCount.capacity.gpus.length < res.gpu
    if (countShort) {
      out.push(byCount.capacity.gpus.length === 0
        ? `needs gpu: ${res.gpu}, but no agent has a GPU`
        : `needs gpu: ${res.gpu}, but the largest offer is ${plural(byCount.capacity.gpus.length, 'GPU')} (agent ${byCount.name})`)
    }
    if (res.gpuMemory > 0) {
      const bigEnough = (a: AgentView): number => a.capacity.gpus.filter(g => g.memory >= res.gpuMemory).length
      const byBig = most(bigEnough)
      const byLargest = most(largestGpu)
      if (bigEnough(byBig) === 0 && byLargest.capacity.gpus.length > 0) {
        out.push(`needs GPUs with at least ${formatBytes(res.gpuMemory)} each, but the largest GPU on offer has ${formatBytes(largestGpu(byLargest))} (agent ${byLargest.name})`)
      } else if (!countShort && bigEnough(byBig) < res.gpu) {
        out.push(`needs gpu: ${res.gpu} with at least ${formatBytes(res.gpuMemory)} each, but the most any agent has is ${bigEnough(byBig)} (agent ${byBig.name})`)
      }
    }
  }
  const byCpu = most(a => a.capacity.cpu)
  if (byCpu.capacity.cpu + EPS < res.cpu) out.push(`needs cpu ${formatCpu(res.cpu)}, the most any agent has is ${formatCpu(byCpu.capacity.cpu)} (agent ${byCpu.name})`)
  const byMemory = most(a => a.capacity.memory)
  if (byMemory.capacity.memory < res.memory) out.push(`needs memory ${formatBytes(res.memory)}, the most any agent has is ${formatBytes(byMemory.capacity.memory)} (agent ${byMemory.name})`)
  for (const [key, want] of sortedEntries(res.labels)) {
    if (agents.some(a => a.labels[key] === want)) continue
    const offered = [...new Set(agents.flatMap(a => a.labels[key] === undefined ? [] : [`${key}=${a.labels[key]}`]))].sort()
    out.push(`needs label ${key}=${want}, but no agent has it${offered.length > 0 ? ` (on offer: ${offered.join(', ')})` : ''}`)
  }
  if (out.length > 0) return out.join('; ')
  // Every requirement is met somewhere, but never all on one agent.
  return `no agent meets all of: ${needsText(res)}; ${never.map(c => `agent ${c.name}: ${c.reason}`).join('; ')}`
}

function report (agent: AgentView, verdict: CandidateReport['verdict'], reason: string): CandidateReport {
  return { agentId: agent.id, name: agent.name, verdict, reason }
}

function gpuList (gpus: GpuInfo[]): string {
  const sorted = [...gpus].sort((a, b) => a.index - b.index)
  return `${sorted.length === 1 ? 'GPU' : 'GPUs'} ${sorted.map(g => `${g.index} (${g.model}, ${formatBytes(g.memory)})`).join(', ')}`
}

function largestGpu (agent: AgentView): number {
  return agent.capacity.gpus.reduce((m, g) => Math.max(m, g.memory), 0)
}

function cpuUse (agent: AgentView): string {
  return `${formatCpu(agent.allocated.cpu)}/${formatCpu(agent.capacity.cpu)}`
}

function roundCpu (n: number): number {
  return Math.round(n * 1e6) / 1e6
}

function sortedEntries (record: Record<string, string>): Array<[string, string]> {
  return Object.entries(record).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
}

function formatCpu (n: number): string {
  return String(Math.round(n * 100) / 100)
}

function plural (n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`
}

/** The requirements in one phrase, e.g. `cpu 1, memory 512 MiB, gpu 1 (at least 24 GiB each)`. */
function needsText (res: Resources): string {
  const parts = [`cpu ${formatCpu(res.cpu)}`, `memory ${formatBytes(res.memory)}`]
  if (res.gpu > 0) parts.push(`gpu ${res.gpu}${res.gpuMemory > 0 ? ` (at least ${formatBytes(res.gpuMemory)} each)` : ''}`)
  const labels = sortedEntries(res.labels)
  if (labels.length > 0) parts.push(`labels ${labels.map(([k, v]) => `${k}=${v}`).join(',')}`)
  return parts.join(', ')
}

function byNameThenId (a: AgentView, b: AgentView): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0
}
