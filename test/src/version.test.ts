// One release number: what the CLI prints and agents report is package.json's version.

import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { PIPEMESH_VERSION } from '../../src/version.js'
import { runCli } from '../helpers/cli.js'

describe('the release version', () => {
  it('is package.json\'s, and `pipemesh --version` prints it', async () => {
    const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
    expect(PIPEMESH_VERSION).toBe(pkg.version)
    const { stdout, exitCode } = await runCli(['--version'])
    expect(exitCode).toBe(0)
    expect(stdout.trim()).toBe(pkg.version)
  })
})
