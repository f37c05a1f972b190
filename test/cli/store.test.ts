// `pipemesh store stats|gc` on the embedded state: gc keeps what the newest runs and the reuse
// index need and frees what only older runs used.

import { describe, expect, it } from 'vitest'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import type { RunSummary } from '../../src/run/types.js'

describe('pipemesh store', () => {
  it('gc --keep-runs 1 frees what only an older run used and keeps the newest run reusable', async () => {
    const work = await tempDir()
    try {
      const data = join(work.path, 'state')
      const file = join(work.path, 'p.yaml')
      const pipeline = (salt: string): string => `name: gc
steps:
  big:
    command: yes ${salt} | head -c 3000000 > \${{outputs.blob}}
    outputs: [blob]
`
      await writeTree(work.path, { 'p.yaml': pipeline('a') })
      const first = await runCliJson<RunSummary>(['--data', data, 'run', file])
      expect(first.exitCode, first.stderr).toBe(0)
      await writeFile(file, pipeline('b'))
      const second = await runCliJson<RunSummary>(['--data', data, 'run', file])
      expect(second.exitCode, second.stderr).toBe(0)
      const oldBlob = first.json.steps[0]!.outputs.blob!
      const newBlob = second.json.steps[0]!.outputs.blob!
      expect(oldBlob).not.toBe(newBlob)

      const before = await runCliJson<{ bytes: number, artifacts: number }>(['--data', data, 'store', 'stats'])
      const gc = await runCliJson<{ removedRuns: number, freedBytes: number }>(['--data', data, 'store', 'gc', '--keep-runs', '1'])
      expect(gc.exitCode, gc.stderr).toBe(0)
      expect(gc.json.removedRuns).toBe(1)
      expect(gc.json.freedBytes).toBeGreaterThan(0)
      const after = await runCliJson<{ bytes: number }>(['--data', data, 'store', 'stats'])
      expect(after.json.bytes).toBeLessThan(before.json.bytes)

      // The kept run's output is still there; the dropped run's is gone, with a clear message.
      const kept = await runCli(['--data', data, 'artifacts', 'get', newBlob, join(work.path, 'kept.bin')])
      expect(kept.exitCode, kept.stderr).toBe(0)
      const gone = await runCli(['--data', data, 'artifacts', 'get', oldBlob, join(work.path, 'gone.bin')])
      expect(gone.exitCode).toBe(1)
      expect(gone.stderr).toMatch(/not in the local store/)
      const runs = await runCliJson<Array<{ runId: string }>>(['--data', data, 'runs'])
      expect(runs.json.map(r => r.runId)).toEqual([second.json.runId])

      // The newest version is still fully reusable.
      const again = await runCliJson<RunSummary>(['--data', data, 'run', file])
      expect(again.json.steps.map(s => s.status)).toEqual(['reused'])
    } finally {
      await work.cleanup()
    }
  })

  it('rejects bad numeric flags (--keep-runs, --limit) with exit 2 and the flag named', async () => {
    const result = await runCli(['--data', '/nonexistent-pipemesh-dir', 'store', 'gc', '--keep-runs', 'many'])
    expect(result.exitCode).toBe(2)
    expect(result.stderr).toMatch(/--keep-runs must be a whole number/)
    const runs = await runCli(['--data', '/nonexistent-pipemesh-dir', 'runs', '--limit', 'ten'])
    expect(runs.exitCode).toBe(2)
    expect(runs.stderr).toMatch(/--limit must be a whole number >= 1, got "ten"/)
  })
})
