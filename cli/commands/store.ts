// `pipemesh store stats|verify|gc` on the local agent's store. gc asks the local coordinator
// state which content is still referenced (kept runs, reuse entries) and removes the rest.
// verify --repair fetches damaged artifacts again from the mesh's other holders when given a
// coordinator, and otherwise drops them, so that the next run rebuilds them.

import { existsSync } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { PipemeshError } from '../../src/errors.js'
import type { CoordinatorApi, MeshGcReport } from '../../src/client/api.js'
import { ContentStore, type VerifyReport } from '../../src/store/content-store.js'
import type { Digest } from '../../src/store/types.js'
import { formatBytes } from '../../src/util/units.js'
import { ENVIRONMENT_UNUSED_MS } from '../../src/protocol/messages.js'
import { openOffline } from '../embedded.js'
import { isAgentDaemonDir } from '../data-dir.js'
import { byteProgress } from '../progress.js'

/** The store of the embedded agent (<data>/agent/store), or of an agent daemon run with --data <data>. */
function storeDir (dataDir: string): string {
  const embedded = join(dataDir, 'agent', 'store')
  const daemon = join(dataDir, 'store')
  return !existsSync(embedded) && existsSync(join(daemon, 'index')) ? daemon : embedded
}

async function withStore<T> (dataDir: string, fn: (store: ContentStore) => Promise<T>): Promise<T> {
  let store: ContentStore
  try {
    store = await ContentStore.open(storeDir(dataDir))
  } catch (err) {
    if (err instanceof PipemeshError && err.code === 'CONFLICT') {
      throw new PipemeshError('CONFLICT', err.message, { hint: 'stop the agent that uses it first; a running agent finds damaged chunks itself when it reads them, and fetches them again' })
    }
    throw err
  }
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}

export async function storeStats (dataDir: string): Promise<Awaited<ReturnType<ContentStore['stats']>>> {
  return await withStore(dataDir, async store => await store.stats())
}

export interface VerifyResult extends VerifyReport {
  /** Artifacts made whole again from other holders (--repair with a coordinator). */
  refetched: Digest[]
  /** Artifacts no longer complete and dropped from the store (--repair): runs rebuild them. */
  dropped: Digest[]
}

/**
 * Rehashes every chunk (corrupt ones are quarantined). With `repair`, each held artifact left
 * incomplete is fetched again from the agents that hold it (when `api` reaches a coordinator),
 * else dropped so that it is no longer advertised and the next run that needs it rebuilds it.
 */
export async function storeVerify (dataDir: string, options: { repair?: boolean, api?: CoordinatorApi, signal?: AbortSignal, progress?: boolean } = {}): Promise<VerifyResult> {
  return await withStore(dataDir, async store => {
    const signal = options.signal === undefined ? {} : { signal: options.signal }
    const report = await rehash(store, signal, options.progress === true)
    const result: VerifyResult = { ...report, refetched: [], dropped: [] }
    if (options.repair !== true || (report.corrupt.length === 0 && report.missing.length === 0)) return result
    const damaged: Digest[] = []
    for await (const root of store.roots()) if (!await store.has(root.digest)) damaged.push(root.digest)
    if (damaged.length > 0 && options.api !== undefined) {
      const [{ createNode }, { fetchArtifact }] = await Promise.all([import('../../src/net/node.js'), import('../../src/net/transfer.js')])
      const node = await createNode({ privateKey: await generateKeyPair('Ed25519') })
      try {
        for (const digest of damaged) {
          const holders = await options.api.locate(digest, node.peerId.toString())
          if (holders.length === 0) continue
          try {
            await fetchArtifact(node, store, digest, holders, signal)
            result.refetched.push(digest)
          } catch (err) {
            if (options.signal?.aborted === true) throw err
          }
        }
      } finally {
        await node.stop()
      }
    }
    for (const digest of damaged) {
      if (result.refetched.includes(digest)) continue
      await store.removeRoot(digest)
      result.dropped.push(digest)
    }
    return result
  })
}

/**
 * store.verify() with a progress bar on a terminal (bytes rehashed of the index's total, rate),
 * or one line at the end when stderr is not one: a large store takes minutes.
 */
async function rehash (store: ContentStore, signal: { signal?: AbortSignal }, progress: boolean): Promise<VerifyReport> {
  const shown = byteProgress({ doing: 'verifying', done: 'rehashed', enabled: progress })
  let report: VerifyReport | undefined
  try {
    report = await store.verify({ ...signal, onProgress: p => { shown.update(p.bytes, p.totalBytes) } })
    return report
  } finally {
    shown.finish(report?.bytesChecked)
  }
}

export async function storeGc (dataDir: string, keepRuns: number, logger: Logger): Promise<{ removedRuns: number, removedArtifacts: number, removedChunks: number, removedEnvironments: number, freedBytes: number }> {
  // An agent daemon's store: the runs that reference its artifacts are on its coordinator, and a
  // local state (none, or one an earlier command made here) would call all of them garbage.
  if (isAgentDaemonDir(dataDir) || storeDir(dataDir) === join(dataDir, 'store')) {
    throw new PipemeshError('INVALID_ARGUMENT', `${dataDir} holds an agent daemon's store: which of its artifacts runs still need is known only to its coordinator`, {
      hint: 'run `pipemesh store gc --coordinator URL` (or with PIPEMESH_COORDINATOR set): the coordinator drops old runs and every connected agent removes what they no longer reference'
    })
  }
  const coordinator = await openOffline(dataDir, logger)
  let plan
  try {
    plan = await coordinator.planGc(keepRuns)
  } finally {
    await coordinator.stop()
  }
  return await withStore(dataDir, async store => {
    const report = await store.gc(plan.keep)
    const { EnvironmentManager } = await import('../../agent/environments.js')
    const envs = await new EnvironmentManager({ dir: join(dataDir, 'agent', 'envs'), store }).prune(Date.now() - ENVIRONMENT_UNUSED_MS)
    return { removedRuns: plan.removedRuns, ...report, removedEnvironments: envs.removed, freedBytes: report.freedBytes + envs.freedBytes }
  })
}

/** One line per agent: what a mesh-wide collection removed, or why it could not. */
export function formatMeshGc (report: MeshGcReport): string {
  const lines = [`removed ${report.removedRuns} old run${report.removedRuns === 1 ? '' : 's'}`]
  for (const a of report.agents) {
    lines.push(a.error === undefined
      ? `${a.agent}: removed ${a.removedArtifacts} artifacts, ${a.removedChunks} chunks and ${a.removedEnvironments} unused environments (${formatBytes(a.freedBytes)} freed)`
      : `${a.agent}: not collected: ${a.error}`)
  }
  if (report.skipped.length > 0) lines.push(`not connected, left alone: ${report.skipped.join(', ')}`)
  return lines.join('\n')
}
