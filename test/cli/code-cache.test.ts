// The bin's V8 code cache (scripts/bin.mjs), on real processes: what one invocation writes, the
// next of the same kind takes. V8 refuses a cache made under other flags than its own, and the
// bin sets a V8 flag per kind of command (the tier-up budget), so a cache made after that flag
// changed would be refused, and rewritten, on every start.

import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { execa } from 'execa'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CLI, runCli, tempDir, writeTree } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait.js'

/** The cache file of one kind of command, with its modification time (ns). */
async function cacheFile (cacheHome: string, kind: string): Promise<{ name: string, mtime: bigint } | undefined> {
  const dir = join(cacheHome, 'pipemesh')
  const name = (await readdir(dir).catch(() => [] as string[])).find(n => n.endsWith(`-${kind}.bin`))
  if (name === undefined) return undefined
  return { name, mtime: (await stat(join(dir, name), { bigint: true })).mtimeNs }
}

/** Starts `pipemesh coordinator`, waits until it serves, and stops it with SIGTERM. */
async function startAndStopCoordinator (dataDir: string, env: Record<string, string>): Promise<void> {
  const proc = execa(process.execPath, [CLI, '--data', dataDir, 'coordinator', '--api', '127.0.0.1:0'], { env, reject: false, all: true, buffer: { all: true }, stdin: 'ignore' })
  let out = ''
  proc.all?.on('data', (chunk: Buffer) => { out += chunk.toString() })
  try {
    await waitFor('the coordinator to print its HTTP address', () => /http api:/.test(out) ? true : undefined, 60_000, () => out)
  } finally {
    proc.kill('SIGTERM')
    const result = await proc
    expect(result.exitCode, `${out}\n(ended by ${result.signal ?? 'no signal'})`).toBe(0)
  }
}

describe('the code cache of the pipemesh bin', () => {
  let work: { path: string, cleanup: () => Promise<void> }
  beforeEach(async () => { work = await tempDir() })
  afterEach(async () => { await work.cleanup() })

  it('is written by the first embedded run and taken, not rewritten, by the next', async () => {
    const env = { XDG_CACHE_HOME: join(work.path, 'cache') }
    await writeTree(work.path, { 'p.yaml': 'name: p\nsteps:\n  a: { command: "true", cache: false }\n' })
    const args = ['--data', join(work.path, 'data'), 'run', join(work.path, 'p.yaml')]
    const first = await runCli(args, { env })
    expect(first.exitCode, first.stderr).toBe(0)
    const written = await cacheFile(env.XDG_CACHE_HOME, 'run')
    expect(written, 'no code cache for runs after the first run').toBeDefined()
    const second = await runCli(args, { env })
    expect(second.exitCode, second.stderr).toBe(0)
    expect(await cacheFile(env.XDG_CACHE_HOME, 'run'), 'the second run rewrote the cache: V8 refused it').toEqual(written)
  })

  it('is written when a daemon stops and taken when it starts again', async () => {
    const env = { XDG_CACHE_HOME: join(work.path, 'cache'), PIPEMESH_LOG_LEVEL: 'warn' }
    const data = join(work.path, 'coordinator')
    await startAndStopCoordinator(data, env)
    const written = await cacheFile(env.XDG_CACHE_HOME, 'coordinator')
    expect(written, 'no code cache for the coordinator after a clean stop').toBeDefined()
    await startAndStopCoordinator(data, env)
    expect(await cacheFile(env.XDG_CACHE_HOME, 'coordinator'), 'the restarted coordinator rewrote the cache: V8 refused it').toEqual(written)
  })
})
