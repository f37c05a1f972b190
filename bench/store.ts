// S1: ingest a large file into a fresh content store and materialize it back, against `cp` of
// the same file in the same run. The store runs in a child process (store-child.ts) so that its
// peak RSS is the store's own. The source stays in the page cache (dropping caches needs root),
// for cp and the store alike; `sync` runs between measurements so writeback does not spill over.

import { createHash, randomFill } from 'node:crypto'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { runCp, sync } from './baselines.js'
import { levelMemoryFor } from './fresh-memory.js'
import { ensureOk, lastJsonLine, stealMs, timed } from './exec.js'
import type { Row } from './stats.js'
import type { StoreReport } from './store-child.js'
import { discard } from './scratch.js'

const CHILD = fileURLToPath(new URL('./store-child.js', import.meta.url))
const MIB = 1024 * 1024
const fillRandom = promisify(randomFill)

export interface StoreBench { rows: Row[], failures: string[] }

/** Distinct random bytes throughout (a repeated block would be deduplicated by the store). */
async function writeRandomFile (file: string, bytes: number): Promise<string> {
  const hash = createHash('sha256')
  const handle = await open(file, 'w')
  try {
    const block = Buffer.alloc(4 * MIB)
    for (let done = 0; done < bytes;) {
      const n = Math.min(block.length, bytes - done)
      const part = block.subarray(0, n)
      await fillRandom(part)
      hash.update(part)
      await handle.write(part, 0, n)
      done += n
    }
  } finally {
    await handle.close()
  }
  return hash.digest('hex')
}

export async function benchStore (scratch: string, reps: number, bytes: number, log: (line: string) => void): Promise<StoreBench> {
  const dir = await mkdtemp(join(scratch, 's1-'))
  const workload = 'S1 store'
  const cp: number[] = []
  const ingest: number[] = []
  const materialize: number[] = []
  const adopt: number[] = []
  const rss: number[] = []
  const failures: string[] = []
  // Each rep's ingest ÷ cp, and whether the host took CPU from this VM during either.
  const perRep: Array<{ ratio: number, stolen: boolean }> = []
  try {
    const src = join(dir, 'source.bin')
    log(`S1: writing ${bytes / MIB} MiB of random bytes`)
    const srcHash = await writeRandomFile(src, bytes)
    const mib = bytes / MIB
    for (let rep = 1; rep <= reps; rep++) {
      const copy = join(dir, 'copy.bin')
      await sync()
      await levelMemoryFor(dir, bytes)
      const stolen = await stealMs()
      cp.push(mib / (await runCp(src, copy) / 1000))
      const cpStolen = await stealMs()
      const cpStealMs = stolen === undefined || cpStolen === undefined ? undefined : cpStolen - stolen
      const cpSteal = cpStealMs === undefined ? '' : ` (host steal ${(cpStealMs / 1000).toFixed(2)} s)`
      await rm(copy, { force: true })
      await sync()
      const storeDir = join(dir, `store-${rep}`)
      const dest = join(dir, 'materialized.bin')
      const result = await timed(process.execPath, [CHILD, storeDir, src, dest], { timeoutMs: 600_000 })
      let ingestCpu = ''
      try {
        const report = lastJsonLine<StoreReport>('S1 store child', ensureOk('S1 store child', result).stdout)
        ingest.push(mib / (report.ingestMs / 1000))
        if (cpStealMs !== undefined && report.ingestCpu.stealMs !== undefined) {
          perRep.push({ ratio: ingest.at(-1)! / cp.at(-1)!, stolen: cpStealMs > 0 || report.ingestCpu.stealMs > 0 })
        }
        const steal = report.ingestCpu.stealMs === undefined ? '' : `, host steal ${(report.ingestCpu.stealMs / 1000).toFixed(2)} s`
        ingestCpu = ` (CPU ${(report.ingestCpu.userMs / 1000).toFixed(2)} s user, ${(report.ingestCpu.systemMs / 1000).toFixed(2)} s kernel${steal})`
        materialize.push(mib / (report.materializeMs / 1000))
        adopt.push(mib / (report.adoptMs / 1000))
        rss.push(report.maxRssBytes / 1e6)
        // The child checked that the materialized file, adopted, has the digest the source had.
        if (report.size !== bytes) failures.push(`rep ${rep}: size ingested ${report.size}, expected ${bytes}`)
        else if (report.materializedSha256 !== srcHash) failures.push(`rep ${rep}: materialized bytes differ from the source`)
      } catch (err) {
        failures.push(`rep ${rep}: ${(err as Error).message}`)
      }
      await rm(dest, { force: true })
      await discard(storeDir)
      await discard(`${storeDir}-adopt`)
      log(`S1 rep ${rep}/${reps}: cp ${cp.at(-1)?.toFixed(0) ?? '-'} MiB/s${cpSteal}, ingest ${ingest.at(-1)?.toFixed(0) ?? '-'} MiB/s${ingestCpu}, materialize ${materialize.at(-1)?.toFixed(0) ?? '-'} MiB/s, adopt ${adopt.at(-1)?.toFixed(0) ?? '-'} MiB/s, peak RSS ${rss.at(-1)?.toFixed(0) ?? '-'} MB`)
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
  const check = failures.length === 0 ? `ok ${reps}/${reps}, bytes identical` : `FAIL ${failures.length}/${reps}: ${failures[0] ?? ''}`
  const note = 'page cache warm'
  // The verdict stays on the medians; this says how much of a miss the host's share was.
  const unstolen = perRep.filter(r => !r.stolen).map(r => `${r.ratio.toFixed(2)}x`)
  const stealNote = perRep.length === 0 ? undefined : `${unstolen.length} of ${perRep.length} reps without host steal${unstolen.length === 0 ? '' : `: ${unstolen.join(', ')} cp`}`
  return {
    failures,
    rows: [
      { workload, system: 'cp', metric: 'copy', unit: 'MiB/s', better: 'higher', samples: cp, note },
      { workload, system: 'pipemesh', metric: 'ingest', unit: 'MiB/s', better: 'higher', samples: ingest, vs: 'cp', vsMetric: 'copy', check, ...stealNote === undefined ? {} : { note: stealNote } },
      { workload, system: 'pipemesh', metric: 'materialize', unit: 'MiB/s', better: 'higher', samples: materialize, vs: 'cp', vsMetric: 'copy' },
      { workload, system: 'pipemesh', metric: 'adopt output', unit: 'MiB/s', better: 'higher', samples: adopt, vs: 'cp', vsMetric: 'copy', note: 'a step\'s output moved in, hashed in place' },
      { workload, system: 'pipemesh', metric: 'peak RSS', unit: 'MB', better: 'lower', samples: rss, note: 'store child process: ingest, materialize, adopt' }
    ]
  }
}
