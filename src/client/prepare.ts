// Turns a validated pipeline into a submission: ingests its data sources, each step's code and
// each environment's files into a content store, so the run refers to content by digest only.
// Unchanged files cost a hash and no new storage (content addressing dedups them). The same walk
// over a ContentHasher (digests.ts) gives the digests without storing anything.

import { createHash } from 'node:crypto'
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import type { ArtifactRef, Digest } from '../store/types.js'
import type { Pipeline } from '../spec/types.js'
import type { Submission, SubmissionArtifacts } from '../run/types.js'

export interface PrepareOptions {
  signal?: AbortSignal
  onProgress?: (what: string) => void
}

/** What prepareSubmission needs of a store: a ContentStore, or a ContentHasher that stores nothing. */
export interface Ingester {
  ingest: (source: string, options?: { signal?: AbortSignal, label?: string }) => Promise<ArtifactRef>
  ingestFiles: (baseDir: string, relPaths: string[], options?: { signal?: AbortSignal }) => Promise<{ ref: ArtifactRef, files: Record<string, Digest> }>
}

export async function prepareSubmission (pipeline: Pipeline, store: Ingester, options: PrepareOptions = {}): Promise<Submission> {
  const artifacts: SubmissionArtifacts = { inputs: {}, code: {}, environments: {} }
  const opts = options.signal === undefined ? {} : { signal: options.signal }
  for (const [name, path] of Object.entries(pipeline.inputs)) {
    options.onProgress?.(`input ${name}`)
    artifacts.inputs[name] = await store.ingest(resolve(pipeline.baseDir, path), { ...opts, label: `${pipeline.name} input ${name}` })
  }
  // Steps that list the same code files share one snapshot.
  const snapshots = new Map<string, SubmissionArtifacts['code'][string]>()
  for (const step of Object.values(pipeline.steps)) {
    if (step.code.length === 0) continue
    const key = JSON.stringify(step.code)
    let snapshot = snapshots.get(key)
    if (snapshot === undefined) {
      options.onProgress?.(`code of ${step.id}`)
      snapshot = await store.ingestFiles(pipeline.baseDir, step.code, opts)
      snapshots.set(key, snapshot)
    }
    artifacts.code[step.id] = snapshot
  }
  for (const env of Object.values(pipeline.environments)) {
    options.onProgress?.(`environment ${env.name}`)
    const root = commonDirectory(env.files.map(f => resolve(pipeline.baseDir, f)))
    const files = await store.ingestFiles(root, env.files.map(f => relative(root, resolve(pipeline.baseDir, f))), opts)
    artifacts.environments[env.name] = { files: files.ref, digest: environmentDigest(files.ref.digest, env.setup) }
  }
  return { pipeline, artifacts }
}

/** Every artifact a submission refers to, by digest (what the mesh must hold for it to run). */
export function submissionRefs (artifacts: SubmissionArtifacts): Map<Digest, ArtifactRef> {
  const refs = new Map<Digest, ArtifactRef>()
  for (const ref of Object.values(artifacts.inputs)) refs.set(ref.digest, ref)
  for (const code of Object.values(artifacts.code)) refs.set(code.ref.digest, code.ref)
  for (const env of Object.values(artifacts.environments)) refs.set(env.files.digest, env.files)
  return refs
}

/** An environment is identified by its files and its setup command together. */
export function environmentDigest (files: Digest, setup: string): Digest {
  const hash = createHash('sha256').update(JSON.stringify({ files, setup, scheme: 1 })).digest('hex')
  return `sha256:${hash}`
}

/** The deepest directory containing every path (the directory of a single file). */
function commonDirectory (paths: string[]): string {
  const dirs = paths.map(p => dirname(p).split(sep))
  const first = dirs[0] ?? []
  let n = first.length
  for (const parts of dirs) {
    let i = 0
    while (i < n && parts[i] === first[i]) i++
    n = i
  }
  const joined = first.slice(0, n).join(sep)
  return joined === '' || !isAbsolute(joined) ? sep : joined
}
