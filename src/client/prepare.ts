// Turns a validated pipeline into a submission: ingests its data sources, each step's code and
// each environment's files into a content store, so the run refers to content by digest only.
// Unchanged files cost a hash and no new storage (content addressing dedups them). The same walk
// over a ContentHasher (digests.ts) gives the digests without storing anything.

import { createHash } from 'node:crypto'
import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { forEachLimit } from '../store/async-util.js'
import type { ArtifactRef, Digest } from '../store/types.js'
import type { Pipeline } from '../spec/types.js'
import type { Submission, SubmissionArtifacts } from '../run/types.js'

export interface PrepareOptions {
  signal?: AbortSignal
  onProgress?: (what: string) => void
  /** Bytes read so far of those found, across everything being read (a few items at a time). */
  onBytes?: (bytes: number, totalBytes: number) => void
}

/** Running totals of one item's reading, as the store reports them (see IngestOptions). */
export interface ReadProgress {
  /** Bytes read so far. */
  onProgress?: (bytes: number) => void
  /** File sizes found so far (a directory is listed before it is read). */
  onScanned?: (bytes: number) => void
}

/** What prepareSubmission needs of a store: a ContentStore, or a ContentHasher that stores nothing. */
export interface Ingester {
  ingest: (source: string, options?: { signal?: AbortSignal, label?: string } & ReadProgress) => Promise<ArtifactRef>
  ingestFiles: (baseDir: string, relPaths: string[], options?: { signal?: AbortSignal } & ReadProgress) => Promise<{ ref: ArtifactRef, files: Record<string, Digest> }>
}

/**
 * Content is read a few items at a time: a pipeline's code snapshots are mostly a file or two
 * each, where the time goes to file-system round trips through the thread pool, not to bytes.
 */
const PREPARE_PARALLEL = 4

export async function prepareSubmission (pipeline: Pipeline, store: Ingester, options: PrepareOptions = {}): Promise<Submission> {
  const signal = options.signal === undefined ? {} : { signal: options.signal }
  // Each item's running totals, summed for onBytes.
  const items: Array<{ bytes: number, scanned: number }> = []
  const opts = (): { signal?: AbortSignal } & ReadProgress => {
    if (options.onBytes === undefined) return signal
    const item = { bytes: 0, scanned: 0 }
    items.push(item)
    const report = (): void => {
      let bytes = 0
      let total = 0
      for (const i of items) { bytes += i.bytes; total += Math.max(i.scanned, i.bytes) }
      options.onBytes?.(bytes, total)
    }
    return { ...signal, onProgress: b => { item.bytes = b; report() }, onScanned: b => { item.scanned = b; report() } }
  }
  const inputs = new Map<string, ArtifactRef>()
  // Steps that list the same code files share one snapshot.
  const snapshots = new Map<string, SubmissionArtifacts['code'][string]>()
  const environments = new Map<string, SubmissionArtifacts['environments'][string]>()
  const jobs: Array<() => Promise<void>> = []
  for (const [name, path] of Object.entries(pipeline.inputs)) {
    jobs.push(async () => {
      options.onProgress?.(`input ${name}`)
      inputs.set(name, await store.ingest(resolve(pipeline.baseDir, path), { ...opts(), label: `${pipeline.name} input ${name}` }))
    })
  }
  const codeKey = (code: string[]): string => JSON.stringify(code)
  const codeLists = new Map<string, { step: string, code: string[] }>()
  for (const step of Object.values(pipeline.steps)) {
    if (step.code.length > 0 && !codeLists.has(codeKey(step.code))) codeLists.set(codeKey(step.code), { step: step.id, code: step.code })
  }
  for (const [key, { step, code }] of codeLists) {
    jobs.push(async () => {
      options.onProgress?.(`code of ${step}`)
      snapshots.set(key, await store.ingestFiles(pipeline.baseDir, code, opts()))
    })
  }
  for (const env of Object.values(pipeline.environments)) {
    jobs.push(async () => {
      options.onProgress?.(`environment ${env.name}`)
      const root = commonDirectory(env.files.map(f => resolve(pipeline.baseDir, f)))
      const files = await store.ingestFiles(root, env.files.map(f => relative(root, resolve(pipeline.baseDir, f))), opts())
      environments.set(env.name, { files: files.ref, digest: environmentDigest(files.ref.digest, env.setup) })
    })
  }
  await forEachLimit(jobs, PREPARE_PARALLEL, async job => { await job() }, options.signal)

  // Assembled in the pipeline's order, whatever order the reads finished in.
  const artifacts: SubmissionArtifacts = { inputs: {}, code: {}, environments: {} }
  for (const name of Object.keys(pipeline.inputs)) artifacts.inputs[name] = inputs.get(name) as ArtifactRef
  for (const step of Object.values(pipeline.steps)) {
    if (step.code.length > 0) artifacts.code[step.id] = snapshots.get(codeKey(step.code)) as SubmissionArtifacts['code'][string]
  }
  for (const name of Object.keys(pipeline.environments)) artifacts.environments[name] = environments.get(name) as SubmissionArtifacts['environments'][string]
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
