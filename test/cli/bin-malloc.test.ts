// The bin's first line (scripts/bin.mjs): run as a program, /bin/sh fixes glibc malloc's mmap
// threshold and execs node on the same file, so a daemon started as users start it has the
// setting, keeps its process id (signals reach node, not a shell), and a value the user chose
// wins. Read back from /proc, so Linux only, as the agents this is for.

import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { execa } from 'execa'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { CLI, tempDir } from '../helpers/cli.js'
import { waitFor } from '../helpers/wait.js'

let work: Awaited<ReturnType<typeof tempDir>>
beforeEach(async () => { work = await tempDir() })
afterEach(async () => { await work.cleanup() })

/**
 * Starts `pipemesh coordinator` through the bin, with MALLOC_MMAP_THRESHOLD_ set to `threshold`
 * or unset, and returns its process's name and environment once it serves.
 */
async function daemonEnvironment (threshold: string | undefined): Promise<{ comm: string, environ: Map<string, string>, exitCode: number | undefined }> {
  const { MALLOC_MMAP_THRESHOLD_: _, ...env } = process.env
  if (threshold !== undefined) env.MALLOC_MMAP_THRESHOLD_ = threshold
  const proc = execa(CLI, ['--data', join(work.path, 'coordinator'), 'coordinator', '--api', '127.0.0.1:0'], { env, extendEnv: false, reject: false, all: true, buffer: { all: true }, stdin: 'ignore' })
  let out = ''
  proc.all?.on('data', (chunk: Buffer) => { out += chunk.toString() })
  try {
    await waitFor('the coordinator started through the bin to print its HTTP address', () => /http api:/.test(out) ? true : undefined, 60_000, () => out)
    const comm = (await readFile(`/proc/${proc.pid!}/comm`, 'utf8')).trim()
    const raw = await readFile(`/proc/${proc.pid!}/environ`, 'utf8')
    const environ = new Map(raw.split('\0').filter(e => e !== '').map(e => [e.slice(0, e.indexOf('=')), e.slice(e.indexOf('=') + 1)]))
    proc.kill('SIGTERM')
    const result = await proc
    return { comm, environ, exitCode: result.exitCode }
  } finally {
    proc.kill('SIGKILL')
  }
}

describe('the pipemesh bin', () => {
  it('runs node itself, under the same process id, with glibc\'s mmap threshold fixed at 128 KiB', async () => {
    const { comm, environ, exitCode } = await daemonEnvironment(undefined)
    expect(comm).toBe('node')
    expect(environ.get('MALLOC_MMAP_THRESHOLD_')).toBe('131072')
    // SIGTERM went to node, which stopped cleanly.
    expect(exitCode).toBe(0)
  })

  it('keeps a threshold the user set', async () => {
    const { environ } = await daemonEnvironment('262144')
    expect(environ.get('MALLOC_MMAP_THRESHOLD_')).toBe('262144')
  })
})
