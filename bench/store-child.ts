// Child process of S1 (see store.ts): `STOREDIR FILE DEST` ingests FILE into a fresh content
// store, materializes it back to DEST, and moves DEST into a second store as a step's output is
// (leaving DEST gone), then prints the timings and this process's peak RSS,
// which is why it runs apart from the benchmark driver. Each timed phase starts right after as
// many bytes were written and freed (see fresh-memory.ts), and after a sync, as cp's does.

import { createHash } from 'node:crypto'
import { open, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ContentStore } from '../src/store/content-store.js'
import { sync } from './baselines.js'
import { stealMs } from './exec.js'
import { levelMemoryFor } from './fresh-memory.js'

/**
 * `ingestCpu`: this process's CPU during the ingest, ms (its kernel share shows the VM's
 * fresh-memory effect), and the time the host took from this VM's CPUs meanwhile (`stealMs`, all
 * CPUs together; absent where /proc/stat is not to be read): a rep slow for the host's sake,
 * not the store's.
 */
export interface StoreReport { ingestMs: number, ingestCpu: { userMs: number, systemMs: number, stealMs?: number }, materializeMs: number, adoptMs: number, materializedSha256: string, size: number, digest: string, maxRssBytes: number }

/** Through one buffer, so that the check adds nothing to the peak RSS reported. */
async function sha256File (file: string): Promise<string> {
  const hash = createHash('sha256')
  const buf = Buffer.alloc(1024 * 1024)
  const fh = await open(file, 'r')
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null)
      if (bytesRead === 0) break
      hash.update(buf.subarray(0, bytesRead))
    }
  } finally {
    await fh.close()
  }
  return hash.digest('hex')
}

const [storeDir, file, dest] = process.argv.slice(2)
if (storeDir === undefined || file === undefined || dest === undefined) {
  process.stderr.write('usage: store-child STOREDIR FILE DEST\n')
  process.exit(2)
}

const store = await ContentStore.open(storeDir)
try {
  const { size } = await stat(file)
  await levelMemoryFor(dirname(dest), size)
  const stolen = await stealMs()
  const cpu = process.cpuUsage()
  let t = performance.now()
  const ref = await store.ingest(file)
  const ingestMs = performance.now() - t
  const used = process.cpuUsage(cpu)
  const stolenAfter = await stealMs()
  const ingestCpu: StoreReport['ingestCpu'] = { userMs: used.user / 1000, systemMs: used.system / 1000 }
  if (stolen !== undefined && stolenAfter !== undefined) ingestCpu.stealMs = stolenAfter - stolen
  // As before ingest and before cp: the disk caught up, then freed memory to write into.
  await sync()
  await levelMemoryFor(dirname(dest), size)
  t = performance.now()
  await store.materialize(ref.digest, dest)
  const materializeMs = performance.now() - t
  const materializedSha256 = await sha256File(dest)
  // The materialized file stands for a step's output, which the agent moves into its store
  // (IngestOptions.adopt): a store of its own, or every chunk would be a duplicate.
  const adopting = await ContentStore.open(`${storeDir}-adopt`)
  let adoptMs: number
  try {
    await sync()
    await levelMemoryFor(dirname(dest), size)
    t = performance.now()
    const adopted = await adopting.ingest(dest, { adopt: true })
    adoptMs = performance.now() - t
    if (adopted.digest !== ref.digest) throw new Error(`adopting the materialized file gave ${adopted.digest}, ingesting the source ${ref.digest}`)
  } finally {
    await adopting.close()
  }
  const out: StoreReport = { ingestMs, ingestCpu, materializeMs, adoptMs, materializedSha256, size: ref.size, digest: ref.digest, maxRssBytes: process.resourceUsage().maxRSS * 1024 }
  process.stdout.write(JSON.stringify(out) + '\n')
} finally {
  await store.close()
}
