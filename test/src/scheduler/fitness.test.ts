// Placement scenarios (agents + step -> expected choice and reasons) and a property test that
// repeated placement and allocation never over-commits an agent or shares a GPU device.

import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { allocate, describeCapacity, placeStep, release } from '../../../src/scheduler/index.js'
import type { AgentView, GpuInfo, Placement, PlacementInput, PlacementRequest } from '../../../src/scheduler/index.js'
import type { Resources } from '../../../src/spec/types.js'
import { PipemeshError } from '../../../src/errors.js'

const MiB = 2 ** 20
const GiB = 2 ** 30

interface AgentSketch {
  cpu?: number
  memory?: number
  /** GPU memory sizes in GiB, device index = position. */
  gpus?: number[]
  labels?: Record<string, string>
  used?: { cpu?: number, memory?: number, gpus?: number[] }
  running?: number
  load?: number
  draining?: boolean
  diskFree?: number
}

function agent (id: string, s: AgentSketch = {}): AgentView {
  const gpus: GpuInfo[] = (s.gpus ?? []).map((gib, index) => ({ index, vendor: 'NVIDIA', model: `GPU-${gib}G`, memory: gib * GiB }))
  const view: AgentView = {
    id,
    name: id,
    capacity: { cpu: s.cpu ?? 4, memory: s.memory ?? 16 * GiB, gpus },
    labels: s.labels ?? {},
    allocated: { cpu: s.used?.cpu ?? 0, memory: s.used?.memory ?? 0, gpus: s.used?.gpus ?? [] },
    running: s.running ?? 0
  }
  if (s.load !== undefined) view.load = s.load
  if (s.draining !== undefined) view.draining = s.draining
  if (s.diskFree !== undefined) view.diskFree = s.diskFree
  return view
}

function needs (r: Partial<Resources> = {}): Resources {
  return { cpu: 1, memory: 512 * MiB, gpu: 0, gpuMemory: 0, labels: {}, ...r }
}

function step (r: Partial<Resources> = {}, inputs: PlacementInput[] = []): PlacementRequest {
  return { stepId: 's', resources: needs(r), inputs }
}

function verdictOf (p: Placement, id: string): { verdict: string, reason: string } {
  const c = p.candidates.find(x => x.agentId === id)
  if (c === undefined) throw new Error(`no candidate report for ${id}`)
  return c
}

interface Scenario {
  name: string
  agents: AgentView[]
  step: PlacementRequest
  kind: Placement['kind']
  agentId?: string
  gpus?: number[]
  reason?: string[]
  /** agent id -> [verdict, reason fragment] */
  others?: Record<string, [string, string]>
}

const scenarios: Scenario[] = [
  {
    name: 'a GPU step lands on the GPU agent, on the smallest device that fits',
    agents: [agent('cpu-a', { cpu: 8 }), agent('gpu-box', { gpus: [80, 24] })],
    step: step({ gpu: 1, gpuMemory: 16 * GiB }),
    kind: 'placed',
    agentId: 'gpu-box',
    gpus: [1],
    reason: ['gpu-box on GPU 1 (GPU-24G, 24 GiB)'],
    others: { 'cpu-a': ['never', 'has 0 GPUs, needs 1'] }
  },
  {
    name: 'a GPU step skips a device already in use',
    agents: [agent('gpu-box', { gpus: [24, 24], used: { gpus: [0] } })],
    step: step({ gpu: 1 }),
    kind: 'placed',
    agentId: 'gpu-box',
    gpus: [1]
  },
  {
    name: 'a CPU step avoids the GPU agent while a CPU agent has room, even a busier one',
    agents: [agent('cpu-a', { cpu: 4, used: { cpu: 2 } }), agent('gpu-box', { cpu: 16, gpus: [24] })],
    step: step(),
    kind: 'placed',
    agentId: 'cpu-a',
    reason: ['CPU-only agent'],
    others: { 'gpu-box': ['eligible', 'kept free for GPU steps while a CPU-only agent (cpu-a) has room'] }
  },
  {
    name: 'a CPU step uses the GPU agent when the CPU agents are full',
    agents: [agent('cpu-a', { cpu: 2, used: { cpu: 2 } }), agent('gpu-box', { cpu: 16, gpus: [24] })],
    step: step(),
    kind: 'placed',
    agentId: 'gpu-box',
    gpus: [],
    reason: ['no CPU-only agent has room'],
    others: { 'cpu-a': ['busy', '2/2 cpu in use'] }
  },
  {
    name: 'data locality beats load',
    agents: [agent('a', { used: { cpu: 3 }, running: 3, load: 0.9 }), agent('b')],
    step: step({}, [{ name: 'model', size: GiB, holders: ['a'] }, { name: 'cfg', size: 10, holders: ['a', 'b'] }]),
    kind: 'placed',
    agentId: 'a',
    reason: ['data locality: holds 1 GiB'],
    others: { b: ['eligible', 'holds 10 B of the 1 GiB of inputs, a holds 1 GiB'] }
  },
  {
    name: 'a CPU step follows a large input onto a GPU agent',
    agents: [agent('cpu-a'), agent('gpu-box', { gpus: [24] })],
    step: step({}, [{ name: 'checkpoint', size: GiB, holders: ['gpu-box'] }]),
    kind: 'placed',
    agentId: 'gpu-box',
    reason: ['data locality: holds 1 GiB of the 1 GiB of inputs (next best: cpu-a with 0 B)'],
    others: { 'cpu-a': ['eligible', 'holds 0 B of the 1 GiB of inputs, gpu-box holds 1 GiB'] }
  },
  {
    name: 'a CPU step whose few MiB of input only the GPU agent holds still goes to a CPU agent',
    agents: [agent('cpu-a'), agent('gpu-box', { gpus: [24] })],
    step: step({}, [{ name: 'raw', size: 5 * MiB, holders: ['gpu-box'] }]),
    kind: 'placed',
    agentId: 'cpu-a',
    reason: ['a CPU-only agent, leaving GPU agents free'],
    others: { 'gpu-box': ['eligible', 'it has GPUs, kept free for GPU steps while a CPU-only agent (cpu-a) has room'] }
  },
  {
    name: 'a GPU step takes the smallest fitting GPU even when a larger one holds a few MiB of its inputs',
    agents: [agent('big', { gpus: [80] }), agent('small', { gpus: [24] })],
    step: step({ gpu: 1, gpuMemory: 16 * GiB }, [{ name: 'data', size: 40 * MiB, holders: ['big'] }]),
    kind: 'placed',
    agentId: 'small',
    gpus: [0],
    reason: ['the smallest GPU that fits'],
    others: { big: ['eligible', "its fitting GPU has 80 GiB; small's 24 GiB is a closer fit"] }
  },
  {
    name: 'between agents that fit alike, holding a small input beats a lighter load: one fetch fewer',
    agents: [agent('a'), agent('b', { used: { cpu: 2 }, running: 2 })],
    step: step({}, [{ name: 'x', size: 4096, holders: ['b'] }]),
    kind: 'placed',
    agentId: 'b',
    reason: ['the least to fetch: holds 4 KiB of the 4 KiB of inputs (a: 0 B)'],
    others: { a: ['eligible', 'fewer inputs to fetch: holds 0 B of the 4 KiB, b holds 4 KiB'] }
  },
  {
    name: 'an agent without disk for the inputs it lacks waits; one with room runs the step',
    agents: [agent('small-disk', { diskFree: 2 * GiB }), agent('big-disk', { diskFree: 50 * GiB, used: { cpu: 3 }, running: 3 })],
    step: step({}, [{ name: 'checkpoint', size: 10 * GiB, holders: ['elsewhere'] }]),
    kind: 'placed',
    agentId: 'big-disk',
    reason: ['the only agent with room for it now'],
    others: { 'small-disk': ['busy', '2 GiB free on disk, needs 10 GiB for the inputs it lacks and 256 MiB to spare'] }
  },
  {
    name: 'an agent that already holds a large input needs no disk for it',
    agents: [agent('holder', { diskFree: 1 * GiB })],
    step: step({}, [{ name: 'checkpoint', size: 10 * GiB, holders: ['holder'] }]),
    kind: 'placed',
    agentId: 'holder'
  },
  {
    name: 'a step with inputs to fetch waits, saying why, while no agent has room for them',
    agents: [agent('full', { diskFree: 100 * MiB })],
    step: step({}, [{ name: 'data', size: 50 * MiB, holders: ['elsewhere'] }]),
    kind: 'queued',
    reason: ['waiting for capacity', 'agent full: 100 MiB free on disk, needs 50 MiB for the inputs it lacks and 256 MiB to spare'],
    others: { full: ['busy', '100 MiB free on disk'] }
  },
  {
    name: 'a step with nothing to fetch still runs on a nearly full agent (a lone agent must not wait forever)',
    agents: [agent('full', { diskFree: 100 * MiB })],
    step: step(),
    kind: 'placed',
    agentId: 'full'
  },
  {
    name: 'the smallest GPU that fits is chosen; too small ones never are',
    agents: [agent('big', { gpus: [80] }), agent('small', { gpus: [24] }), agent('tiny', { gpus: [8] })],
    step: step({ gpu: 1, gpuMemory: 16 * GiB }),
    kind: 'placed',
    agentId: 'small',
    gpus: [0],
    reason: ['the smallest GPU that fits (24 GiB'],
    others: {
      big: ['eligible', "its fitting GPU has 80 GiB; small's 24 GiB is a closer fit"],
      tiny: ['never', 'has 0 GPUs with at least 16 GiB (largest 8 GiB), needs 1']
    }
  },
  {
    name: 'between equal GPUs, the agent with fewer GPUs is chosen',
    agents: [agent('quad', { gpus: [24, 24, 24, 24] }), agent('single', { gpus: [24] })],
    step: step({ gpu: 1 }),
    kind: 'placed',
    agentId: 'single',
    others: { quad: ['eligible', 'has 4 GPUs, single has fewer (1)'] }
  },
  {
    name: 'among equals the least loaded wins: cpu in use, then load, then running steps',
    agents: [agent('a', { used: { cpu: 1 } }), agent('b', { load: 0.5 }), agent('c', { running: 2 }), agent('d', { load: 0.1, running: 1 })],
    step: step(),
    kind: 'placed',
    agentId: 'c',
    others: {
      a: ['eligible', 'more loaded: 1/4 cpu in use'],
      b: ['eligible', 'busier machine: load 0.50 per core'],
      d: ['eligible', 'busier machine: load 0.10 per core']
    }
  },
  {
    name: 'exact ties go to the lower agent id',
    agents: [agent('zeta'), agent('alpha')],
    step: step(),
    kind: 'placed',
    agentId: 'alpha',
    others: { zeta: ['eligible', 'the lower agent id wins'] }
  },
  {
    name: 'labels are hard constraints',
    agents: [agent('lab1', { labels: { zone: 'lab1' } }), agent('lab2', { labels: { zone: 'lab2' }, used: { cpu: 3 } }), agent('bare')],
    step: step({ labels: { zone: 'lab2' } }),
    kind: 'placed',
    agentId: 'lab2',
    reason: ['the only agent with room'],
    others: { lab1: ['never', 'has label zone=lab1, needs zone=lab2'], bare: ['never', 'lacks label zone=lab2'] }
  },
  {
    name: 'a label no agent has is unschedulable',
    agents: [agent('lab1', { labels: { zone: 'lab1' } }), agent('lab3', { labels: { zone: 'lab3' } })],
    step: step({ labels: { zone: 'lab2' } }),
    kind: 'unschedulable',
    reason: ['needs label zone=lab2, but no agent has it (on offer: zone=lab1, zone=lab3)']
  },
  {
    name: 'gpu: 2 on a mesh with one GPU fails with the promised message',
    agents: [agent('gpu-box-1', { gpus: [24], memory: 8 * GiB }), agent('cpu-1', { memory: 16 * GiB })],
    step: step({ gpu: 2, memory: 64 * GiB }),
    kind: 'unschedulable',
    reason: ['needs gpu: 2, but the largest offer is 1 GPU (agent gpu-box-1); needs memory 64 GiB, the most any agent has is 16 GiB (agent cpu-1)'],
    others: { 'gpu-box-1': ['never', 'has 1 GPU, needs 2'], 'cpu-1': ['never', 'has 0 GPUs, needs 2'] }
  },
  {
    name: 'GPU memory larger than any device is unschedulable',
    agents: [agent('big', { gpus: [80, 80] }), agent('small', { gpus: [24] })],
    step: step({ gpu: 1, gpuMemory: 100 * GiB }),
    kind: 'unschedulable',
    reason: ['needs GPUs with at least 100 GiB each, but the largest GPU on offer has 80 GiB (agent big)']
  },
  {
    name: 'memory larger than any agent has is unschedulable',
    agents: [agent('a', { memory: 16 * GiB }), agent('b', { memory: 32 * GiB })],
    step: step({ memory: 48 * GiB }),
    kind: 'unschedulable',
    reason: ['needs memory 48 GiB, the most any agent has is 32 GiB (agent b)'],
    others: { a: ['never', 'has memory 16 GiB, needs 48 GiB'] }
  },
  {
    name: 'requirements met only on different agents are unschedulable, naming what each lacks',
    agents: [agent('gpu', { gpus: [24], memory: 8 * GiB }), agent('fat', { memory: 64 * GiB })],
    step: step({ gpu: 1, memory: 32 * GiB }),
    kind: 'unschedulable',
    reason: ['no agent meets all of: cpu 1, memory 32 GiB, gpu 1', 'agent fat: has 0 GPUs, needs 1', 'agent gpu: has memory 8 GiB, needs 32 GiB']
  },
  {
    name: 'memory larger than free right now is queued',
    agents: [agent('a', { memory: 16 * GiB, used: { memory: 12 * GiB } }), agent('b', { memory: 4 * GiB })],
    step: step({ memory: 8 * GiB }),
    kind: 'queued',
    reason: ['waiting for capacity: needs cpu 1, memory 8 GiB; agent a: 12 GiB/16 GiB memory in use'],
    others: { a: ['busy', '12 GiB/16 GiB memory in use'], b: ['never', 'has memory 4 GiB'] }
  },
  {
    name: 'a draining agent makes the step wait, not fail',
    agents: [agent('a', { draining: true })],
    step: step(),
    kind: 'queued',
    reason: ['agent a: draining']
  },
  {
    name: 'with no agent connected the step waits',
    agents: [],
    step: step(),
    kind: 'queued',
    reason: ['none is connected']
  }
]

describe('placeStep scenarios', () => {
  it.each(scenarios.map(s => [s.name, s] as const))('%s', (_name, s) => {
    const p = placeStep(s.step, s.agents)
    expect(p.kind, p.reason).toBe(s.kind)
    if (s.agentId !== undefined) expect(p.kind === 'placed' && p.agentId).toBe(s.agentId)
    if (s.gpus !== undefined) expect(p.kind === 'placed' && p.gpus).toEqual(s.gpus)
    for (const fragment of s.reason ?? []) expect(p.reason).toContain(fragment)
    for (const [id, [verdict, fragment]] of Object.entries(s.others ?? {})) {
      const c = verdictOf(p, id)
      expect(c.verdict, c.reason).toBe(verdict)
      expect(c.reason).toContain(fragment)
    }
    // Every agent gets exactly one report; the chosen one comes first.
    expect(p.candidates.map(c => c.agentId).sort()).toEqual(s.agents.map(a => a.id).sort())
    if (p.kind === 'placed') expect(p.candidates[0]).toMatchObject({ agentId: p.agentId, verdict: 'chosen' })
  })

  it('gives the same answer whatever order the agents arrive in', () => {
    const agents = [agent('a', { used: { cpu: 1 } }), agent('b', { gpus: [24] }), agent('c', { load: 0.2 }), agent('d')]
    const req = step({}, [{ name: 'x', size: 5, holders: ['c', 'd'] }])
    const first = placeStep(req, agents)
    expect(placeStep(req, [...agents].reverse())).toEqual(first)
    expect(placeStep(req, [agents[2]!, agents[0]!, agents[3]!, agents[1]!])).toEqual(first)
  })
})

describe('allocation', () => {
  it('queues a second GPU step on a one-GPU agent until the first releases its device', () => {
    let box = agent('gpu-box', { cpu: 16, gpus: [24] })
    const req = step({ gpu: 1 })
    const first = placeStep(req, [box])
    expect(first).toMatchObject({ kind: 'placed', agentId: 'gpu-box', gpus: [0] })
    if (first.kind !== 'placed') return
    box = allocate(box, req.resources, first.gpus)

    const second = placeStep(req, [box])
    expect(second.kind).toBe('queued')
    expect(second.reason).toContain('agent gpu-box: 1/1 GPU in use (device 0)')

    box = release(box, req.resources, first.gpus)
    expect(placeStep(req, [box])).toMatchObject({ kind: 'placed', gpus: [0] })
  })

  it('refuses to over-commit cpu, memory or a device', () => {
    const box = agent('box', { cpu: 2, memory: GiB, gpus: [24], used: { cpu: 1.5, gpus: [0] } })
    const attempt = (r: Partial<Resources>, gpus: number[]): unknown => {
      try { allocate(box, needs(r), gpus); return 'allocated' } catch (err) { return err }
    }
    expect(attempt({ cpu: 1, memory: 0 }, [])).toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('cpu 1 does not fit, 1.5/2 in use') })
    expect(attempt({ cpu: 0.5, memory: 2 * GiB }, [])).toMatchObject({ message: expect.stringContaining('memory 2 GiB does not fit') })
    expect(attempt({ cpu: 0.5, gpu: 1 }, [0])).toMatchObject({ message: expect.stringContaining('GPU 0 is already in use') })
    expect(attempt({ cpu: 0.5, gpu: 1 }, [3])).toMatchObject({ message: expect.stringContaining('GPU 3 does not exist') })
    expect(attempt({ cpu: 0.5, gpu: 1 }, [])).toBeInstanceOf(PipemeshError)
    expect(attempt({ cpu: 0.5 }, [])).toBe('allocated')
  })

  it('adds fractional cpu without drift, and releases back to zero', () => {
    let box = agent('box', { cpu: 0.3 })
    const a = needs({ cpu: 0.1, memory: 0 })
    const b = needs({ cpu: 0.2, memory: 0 })
    box = allocate(allocate(box, a, []), b, [])
    expect(box.allocated.cpu).toBe(0.3)
    expect(placeStep(step({ cpu: 0.1, memory: 0 }), [box]).kind).toBe('queued')
    box = release(release(box, a, []), b, [])
    expect(box.allocated).toEqual({ cpu: 0, memory: 0, gpus: [] })
    expect(box.running).toBe(0)
  })

  it('describes capacity for `pipemesh agents`', () => {
    const box = agent('box', { cpu: 8, memory: 16 * GiB, gpus: [80, 24], labels: { zone: 'lab2' }, used: { cpu: 2, memory: 4 * GiB, gpus: [1] }, running: 1 })
    expect(describeCapacity(box)).toBe('cpu 2/8 in use, memory 4 GiB/16 GiB in use, 2 GPUs [0: GPU-80G 80 GiB, 1: GPU-24G 24 GiB (in use)], 1 step running, labels zone=lab2')
  })
})

describe('placeStep + allocate, repeated (property)', () => {
  const gpuSizes = [8, 16, 24, 40, 80]
  const agentArb = fc.record({
    cpu: fc.constantFrom(0.5, 1, 2, 4, 8),
    memGiB: fc.integer({ min: 1, max: 32 }),
    gpus: fc.array(fc.constantFrom(...gpuSizes), { maxLength: 4 }),
    zone: fc.constantFrom('a', 'b', undefined),
    draining: fc.boolean()
  })
  const stepArb = fc.record({
    cpu: fc.constantFrom(0, 0.1, 0.25, 0.5, 1, 2),
    memMiB: fc.integer({ min: 0, max: 8192 }),
    gpu: fc.constantFrom(0, 0, 1, 1, 2, 3),
    gpuMemGiB: fc.constantFrom(0, 0, 16, 40),
    zone: fc.constantFrom('a', undefined, undefined),
    holders: fc.subarray([0, 1, 2, 3, 4])
  })
  const opArb = fc.oneof(
    { arbitrary: stepArb.map(s => ({ op: 'place' as const, s })), weight: 3 },
    { arbitrary: fc.nat().map(n => ({ op: 'release' as const, n })), weight: 1 }
  )

  it('never exceeds an agent\'s capacity and never assigns a GPU device twice', () => {
    fc.assert(fc.property(fc.array(agentArb, { minLength: 1, maxLength: 5 }), fc.array(opArb, { maxLength: 60 }), (sketches, ops) => {
      let agents: AgentView[] = sketches.map((a, i) => {
        const view = agent(`agent-${i}`, { cpu: a.cpu, memory: a.memGiB * GiB, gpus: a.gpus, draining: a.draining })
        if (a.zone !== undefined) view.labels = { zone: a.zone }
        return view
      })
      const running: Array<{ agentId: string, resources: Resources, gpus: number[] }> = []
      for (const o of ops) {
        if (o.op === 'release') {
          if (running.length === 0) continue
          const [job] = running.splice(o.n % running.length, 1)
          agents = agents.map(a => a.id === job!.agentId ? release(a, job!.resources, job!.gpus) : a)
          continue
        }
        const resources = needs({ cpu: o.s.cpu, memory: o.s.memMiB * MiB, gpu: o.s.gpu, gpuMemory: o.s.gpuMemGiB * GiB, labels: o.s.zone === undefined ? {} : { zone: o.s.zone } })
        const inputs = [{ name: 'in', size: 1000, holders: o.s.holders.map(i => `agent-${i}`) }]
        const p = placeStep({ stepId: 's', resources, inputs }, agents)
        expect(p.candidates).toHaveLength(agents.length)
        if (p.kind === 'unschedulable') expect(p.candidates.every(c => c.verdict === 'never')).toBe(true)
        if (p.kind !== 'placed') continue
        const chosen = agents.find(a => a.id === p.agentId)!
        expect(chosen.draining).toBe(false)
        // allocate throws on over-commit or a shared device, which fails the property.
        agents = agents.map(a => a.id === p.agentId ? allocate(a, resources, p.gpus) : a)
        running.push({ agentId: p.agentId, resources, gpus: p.gpus })
        for (const a of agents) {
          const mine = running.filter(r => r.agentId === a.id)
          const devices = mine.flatMap(r => r.gpus)
          expect(new Set(devices).size).toBe(devices.length)
          expect(a.allocated.cpu).toBeLessThanOrEqual(a.capacity.cpu + 1e-9)
          expect(a.allocated.memory).toBeLessThanOrEqual(a.capacity.memory)
          expect([...a.allocated.gpus].sort()).toEqual([...devices].sort())
          for (const r of mine) {
            for (const d of r.gpus) expect(a.capacity.gpus.find(g => g.index === d)!.memory).toBeGreaterThanOrEqual(r.resources.gpuMemory)
          }
        }
      }
    }), { numRuns: 300 })
  })
})
