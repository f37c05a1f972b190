// The run's view when stdout is not a terminal (a pipe, a CI log): one line per change that says
// something, in the order the changes came.

import { afterEach, describe, expect, it, vi } from 'vitest'
import { LiveView } from '../../cli/live-view.js'
import { PLACING_REASON, type RunEvent, type StepSummary } from '../../src/run/types.js'

function stepEvent (step: Partial<StepSummary> & Pick<StepSummary, 'id' | 'status'>): RunEvent {
  return { type: 'step', runId: 'r', at: Date.UTC(2026, 11, 7, 3, 14, 0), step: { fingerprint: null, attempts: 0, agent: null, exitCode: null, outputs: {}, ...step } }
}

describe('the line view', () => {
  afterEach(() => { vi.restoreAllMocks() })

  it('prints each change once, skips the moment a ready step waits to be placed, and gives a waiting step its reason', () => {
    const lines: string[] = []
    vi.spyOn(process.stdout, 'write').mockImplementation(chunk => { lines.push(String(chunk)); return true })
    const view = new LiveView('run r of p', { tty: false })
    view.update(stepEvent({ id: 'a', status: 'pending' }))
    view.update(stepEvent({ id: 'a', status: 'queued', reason: PLACING_REASON }))
    view.update(stepEvent({ id: 'b', status: 'queued', reason: 'waiting for capacity: needs gpu 1; agent g: 1/1 GPUs in use' }))
    view.update(stepEvent({ id: 'b', status: 'queued', reason: 'waiting for capacity: needs gpu 1; agent g: 1/1 GPUs in use' }))
    view.update(stepEvent({ id: 'a', status: 'running', agent: 'cpu-1', attempts: 1, startedAt: Date.now() }))
    view.done()
    vi.restoreAllMocks()
    expect(lines.map(l => l.replace(/^\d\d:\d\d:\d\d /, ''))).toEqual([
      'run r of p\n',
      '· a pending\n',
      '… b queued: waiting for capacity: needs gpu 1; agent g: 1/1 GPUs in use\n',
      '▶ a running on cpu-1\n'
    ])
  })

  it('says which checkpoint a running attempt resumed from, and why a failed attempt is retried, on one line', () => {
    const lines: string[] = []
    vi.spyOn(process.stdout, 'write').mockImplementation(chunk => { lines.push(String(chunk)); return true })
    const view = new LiveView('run r of p', { tty: false })
    view.update(stepEvent({ id: 't', status: 'queued', attempts: 1, reason: 'attempt 1 failed (step "t" exited with code 1; last lines of stderr: … CUDA error: out of memory); retry 1 of 2 in 900 ms' }))
    view.update(stepEvent({ id: 't', status: 'running', agent: 'gpu-2', attempts: 2, resumedFrom: { attempt: 1, runId: 'r', at: 0 } }))
    view.update(stepEvent({ id: 'u', status: 'running', agent: 'gpu-1', attempts: 1, resumedFrom: { attempt: 3, runId: 'r-old', at: 0 } }))
    view.done()
    vi.restoreAllMocks()
    expect(lines.slice(1).map(l => l.replace(/^\d\d:\d\d:\d\d /, ''))).toEqual([
      '… t queued: attempt 1 failed (step "t" exited with code 1; last lines of stderr: … CUDA error: out of memory); retry 1 of 2 in 900 ms\n',
      '▶ t running on gpu-2 (attempt 2), resumed from the checkpoint of attempt 1\n',
      '▶ u running on gpu-1, resumed from the checkpoint of attempt 3 of run r-old\n'
    ])
  })
  it('prints a line for each input fetched and each large output stored, once done, with size, time and rate', () => {
    const lines: string[] = []
    vi.spyOn(process.stdout, 'write').mockImplementation(chunk => { lines.push(String(chunk)); return true })
    const view = new LiveView('run r of p', { tty: false })
    const at = Date.UTC(2026, 11, 7, 3, 14, 0)
    const moving = { runId: 'r', stepId: 'train', attempt: 1, totalBytes: 2 * 1024 ** 3, elapsedMs: 2000, at }
    view.update({ type: 'fetch', input: 'data', bytes: 1024 ** 3, done: false, ...moving })
    view.update({ type: 'fetch', input: 'data', bytes: 2 * 1024 ** 3, done: true, ...moving })
    view.update({ type: 'store', output: 'model', bytes: 1024 ** 3, done: false, ...moving })
    view.update({ type: 'store', output: 'model', bytes: 2 * 1024 ** 3, done: true, ...moving })
    view.done()
    vi.restoreAllMocks()
    expect(lines.slice(1).map(l => l.replace(/^\d\d:\d\d:\d\d /, ''))).toEqual([
      '▶ train fetched input data: 2 GiB in 2s at 1 GiB/s\n',
      '▶ train stored output model: 2 GiB in 2s at 1 GiB/s\n'
    ])
  })
})
