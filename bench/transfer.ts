// T1: moving a large artifact between two processes. Here only the baselines of the same run
// (raw TCP and node:tls over loopback); the mesh variant adds its agent-to-agent row (system
// "pipemesh mesh", metric "MiB/s", vs "node:tls") and the agents' peak RSS next to these.

import { rm } from 'node:fs/promises'
import { makeTlsCert, transferBaseline, type TransferKind } from './baselines.js'
import type { Row } from './stats.js'

const MIB = 1024 * 1024
const SYSTEM: Record<TransferKind, string> = { tcp: 'raw TCP', tls: 'node:tls' }

export interface TransferBench { rows: Row[], failures: string[] }

export async function benchTransfer (scratch: string, reps: number, bytes: number, log: (line: string) => void): Promise<TransferBench> {
  const workload = `T1 transfer ${bytes / MIB} MiB`
  const rate: Record<TransferKind, number[]> = { tcp: [], tls: [] }
  const rss: Record<TransferKind, number[]> = { tcp: [], tls: [] }
  const failures: string[] = []
  let certDir: string | undefined
  try {
    try {
      certDir = await makeTlsCert(scratch)
    } catch (err) {
      failures.push(`T1: node:tls skipped, no certificate: ${(err as Error).message}`)
    }
    for (let rep = 1; rep <= reps; rep++) {
      for (const kind of ['tcp', 'tls'] as const) {
        if (kind === 'tls' && certDir === undefined) continue
        try {
          const r = await transferBaseline(kind, bytes, certDir)
          rate[kind].push(r.mibPerSec)
          rss[kind].push(Math.max(r.senderMaxRssBytes, r.receiverMaxRssBytes) / 1e6)
          log(`T1 rep ${rep}/${reps}: ${SYSTEM[kind]} ${r.mibPerSec.toFixed(0)} MiB/s`)
        } catch (err) {
          failures.push(`T1 ${SYSTEM[kind]} rep ${rep}: ${(err as Error).message}`)
        }
      }
    }
  } finally {
    if (certDir !== undefined) await rm(certDir, { recursive: true, force: true })
  }
  const rows: Row[] = []
  for (const kind of ['tcp', 'tls'] as const) {
    const failed = failures.filter(f => f.includes(SYSTEM[kind])).length
    const check = failed === 0 ? `ok ${reps}/${reps}` : `FAIL ${failed}/${reps}`
    rows.push(
      { workload, system: SYSTEM[kind], metric: 'rate', unit: 'MiB/s', better: 'higher', samples: rate[kind], check, ...kind === 'tls' ? { vs: 'raw TCP' } : {} },
      { workload, system: SYSTEM[kind], metric: 'peak RSS', unit: 'MB', better: 'lower', samples: rss[kind], note: 'larger of sender and receiver' }
    )
  }
  return { rows, failures }
}
