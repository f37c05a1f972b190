// The bundled examples, end to end through the CLI: the demo (iris with real ML libraries in an
// environment) and the standard-library Python pipeline.

import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { ROOT, runCliJson, tempDir } from '../helpers/cli.js'
import type { RunSummary } from '../../src/run/types.js'

describe('examples', () => {
  it('pipemesh demo trains on iris, prints real metrics, then reuses every step', async () => {
    const work = await tempDir()
    try {
      const { exitCode, json, stderr } = await runCliJson<{ first: RunSummary, metrics: { accuracy: number }, second: RunSummary }>(['--data', work.path, 'demo'], { timeoutMs: 240_000 })
      expect(exitCode, stderr).toBe(0)
      expect(json.first.status).toBe('succeeded')
      expect(json.first.steps.map(s => s.status)).not.toContain('reused')
      expect(json.metrics.accuracy).toBeGreaterThan(0.8)
      expect(json.metrics.accuracy).toBeLessThanOrEqual(1)
      expect(json.second.status).toBe('succeeded')
      expect(json.second.steps.every(s => s.status === 'reused')).toBe(true)
      expect(json.second.steps.map(s => s.outputs)).toEqual(json.first.steps.map(s => s.outputs))
    } finally {
      await work.cleanup()
    }
  }, 300_000)

  it('the Python pipeline runs any program: standard-library steps succeed', async () => {
    const work = await tempDir()
    try {
      const { exitCode, json, stderr } = await runCliJson<RunSummary>(['--data', work.path, 'run', join(ROOT, 'examples', 'python', 'pipeline.yaml')], { timeoutMs: 120_000 })
      expect(exitCode, `${stderr}\n${JSON.stringify(json, null, 2)}`).toBe(0)
      expect(json.steps.every(s => s.status === 'succeeded')).toBe(true)
    } finally {
      await work.cleanup()
    }
  }, 180_000)
})
