// Puts a pipeline's content into a remote mesh. First only hashes its data sources, code and
// environment files (large files' digests remembered across runs, see src/client/digests.ts) and
// asks the coordinator which the mesh lacks: a rerun of unchanged content stops there, without
// opening a store or loading libp2p. Otherwise it ingests them into the client's own store and
// serves them from a short-lived libp2p node while an agent pulls them (chunks that agent already
// holds are not sent), and empties that store once the agent holds them.

import { join } from 'node:path'
import type { CoordinatorApi } from '../src/client/api.js'
import { ContentHasher, DigestCache } from '../src/client/digests.js'
import { prepareSubmission, submissionRefs } from '../src/client/prepare.js'
import type { Pipeline } from '../src/spec/types.js'
import type { SubmissionArtifacts } from '../src/run/types.js'
import { withReadingProgress } from './progress.js'

export async function uploadSubmission (pipeline: Pipeline, api: CoordinatorApi, options: { dataDir: string, signal?: AbortSignal, progress: boolean }): Promise<SubmissionArtifacts> {
  const prepareOptions = options.signal === undefined ? {} : { signal: options.signal }
  const clientDir = join(options.dataDir, 'client')
  let hashed: SubmissionArtifacts | undefined
  try {
    const cache = await DigestCache.load(join(clientDir, 'digests.json'))
    hashed = await withReadingProgress('hashing', options.progress, async onBytes => (await prepareSubmission(pipeline, new ContentHasher(cache), { ...prepareOptions, onBytes })).artifacts)
    await cache.save()
  } catch (err) {
    if (options.signal?.aborted === true) throw err
    // Whatever went wrong (a missing or unsafe file) is reported by the store's ingest below,
    // the one place that decides what may be stored.
  }
  if (hashed !== undefined && (await api.missingArtifacts([...submissionRefs(hashed).keys()])).length === 0) return hashed
  return await uploadFromStore(pipeline, api, clientDir, options)
}

async function uploadFromStore (pipeline: Pipeline, api: CoordinatorApi, clientDir: string, options: { signal?: AbortSignal, progress: boolean }): Promise<SubmissionArtifacts> {
  const prepareOptions = options.signal === undefined ? {} : { signal: options.signal }
  const [{ ContentStore }, { default: prettyBytes }] = await Promise.all([import('../src/store/content-store.js'), import('pretty-bytes')])
  const store = await ContentStore.open(join(clientDir, 'store'))
  try {
    const artifacts = await withReadingProgress('storing', options.progress, async onBytes => (await prepareSubmission(pipeline, store, { ...prepareOptions, onBytes })).artifacts)
    const refs = submissionRefs(artifacts)
    const missing = new Set(await api.missingArtifacts([...refs.keys()]))
    if (missing.size === 0) return artifacts
    const wanted = [...refs.values()].filter(r => missing.has(r.digest))
    const total = wanted.reduce((n, r) => n + r.size, 0)
    if (options.progress) process.stderr.write(`uploading ${wanted.length} artifact(s), ${prettyBytes(total)}, to the mesh\n`)
    const [{ generateKeyPair }, { createNode }, { serveArtifacts }] = await Promise.all([
      import('@libp2p/crypto/keys'), import('../src/net/node.js'), import('../src/net/transfer.js')
    ])
    const node = await createNode({ privateKey: await generateKeyPair('Ed25519') })
    try {
      await serveArtifacts(node, store, {})
      const started = Date.now()
      const result = await api.upload(wanted, { peerId: node.peerId.toString(), addrs: node.getMultiaddrs().map(a => a.toString()) }, prepareOptions)
      if (options.progress) {
        const secs = Math.max((Date.now() - started) / 1000, 0.001)
        process.stderr.write(`uploaded to agent ${result.agent ?? result.agentId ?? '-'} in ${secs.toFixed(1)} s (${prettyBytes(total / secs)}/s)\n`)
      }
    } finally {
      await node.stop()
    }
    // The mesh holds it now: a copy kept here would double the disk used by every dataset ever
    // submitted from this machine. (A rerun with unchanged content stops at the digest check.)
    await store.gc([])
    return artifacts
  } finally {
    await store.close()
  }
}
