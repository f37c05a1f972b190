// The step graph of a pipeline: an edge runs from a producer to each step that reads one of its
// outputs or names it in `after`. Orders are stable (file order breaks ties) so plans, logs and
// error messages come out the same every time.

import { PipemeshError } from './errors.js'
import type { Pipeline, StepSpec } from './spec/types.js'

/** Steps this step waits for: producers of its inputs, then its `after` steps, without repeats. */
export function stepDependencies (step: StepSpec): string[] {
  const deps = new Set<string>()
  for (const source of Object.values(step.inputs)) if (source.kind === 'step') deps.add(source.step)
  for (const id of step.after) deps.add(id)
  return [...deps]
}

/**
 * Steps in an order where every step comes after its dependencies; among steps that are ready
 * together, file order. Throws on a cycle (validated pipelines have none).
 */
export function topologicalOrder (pipeline: Pick<Pipeline, 'steps'>): string[] {
  const ids = Object.keys(pipeline.steps)
  const position = new Map(ids.map((id, i) => [id, i]))
  const waiting = new Map<string, number>()
  const consumers = new Map<string, string[]>(ids.map(id => [id, []]))
  for (const id of ids) {
    const deps = stepDependencies(pipeline.steps[id] as StepSpec).filter(d => position.has(d))
    waiting.set(id, deps.length)
    for (const dep of deps) consumers.get(dep)?.push(id)
  }
  // A small sorted ready list is enough: pipelines have tens to thousands of steps, and insertion
  // keeps file order without a heap.
  const ready = ids.filter(id => waiting.get(id) === 0)
  const order: string[] = []
  while (ready.length > 0) {
    const id = ready.shift() as string
    order.push(id)
    for (const next of consumers.get(id) ?? []) {
      const left = (waiting.get(next) ?? 0) - 1
      waiting.set(next, left)
      if (left === 0) insertByPosition(ready, next, position)
    }
  }
  if (order.length !== ids.length) {
    const cycle = findCycle(pipeline.steps)
    throw new PipemeshError('INVALID_PIPELINE', `dependency cycle: ${(cycle ?? []).join(' -> ')}`)
  }
  return order
}

function insertByPosition (list: string[], id: string, position: Map<string, number>): void {
  const p = position.get(id) ?? 0
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if ((position.get(list[mid] as string) ?? 0) < p) lo = mid + 1
    else hi = mid
  }
  list.splice(lo, 0, id)
}

/**
 * One dependency cycle, in data-flow order and starting and ending at the same step, e.g.
 * ['a', 'b', 'a'] when a feeds b and b feeds a; undefined when there is none. Dependencies on
 * unknown steps are ignored.
 */
export function findCycle (steps: Record<string, StepSpec>): string[] | undefined {
  return findCycles(steps)[0]
}

/**
 * One cycle per strongly connected component that has one, so a validator can report every
 * independent cycle at once. Each cycle starts at its earliest step in file order.
 */
export function findCycles (steps: Record<string, StepSpec>): string[][] {
  const ids = Object.keys(steps)
  const position = new Map(ids.map((id, i) => [id, i]))
  const depsOf = new Map(ids.map(id => [id, stepDependencies(steps[id] as StepSpec).filter(d => position.has(d))]))

  // Tarjan's algorithm, iterative so a long chain of steps cannot overflow the stack.
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const onStack = new Set<string>()
  const stack: string[] = []
  const components: string[][] = []
  let counter = 0
  for (const root of ids) {
    if (index.has(root)) continue
    const work: Array<{ id: string, next: number }> = [{ id: root, next: 0 }]
    index.set(root, counter); low.set(root, counter); counter++
    stack.push(root); onStack.add(root)
    while (work.length > 0) {
      const frame = work[work.length - 1] as { id: string, next: number }
      const deps = depsOf.get(frame.id) as string[]
      if (frame.next < deps.length) {
        const dep = deps[frame.next++] as string
        if (!index.has(dep)) {
          index.set(dep, counter); low.set(dep, counter); counter++
          stack.push(dep); onStack.add(dep)
          work.push({ id: dep, next: 0 })
        } else if (onStack.has(dep)) {
          low.set(frame.id, Math.min(low.get(frame.id) as number, index.get(dep) as number))
        }
        continue
      }
      work.pop()
      const parent = work[work.length - 1]
      if (parent !== undefined) low.set(parent.id, Math.min(low.get(parent.id) as number, low.get(frame.id) as number))
      if (low.get(frame.id) === index.get(frame.id)) {
        const component: string[] = []
        let id: string
        do {
          id = stack.pop() as string
          onStack.delete(id)
          component.push(id)
        } while (id !== frame.id)
        const selfLoop = (depsOf.get(frame.id) as string[]).includes(frame.id)
        if (component.length > 1 || selfLoop) components.push(component)
      }
    }
  }

  const cycles = components.map(component => cycleWithin(new Set(component), depsOf, position))
  return cycles.sort((a, b) => (position.get(a[0] as string) ?? 0) - (position.get(b[0] as string) ?? 0))
}

/** A shortest cycle through the component's earliest step (breadth-first along producer -> consumer edges). */
function cycleWithin (component: Set<string>, depsOf: Map<string, string[]>, position: Map<string, number>): string[] {
  const start = [...component].sort((a, b) => (position.get(a) ?? 0) - (position.get(b) ?? 0))[0] as string
  // Breadth-first along dependencies from start; cameFrom[d] is a step that depends on d. When
  // some step depends on start, following cameFrom from it back to start lists the cycle in
  // data-flow order: start feeds that step, which feeds cameFrom[it], ... which feeds start.
  const cameFrom = new Map<string, string>()
  const queue = [start]
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i] as string
    for (const dep of depsOf.get(id) ?? []) {
      if (!component.has(dep)) continue
      if (dep === start) {
        const path = [start]
        for (let at = id; at !== start; at = cameFrom.get(at) as string) path.push(at)
        path.push(start)
        return path
      }
      if (!cameFrom.has(dep)) { cameFrom.set(dep, id); queue.push(dep) }
    }
  }
  return [start, start]
}

/** Every step that depends on `stepId`, directly or transitively (not the step itself). */
export function descendants (pipeline: Pick<Pipeline, 'steps'>, stepId: string): Set<string> {
  const consumers = new Map<string, string[]>()
  for (const [id, step] of Object.entries(pipeline.steps)) {
    for (const dep of stepDependencies(step)) {
      const list = consumers.get(dep)
      if (list === undefined) consumers.set(dep, [id])
      else list.push(id)
    }
  }
  const found = new Set<string>()
  const queue = [stepId]
  for (let i = 0; i < queue.length; i++) {
    for (const next of consumers.get(queue[i] as string) ?? []) {
      if (next !== stepId && !found.has(next)) { found.add(next); queue.push(next) }
    }
  }
  return found
}
