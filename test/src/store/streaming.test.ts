// Ingest and materialize stream: memory stays flat whatever the artifact size. The 2 GiB case
// the issue asks for runs with PIPEMESH_BIG_TESTS=1; the default run uses 512 MiB.

import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import fs from 'node:fs/promises'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ContentStore } from '../../../src/store/content-store.js'
import { removeDir, tempDir } from './helpers.js'

const MiB = 1024 * 1024
const RSS_LIMIT = 300 * MiB

let dir: string
beforeEach(async () => { dir = await tempDir('pm-stream-') })
afterEach(async () => { await removeDir(dir) })

/** Writes `size` bytes of non-repeating data without holding them in memory. */
async function writeBigFile (file: string, size: number): Promise<void> {
  const block = randomBytes(MiB + 4099)
  const fh = await fs.open(file, 'w')
  try {
    for (let written = 0, i = 0; written < size; i++) {
      block.writeUInt32LE(i, 0)
      const n = Math.min(block.length, size - written)
      await fh.write(block, 0, n)
      written += n
    }
  } finally {
    await fh.close()
  }
}

async function hashFile (file: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(file, { highWaterMark: MiB })) h.update(chunk as Buffer)
  return h.digest('hex')
}

async function roundTrip (size: number): Promise<void> {
  const src = path.join(dir, 'big.bin')
  await writeBigFile(src, size)
  const store = await ContentStore.open(path.join(dir, 'store'))
  try {
    let peak = process.memoryUsage.rss()
    const sample = (): void => { peak = Math.max(peak, process.memoryUsage.rss()) }
    const timer = setInterval(sample, 25)
    try {
      let t0 = performance.now()
      const ref = await store.ingest(src, { onProgress: sample })
      const ingestS = (performance.now() - t0) / 1000
      expect(ref.size).toBe(size)
      t0 = performance.now()
      await store.materialize(ref.digest, path.join(dir, 'out.bin'), { onProgress: sample })
      const materializeS = (performance.now() - t0) / 1000
      console.log(`${size / MiB} MiB: ingest ${(size / MiB / ingestS).toFixed(0)} MiB/s, ` +
        `materialize ${(size / MiB / materializeS).toFixed(0)} MiB/s, peak RSS ${(peak / MiB).toFixed(0)} MiB`)
    } finally {
      clearInterval(timer)
    }
    expect(peak).toBeLessThan(RSS_LIMIT)
    expect(await hashFile(path.join(dir, 'out.bin'))).toBe(await hashFile(src))
  } finally {
    await store.close()
  }
}

describe('streaming', () => {
  it('ingests and materializes a 512 MiB file under 300 MB RSS', async () => {
    await roundTrip(512 * MiB)
  }, 120_000)

  const big = process.env.PIPEMESH_BIG_TESTS === '1'
  // Visible in the report when skipped: the default run covers streaming with 512 MiB.
  it.runIf(big)(`ingests and materializes a 2 GiB file under 300 MB RSS${big ? '' : ' (skipped: set PIPEMESH_BIG_TESTS=1; takes about a minute)'}`, async () => {
    await roundTrip(2048 * MiB)
  }, 600_000)
})
