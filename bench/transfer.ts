// T1: moving a large artifact between two processes. The baselines (raw TCP and node:tls over
// loopback, 1 MiB writes) and, with the mesh variant, agent to agent through a running
// coordinator (mesh-transfer.ts) next to one bare libp2p stream (the transport alone, no store),
// interleaved rep by rep in the same run so that the machine's load affects all alike.

import { rm } from 'node:fs/promises'
import { makeTlsCert, transferBaseline, type TransferKind } from './baselines.js'
import { MeshTransferBench, type MeshTransferRep } from './mesh-transfer.js'
import type { Row } from './stats.js'

const MIB = 1024 * 1024
const SYSTEM: Record<TransferKind, string> = { tcp: 'raw TCP', tls: 'node:tls', libp2p: 'libp2p stream' }
export const MESH_SYSTEM = 'pipemesh mesh'

export interface TransferBench { rows: Row[], failures: string[] }

export interface TransferOptions {
  /** Also measure agent to agent in a mesh (coordinator + two agents started for T1). */
  mesh?: boolean
  /** Node options for the mesh daemons (--cpu-prof…). */
  daemonNodeArgs?: string[]
}

export async function benchTransfer (scratch: string, reps: number, bytes: number, log: (line: string) => void, options: TransferOptions = {}): Promise<TransferBench> {
  const workload = `T1 transfer ${bytes / MIB} MiB`
  const kinds: TransferKind[] = options.mesh === true ? ['tcp', 'tls', 'libp2p'] : ['tcp', 'tls']
  const rate: Record<TransferKind, number[]> = { tcp: [], tls: [], libp2p: [] }
  const rss: Record<TransferKind, number[]> = { tcp: [], tls: [], libp2p: [] }
  const meshReps: MeshTransferRep[] = []
  let meshFirst: MeshTransferRep | undefined
  const failures: string[] = []
  let certDir: string | undefined
  let mesh: MeshTransferBench | undefined
  try {
    try {
      certDir = await makeTlsCert(scratch)
    } catch (err) {
      failures.push(`T1: node:tls skipped, no certificate: ${(err as Error).message}`)
    }
    if (options.mesh === true) {
      try {
        mesh = await MeshTransferBench.start(scratch, bytes, options.daemonNodeArgs === undefined ? {} : { daemonNodeArgs: options.daemonNodeArgs })
      } catch (err) {
        failures.push(`T1 ${MESH_SYSTEM}: could not start the mesh: ${(err as Error).message}`)
      }
    }
    if (mesh !== undefined) {
      // As for W0–W2, the targets are for daemons already running: the first transfer after
      // the agents start (rep 0) gets its own row and is not among the reps. In four runs it was
      // the slowest every time, 8–27% below the median of the reps after it.
      try {
        meshFirst = await mesh.rep(0)
        log(`T1 rep 0 (first transfer after the daemons start): ${MESH_SYSTEM} ${meshFirst.mibPerSec.toFixed(0)} MiB/s (fetch ${(meshFirst.fetchMs / 1000).toFixed(2)} s)`)
      } catch (err) {
        failures.push(`T1 ${MESH_SYSTEM} rep 0: ${(err as Error).message}`)
      }
    }
    for (let rep = 1; rep <= reps; rep++) {
      for (const kind of kinds) {
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
      if (mesh === undefined) continue
      try {
        const r = await mesh.rep(rep)
        meshReps.push(r)
        const hwm = Object.entries(r.agentHwm).map(([name, b]) => `${name} ${(b / 1e6).toFixed(0)} MB`).join(', ')
        log(`T1 rep ${rep}/${reps}: ${MESH_SYSTEM} ${r.mibPerSec.toFixed(0)} MiB/s (fetch ${(r.fetchMs / 1000).toFixed(2)} s as agent-b reported it; placement to step start ${r.coldMs} ms, ${r.warmMs} ms with the input held); peak RSS ${hwm}`)
      } catch (err) {
        failures.push(`T1 ${MESH_SYSTEM} rep ${rep}: ${(err as Error).message}`)
      }
    }
  } finally {
    if (certDir !== undefined) await rm(certDir, { recursive: true, force: true })
    await mesh?.stop()
  }
  const checkOf = (system: string, attempted: number): string => {
    const failed = failures.filter(f => f.startsWith(`T1 ${system} rep`)).length
    return failed === 0 ? `ok ${attempted}/${attempted}` : `FAIL ${failed}/${attempted}`
  }
  const rows: Row[] = []
  for (const kind of kinds) {
    const note = kind === 'libp2p' ? 'tcp + noise + yamux as the agents build it, 1 MiB sends, no store: the transport alone' : undefined
    rows.push(
      { workload, system: SYSTEM[kind], metric: 'rate', unit: 'MiB/s', better: 'higher', samples: rate[kind], check: checkOf(SYSTEM[kind], reps), ...kind === 'tcp' ? {} : { vs: kind === 'tls' ? 'raw TCP' : 'node:tls' }, ...note === undefined ? {} : { note } },
      { workload, system: SYSTEM[kind], metric: 'peak RSS', unit: 'MB', better: 'lower', samples: rss[kind], note: 'larger of sender and receiver' }
    )
  }
  if (options.mesh === true) rows.push(...meshRows(workload, meshReps, meshFirst, mesh === undefined ? 'FAIL: no mesh' : checkOf(MESH_SYSTEM, reps)))
  return { rows, failures }
}

function meshRows (workload: string, reps: readonly MeshTransferRep[], first: MeshTransferRep | undefined, check: string): Row[] {
  const last = reps.at(-1)
  const mb = (record: Record<string, number> | undefined): string =>
    Object.entries(record ?? {}).map(([name, b]) => `${name} ${(b / 1e6).toFixed(0)}`).join(', ')
  const warm = reps.map(r => r.warmMs).sort((a, b) => a - b)
  return [
    {
      workload, system: MESH_SYSTEM, metric: 'rate', unit: 'MiB/s', better: 'higher', samples: reps.map(r => r.mibPerSec), vs: 'node:tls', check,
      note: 'agent-a -> agent-b fetch, timed by agent-b, verified by both agents\' transfer counters'
    },
    ...first === undefined
      ? []
      : [{ workload, system: MESH_SYSTEM, metric: 'rate, 1st transfer', unit: 'MiB/s', better: 'higher' as const, samples: [first.mibPerSec], note: 'the first transfer after the daemons start (rep 0, not among the reps)' }],
    {
      workload, system: MESH_SYSTEM, metric: 'rate to step start', unit: 'MiB/s', better: 'higher', samples: reps.map(r => r.toStepStartMibPerSec),
      note: `placement -> consumer process start: dispatch + fetch + materialize + spawn; the same without the fetch (input already held): ${warm.map(ms => (ms / 1000).toFixed(2)).join(', ')} s`
    },
    {
      workload, system: MESH_SYSTEM, metric: 'peak RSS', unit: 'MB', better: 'lower', samples: reps.map(r => Math.max(...Object.values(r.agentHwm)) / 1e6),
      note: `larger agent process (VmHWM since start, cumulative): ${mb(last?.agentHwm)} MB; step launchers ${mb(last?.launcherHwm)} MB`
    }
  ]
}
