// Puts a pipeline's content into a remote mesh: ingests data sources, code and environment files
// into the client's own store, asks the coordinator which the mesh lacks, and, only if some are
// missing, serves them from a short-lived libp2p node while an agent pulls them (chunks that
// agent already holds are not sent).

import { join } from 'node:path'
import prettyBytes from 'pretty-bytes'
import type { CoordinatorApi } from '../src/client/api.js'
import { prepareSubmission } from '../src/client/prepare.js'
import type { Pipeline } from '../src/spec/types.js'
import type { SubmissionArtifacts } from '../src/run/types.js'
import type { ArtifactRef, Digest } from '../src/store/types.js'
import { ContentStore } from '../src/store/content-store.js'

export async function uploadSubmission (pipeline: Pipeline, api: CoordinatorApi, options: { dataDir: string, signal?: AbortSignal, progress: boolean }): Promise<SubmissionArtifacts> {
  const store = await ContentStore.open(join(options.dataDir, 'client', 'store'))
  try {
    const prepareOptions = options.signal === undefined ? {} : { signal: options.signal }
    const { artifacts } = await prepareSubmission(pipeline, store, prepareOptions)
    const refs = new Map<Digest, ArtifactRef>()
    for (const ref of Object.values(artifacts.inputs)) refs.set(ref.digest, ref)
    for (const code of Object.values(artifacts.code)) refs.set(code.ref.digest, code.ref)
    for (const env of Object.values(artifacts.environments)) refs.set(env.files.digest, env.files)
    const missing = new Set(await api.missingArtifacts([...refs.keys()]))
    if (missing.size === 0) return artifacts
    const wanted = [...refs.values()].filter(r => missing.has(r.digest))
    const total = wanted.reduce((n, r) => n + r.size, 0)
    if (options.progress) process.stderr.write(`uploading ${wanted.length} artifact(s), ${prettyBytes(total)}, to the mesh\n`)
    // libp2p loads only when there is something to upload: a rerun with nothing new stays fast.
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
        process.stderr.write(`uploaded to agent ${result.agentId ?? '-'} in ${secs.toFixed(1)} s (${prettyBytes(total / secs)}/s)\n`)
      }
    } finally {
      await node.stop()
    }
    return artifacts
  } finally {
    await store.close()
  }
}
