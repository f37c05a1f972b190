// A full disk while storing or materializing: a clear LIMIT_EXCEEDED error and a consistent
// store. Needs a small real filesystem, so it mounts a 4 MiB tmpfs; where that is not allowed
// (not root, not Linux) the test is skipped.

import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import fs from 'node:fs/promises'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ContentStore } from '../../../src/store/content-store.js'
import { removeDir, tempDir } from './helpers.js'

const MiB = 1024 * 1024
let dir: string
let mnt: string
let mounted = false

beforeAll(async () => {
  dir = await tempDir('pm-full-')
  mnt = path.join(dir, 'mnt')
  await fs.mkdir(mnt)
  if (process.platform === 'linux' && process.getuid?.() === 0) {
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt], { stdio: 'ignore' })
      mounted = true
    } catch { /* no mount permission in this container: skip */ }
  }
})

afterAll(async () => {
  if (mounted) execFileSync('umount', [mnt])
  await removeDir(dir)
})

describe('disk full', () => {
  it('fails ingest with LIMIT_EXCEEDED, leaves the store consistent, and gc frees the space', async (ctx) => {
    if (!mounted) ctx.skip()
    const src = path.join(dir, 'big.bin')
    await fs.writeFile(src, randomBytes(8 * MiB))
    const store = await ContentStore.open(path.join(mnt, 'store'))
    try {
      const err = await store.ingest(src).then(() => undefined, (e: unknown) => e)
      expect(err).toMatchObject({ code: 'LIMIT_EXCEEDED', message: expect.stringMatching(/^disk full while storing (chunk sha256:[0-9a-f]+|a chunk at offset \d+) in .*store/) as unknown })
      expect((await store.stats()).artifacts).toBe(0)
      const check = await store.verify()
      expect(check.corrupt).toEqual([])
      expect(check.missing).toEqual([])
      await store.gc([])
      await fs.writeFile(path.join(dir, 'small.bin'), randomBytes(2 * MiB))
      const ref = await store.ingest(path.join(dir, 'small.bin'))
      expect(await store.has(ref.digest)).toBe(true)
      await store.gc([])
    } finally {
      await store.close()
      await fs.rm(path.join(mnt, 'store'), { recursive: true, force: true })
    }
  })

  it('fails materialize with LIMIT_EXCEEDED and leaves nothing at the destination', async (ctx) => {
    if (!mounted) ctx.skip()
    await fs.writeFile(path.join(dir, 'f.bin'), randomBytes(6 * MiB))
    const store = await ContentStore.open(path.join(dir, 'store'))
    try {
      const ref = await store.ingest(path.join(dir, 'f.bin'))
      await expect(store.materialize(ref.digest, path.join(mnt, 'out.bin'))).rejects.toMatchObject({ code: 'LIMIT_EXCEEDED' })
      expect(await fs.readdir(mnt)).toEqual([])
    } finally {
      await store.close()
    }
  })
})
