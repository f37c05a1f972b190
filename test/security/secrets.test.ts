// Secrets reach the steps that list them as environment variables, and nowhere else: not in
// logs (redacted), run records, the API, or fingerprints.

import { describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { execa } from 'execa'
import { CLI, runCli, runCliJson, tempDir, writeTree } from '../helpers/cli.js'
import type { RunSummary } from '../../src/run/types.js'

describe('secrets', () => {
  it('a step gets the secret, its log shows it redacted, and no record or listing contains it', async () => {
    const work = await tempDir()
    try {
      const data = join(work.path, 'state')
      const value = 'hunter2-very-secret-value'
      const set = await execa(process.execPath, [CLI, '--data', data, 'secret', 'set', 'API_KEY'], { input: value, reject: false })
      expect(set.exitCode, set.stderr).toBe(0)
      await writeTree(work.path, {
        'p.yaml': `name: secretive
steps:
  use:
    command: echo "key is $API_KEY"; printf %s "$API_KEY" | sha256sum | cut -c1-16 > \${{outputs.h}}
    outputs: [h]
    secrets: [API_KEY]
`
      })
      const run = await runCliJson<RunSummary>(['--data', data, 'run', join(work.path, 'p.yaml')])
      expect(run.exitCode, run.stderr).toBe(0)
      const logs = await runCli(['--data', data, 'logs', run.json.runId, 'use'])
      expect(logs.stdout).toMatch(/key is \*\*\*/)
      expect(logs.stdout).not.toContain(value)
      const everything = [
        JSON.stringify(run.json),
        (await runCli(['--data', data, 'status', run.json.runId, '--json'])).stdout,
        (await runCli(['--data', data, 'explain', run.json.runId, 'use', '--json'])).stdout,
        (await runCli(['--data', data, 'secret', 'list', '--json'])).stdout
      ].join('\n')
      expect(everything).not.toContain(value)
      expect(everything).toContain('API_KEY')
      // The step really saw it: its output is a hash of the value.
      const got = await runCli(['--data', data, 'artifacts', 'get', `${run.json.runId}/use/h`, join(work.path, 'h.txt'), '--json'])
      expect(got.exitCode, got.stderr).toBe(0)
      const { readFile } = await import('node:fs/promises')
      const { createHash } = await import('node:crypto')
      expect((await readFile(join(work.path, 'h.txt'), 'utf8')).trim()).toBe(createHash('sha256').update(value).digest('hex').slice(0, 16))
    } finally {
      await work.cleanup()
    }
  })

  it('a run that needs a secret nobody set is refused before anything runs', async () => {
    const work = await tempDir()
    try {
      await writeTree(work.path, { 'p.yaml': 'name: nosecret\nsteps:\n  use:\n    command: "true"\n    secrets: [MISSING_ONE]\n' })
      const result = await runCli(['--data', join(work.path, 'state'), 'run', join(work.path, 'p.yaml')])
      expect(result.exitCode).toBe(2)
      expect(result.stderr).toMatch(/MISSING_ONE/)
      expect(result.stderr).toMatch(/secret set/)
    } finally {
      await work.cleanup()
    }
  })
})
