// `pipemesh artifacts get`: copies an artifact (a step's output by run/step/output, or any digest)
// to a local path. From a remote mesh it is fetched peer to peer from the agents holding it, with
// a progress bar; locally it comes from the embedded agent's store.

import { join } from 'node:path'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { PipemeshError } from '../../src/errors.js'
import type { CoordinatorApi } from '../../src/client/api.js'
import { ContentStore } from '../../src/store/content-store.js'
import { isDigest, type Digest } from '../../src/store/types.js'
import { byteProgress } from '../progress.js'

export interface GetResult { digest: Digest, dest: string, bytes: number, fetchedBytes: number }

/** Resolves `run/step/output` (or a digest) to a digest using the run's record. */
export async function resolveArtifact (api: CoordinatorApi, spec: string): Promise<Digest> {
  if (isDigest(spec)) return spec
  const parts = spec.split('/')
  if (parts.length !== 3 || parts.some(p => p === '')) {
    throw new PipemeshError('INVALID_ARGUMENT', `"${spec}" is neither a digest (sha256:…) nor <run>/<step>/<output>`)
  }
  const [runId, stepId, output] = parts as [string, string, string]
  const run = await api.getRun(runId)
  const step = run.steps.find(s => s.id === stepId)
  if (step === undefined) throw new PipemeshError('NOT_FOUND', `run ${runId} has no step ${stepId} (steps: ${run.steps.map(s => s.id).join(', ')})`)
  const digest = step.outputs[output]
  if (digest === undefined) {
    const have = Object.keys(step.outputs)
    throw new PipemeshError('NOT_FOUND', `step ${stepId} of run ${runId} has no output ${output}${have.length === 0 ? ` (it is ${step.status})` : ` (outputs: ${have.join(', ')})`}`)
  }
  return digest
}

export async function getArtifact (api: CoordinatorApi, spec: string, dest: string, options: { dataDir: string, remote: boolean, progress: boolean }): Promise<GetResult> {
  const digest = await resolveArtifact(api, spec)
  const store = await ContentStore.open(join(options.dataDir, options.remote ? 'client' : 'agent', 'store'))
  try {
    let fetchedBytes = 0
    if (!await store.has(digest)) {
      if (!options.remote) throw new PipemeshError('MISSING_CONTENT', `artifact ${digest} is not in the local store`, { hint: 'it may have been garbage-collected; rerun the pipeline' })
      const [{ createNode }, { fetchArtifact }] = await Promise.all([import('../../src/net/node.js'), import('../../src/net/transfer.js')])
      const node = await createNode({ privateKey: await generateKeyPair('Ed25519') })
      // Asking where it is also lets this client's peer id fetch from the holders for a while.
      const holders = await api.locate(digest, node.peerId.toString()).catch(async (err: unknown) => { await node.stop(); throw err })
      if (holders.length === 0) {
        await node.stop()
        throw new PipemeshError('MISSING_CONTENT', `no connected agent holds ${digest}`, { hint: 'the agents that made it may be offline; rerun the pipeline to rebuild it' })
      }
      const shown = byteProgress({ doing: 'fetching', done: 'fetched', enabled: options.progress })
      let fetched: number | undefined
      try {
        const result = await withRetries(async () => await fetchArtifact(node, store, digest, holders, {
          onProgress: ({ bytes, totalBytes }: { bytes: number, totalBytes: number }) => { shown.update(bytes, totalBytes) }
        }))
        fetched = fetchedBytes = result.bytes
      } finally {
        shown.finish(fetched)
        await node.stop()
      }
    }
    await store.materialize(digest, dest)
    const ref = await store.stat(digest)
    // The client's store only stages a fetch (and keeps an interrupted one for resuming): once
    // the file is at `dest`, a second copy here would only take disk.
    if (options.remote) await store.gc([])
    return { digest, dest, bytes: ref?.size ?? 0, fetchedBytes }
  } finally {
    await store.close()
  }
}

/**
 * The holders learn of this client's grant through their coordinator, which may take a moment
 * after the HTTP answer: a refused first dial is tried again (a fetch resumes where it stopped).
 */
async function withRetries<T> (fn: () => Promise<T>, tries = 4): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn()
    } catch (err) {
      if (i >= tries) throw err
      await new Promise(resolve => setTimeout(resolve, 250 * i))
    }
  }
}
