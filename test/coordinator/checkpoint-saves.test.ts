// Which save a step resumes from: the newest held by a connected agent, else the one before it;
// a save reported twice does not push out the fallback.

import { describe, expect, it } from 'vitest'
import { resumableSave, resumingFrom, withSave, type Save } from '../../coordinator/checkpoint-saves.js'
import type { Digest } from '../../src/store/types.js'

const digest = (n: number): Digest => `sha256:${String(n).padStart(64, '0')}`
const save = (n: number, runId = 'r1'): Save => ({ ref: { digest: digest(n), kind: 'tree', size: n }, runId, stepId: 'train', attempt: n, agentName: `a${n}`, at: n })

describe('checkpoint saves', () => {
  it('keeps the newest save and the one before it', () => {
    let record = withSave(undefined, save(1))
    expect(record).toEqual(save(1))
    record = withSave(record, save(2))
    expect(record).toEqual({ ...save(2), older: save(1) })
    record = withSave(record, save(3))
    expect(record).toEqual({ ...save(3), older: save(2) })
  })

  it('does not lose the fallback when the same save is reported again (the last save of an unchanged directory)', () => {
    const record = withSave(withSave(withSave(undefined, save(1)), save(2)), { ...save(2), at: 99 })
    expect(record.older).toEqual(save(1))
    expect(record.at).toBe(99)
  })

  it('resumes from the newest save a connected agent holds, else the one before, else none', () => {
    const step = { checkpoint: withSave(withSave(undefined, save(1)), save(2)) }
    expect(resumableSave(step, () => true)).toEqual(save(2))
    expect(resumableSave(step, d => d === digest(1))).toEqual(save(1))
    expect(resumableSave(step, () => false)).toBeUndefined()
    expect(resumableSave({}, () => true)).toBeUndefined()
  })

  it('says which attempt, and which run when it was another', () => {
    expect(resumingFrom(save(2), 'r1')).toBe(', resuming from the checkpoint saved by attempt 2')
    expect(resumingFrom(save(2, 'r0'), 'r1')).toBe(', resuming from the checkpoint saved by attempt 2 of run r0')
  })
})
