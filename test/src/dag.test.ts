// The step graph: dependencies, a stable run order, cycles with their path, and what a change
// to one step invalidates below it.

import { describe, expect, it } from 'vitest'
import { descendants, findCycle, stepDependencies, topologicalOrder } from '../../src/dag.js'
import type { InputSource, StepSpec } from '../../src/spec/types.js'

function step (id: string, from: string[] = [], after: string[] = []): StepSpec {
  const inputs: Record<string, InputSource> = {}
  from.forEach((producer, i) => { inputs[`in${i}`] = { kind: 'step', step: producer, output: 'out' } })
  return {
    id, command: 'true', code: [], inputs, outputs: ['out'], after, env: {},
    resources: { cpu: 1, memory: 0, gpu: 0, gpuMemory: 0, labels: {} },
    retry: { max: 0, backoffMs: 1000, nonRetryableExitCodes: [] }, cache: true, secrets: []
  }
}

function graph (...steps: StepSpec[]): { steps: Record<string, StepSpec> } {
  return { steps: Object.fromEntries(steps.map(s => [s.id, s])) }
}

describe('stepDependencies', () => {
  it('lists producers of inputs and after steps once each', () => {
    const s = step('train', ['prep', 'prep', 'split'], ['prep', 'setup'])
    s.inputs.raw = { kind: 'pipeline', input: 'raw' }
    expect(stepDependencies(s)).toEqual(['prep', 'split', 'setup'])
  })
})

describe('topologicalOrder', () => {
  it('puts every step after its dependencies, the earliest ready step in file order first', () => {
    const g = graph(step('score', ['select']), step('prep'), step('rf', ['prep']), step('knn', ['prep']),
      step('cart', ['prep']), step('select', ['rf', 'knn', 'cart']), step('report', [], ['score']), step('lint'))
    expect(topologicalOrder(g)).toEqual(['prep', 'rf', 'knn', 'cart', 'select', 'score', 'report', 'lint'])
  })

  it('handles a long chain without deep recursion', () => {
    const steps = Array.from({ length: 20_000 }, (_, i) => step(`s${i}`, i === 0 ? [] : [`s${i - 1}`]))
    const order = topologicalOrder(graph(...steps.reverse()))
    expect(order[0]).toBe('s0')
    expect(order.at(-1)).toBe('s19999')
  })

  it('throws on a cycle, naming it', () => {
    expect(() => topologicalOrder(graph(step('a', ['b']), step('b', ['a'])))).toThrow('dependency cycle: a -> b -> a')
  })
})

describe('findCycle', () => {
  it('returns undefined for a DAG', () => {
    expect(findCycle(graph(step('a'), step('b', ['a']), step('c', ['a', 'b'])).steps)).toBeUndefined()
  })

  it('returns the cycle in data-flow order, from its earliest step', () => {
    // c feeds a (a reads c's output), a feeds b, b feeds c (c runs after b).
    const g = graph(step('x'), step('a', ['c', 'x']), step('b', ['a']), step('c', [], ['b']))
    expect(findCycle(g.steps)).toEqual(['a', 'b', 'c', 'a'])
  })

  it('finds a self-dependency and ignores unknown steps', () => {
    expect(findCycle(graph(step('a', ['ghost']), step('b', [], ['b'])).steps)).toEqual(['b', 'b'])
  })

  it('finds a cycle in a deep graph without overflowing the stack', () => {
    const steps = Array.from({ length: 20_000 }, (_, i) => step(`s${i}`, [`s${(i + 1) % 20_000}`]))
    const cycle = findCycle(graph(...steps).steps)
    expect(cycle).toHaveLength(20_001)
    expect(cycle?.[0]).toBe('s0')
    expect(cycle?.[1]).toBe('s19999')
  })
})

describe('descendants', () => {
  it('returns every step downstream through inputs and after, not the step itself', () => {
    const g = graph(step('prep'), step('rf', ['prep']), step('knn', ['prep']), step('select', ['rf', 'knn']),
      step('score', ['select']), step('report', [], ['score']), step('other'))
    expect(descendants(g, 'rf')).toEqual(new Set(['select', 'score', 'report']))
    expect(descendants(g, 'prep')).toEqual(new Set(['rf', 'knn', 'select', 'score', 'report']))
    expect(descendants(g, 'other')).toEqual(new Set())
  })
})
