// What the coordinator does with a ready step whose inputs, code or environment files may have
// been lost with the agents that held them: place it, wait, rerun the producer, or fail.

import { describe, expect, it } from 'vitest'
import { checkContent, type ContentCheck, type HolderView } from '../../coordinator/content-check.js'
import type { StepRecord, SubmissionArtifacts } from '../../src/run/types.js'
import type { StepSpec } from '../../src/spec/types.js'
import type { ArtifactRef, Digest } from '../../src/store/types.js'

const d = (c: string): Digest => `sha256:${c.repeat(64)}` as Digest
const ref = (c: string, size = 10): ArtifactRef => ({ digest: d(c), kind: 'file', size })

function spec (over: Partial<StepSpec> = {}): StepSpec {
  return {
    id: 'train',
    command: 'true',
    code: [],
    inputs: { data: { kind: 'step', step: 'prep', output: 'train' }, raw: { kind: 'pipeline', input: 'raw' } },
    outputs: ['model'],
    after: [],
    env: {},
    resources: { cpu: 1, memory: 0, gpu: 0, gpuMemory: 0, labels: {} },
    retry: { max: 0, backoffMs: 1000, nonRetryableExitCodes: [] },
    cache: true,
    secrets: [],
    ...over
  } as StepSpec
}

function prep (status: StepRecord['status']): StepRecord {
  return { runId: 'r', id: 'prep', status, attempts: [], outputs: { train: ref('a', 100) } }
}

const artifacts: SubmissionArtifacts = {
  inputs: { raw: ref('b', 5) },
  code: { train: { ref: ref('c'), files: {} } },
  environments: {}
}

/** Holders by digest letter: connected ones, and disconnected ones still within their lease. */
function holders (connected: Record<string, string[]>, away: Record<string, string[]> = {}): HolderView {
  const of = (map: Record<string, string[]>) => (digest: Digest) => map[digest.slice(7, 8)] ?? []
  return { holdersOf: of(connected), awayHolders: of(away), nameOf: id => `agent-${id}` }
}

function check (over: Partial<ContentCheck>): ReturnType<typeof checkContent> {
  return checkContent({ spec: spec(), steps: new Map([['prep', prep('succeeded')]]), artifacts, holders: holders({ a: ['x'], b: ['y'], c: ['y'] }), now: 1000, graceUntil: 0, ...over })
}

describe('checkContent', () => {
  it('places a step whose content is all held, listing the holders of each input', () => {
    const verdict = check({})
    expect(verdict).toEqual({ kind: 'ok', inputs: [{ name: 'data', ref: ref('a', 100), holders: ['x'] }, { name: 'raw', ref: ref('b', 5), holders: ['y'] }] })
  })

  it('reruns the producer when its output is held by nobody', () => {
    const verdict = check({ holders: holders({ b: ['y'], c: ['y'] }) })
    expect(verdict).toMatchObject({ kind: 'rebuild', producer: 'prep', output: 'train' })
    expect(verdict.kind === 'rebuild' && verdict.reason).toMatch(/input data \(output train of step prep\) was lost/)
  })

  it('waits for a disconnected holder within its lease instead of rebuilding', () => {
    const verdict = check({ holders: holders({ b: ['y'], c: ['y'] }, { a: ['x'] }) })
    expect(verdict).toMatchObject({ kind: 'wait' })
    expect(verdict.kind === 'wait' && verdict.reason).toMatch(/held only by agent-x, now disconnected/)
  })

  it('waits, with a time to look again, while agents may still reconnect after a coordinator restart', () => {
    expect(check({ holders: holders({ b: ['y'], c: ['y'] }), graceUntil: 5000 })).toMatchObject({ kind: 'wait', until: 5000 })
  })

  it('goes back to pending while the producer is being rebuilt', () => {
    expect(check({ steps: new Map([['prep', prep('queued')]]) })).toMatchObject({ kind: 'pending' })
  })

  it('fails when an uploaded pipeline input or the code snapshot is gone, saying to submit again', () => {
    const lostInput = check({ holders: holders({ a: ['x'], c: ['y'] }) })
    expect(lostInput).toMatchObject({ kind: 'fail' })
    expect(lostInput.kind === 'fail' && lostInput.reason).toMatch(/pipeline input raw.*submit the run again/)
    const lostCode = check({ holders: holders({ a: ['x'], b: ['y'] }) })
    expect(lostCode.kind === 'fail' && lostCode.reason).toMatch(/its code snapshot/)
  })
})
