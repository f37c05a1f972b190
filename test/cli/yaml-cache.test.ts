// The CLI's cache of parsed pipeline files, on a real directory: keyed by the file's text, so an
// edit is never missed; damaged entries and an unwritable cache only cost a parse.

import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openYamlCache } from '../../cli/yaml-cache.js'
import { runCliJson, tempDir } from '../helpers/cli.js'

describe('the parsed-pipeline cache', () => {
  let work: { path: string, cleanup: () => Promise<void> }
  beforeEach(async () => { work = await tempDir() })
  afterEach(async () => { await work.cleanup() })

  it('gives back what was stored for the same text only, and survives damaged entries', async () => {
    const cache = openYamlCache({ XDG_CACHE_HOME: work.path })!
    expect(cache.get('name: a')).toBeUndefined()
    cache.set('name: a', { name: 'a', n: [1, 2] })
    expect(cache.get('name: a')).toEqual({ name: 'a', n: [1, 2] })
    expect(cache.get('name: a ')).toBeUndefined()
    const dir = join(work.path, 'pipemesh', 'pipelines')
    const [file] = await readdir(dir)
    await writeFile(join(dir, file!), '{"name": "a", trunc')
    expect(cache.get('name: a')).toBeUndefined()
  })

  it('keeps a bounded number of entries', async () => {
    const cache = openYamlCache({ XDG_CACHE_HOME: work.path })!
    for (let i = 0; i < 70; i++) cache.set(`name: p${i}`, { i })
    expect(cache.get('name: p69')).toEqual({ i: 69 })
    expect(await readdir(join(work.path, 'pipemesh', 'pipelines'))).toHaveLength(64)
  })

  it('is off with PIPEMESH_CODE_CACHE=0, and an unwritable cache only means parsing', async () => {
    expect(openYamlCache({ XDG_CACHE_HOME: work.path, PIPEMESH_CODE_CACHE: '0' })).toBeUndefined()
    // A cache "directory" that is a file: nothing can be written, even by root.
    const blocked = join(work.path, 'not-a-dir')
    await writeFile(blocked, '')
    const cache = openYamlCache({ XDG_CACHE_HOME: blocked })!
    expect(() => { cache.set('name: a', { name: 'a' }) }).not.toThrow()
    expect(cache.get('name: a')).toBeUndefined()
  })

  it('pipemesh validate sees an edit to a file it has cached', async () => {
    const env = { XDG_CACHE_HOME: join(work.path, 'cache') }
    const file = join(work.path, 'p.yaml')
    await writeFile(file, 'name: p\nsteps:\n  a: { command: echo a }\n')
    const first = await runCliJson<{ steps: string[] }>(['validate', file], { env })
    expect(first.exitCode, first.stderr).toBe(0)
    expect(await readdir(join(work.path, 'cache', 'pipemesh', 'pipelines'))).toHaveLength(1)
    const again = await runCliJson<{ steps: string[] }>(['validate', file], { env })
    expect(again.json.steps).toEqual(['a'])
    await writeFile(file, 'name: p\nsteps:\n  a: { command: echo a }\n  b: { command: echo b, after: [a] }\n')
    const edited = await runCliJson<{ steps: string[] }>(['validate', file], { env })
    expect(edited.json.steps).toEqual(['a', 'b'])
    // A cached file is still validated in full: a missing code file is reported every time.
    await writeFile(file, 'name: p\nsteps:\n  a: { command: echo a, code: [gone.py] }\n')
    for (let i = 0; i < 2; i++) {
      const bad = await runCliJson<unknown>(['validate', file], { env })
      expect(bad.exitCode).toBe(2)
      expect(JSON.stringify(bad.json)).toMatch(/gone\.py/)
    }
  }, 60_000)
})
