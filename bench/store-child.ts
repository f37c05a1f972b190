// Child process of S1 (see store.ts): `STOREDIR FILE DEST` ingests FILE into a fresh content
// store and materializes it back to DEST, then prints the timings and this process's peak RSS,
// which is why it runs apart from the benchmark driver. Each timed phase starts right after as
// many bytes were written and freed (see fresh-memory.ts), and after a sync, as cp's does.

import { stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ContentStore } from '../src/store/content-store.js'
import { sync } from './baselines.js'
import { levelMemoryFor } from './fresh-memory.js'

/** `ingestCpu`: this process's CPU during the ingest, ms (its kernel share shows the VM's fresh-memory effect). */
export interface StoreReport { ingestMs: number, ingestCpu: { userMs: number, systemMs: number }, materializeMs: number, size: number, digest: string, maxRssBytes: number }

const [storeDir, file, dest] = process.argv.slice(2)
if (storeDir === undefined || file === undefined || dest === undefined) {
  process.stderr.write('usage: store-child STOREDIR FILE DEST\n')
  process.exit(2)
}

const store = await ContentStore.open(storeDir)
try {
  const { size } = await stat(file)
  await levelMemoryFor(dirname(dest), size)
  const cpu = process.cpuUsage()
  let t = performance.now()
  const ref = await store.ingest(file)
  const ingestMs = performance.now() - t
  const used = process.cpuUsage(cpu)
  const ingestCpu = { userMs: used.user / 1000, systemMs: used.system / 1000 }
  // As before ingest and before cp: the disk caught up, then freed memory to write into.
  await sync()
  await levelMemoryFor(dirname(dest), size)
  t = performance.now()
  await store.materialize(ref.digest, dest)
  const materializeMs = performance.now() - t
  const out: StoreReport = { ingestMs, ingestCpu, materializeMs, size: ref.size, digest: ref.digest, maxRssBytes: process.resourceUsage().maxRSS * 1024 }
  process.stdout.write(JSON.stringify(out) + '\n')
} finally {
  await store.close()
}
