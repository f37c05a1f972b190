// `pipemesh store stats|verify|gc` on the local agent's store. gc asks the local coordinator
// state which content is still referenced (kept runs, reuse entries) and removes the rest.

import { join } from 'node:path'
import type { Logger } from 'pino'
import { ContentStore } from '../../src/store/content-store.js'
import { openOffline } from '../embedded.js'

async function withStore<T> (dataDir: string, fn: (store: ContentStore) => Promise<T>): Promise<T> {
  const store = await ContentStore.open(join(dataDir, 'agent', 'store'))
  try {
    return await fn(store)
  } finally {
    await store.close()
  }
}

export async function storeStats (dataDir: string): Promise<Awaited<ReturnType<ContentStore['stats']>>> {
  return await withStore(dataDir, async store => await store.stats())
}

export async function storeVerify (dataDir: string): Promise<Awaited<ReturnType<ContentStore['verify']>>> {
  return await withStore(dataDir, async store => await store.verify())
}

export async function storeGc (dataDir: string, keepRuns: number, logger: Logger): Promise<{ removedRuns: number, removedArtifacts: number, removedChunks: number, freedBytes: number }> {
  const coordinator = await openOffline(dataDir, logger)
  let plan
  try {
    plan = await coordinator.planGc(keepRuns)
  } finally {
    await coordinator.stop()
  }
  const report = await withStore(dataDir, async store => await store.gc(plan.keep))
  return { removedRuns: plan.removedRuns, ...report }
}
